"""`ifdd train`: one run config on one fold over N Ray Train DDP workers, then one test evaluation."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from orchestrator.cli_common import add_storage_args, resolve_storage


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one config on one fold (inner-train -> inner-val each epoch -> test once)",
        description="Train one config on one DFEW fold with Ray Train: inner-train -> inner-val every epoch, then "
                    "the best-on-val checkpoint is tested once on the fold's test split.")
    p.add_argument("--config", required=True, help="run-config YAML, or a search-space YAML (its `base` section)")
    p.add_argument("--fold", type=int, required=True, help="DFEW fold 1-5")
    p.add_argument("--workers", type=int, default=1, help="data-parallel training workers (default 1)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="logical CPUs per worker (default: the cluster CPUs shared evenly)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (default 0: CPU, gloo)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--name", default=None, help="run name (default train-<config>-fold<k>); the same name resumes")
    p.add_argument("--fresh", action="store_true", help="delete an existing run of this name and start over")
    p.add_argument("--selection", choices=["val", "test"], default="val",
                   help="val: select on the inner-val split (default); test: paper parity, best-on-test (optimistic)")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts from the last checkpoint")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    add_storage_args(p)
    p.set_defaults(func=run)


def check_flags(args: argparse.Namespace) -> None:
    """Flag values that need no cluster to judge, checked before Ray starts."""
    if not 1 <= args.fold <= 5:
        raise ValueError(f"--fold: must be 1-5, got {args.fold}")
    if args.workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {args.workers}")
    if args.cpus_per_worker is not None and args.cpus_per_worker <= 0:
        raise ValueError(f"--cpus-per-worker: must be > 0, got {args.cpus_per_worker}")
    if args.gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker: must be >= 0, got {args.gpus_per_worker}")
    if args.max_failures < -1:
        raise ValueError(f"--max-failures: must be >= 0 (or -1: retry forever), got {args.max_failures}")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name) or args.name in (".", ".."):
        raise ValueError(f"--name: letters, digits, '_', '.' and '-' only, got {args.name!r}")


def run(args: argparse.Namespace) -> int:
    from ifdd.runconfig import load_run_config, with_overrides
    from orchestrator.datasets import ensure_dataset
    from orchestrator.preempt import PREEMPTED_EXIT, preempted
    from orchestrator.ray_env import init_ray, size_workers
    from orchestrator.report_text import print_train_outcome
    from orchestrator.train import run_training, write_summary

    check_flags(args)
    cfg = load_run_config(args.config)
    if args.epochs is not None:
        cfg = with_overrides(cfg, {"train.epochs": args.epochs})
    storage = resolve_storage(args)  # a bad --storage or a nearly full disk fails before any data is written
    cfg = ensure_dataset(cfg)
    name = args.name or f"train-{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(args.config).stem)}-fold{args.fold}"
    cluster = init_ray(args.address)
    res = size_workers(cluster, args.workers, args.cpus_per_worker, args.gpus_per_worker)
    print(f"run {name}: fold {args.fold}, {res.workers} worker(s) × {res.cpus_per_worker:g} CPU"
          f"{f' × {res.gpus_per_worker:g} GPU' if res.use_gpu else ''}, storage {storage}")
    outcome = run_training(cfg, args.fold, name=name, storage=str(storage), res=res, selection=args.selection,
                           max_failures=args.max_failures, fresh=args.fresh)
    if preempted():  # aborted by SIGTERM: checkpoints kept, nothing tested or summarised (cli.main says so)
        return PREEMPTED_EXIT
    test = None
    if outcome.status == "finished" and outcome.checkpoint_dir:
        from ifdd.pipeline import evaluate_checkpoint

        test = evaluate_checkpoint(Path(outcome.checkpoint_dir) / "best.pt", cfg, args.fold, role="test")
    print_train_outcome(outcome, test, fold=args.fold, selection=args.selection)
    write_summary(Path(storage).parent / "train" / name / "summary.json", {
        "name": name, "fold": args.fold, "selection": args.selection, "status": outcome.status,
        "reason": outcome.reason, "best_epoch": outcome.best_epoch, "best_val": outcome.best_val, "test": test,
        "history": outcome.history, "checkpoint": outcome.checkpoint_dir})
    if outcome.status != "finished":
        print(f"error: training stopped: {outcome.reason}", file=sys.stderr)
        return 1
    return 0
