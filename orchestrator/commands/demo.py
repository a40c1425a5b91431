"""`ifdd demo`: the whole product on embedded defaults: synthetic data -> index -> cache -> fold-wise search."""

from __future__ import annotations

import argparse
import dataclasses
import time

from orchestrator.commands.options import add_output_args, add_verbose_arg, outputs, parse_folds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="synthetic data -> index -> search (the shipped space `demo`, folds 1-2) -> summary",
        description="Run the product end to end on embedded defaults (local Ray, everything under runs/): create "
                    "the synthetic DFEW-format set if missing, index and cache it, run the demo search fold-wise "
                    "and print the nested 2-fold summary. About 10 minutes on 2 CPU cores.")
    p.add_argument("--space", default="demo",
                   help="search space: a shipped name or a YAML path (default: the shipped space `demo`)")
    p.add_argument("--folds", default=None, help="folds (default: the space's, 1-2)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo instead of starting over")
    add_output_args(p)
    add_verbose_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.console import console_session
    from orchestrator.inputs import ensure_dataset
    from orchestrator.search.runner import run_search
    from orchestrator.search.shipped import load_named_space
    from orchestrator.tracking.stores import check_stores

    t0 = time.perf_counter()
    space = load_named_space(args.space).with_folds(parse_folds(args.folds), None)
    out = outputs(args)
    uri, optuna = check_stores(args.tracking_uri, args.optuna_storage, out)  # before creating any data
    out.prepare()
    import mlflow  # noqa: F401 - configures its loggers on import: before the console routes them

    with console_session("demo", out.logs_dir, verbose=args.verbose):
        space = dataclasses.replace(space, base=ensure_dataset(space.base, out))
        ok = run_search(space, out=out, uri=uri, optuna=optuna, resume=args.resume, fresh=not args.resume)
        print(f"\ndemo {'finished' if ok else 'stopped'} in {(time.perf_counter() - t0) / 60:.1f} min; results "
              f"under {out.search_dir(space.name)}")
    return 0 if ok else 1
