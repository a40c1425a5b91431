"""One run of one config on one fold: a Ray Train ``TorchTrainer`` over N DDP workers, then one test evaluation.

``make_trainer`` is shared with the search (one trainer per Tune trial); ``run_training`` is ``ifdd train``.
Runs are named deterministically, so starting the same name with the same storage again continues from the last
checkpoint (Ray Train restores ``storage/name``), and ``FailureConfig(max_failures)`` restarts a worker group that
lost a worker from its last checkpoint. Every run carries a fingerprint (fold, selection, config hash, manifest hash;
orchestrator/protocol.py): continuing a run under another one is refused, here before Ray Train starts when the
storage is local, and in the workers' restore in any case.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ifdd.config import to_dict
from ifdd.runconfig import RunConfig
from orchestrator.planner import WorkerResources
from orchestrator.protocol import check_fingerprint, run_fingerprint


@dataclass(frozen=True)
class TrainOutcome:
    name: str
    status: str
    """``finished`` or ``nonfinite`` (stopped on a NaN/inf loss)."""
    reason: str
    history: list[dict[str, Any]]
    checkpoint_dir: str | None
    best_epoch: int
    best_val: dict[str, Any]


def fingerprint_of(cfg: RunConfig, fold: int, selection: str) -> dict[str, Any]:
    """The run's fingerprint; the manifest hash is read from the manifest the config names."""
    from ifdd.data.manifest import load_manifest

    sha = str(load_manifest(cfg.data.manifest).attrs["ifdd"].get("content_sha256", ""))
    return run_fingerprint(to_dict(cfg), fold, selection, sha)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``checkpoint_<timestamp>`` folder of a Train run on local storage (names sort by time)."""
    found = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir()) if run_dir.is_dir() else []
    return found[-1] if found else None


def check_resumable(run_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Refuse to continue a run whose newest usable checkpoint was written under another fingerprint (another
    fold, selection rule, config or manifest): its best checkpoint would be tested as if it were this run's. A
    checkpoint that fails its checksum is passed over here, as the resume itself passes over it (with a warning,
    in the worker); none usable: nothing to check, the worker says what it finds."""
    from ifdd.checkpoint import CheckpointError, checkpoint_dirs_newest_first, load_first_valid

    found = checkpoint_dirs_newest_first(run_dir)
    if not found:
        return
    try:
        _, files = load_first_valid(found, ("state.pt",), warn=lambda _msg: None)
    except CheckpointError:
        return
    check_fingerprint(files["state.pt"].get("fingerprint"), fingerprint, f"run {run_dir.name} ({run_dir})",
                      "start it over with --fresh, or give this run another --name")


@functools.cache
def _trainer_class():
    """``TorchTrainer`` without Train's Ray Data actor when the run passes no Ray Datasets (ours never does: each
    worker reads its clips itself). Train V2 starts a ``DatasetManager`` actor per run whatever ``datasets`` holds; on
    2 cores that process (it imports Ray Data) cost about 2 s of CPU per trial for nothing (docs/stack.md P22)."""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks import DatasetsCallback

    class Trainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            return callbacks if self.datasets else [c for c in callbacks if not isinstance(c, DatasetsCallback)]

    return Trainer


def make_trainer(cfg: RunConfig, fold: int, *, name: str, storage: str, res: WorkerResources, selection: str = "val",
                 max_failures: int = 2, callbacks: list | None = None, backend: str = "auto"):
    import ray.train
    from ray.train.torch import TorchConfig

    from orchestrator.training.worker import train_loop_per_worker

    # Ray Train's PreemptionWatcher is one more actor process per worker group that only logs node drains (and logs
    # an error line about its own restart arguments on every start); a preempted worker group is restarted from its
    # last checkpoint by FailureConfig either way. Set before the trainer exists: Train passes the variable on to
    # its controller. An explicit RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1 is respected.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # The controller polls its workers every 2 s by default, so a finished run (and each epoch's report to Tune)
    # waits up to 2 s to be seen; 0.5 s costs a few small RPCs per second (docs/stack.md P22). Same rule: an
    # explicit value is respected.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    fingerprint = fingerprint_of(cfg, fold, selection)
    if "://" not in storage:
        check_resumable(Path(storage) / name, fingerprint)
    return _trainer_class()(
        train_loop_per_worker,
        train_loop_config={"run": to_dict(cfg), "fold": fold, "selection": selection, "threads": res.threads,
                           "label": name, "fingerprint": fingerprint},
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers, use_gpu=res.use_gpu,
            resources_per_worker={"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.use_gpu else {})}),
        torch_config=TorchConfig(backend=("nccl" if res.use_gpu else "gloo") if backend == "auto" else backend),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # max_failures: worker-group restarts from the last checkpoint; the controller limit turns a worker
            # group that can never be placed into an error instead of an endless retry (docs/stack.md P4).
            failure_config=ray.train.FailureConfig(max_failures=max_failures, controller_failure_limit=3),
            callbacks=callbacks or []),
    )


def outcome_from_result(name: str, result) -> TrainOutcome:
    ckpt = result.checkpoint.path if result.checkpoint is not None else None
    best_epoch, best_val, history, stop = 0, {}, [], ""
    if ckpt:
        from ifdd.checkpoint import load_checkpoint

        history = list(load_checkpoint(Path(ckpt) / "state.pt").get("history", []))
        if (Path(ckpt) / "stop.json").is_file():
            stop = json.loads((Path(ckpt) / "stop.json").read_text())["reason"]
        if (Path(ckpt) / "best.pt").is_file():
            best = load_checkpoint(Path(ckpt) / "best.pt")
            best_epoch, best_val = int(best["epoch"]), dict(best["metrics"])
    history = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in h.items()} for h in history]
    return TrainOutcome(name, "nonfinite" if stop else "finished", stop, history, ckpt, best_epoch, best_val)


def run_training(cfg: RunConfig, fold: int, *, name: str, storage: str, res: WorkerResources,
                 selection: str = "val", max_failures: int = 2, fresh: bool = False) -> TrainOutcome:
    run_dir = Path(storage) / name
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    trainer = make_trainer(cfg, fold, name=name, storage=storage, res=res, selection=selection,
                           max_failures=max_failures)
    return outcome_from_result(name, trainer.fit())
