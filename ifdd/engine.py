"""Plain-PyTorch training engine: optimizer, lr schedule, one epoch of training, evaluation, and ``fit``, the one
epoch loop of the project.

No Ray here: ``orchestrator/training/worker.py`` runs ``fit`` inside a Ray Train worker (its hooks report to Ray and
write checkpoints), the benchmarks run it in-process, and the tests run it directly. Batches are dicts as a
default-collated DataLoader gives them: ``video`` (B, C, T, H, W) float, ``label`` (B,) long, ``clip_id`` list[str].
The recipe follows docs/model.md §9; metrics are in ``ifdd.metrics``, checkpoint files in ``ifdd.checkpoint``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ifdd.config import OptimConfig
from ifdd.metrics import confusion_matrix, per_class_recall, uar, war

__all__ = [
    "NonFiniteLossError", "Record", "default_device", "autocast", "make_grad_scaler", "build_optimizer", "LRSchedule",
    "train_one_epoch", "evaluate", "torch_distributed_gather", "FitState", "fit", "selected_metrics",
]

Record = tuple[str, list[float], int]
"""One evaluated clip: (clip_id, logits, label). Ranks exchange lists of these."""


class NonFiniteLossError(RuntimeError):
    """The training loss (or gradient norm) became NaN/inf; training stops instead of corrupting the weights."""


# Device / mixed precision ---------------------------------------------------------------------------------------
def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device | str, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in bf16/fp16 on CUDA; a no-op on CPU or with ``amp="off"``."""
    if amp not in ("off", "bf16", "fp16"):
        raise ValueError(f"amp: must be 'off', 'bf16' or 'fp16', got {amp!r}")
    if amp == "off" or torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def make_grad_scaler(device: torch.device | str, amp: str) -> torch.amp.GradScaler | None:
    """A GradScaler only for fp16 on CUDA (bf16 has fp32's exponent range and needs none)."""
    return torch.amp.GradScaler("cuda") if amp == "fp16" and torch.device(device).type == "cuda" else None


# Optimizer and schedule -----------------------------------------------------------------------------------------
def _no_decay(name: str, p: nn.Parameter) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return p.ndim <= 1 or leaf.startswith(("rel_pos", "pos_", "cls_token"))


def build_optimizer(model: nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.AdamW:
    """AdamW at the effective lr ``cfg.effective_lr(global_batch)`` (lr × global_batch / 32 by default).

    With ``decay_norm_bias`` (default, the reference) every trainable parameter is in one group with
    ``weight_decay``. Without it, biases, norm weights, the class token and relative-position tables form a second
    group with no decay. At wd 1e-3 and lr 5e-5 the difference is tiny, so parity is the default.
    """
    lr = cfg.effective_lr(global_batch)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.decay_norm_bias:
        groups = [{"params": [p for _, p in params], "weight_decay": cfg.weight_decay}]
    else:
        groups = [{"params": [p for n, p in params if not _no_decay(n, p)], "weight_decay": cfg.weight_decay},
                  {"params": [p for n, p in params if _no_decay(n, p)], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def _cosine(x: float, start: float, stop: float, high: float, low: float) -> float:
    """Half cosine from ``high`` at x=start to ``low`` at x=stop."""
    return low + (high - low) * 0.5 * (1.0 + math.cos(math.pi * (x - start) / (stop - start)))


# The reference's warmup target uses its scheduler's own defaults, not the configured ones (spec §5.1 quirk).
_REF_WARMUP_START, _REF_LR, _REF_END, _REF_OFFSET = 1e-6, 1e-4, 1e-6, 1.0


class LRSchedule:
    """Per-step learning rate: warmup, then cosine from ``base_lr`` to ``min_lr``.

    Call ``step()`` once before each optimizer step; it sets the lr of every param group and returns it.

    - ``linear``: step s < W (W = warmup_epochs × steps_per_epoch) gets base·(s+1)/W, so the ramp starts near 0 and
      reaches the base lr on the last warmup step; the cosine then falls to exactly ``min_lr`` on the last step.
    - ``reference``: the reference repo's per-epoch rule (constant within an epoch). Epoch e < W ramps linearly
      from 1e-6 towards a target computed from hard-coded defaults (the cosine with lr 1e-4, end 1e-6 and a 1-epoch
      offset, evaluated at epoch W); at epoch W the lr drops to ``base_lr`` and the cosine runs to ``min_lr`` at
      epoch ``epochs``. For lr 1e-4, batch 16, 100/10 epochs: e0 1e-6, e5 4.95e-5, e9 8.83e-5, e10 5e-5.
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None, *, base_lr: float, min_lr: float, epochs: int,
                 steps_per_epoch: int, warmup_epochs: int = 0, mode: str = "linear"):
        if epochs < 1 or steps_per_epoch < 1:
            raise ValueError(f"epochs/steps_per_epoch: must be >= 1, got {epochs}/{steps_per_epoch}")
        if warmup_epochs < 0 or (warmup_epochs and warmup_epochs >= epochs):
            raise ValueError(f"warmup_epochs: must be in [0, epochs={epochs}), got {warmup_epochs}")
        if mode not in ("linear", "reference"):
            raise ValueError(f"warmup_mode: must be 'linear' or 'reference', got {mode!r}")
        self.optimizer, self.base_lr, self.min_lr, self.mode = optimizer, base_lr, min_lr, mode
        self.epochs, self.steps_per_epoch, self.warmup_epochs = epochs, steps_per_epoch, warmup_epochs
        self.step_count = 0

    @classmethod
    def from_config(cls, optimizer: torch.optim.Optimizer | None, cfg: OptimConfig, *, global_batch: int,
                    epochs: int, steps_per_epoch: int) -> LRSchedule:
        base = cfg.effective_lr(global_batch)
        return cls(optimizer, base_lr=base, min_lr=base * cfg.min_lr_ratio, epochs=epochs,
                   steps_per_epoch=steps_per_epoch, warmup_epochs=cfg.warmup_epochs, mode=cfg.warmup_mode)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def lr_at_epoch(self, epoch: float) -> float:
        """The reference rule at (integer) ``epoch``; clamped to ``min_lr`` past the end."""
        e, E, W = min(epoch, self.epochs), self.epochs, self.warmup_epochs
        if e < W:
            target = _cosine(W, _REF_OFFSET, E, _REF_LR, _REF_END)
            return _REF_WARMUP_START + e * (target - _REF_WARMUP_START) / W
        return _cosine(e, W, E, self.base_lr, self.min_lr)

    def lr_at(self, step: int) -> float:
        if self.mode == "reference":
            return self.lr_at_epoch(step // self.steps_per_epoch)
        warm = self.warmup_epochs * self.steps_per_epoch
        if step < warm:
            return self.base_lr * (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, self.total_steps - 1 - warm))
        return _cosine(progress, 0.0, 1.0, self.base_lr, self.min_lr)

    def step(self) -> float:
        lr = self.lr_at(self.step_count)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.step_count += 1
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "steps_per_epoch": self.steps_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position. If the steps per epoch changed (e.g. another worker count on resume), the position
        is rescaled so that the same fraction of the run has elapsed."""
        step, spe = int(state["step"]), int(state.get("steps_per_epoch", self.steps_per_epoch))
        self.step_count = step if spe == self.steps_per_epoch else round(step * self.steps_per_epoch / spe)


# Training -------------------------------------------------------------------------------------------------------
def _as_float(output: dict[str, Any]) -> dict[str, Any]:
    # Under autocast the model's outputs may be bf16/fp16; the loss is computed in fp32.
    def cast(v: Any) -> Any:
        if torch.is_tensor(v) and v.is_floating_point():
            return v.float()
        return [cast(t) for t in v] if isinstance(v, list | tuple) else v
    return {k: cast(v) for k, v in output.items()}


def train_one_epoch(model: nn.Module, loader: Iterable[dict[str, Any]], loss_fn: Callable,
                    optimizer: torch.optim.Optimizer, schedule: LRSchedule | None, *, device: torch.device | str,
                    epoch: int = 0, batch_transform: Callable | None = None, grad_clip: float = 0.0,
                    amp: str = "off", scaler: torch.amp.GradScaler | None = None,
                    max_steps: int | None = None) -> dict[str, float]:
    """One pass over ``loader``. Returns this process's clip-weighted mean ``loss`` and parts (``ce``, ``gc``),
    ``clips``, ``steps``, ``clips_per_s``, ``time_s`` and the last ``lr``.

    Args:
        loss_fn: ``(model_output, target) -> (total, parts)``, e.g. ``IFDDLoss``.
        schedule: stepped once per batch before the optimizer step; None keeps the optimizer's lr.
        batch_transform: ``(video, labels) -> (video, targets)``, e.g. mixup/cutmix giving (B, K) soft targets.
        max_steps: stop after this many batches (smoke tests, ASHA-sized probes).

    Raises:
        NonFiniteLossError: the loss, or with ``grad_clip`` and no scaler the gradient norm, is NaN/inf.
    """
    device = torch.device(device)
    if amp == "fp16" and device.type == "cuda" and scaler is None:
        raise ValueError("amp: 'fp16' needs a GradScaler (make_grad_scaler(device, 'fp16')) against gradient underflow")
    model.train()
    sums: dict[str, float] = {}
    clips = steps = 0
    lr = optimizer.param_groups[0]["lr"]
    t0 = time.perf_counter()
    for step, batch in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        video = batch["video"].to(device, non_blocking=True)
        target = batch["label"].to(device, non_blocking=True)
        if batch_transform is not None:
            video, target = batch_transform(video, target)
        if schedule is not None:
            lr = schedule.step()
        with autocast(device, amp):
            output = model(video)
        loss, parts = loss_fn(_as_float(output), target)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            detail = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
            raise NonFiniteLossError(f"non-finite training loss at epoch {epoch}, step {step}: total={loss_value} "
                                     f"({detail}; lr={lr:.3g}); stopping instead of training on")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)  # skips the step itself when fp16 gradients overflowed
            scaler.update()
        else:
            loss.backward()
            if grad_clip > 0:
                norm = float(nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
                if not math.isfinite(norm):
                    raise NonFiniteLossError(f"non-finite gradient norm at epoch {epoch}, step {step} "
                                             f"(loss {loss_value:.4g}, lr={lr:.3g})")
            optimizer.step()
        n = int(video.shape[0])
        for k, v in {"loss": loss_value, **parts}.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        clips, steps = clips + n, steps + 1
    if steps == 0:
        raise ValueError(f"train_one_epoch: the loader yielded no batch (epoch {epoch})")
    elapsed = time.perf_counter() - t0
    return {**{k: v / clips for k, v in sums.items()}, "clips": clips, "steps": steps,
            "clips_per_s": clips / max(elapsed, 1e-9), "time_s": elapsed, "lr": lr}


# Evaluation -----------------------------------------------------------------------------------------------------
def torch_distributed_gather(records: list[Record], group: Any = None) -> list[Record]:
    """All ranks' records, concatenated in rank order (``all_gather_object``; works with gloo and NCCL — for NCCL
    call ``torch.cuda.set_device`` first). Without an initialised process group, returns ``records`` unchanged."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(records)
    parts: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, records, group=group)
    return [r for part in parts for r in part]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[dict[str, Any]], *, device: torch.device | str, num_classes: int,
             gather: Callable[[list[Record]], list[Record]] | None = None, amp: str = "off") -> dict[str, Any]:
    """Metrics over every clip of the split, each clip counted once.

    Each process records (clip_id, logits, label) per clip; ``gather`` (e.g. ``torch_distributed_gather``) merges
    all ranks, then duplicates — the clips a DistributedSampler repeats to pad the last batch — are dropped by
    clip_id (first occurrence kept; a clip_id seen with two labels is an error). Metrics are computed on the merged
    set, so every rank returns the same numbers.

    Returns:
        ``uar`` (mean recall over the classes with >= 1 clip in this split; ``uar_classes`` says how many),
        ``war`` (accuracy), ``per_class_recall`` (NaN for a class with no clip), ``confusion`` (K×K list, rows =
        true class, columns = prediction), ``clips`` (unique clips), ``duplicates`` (records dropped) and ``loss``
        (mean plain cross-entropy, no smoothing or class weights).
    """
    device = torch.device(device)
    model.eval()
    records: list[Record] = []
    for batch in loader:
        with autocast(device, amp):
            logits = model(batch["video"].to(device, non_blocking=True))["logits"]
        for cid, row, y in zip(batch["clip_id"], logits.float().cpu().tolist(), batch["label"].tolist(), strict=True):
            records.append((str(cid), row, int(y)))
    if gather is not None:
        records = gather(records)
    unique: dict[str, Record] = {}
    for rec in records:
        seen = unique.setdefault(rec[0], rec)
        if seen[2] != rec[2]:
            raise ValueError(f"evaluate: clip {rec[0]!r} appears with labels {seen[2]} and {rec[2]}")
    if not unique:
        raise ValueError("evaluate: the loader yielded no clip")
    logits = torch.tensor([r[1] for r in unique.values()], dtype=torch.float32)  # (N, K)
    labels = torch.tensor([r[2] for r in unique.values()], dtype=torch.long)  # (N,)
    cm = confusion_matrix(logits.argmax(-1), labels, num_classes)
    recalls = per_class_recall(cm)
    return {"uar": uar(cm), "war": war(cm), "per_class_recall": recalls,
            "uar_classes": sum(not math.isnan(r) for r in recalls), "confusion": cm.tolist(),
            "clips": len(unique), "duplicates": len(records) - len(unique),
            "loss": float(F.cross_entropy(logits, labels))}


# Fitting --------------------------------------------------------------------------------------------------------
@dataclass
class FitState:
    """Everything resuming a fit needs, and what it produced: the last finished epoch, the best epoch so far on the
    selection metric (its val metrics and weights) and every epoch's metrics."""

    epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "value": float("-inf"), "metrics": {}})
    best_weights: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    """Why the fit stopped before its last epoch (a non-finite loss), or empty."""


def selected_metrics(best: dict[str, Any]) -> dict[str, Any]:
    """The best checkpoint so far: its epoch and its val metrics (what a search ranks trials by: ``ckpt_*``).
    Before any finished epoch they are 0, the worst value, so a run that never finished an epoch never wins."""
    m = best.get("metrics") or {}
    return {"best_epoch": best["epoch"], "ckpt_val_uar": float(m.get("val_uar", 0.0)),
            "ckpt_val_war": float(m.get("val_war", 0.0)), "infeasible": 0}


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def fit(model: nn.Module, train_loader: Iterable[dict[str, Any]], val_loader: Iterable[dict[str, Any]],
        loss_fn: Callable, optimizer: torch.optim.Optimizer, schedule: LRSchedule | None, *, epochs: int,
        select_metric: str, device: torch.device | str, num_classes: int, state: FitState | None = None,
        batch_transform: Callable | None = None, grad_clip: float = 0.0, amp: str = "off",
        scaler: torch.amp.GradScaler | None = None, max_steps: int | None = None,
        gather: Callable[[list[Record]], list[Record]] | None = None, world: int = 1,
        tags: dict[str, Any] | None = None, on_epoch: Callable[[dict[str, Any], FitState], None] | None = None,
        on_stop: Callable[[dict[str, Any], FitState], None] | None = None) -> FitState:
    """Train from ``state.epoch + 1`` to ``epochs``: each epoch one pass of ``train_loader``, then ``evaluate`` on
    ``val_loader`` (the selection split: inner-val in the nested protocol). The epoch with the best
    ``select_metric`` (``val_uar``/``val_war``; ties keep the earlier epoch) is the selected checkpoint: its weights
    are kept in ``state.best_weights`` (CPU copies of the unwrapped model).

    Hooks: ``on_epoch(metrics, state)`` after each epoch, with the epoch already in ``state.history`` (report it,
    write a checkpoint; setting ``state.stop_reason`` there ends the fit after that epoch); ``on_stop(metrics,
    state)`` once when a non-finite loss ends the fit early
    (``state.stop_reason`` says why; the history keeps the stopped epoch's row). A sampler with ``set_epoch`` (a
    DistributedSampler) is re-seeded every epoch. ``world``: data-parallel ranks (scales ``clips_per_s``);
    ``tags``: constant values added to every epoch's metrics (e.g. the node id).

    Returns:
        The final state (also when stopped early).
    """
    state = state or FitState()
    start = state.epoch + 1
    for epoch in range(start, epochs + 1):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        try:
            stats = train_one_epoch(model, train_loader, loss_fn, optimizer, schedule, device=device, epoch=epoch,
                                    batch_transform=batch_transform, grad_clip=grad_clip, amp=amp, scaler=scaler,
                                    max_steps=max_steps)
        except NonFiniteLossError as e:
            state.stop_reason = f"non-finite loss: {' '.join(str(e).split())}"
            row = {"epoch": epoch, "stop_reason": state.stop_reason, **selected_metrics(state.best)}
            state.history.append(row)
            if on_stop is not None:
                on_stop(row, state)
            return state
        val = evaluate(model, val_loader, device=device, num_classes=num_classes, gather=gather, amp=amp)
        metrics = {"epoch": epoch, "train_loss": stats["loss"], "train_ce": stats.get("ce"),
                   "train_gc": stats.get("gc"), "val_uar": val["uar"], "val_war": val["war"], "val_loss": val["loss"],
                   "val_clips": val["clips"], "val_classes": val["uar_classes"], "lr": stats["lr"],
                   "clips_per_s": stats["clips_per_s"] * world, "epoch_s": time.perf_counter() - t0,
                   "world_size": world, "start_epoch": start, **(tags or {})}
        score = metrics[select_metric]
        if score > state.best["value"]:
            state.best = {"epoch": epoch, "value": score,
                          "metrics": {"val_uar": val["uar"], "val_war": val["war"],
                                      "val_per_class_recall": val["per_class_recall"],
                                      "val_confusion": val["confusion"]}}
            state.best_weights = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
        metrics.update(selected_metrics(state.best))
        state.epoch = epoch
        state.history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics, state)
            if state.stop_reason:  # the hook ended the fit (e.g. a target reached)
                return state
    return state
