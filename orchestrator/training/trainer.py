"""One run of one config on one fold: a Ray Train ``TorchTrainer`` over N DDP workers, then one test evaluation.

``make_trainer`` is shared with the search (one trainer per Tune trial); ``run_training`` is ``ifdd train``.
Runs are named deterministically, so starting the same name with the same storage again continues from the last
checkpoint (Ray Train restores ``storage/name``), and ``FailureConfig(max_failures)`` restarts a worker group that
lost a worker from its last checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ifdd.config import to_dict
from ifdd.runconfig import RunConfig
from orchestrator.planner import WorkerResources


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


def make_trainer(cfg: RunConfig, fold: int, *, name: str, storage: str, res: WorkerResources, selection: str = "val",
                 max_failures: int = 2, callbacks: list | None = None, backend: str = "auto"):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from orchestrator.training.worker import train_loop_per_worker

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": to_dict(cfg), "fold": fold, "selection": selection, "threads": res.threads,
                           "label": name},
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
