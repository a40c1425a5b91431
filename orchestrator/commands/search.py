"""`ifdd search`: one Tune study per fold (fold-wise) or one across folds (cross-fold), then one test per fold."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from orchestrator.cli_common import add_storage_args, add_tracking_args, resolve_storage


def parse_folds(text: str | None) -> tuple[int, ...] | None:
    """``1-5``, ``1,3`` or ``2`` -> a tuple of folds (ValueError naming --folds otherwise)."""
    if text is None:
        return None
    folds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            folds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--folds: expected e.g. 1-5, 1,3 or 2, got {text!r}") from None
    if not folds or any(not 1 <= f <= 5 for f in folds) or len(set(folds)) != len(folds):
        raise ValueError(f"--folds: distinct folds in 1-5, got {text!r}")
    return tuple(folds)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="hyperparameter search (Tune + Optuna + ASHA) over folds, nested by default",
        description="Search a space (search_spaces/*.yaml) with Ray Tune, Optuna TPE and ASHA. fold-wise: one "
                    "study per fold, the best trial on inner-val tested once on the fold's test split, then a "
                    "5-fold summary (mean ± std). cross-fold: one study on the mean inner-val over the folds.")
    p.add_argument("--space", required=True, help="search-space YAML")
    p.add_argument("--folds", default=None, help="folds, e.g. 1-5 or 1,3 (default: the space's protocol.folds)")
    p.add_argument("--strategy", choices=["fold-wise", "cross-fold"], default=None,
                   help="default: the space's protocol.strategy")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted studies: finished trials kept, interrupted ones resumed from their "
                        "checkpoints, finished folds reused")
    p.add_argument("--fresh", action="store_true", help="delete this space's existing studies and start over")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--share", type=int, default=1,
                   help="this study shares the cluster with SHARE-1 others (set by `ifdd launch`): plan trials for "
                        "1/SHARE of its CPUs or GPU slots")
    add_storage_args(p)
    add_tracking_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.datasets import ensure_dataset
    from orchestrator.space import load_space
    from orchestrator.study import run_search
    from orchestrator.tracking import check_uri

    if args.resume and args.fresh:
        raise ValueError("--resume and --fresh: choose one")
    space = load_space(args.space).with_folds(parse_folds(args.folds), args.strategy)
    check_uri(args.tracking_uri)  # before creating any data
    for w in space.warnings:
        print(f"warning: {w}", file=sys.stderr)
    storage = resolve_storage(args)  # free-space preflight before any data is written
    base = ensure_dataset(space.base)
    space = dataclasses.replace(space, base=base)
    outcome = run_search(space, storage=storage, runs=Path(storage).parent if "://" not in storage else Path("runs"),
                         resume=args.resume, fresh=args.fresh, address=args.address, num_cpus=args.num_cpus,
                         share=args.share, tracking_uri=args.tracking_uri)
    return 0 if outcome else 1
