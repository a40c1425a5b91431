"""Per-worker training loop for a Ray Train V2 ``TorchTrainer``: one run config on one fold.

Every epoch each worker trains on its DistributedSampler shard of the inner-train split, the val split is evaluated
across all workers (gathered, de-duplicated by clip id), and every rank calls ``ray.train.report`` with the same
metrics; rank 0 attaches a checkpoint directory holding

- ``state.pt``: model, optimizer, schedule, scaler, epoch, RNG states, the resolved run config, best-so-far info
  and the metrics of every epoch so far (Ray's result keeps only the retained checkpoints' metrics);
- ``best.pt``:  the weights of the best epoch so far on the selection metric (carried forward every epoch, so the
  latest checkpoint always holds the best model).

Both are written atomically with a checksum (``ifdd.checkpoint``). A restarted worker group (a killed worker under
``FailureConfig(max_failures)``, or the same run name started again) resumes from ``ray.train.get_checkpoint()``;
if that checkpoint fails its checksum (corrupt, or cut short by a full disk), it falls back to the run's previous
checkpoint with a warning (``ifdd.checkpoint.load_first_valid``).

The test split is never touched here: ``orchestrator.evaluate`` tests the chosen checkpoint once, afterwards.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from ifdd.checkpoint import capture_rng_state, load_first_valid, restore_rng_state, save_checkpoint
from ifdd.config import to_dict
from ifdd.engine import (
    LRSchedule,
    NonFiniteLossError,
    build_optimizer,
    evaluate,
    make_grad_scaler,
    torch_distributed_gather,
    train_one_epoch,
)
from ifdd.loss import IFDDLoss
from ifdd.model import build_model
from ifdd.pipeline import build_split_loaders
from ifdd.runconfig import run_config_from_dict
from ifdd.weights import load_k400_weights


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


def _best_payload(best: dict, best_weights, cfg) -> dict[str, Any]:
    return {"model": best_weights, "epoch": best["epoch"], "config": to_dict(cfg), "metrics": best["metrics"]}


def _selected(best: dict) -> dict[str, Any]:
    """The best checkpoint so far: its epoch and its val metrics (what the search ranks trials by: ``ckpt_*``).
    Before any finished epoch they are 0, the worst value, so a trial that never finished an epoch never wins."""
    m = best.get("metrics") or {}
    return {"best_epoch": best["epoch"], "ckpt_val_uar": float(m.get("val_uar", 0.0)),
            "ckpt_val_war": float(m.get("val_war", 0.0)), "infeasible": 0}


def _report_stop(rank: int, epoch: int, reason: str, history: list, best: dict, best_weights, cfg) -> None:
    """Report a stopped run. Ray keeps only checkpointed reports in the result, so rank 0 attaches a checkpoint
    holding ``stop.json`` (the reason), the history so far and the best weights so far (if any epoch finished)."""
    metrics = {"epoch": epoch, "stop_reason": reason, **_selected(best)}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="ifdd-stop-") as d:
        (Path(d) / "stop.json").write_text(json.dumps({"epoch": epoch, "reason": reason}))
        save_checkpoint(Path(d) / "state.pt", {"epoch": epoch - 1, "history": history + [metrics], "best": best,
                                               "config": to_dict(cfg)})
        if best_weights is not None:
            save_checkpoint(Path(d) / "best.pt", _best_payload(best, best_weights, cfg))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


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
    """The checkpoint Ray hands back, then the run's older checkpoints on local storage, newest first
    (``checkpoint_<timestamp>`` names sort by time): the fallbacks if the latest fails its checksum."""
    older = sorted((p for p in latest.parent.glob("checkpoint_*") if p.is_dir() and p.name < latest.name),
                   reverse=True) if latest.name.startswith("checkpoint_") else []
    return [latest, *older]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config``: ``run`` (run-config dict), ``fold``, ``selection`` (val|test), ``threads``.

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
    node_id = ray.get_runtime_context().get_node_id()
    torch.manual_seed(cfg.train.seed + rank)

    if cfg.train.batch_size % world:
        raise ValueError(f"train.batch_size: {cfg.train.batch_size} is not divisible by {world} workers")
    loaders = build_split_loaders(cfg, fold, selection=selection, batch_size=cfg.train.batch_size // world,
                                  eval_batch_size=max(1, cfg.train.eval_batch_size // world))
    train_loader = ray.train.torch.prepare_data_loader(loaders.train, move_to_device=False)
    val_loader = ray.train.torch.prepare_data_loader(loaders.val, move_to_device=False)

    model = build_model(cfg.model)
    if cfg.train.init_weights and ray.train.get_checkpoint() is None:
        report = load_k400_weights(model, cfg.train.init_weights)
        if rank == 0:
            print(f"backbone from {cfg.train.init_weights}: {len(report.loaded)} tensors loaded, "
                  f"{len(report.missing)} left at init, {len(report.unexpected)} unexpected", flush=True)
    model = ray.train.torch.prepare_model(model.to(device), move_to_device=device)
    loss_fn = IFDDLoss(cfg.loss, cfg.model.num_classes, loaders.class_counts).to(device)
    optimizer = build_optimizer(model, cfg.optim, cfg.train.batch_size)
    steps = len(train_loader) if cfg.train.max_steps_per_epoch is None else min(
        len(train_loader), cfg.train.max_steps_per_epoch)
    schedule = LRSchedule.from_config(optimizer, cfg.optim, global_batch=cfg.train.batch_size,
                                      epochs=cfg.train.epochs, steps_per_epoch=max(1, steps))
    scaler = make_grad_scaler(device, cfg.optim.amp)

    start_epoch, best = 1, {"epoch": 0, "value": float("-inf"), "metrics": {}}
    best_weights, history = None, []
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as latest:
            d, files = load_first_valid(_resume_candidates(Path(latest)), ("state.pt", "best.pt"), device,
                                        warn=lambda msg: print(f"warning: rank {rank}: {msg}", flush=True))
            if (d / "stop.json").is_file():
                raise RuntimeError(f"this run stopped: {json.loads((d / 'stop.json').read_text())['reason']}; "
                                   "start it again with --fresh (or another --name) after fixing the config")
            state = files["state.pt"]
            _unwrap(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            restore_rng_state(state["rng"])
            best = state["best"]
            history = list(state.get("history", []))
            best_weights = files["best.pt"]["model"] if "best.pt" in files else None
            start_epoch = int(state["epoch"]) + 1

    step_loss = _collective_loss(loss_fn)
    select = cfg.train.select_metric
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        try:
            stats = train_one_epoch(model, train_loader, step_loss, optimizer, schedule, device=device,
                                    batch_transform=loaders.batch_transform, grad_clip=cfg.optim.grad_clip,
                                    amp=cfg.optim.amp, scaler=scaler, max_steps=cfg.train.max_steps_per_epoch,
                                    epoch=epoch)
        except NonFiniteLossError as e:
            _report_stop(rank, epoch, f"non-finite loss: {' '.join(str(e).split())}", history, best, best_weights, cfg)
            return
        val = evaluate(model, val_loader, device=device, num_classes=cfg.model.num_classes,
                       gather=torch_distributed_gather if world > 1 else None)
        epoch_s = time.perf_counter() - t0
        metrics = {
            "epoch": epoch, "train_loss": stats["loss"], "train_ce": stats.get("ce"), "train_gc": stats.get("gc"),
            "val_uar": val["uar"], "val_war": val["war"], "val_loss": val["loss"], "val_clips": val["clips"],
            "lr": stats["lr"], "clips_per_s": stats["clips_per_s"] * world, "epoch_s": epoch_s,
            "world_size": world, "start_epoch": start_epoch, "node_id": node_id,
        }
        score = metrics[select]
        if score > best["value"]:
            best = {"epoch": epoch, "value": score,
                    "metrics": {"val_uar": val["uar"], "val_war": val["war"],
                                "val_per_class_recall": val["per_class_recall"],
                                "val_confusion": val["confusion"]}}
            best_weights = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
        metrics.update(_selected(best))
        history.append(metrics)
        if rank == 0:
            print(f"{config.get('label', 'run')} epoch {epoch}/{cfg.train.epochs} fold {fold}: "
                  f"train_loss {stats['loss']:.4f} "
                  f"{select} {score:.4f} (best {best['value']:.4f} @ {best['epoch']}) lr {stats['lr']:.2e} "
                  f"{metrics['clips_per_s']:.1f} clips/s", flush=True)
            with tempfile.TemporaryDirectory(prefix="ifdd-ckpt-") as d:
                save_checkpoint(Path(d) / "state.pt", {
                    "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "scaler": scaler.state_dict() if scaler else {},
                    "epoch": epoch, "rng": capture_rng_state(), "best": best, "history": history,
                    "config": to_dict(cfg), "fold": fold, "selection": selection})
                save_checkpoint(Path(d) / "best.pt", _best_payload(best, best_weights, cfg))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
