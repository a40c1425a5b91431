"""`ifdd model info`: parameters, MACs per clip and per-stage shapes of a preset."""

from __future__ import annotations

import argparse
import json

from ifdd.config import PRESETS, model_preset


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("model", help="inspect the IFDD model")
    group.set_defaults(func=lambda _args: group.print_help())
    gsub = group.add_subparsers(dest="model_command", metavar="COMMAND")
    info = gsub.add_parser("info", help="parameters, MACs per clip and the tensor shape after each stage",
                           description="Parameters, MACs per clip (attention matmuls included) and shapes.")
    info.add_argument("--preset", default="xs", help=f"model preset: {', '.join(PRESETS)} (default xs)")
    info.add_argument("--split-ratio", type=float, default=None, help="static-branch share of the temporal slots")
    info.add_argument("--lifting-depth", type=int, default=None, help="number of lifting levels")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from ifdd.info import model_info  # torch import deferred so `ifdd --help` stays fast

    overrides = {k: v for k, v in (("split_ratio", args.split_ratio), ("lifting_depth", args.lifting_depth))
                 if v is not None}
    info = model_info(model_preset(args.preset, **overrides))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cfg = info["config"]
    print(f"IFDD preset {args.preset}: split_ratio={cfg['split_ratio']} lifting_depth={cfg['lifting_depth']} "
          f"slots per level (static, dynamic)={info['lifting_slots']}")
    print(f"  params        {info['params'] / 1e6:10.3f} M")
    for name, n in info["params_by_module"].items():
        print(f"    {name:<11} {n / 1e6:10.3f} M")
    print(f"  MACs per clip {info['macs_per_clip'] / 1e9:10.3f} G  (FLOPs/2, attention matmuls included)")
    for name, n in info["macs_by_module"].items():
        print(f"    {name:<11} {n / 1e9:10.3f} G")
    print(f"  input (C, T, H, W) {' x '.join(map(str, info['input_shape']))}")
    print("  shapes after each stage (T, H, W, C):")
    for name, shape in info["stage_shapes"].items():
        print(f"    {name:<11} {' x '.join(map(str, shape))}")
    return 0
