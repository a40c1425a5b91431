"""`ifdd pretrain`: a preset's backbone pretrained on synthetic actions (ifdd.pretrain), the stand-in for the
Kinetics-400 initialisation; fine-tunes use it with ``train.init_weights: pretext`` (or the file's path)."""

from __future__ import annotations

import argparse
import json

from ifdd.config import PRESETS
from orchestrator.commands.options import add_runs_arg, outputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain a preset's backbone on synthetic actions (the pretext init)",
        description="Train the preset's backbone on synthetic actions (ifdd/data/pretext.py: 12 motion classes of "
                    "generic objects; fresh clips every epoch, none seen twice) until its held-out accuracy reaches "
                    "the recipe's target, and write pretext.pt (+ .sha256) and pretext.json under "
                    "<runs>/pretrain/<name>/. The default recipe (3-8 minutes on 2 CPU cores for tiny) is the init "
                    "`train.init_weights: pretext` names; for tiny the package ships it (ifdd/pretrained/) and a "
                    "first use copies that one, this command trains. An existing one is reused unless --force. "
                    "See docs/proxy.md.")
    p.add_argument("--preset", default="tiny", help=f"model preset: {', '.join(PRESETS)} (default tiny)")
    p.add_argument("--image-size", type=int, default=None, help="model image size (default: the preset's)")
    p.add_argument("--frames", type=int, default=None, help="pretext clip length (default: the recipe's)")
    p.add_argument("--clips", type=int, default=None, help="fresh training clips per epoch (default: the recipe's)")
    p.add_argument("--epochs", type=int, default=None,
                   help="at most this many epochs; training ends at the first that reaches the target (default: the "
                        "recipe's)")
    p.add_argument("--seed", type=int, default=0, help="generator and training seed (default 0)")
    p.add_argument("--out", default=None, help="output folder (default <runs>/pretrain/<name>)")
    p.add_argument("--force", action="store_true", help="train again even if a finished init is there")
    add_runs_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from ifdd.config import model_preset
    from ifdd.pretrain import default_name, default_recipe, ensure_pretext

    if args.preset not in PRESETS:
        raise ValueError(f"--preset: unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    model = model_preset(args.preset, **({"image_size": args.image_size} if args.image_size else {}))
    changes = {k: v for k, v in (("frames", args.frames), ("train_clips", args.clips), ("epochs", args.epochs))
               if v is not None}
    try:
        recipe = dataclasses.replace(default_recipe(model, seed=args.seed), **changes)
    except ValueError as e:
        raise ValueError(f"--{str(e).split(':')[0].replace('train_clips', 'clips')}: {e}") from None
    out_dir = Path(args.out) if args.out else outputs(args).pretrain_dir / default_name(model, recipe)
    path, record, created = ensure_pretext(model, recipe, out_dir, force=args.force)
    if not created:
        print(f"pretext init {path} exists (held-out accuracy {record['pretext_accuracy']:.3f}); reusing it "
              "(--force trains again)")
    print(json.dumps({k: record[k] for k in ("preset", "generator_version", "seed", "steps", "data_sha256",
                                             "pretext_accuracy", "wall_s")} | {"checkpoint": str(path)}))
    return 0
