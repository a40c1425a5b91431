"""`ifdd demo`: the whole product on embedded defaults: synthetic data -> index -> cache -> fold-wise search."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from orchestrator.cli_common import add_storage_args, add_tracking_args, resolve_storage

DEMO_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "demo.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="synthetic data -> index -> search (search_spaces/demo.yaml, folds 1-2) -> summary",
        description="Run the product end to end on embedded defaults (local Ray, everything under runs/): create "
                    "the synthetic DFEW-format set if missing, index and cache it, run the demo search fold-wise "
                    "and print the nested 2-fold summary. About 10 minutes on 2 CPU cores.")
    p.add_argument("--space", default=str(DEMO_SPACE), help="search space (default search_spaces/demo.yaml)")
    p.add_argument("--folds", default=None, help="folds (default: the space's, 1-2)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo instead of starting over")
    add_storage_args(p)
    add_tracking_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.commands.search import parse_folds
    from orchestrator.datasets import ensure_dataset
    from orchestrator.space import load_space
    from orchestrator.stores import check_stores
    from orchestrator.study import run_search

    t0 = time.perf_counter()
    space = load_space(args.space).with_folds(parse_folds(args.folds), None)
    runs = Path(args.storage).expanduser().resolve().parent
    optuna_url = check_stores(args.tracking_uri, args.optuna_storage, runs)  # before creating any data
    storage = resolve_storage(args)  # a bad --storage fails before any data is created
    space = dataclasses.replace(space, base=ensure_dataset(space.base))
    ok = run_search(space, storage=storage, runs=Path(storage).parent, resume=args.resume, fresh=not args.resume,
                    tracking_uri=args.tracking_uri, optuna_storage=optuna_url)
    print(f"\ndemo {'finished' if ok else 'stopped'} in {(time.perf_counter() - t0) / 60:.1f} min; results under "
          f"{Path(storage).parent / 'search' / space.name}")
    return 0 if ok else 1
