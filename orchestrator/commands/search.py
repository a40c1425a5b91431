"""`ifdd search`: one Tune study per fold (fold-wise) or one across folds (cross-fold), then one test per fold."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from orchestrator.commands.options import add_output_args, add_verbose_arg, outputs, parse_folds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="hyperparameter search (Tune + Optuna + ASHA) over folds, nested by default",
        description="Search a space (a shipped one by name, see --list, or your own YAML) with Ray Tune, Optuna "
                    "TPE and ASHA. fold-wise: one study per fold, the best trial on inner-val tested once on the "
                    "fold's test split, then a 5-fold summary (mean ± std). cross-fold: one study on the mean "
                    "inner-val over the folds. The terminal shows one progress line per study and the tables; the "
                    "rest goes to <runs>/logs/.")
    p.add_argument("--space", default=None,
                   help="a shipped search space by name (e.g. demo, dfew_ifdd; see --list) or a search-space YAML "
                        "path (an existing file wins over a name)")
    p.add_argument("--list", action="store_true", help="list the shipped search spaces and exit")
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
    p.add_argument("--no-register", dest="register", action="store_false",
                   help="log every run to MLflow but register no model versions (no fold<k>/champion aliases): "
                        "for exploratory searches whose winners are not for deployment; the checkpoints stay on "
                        "disk. A study finished this way stays unregistered when a later --resume reuses it")
    add_output_args(p)
    add_verbose_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.search.shipped import format_listing, load_named_space

    if args.list:
        print(format_listing())
        return 0
    from orchestrator.console import console_session
    from orchestrator.inputs import ensure_dataset
    from orchestrator.search.runner import run_search
    from orchestrator.tracking.stores import check_stores

    if not args.space:
        raise ValueError("--space: required: a shipped search space by name (`ifdd search --list`) or a YAML path")
    if args.resume and args.fresh:
        raise ValueError("--resume and --fresh: choose one")
    space = load_named_space(args.space).with_folds(parse_folds(args.folds), args.strategy)
    if args.num_cpus is not None and args.num_cpus < 1:
        raise ValueError(f"--num-cpus: must be >= 1, got {args.num_cpus}")
    if args.share < 1:
        raise ValueError(f"--share: must be >= 1, got {args.share}")
    out = outputs(args)
    uri, optuna = check_stores(args.tracking_uri, args.optuna_storage, out)  # before creating any data
    for w in space.warnings:
        print(f"warning: {w}", file=sys.stderr)
    out.prepare()  # a bad --runs/--storage or a nearly full disk fails before any data is created
    import mlflow  # noqa: F401 - configures its loggers on import: before the console routes them

    with console_session("search", out.logs_dir, verbose=args.verbose):
        space = dataclasses.replace(space, base=ensure_dataset(space.base, out))
        ok = run_search(space, out=out, uri=uri, optuna=optuna, resume=args.resume, fresh=args.fresh,
                        address=args.address, num_cpus=args.num_cpus, share=args.share, register=args.register)
    return 0 if ok else 1
