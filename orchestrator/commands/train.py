"""`ifdd train`: one run config on one fold over N Ray Train DDP workers, then one test evaluation."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from orchestrator.commands.options import add_output_args, add_verbose_arg, outputs
from orchestrator.planner import FLAG_NAMES, check_values
from orchestrator.protocol import clip_count, label, metric_name, selection_split, test_warnings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one config on one fold (inner-train -> inner-val each epoch -> test once)",
        description="Train one config on one DFEW fold with Ray Train: inner-train -> inner-val every epoch, then "
                    "the best-on-val checkpoint is tested once on the fold's test split.")
    p.add_argument("--config", required=True,
                   help="run-config YAML, or a search-space YAML (its `base` section), or a shipped search space by "
                        "name (`ifdd search --list`)")
    p.add_argument("--fold", type=int, required=True, help="DFEW fold 1-5")
    p.add_argument("--workers", type=int, default=1, help="data-parallel training workers (default 1)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="logical CPUs per worker (default: the cluster CPUs shared evenly)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (default 0: CPU, gloo)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--name", default=None,
                   help="run name (default train-<config>-fold<k>-<selection>); the same name resumes a run of the "
                        "same fold, selection, config and manifest, and refuses any other")
    p.add_argument("--fresh", action="store_true", help="delete an existing run of this name and start over")
    p.add_argument("--selection", choices=["val", "test"], default="val",
                   help="val: select on the inner-val split (default); test: paper parity, best-on-test (optimistic)")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts from the last checkpoint")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    add_output_args(p, stores=False)
    add_verbose_arg(p)
    p.set_defaults(func=run)


def check_flags(args: argparse.Namespace) -> None:
    """Flag values that need no cluster to judge, checked before Ray starts."""
    if not 1 <= args.fold <= 5:
        raise ValueError(f"--fold: must be 1-5, got {args.fold}")
    check_values(args.workers, args.cpus_per_worker, args.gpus_per_worker, FLAG_NAMES)
    if args.max_failures < -1:
        raise ValueError(f"--max-failures: must be >= 0 (or -1: retry forever), got {args.max_failures}")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name) or args.name in (".", ".."):
        raise ValueError(f"--name: letters, digits, '_', '.' and '-' only, got {args.name!r}")


def run(args: argparse.Namespace) -> int:
    from ifdd.runconfig import load_run_config, with_overrides
    from orchestrator.console import console_session
    from orchestrator.search.shipped import resolve_space

    check_flags(args)
    config = resolve_space(args.config, "--config")
    cfg = load_run_config(config)
    if args.epochs is not None:
        cfg = with_overrides(cfg, {"train.epochs": args.epochs})
    out = outputs(args).prepare()  # a bad --runs/--storage or a nearly full disk fails before any data is written
    name = args.name or default_name(config, args.fold, args.selection)
    with console_session("train", out.logs_dir, verbose=args.verbose) as console:
        return train(args, cfg, out, name, console)


def train(args: argparse.Namespace, cfg, out, name: str, console) -> int:
    from orchestrator.inputs import ensure_dataset
    from orchestrator.outputs import write_json
    from orchestrator.planner import size_workers
    from orchestrator.preempt import PREEMPTED_EXIT, preempted
    from orchestrator.ray_session import init_ray
    from orchestrator.search.progress import TrainProgress
    from orchestrator.training.trainer import run_training

    cfg = ensure_dataset(cfg, out)
    cluster = init_ray(args.address)
    console.attach_ray()
    res = size_workers(cluster, args.workers, args.cpus_per_worker, args.gpus_per_worker)
    print(f"run {name}: fold {args.fold}, {res.workers} worker(s) × {res.cpus_per_worker:g} CPU"
          f"{f' × {res.gpus_per_worker:g} GPU' if res.use_gpu else ''}; {out.describe()}")
    progress = TrainProgress(console, name, cfg.train.epochs, selection_split(args.selection))
    try:
        outcome = run_training(cfg, args.fold, name=name, storage=out.storage, res=res, selection=args.selection,
                               max_failures=args.max_failures, fresh=args.fresh)
    finally:
        progress.close()
    if preempted():  # aborted by SIGTERM: checkpoints kept, nothing tested or summarised (cli.main says so)
        return PREEMPTED_EXIT
    test, overlap = None, None
    if outcome.status == "finished" and outcome.checkpoint_dir:
        from ifdd.pipeline import evaluate_checkpoint

        overlap = check_run_leakage(outcome.checkpoint_dir, cfg, args.fold, args.selection)
        test = evaluate_checkpoint(Path(outcome.checkpoint_dir) / "best.pt", cfg, args.fold, role="test")
    print_train_outcome(outcome, test, fold=args.fold, selection=args.selection)
    write_json(out.train_dir(name) / "summary.json", {
        "name": name, "fold": args.fold, "selection": args.selection, "protocol": label("fold-wise", args.selection),
        "selection_split": selection_split(args.selection), "selection_test_overlap": overlap,
        "status": outcome.status, "reason": outcome.reason, "best_epoch": outcome.best_epoch,
        "best_val": outcome.best_val, "test": test, "history": outcome.history, "checkpoint": outcome.checkpoint_dir})
    print(f"saved {out.train_dir(name) / 'summary.json'}")
    if outcome.status != "finished":
        print(f"error: training stopped: {outcome.reason}", file=sys.stderr)
        return 1
    return 0


def default_name(config: str | Path, fold: int, selection: str) -> str:
    """``train-<config stem>-fold<k>-<selection>``: a parity run and a nested run of one config never share a name
    (and so never resume each other)."""
    return f"train-{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(config).stem)}-fold{fold}-{selection}"


def check_run_leakage(checkpoint_dir: str, cfg, fold: int, selection: str) -> int:
    """The leakage check before the one test evaluation: the clips the checkpoint was chosen on (its
    ``selection.json``) against every clip the fold's test split lists. Returns the overlap (0 when nested)."""
    from ifdd.data.manifest import listed_ids, load_manifest
    from orchestrator.protocol import check_leakage
    from orchestrator.training.records import read_selection

    chosen_on = read_selection(checkpoint_dir)["clip_id"]
    return check_leakage(chosen_on, listed_ids(load_manifest(cfg.data.manifest), fold, "test"), selection=selection,
                         fold=fold)


def _f(v, fmt: str = ".4f") -> str:
    return "-" if v is None else format(v, fmt)


def print_train_outcome(outcome, test: dict | None, *, fold: int, selection: str) -> None:
    uar, war = metric_name("val_uar", selection), metric_name("val_war", selection)
    print(f"\n{'epoch':>5} {'train_loss':>10} {uar:>8} {war:>8} {'lr':>9} {'clips/s':>8}")
    for row in outcome.history:
        if row.get("val_uar") is None:
            continue
        print(f"{int(row['epoch']):>5} {_f(row.get('train_loss')):>10} {_f(row.get('val_uar')):>8} "
              f"{_f(row.get('val_war')):>8} {_f(row.get('lr'), '.2e'):>9} {_f(row.get('clips_per_s'), '.1f'):>8}")
    if outcome.status != "finished":
        print(f"\nrun {outcome.name} stopped: {outcome.reason}")
        return
    print(f"\nbest epoch {outcome.best_epoch} on {selection_split(selection)}: UAR "
          f"{_f(outcome.best_val.get('val_uar'))} WAR {_f(outcome.best_val.get('val_war'))}")
    if test is not None:
        print(f"fold {fold} test: UAR {test['uar']:.4f} (over {test['uar_classes']} classes)  WAR {test['war']:.4f}  "
              f"({clip_count(test)}; {label('fold-wise', selection)})")
        for w in test_warnings(test, fold):
            print(f"warning: {w}")

