"""Per-worker training loop for a Ray Train V2 ``TorchTrainer``: one run config on one fold.

Every epoch each worker trains on its DistributedSampler shard of the inner-train split, the val split is evaluated
across all workers (gathered, de-duplicated by clip id), and every rank calls ``ray.train.report`` with the same
metrics; rank 0 attaches a checkpoint directory holding

- ``state.pt``: model, optimizer, schedule, scaler, epoch, RNG states, the resolved run config, best-so-far info
  and the metrics of every epoch so far (Ray's result keeps only the retained checkpoints' metrics);
- ``best.pt``:  the weights of the best epoch so far on the selection metric (carried forward every epoch, so the
  latest checkpoint always holds the best model);
- ``selection.json``: that epoch's per-clip predictions on the selection split (orchestrator/training/records.py);
- ``rng_rank<r>.pt``: each rank's RNG streams (every rank reports its own file into the shared directory).

``state.pt``, ``best.pt`` and ``selection.json`` carry the run's fingerprint (fold, selection, config hash, manifest
hash; orchestrator/protocol.py): a restore under another fingerprint is refused, naming the difference.

Both are written atomically with a checksum (``ifdd.checkpoint``). A restarted worker group (a killed worker under
``FailureConfig(max_failures)``, or the same run name started again) resumes from ``ray.train.get_checkpoint()``;
if that checkpoint fails its checksum (corrupt, or cut short by a full disk), it falls back to the run's previous
checkpoint with a warning (``ifdd.checkpoint.load_first_valid``). A restored run that had already finished trains
nothing and re-reports its last epoch with a fresh checkpoint, so the driver (and Tune) get a current result.

The epoch loop itself is ``ifdd.engine.fit`` (the same loop the benchmarks run); this module adds what Ray Train
needs around it: the DDP model and loaders, the report of every epoch and rank 0's checkpoints, and the resume. The
test split is never touched here: the chosen checkpoint is tested once, afterwards (orchestrator/search/selection.py).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from ifdd.checkpoint import capture_rng_state, load_first_valid, restore_rng_state, save_checkpoint
from ifdd.config import to_dict
from ifdd.engine import FitState, fit, torch_distributed_gather
from ifdd.model import build_model
from ifdd.pipeline import build_split_loaders, build_training, rank_seed
from ifdd.runconfig import RunConfig, run_config_from_dict
from ifdd.weights import load_init_weights
from orchestrator.console import epoch_line
from orchestrator.protocol import check_fingerprint, metric_name
from orchestrator.training.records import records_payload, rng_file, write_selection


def _say(line: str) -> None:
    """One line on the worker's stdout, relayed once to the driver. Ray Train V2 replaces ``print`` in its workers
    with a copy to stdout plus an INFO record on the root logger, whose handler writes to stderr: a printed line
    would reach the driver twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _collective_loss(loss_fn):
    """Make a non-finite loss on any rank non-finite on every rank, so all ranks stop together.

    Without this, one rank raising before ``backward`` leaves the others waiting in the gradient all-reduce forever.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return loss_fn

    def wrapped(output, target):
        loss, parts = loss_fn(output, target)
        bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).item() else 1.0])
        dist.all_reduce(bad)
        if bad.item() > 0 and torch.isfinite(loss.detach()).item():
            loss = loss * float("nan")
            parts = {**parts, "note": "non-finite loss on another rank"}
        return loss, parts

    return wrapped


def _best_payload(state: FitState, cfg: RunConfig, fingerprint: dict[str, Any]) -> dict[str, Any]:
    return {"model": state.best_weights, "epoch": state.best["epoch"], "config": to_dict(cfg),
            "metrics": state.best["metrics"], "fingerprint": fingerprint}


class RecordTap:
    """The ``gather`` of ``ifdd.engine.fit`` (all ranks' records, or this process's when not data-parallel) that
    keeps the last evaluation's per-clip records, so the best epoch's predictions can be saved."""

    def __init__(self, inner=None):
        self.inner, self.last = inner, None

    def __call__(self, records):
        self.last = self.inner(records) if self.inner is not None else list(records)
        return self.last

    def take(self):
        last, self.last = self.last, None
        return last


def _quiet_ray_train_logs() -> None:
    """Ray Train V2 logs every report and checkpoint at INFO with the full metrics dict (private loggers); the
    loop prints one line per epoch instead."""
    try:
        from ray.train.v2._internal.execution import context as ctx_mod
        from ray.train.v2._internal.execution import storage as storage_mod
    except ImportError:  # layout changed: keep Ray's logs
        return
    logging.getLogger(ctx_mod.__file__).setLevel(logging.WARNING)
    logging.getLogger(storage_mod.__name__).setLevel(logging.WARNING)


def _resume_candidates(latest: Path) -> list[Path]:
    """The checkpoint Ray hands back, then the run's older checkpoints on local storage, newest first: the
    fallbacks if the latest fails its checksum."""
    from ifdd.checkpoint import checkpoint_dirs_newest_first

    if not latest.name.startswith("checkpoint_"):
        return [latest]
    return [latest, *(p for p in checkpoint_dirs_newest_first(latest.parent) if p.name < latest.name)]


def _restore(ckpt, rank: int, device, model, parts, fingerprint: dict[str, Any], seed: int) -> FitState:
    """The fit state saved in Ray's latest checkpoint (or an older one if it fails its checksum); the model,
    optimizer, schedule, scaler and this rank's RNG streams are restored in place. Refused when the checkpoint was
    written under another fingerprint (fold, selection, config, manifest)."""
    with ckpt.as_directory() as latest:
        d, files = load_first_valid(_resume_candidates(Path(latest)), ("state.pt", "best.pt"), device,
                                    warn=lambda msg: _say(f"warning: rank {rank}: {msg}"))
        if (d / "stop.json").is_file():
            raise RuntimeError(f"this run stopped: {json.loads((d / 'stop.json').read_text())['reason']}; "
                               "start it again with --fresh (or another --name) after fixing the config")
        saved = files["state.pt"]
        check_fingerprint(saved.get("fingerprint"), fingerprint, f"checkpoint {d}",
                          "start it over with --fresh, or give this run another name")
        _unwrap(model).load_state_dict(saved["model"])
        parts.optimizer.load_state_dict(saved["optimizer"])
        parts.schedule.load_state_dict(saved["schedule"])
        if parts.scaler is not None and saved.get("scaler"):
            parts.scaler.load_state_dict(saved["scaler"])
        _restore_rank_rng(d, rank, seed, int(saved["epoch"]))
        return FitState(epoch=int(saved["epoch"]), best=saved["best"], history=list(saved.get("history", [])),
                        best_weights=files["best.pt"]["model"] if "best.pt" in files else None)


def _restore_rank_rng(d: Path, rank: int, seed: int, epoch: int) -> None:
    """This rank's own RNG streams from ``rng_rank<rank>.pt``; without a usable one (a rank added on resume, a
    damaged file) a fresh stream per (seed, rank, epoch), never another rank's state."""
    from ifdd.checkpoint import CheckpointError, load_checkpoint

    try:
        restore_rng_state(load_checkpoint(d / rng_file(rank))["rng"])
    except (CheckpointError, FileNotFoundError) as e:
        _say(f"warning: rank {rank}: no usable RNG state in {d} ({' '.join(str(e).split())[:160]}); "
             "seeding a fresh stream for this rank")
        torch.manual_seed(rank_seed(seed * 100_003 + epoch, rank))


class Reporter:
    """The fit's hooks inside Ray Train: every rank reports every epoch (Ray needs the same number of reports
    from each rank); rank 0 prints one line and attaches the checkpoint directory (state.pt + best.pt)."""

    def __init__(self, rank: int, cfg: RunConfig, fold: int, selection: str, label: str, model, parts,
                 fingerprint: dict[str, Any], tap: RecordTap):
        self.rank, self.cfg, self.fold, self.selection, self.label = rank, cfg, fold, selection, label
        self.model, self.parts, self.fingerprint, self.tap = model, parts, fingerprint, tap
        self.warned_classes = False

    def on_epoch(self, metrics: dict[str, Any], state: FitState) -> None:
        records = self.tap.take()
        if records is not None and state.best["epoch"] == metrics["epoch"]:
            state.best["records"] = records_payload(records)  # this epoch is the new best: keep its predictions
        with tempfile.TemporaryDirectory(prefix="ifdd-ckpt-") as d:
            # every rank saves its own RNG streams; Ray gathers all ranks' files into one checkpoint directory
            save_checkpoint(Path(d) / rng_file(self.rank), {"rng": capture_rng_state()})
            if self.rank == 0:
                self._print(metrics, state)
                self._save(Path(d), state)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    def rereport(self, state: FitState) -> None:
        """A restored run that had already finished: report its last epoch again, with a fresh checkpoint."""
        if self.rank == 0:
            _say(f"{self.label}: already finished (epoch {state.epoch}); re-reporting its last epoch")
        self.on_epoch(dict(state.history[-1]), state)

    def _print(self, metrics: dict[str, Any], state: FitState) -> None:
        select = self.cfg.train.select_metric
        _say(epoch_line(self.label, metrics["epoch"], self.cfg.train.epochs, self.fold, metrics, select,
                        state.best["value"], state.best["epoch"], shown=metric_name(select, self.selection)))
        classes = metrics.get("val_classes")
        if classes is not None and classes < self.cfg.model.num_classes and not self.warned_classes:
            self.warned_classes = True
            _say(f"warning: {self.label} fold {self.fold}: the selection split holds clips of {classes} of "
                 f"{self.cfg.model.num_classes} classes; its UAR is the mean over those {classes}")

    def _save(self, d: Path, state: FitState) -> None:
        p = self.parts
        save_checkpoint(d / "state.pt", {
            "model": _unwrap(self.model).state_dict(), "optimizer": p.optimizer.state_dict(),
            "schedule": p.schedule.state_dict(), "scaler": p.scaler.state_dict() if p.scaler else {},
            "epoch": state.epoch, "best": state.best, "history": state.history, "config": to_dict(self.cfg),
            "fold": self.fold, "selection": self.selection, "fingerprint": self.fingerprint})
        save_checkpoint(d / "best.pt", _best_payload(state, self.cfg, self.fingerprint))
        if state.best.get("records"):
            write_selection(d, self.fingerprint, self.selection, state.best["epoch"], state.best["records"])

    def on_stop(self, metrics: dict[str, Any], state: FitState) -> None:
        """A stopped run. Ray keeps only checkpointed reports in the result, so rank 0 attaches a checkpoint holding
        ``stop.json`` (the reason), the history so far and the best weights so far (if any epoch finished)."""
        if self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="ifdd-stop-") as d:
            (Path(d) / "stop.json").write_text(json.dumps({"epoch": metrics["epoch"], "reason": state.stop_reason}))
            save_checkpoint(Path(d) / "state.pt", {"epoch": state.epoch, "history": state.history,
                                                   "best": state.best, "config": to_dict(self.cfg),
                                                   "fingerprint": self.fingerprint})
            if state.best_weights is not None:
                save_checkpoint(Path(d) / "best.pt", _best_payload(state, self.cfg, self.fingerprint))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config``: ``run`` (run-config dict), ``fold``, ``selection`` (val|test), ``threads``,
    ``label`` (the run's name, printed on each epoch line), ``fingerprint`` (orchestrator/protocol.py
    ``run_fingerprint``, computed by the driver).

    A non-finite loss ends every rank's loop after reporting ``{"epoch", "stop_reason"}``; rank 0's report carries
    a checkpoint with ``stop.json`` so the driver sees the stop in the result.
    """
    _quiet_ray_train_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    cfg = run_config_from_dict(config["run"])
    fold, selection = int(config["fold"]), config.get("selection", "val")
    # Ray assigns a CUDA device to a worker that reserved a GPU; a logical GPU on a CPU box (tests, or a
    # mislabelled node) has none, so train on the CPU there instead of failing in .to("cuda").
    device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(rank_seed(cfg.train.seed, rank))

    if cfg.train.batch_size % world:
        raise ValueError(f"train.batch_size: {cfg.train.batch_size} is not divisible by {world} workers")
    loaders = build_split_loaders(cfg, fold, selection=selection, batch_size=cfg.train.batch_size // world,
                                  eval_batch_size=max(1, cfg.train.eval_batch_size // world), device=device,
                                  rank=rank)
    train_loader = ray.train.torch.prepare_data_loader(loaders.train, move_to_device=False)
    val_loader = ray.train.torch.prepare_data_loader(loaders.val, move_to_device=False)

    model = build_model(cfg.model)
    ckpt = ray.train.get_checkpoint()
    if cfg.train.init_weights and ckpt is None:
        report = load_init_weights(model, cfg.train.init_weights)
        if rank == 0:
            _say(f"backbone from {cfg.train.init_weights}: {report.summary()}")
    model = ray.train.torch.prepare_model(model.to(device), move_to_device=device)
    parts = build_training(cfg, model, loaders.class_counts, steps_per_epoch=len(train_loader), device=device)
    fingerprint = dict(config["fingerprint"])
    state = _restore(ckpt, rank, device, model, parts, fingerprint, cfg.train.seed) if ckpt else None
    tap = RecordTap(torch_distributed_gather if world > 1 else None)
    hooks = Reporter(rank, cfg, fold, selection, config.get("label", "run"), model, parts, fingerprint, tap)
    restored = state.epoch if state else 0
    state = fit(model, train_loader, val_loader, _collective_loss(parts.loss_fn), parts.optimizer, parts.schedule,
        epochs=cfg.train.epochs, select_metric=cfg.train.select_metric, device=device,
        num_classes=cfg.model.num_classes, state=state, batch_transform=loaders.batch_transform,
        grad_clip=cfg.optim.grad_clip, amp=cfg.optim.amp, scaler=parts.scaler,
        max_steps=cfg.train.max_steps_per_epoch, gather=tap, world=world,
        tags={"node_id": ray.get_runtime_context().get_node_id()}, on_epoch=hooks.on_epoch, on_stop=hooks.on_stop)
    if restored and state.epoch == restored and state.history and not state.stop_reason:
        hooks.rereport(state)  # nothing left to train: without a report the driver would keep a stale result
