"""Datasets and loaders for one (run config, fold), and the one-off evaluation of a chosen checkpoint.

Roles per selection rule (docs/protocol.md):

- ``val`` (nested, default): train on inner-train, select on inner-val; the test split is only ever seen by
  ``evaluate_checkpoint`` after selection.
- ``test`` (paper parity): train on the official training split (inner-train ∪ inner-val) and select on the test
  split itself: optimistic, labelled as such wherever reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ifdd.checkpoint import load_checkpoint
from ifdd.data.dataset import ClipDataset
from ifdd.data.manifest import class_counts, fold_split, load_manifest, split_coverage
from ifdd.data.transforms import BatchTrainAugment, MixupCutmix, TrainTransform
from ifdd.engine import LRSchedule, build_optimizer, evaluate, make_grad_scaler
from ifdd.loss import IFDDLoss
from ifdd.model import build_model
from ifdd.runconfig import RunConfig

ROLES = {"val": ("train", "val"), "test": ("trainval", "test")}


@dataclass
class SplitLoaders:
    train: DataLoader
    val: DataLoader
    class_counts: list[int]
    """Training clips per class (for the class-balanced loss)."""
    batch_transform: Callable | None
    """What the training loop applies to each batch on its device: mixup/cutmix, or with ``augment_on="device"`` the
    whole training augmentation (``BatchTrainAugment``: uint8 clips in, then mixup/cutmix), or None."""


def rank_seed(seed: int, rank: int) -> int:
    """A distinct, reproducible seed per (seed, data-parallel rank): every rank draws its own augmentation, dropout
    and DataLoader-worker streams (``seed + rank`` would give seed 0 rank 1 the stream of seed 1 rank 0)."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _dataset(cfg: RunConfig, df, fold: int, role: str, train: bool, augment_on: str = "loader") -> ClipDataset:
    return ClipDataset(df, fold, role, root=cfg.data.root, frames=cfg.model.num_frames, size=cfg.model.image_size,
                       train=train, augment=cfg.data.augment, cache_dir=cfg.data.cache_dir, augment_on=augment_on)


def resolve_augment_on(augment_on: str, device: torch.device | str | None) -> str:
    """``auto``: augment on the training device when it is a GPU (the loader then only reads uint8 clips: ~25 ms of
    CPU per 224² clip saved, bench/data.py), else in the DataLoader."""
    if augment_on not in ("auto", "loader", "device"):
        raise ValueError(f"augment_on: must be auto, loader or device, got {augment_on!r}")
    if augment_on != "auto":
        return augment_on
    return "device" if device is not None and torch.device(device).type == "cuda" else "loader"


def build_split_loaders(cfg: RunConfig, fold: int, *, selection: str = "val", batch_size: int,
                        eval_batch_size: int, device: torch.device | str | None = None,
                        augment_on: str = "auto", rank: int = 0) -> SplitLoaders:
    """Per-process loaders (a DistributedSampler is added by the caller when data-parallel).

    ``device``: the training device; with ``augment_on="auto"`` a CUDA device moves the training augmentation there
    (``resolve_augment_on``), and the loaders pin their batches for the host-to-device copy. ``rank`` seeds the
    training loader's generator (its shuffle, and the base seed of its worker processes' augmentation)."""
    if selection not in ROLES:
        raise ValueError(f"selection: must be 'val' or 'test', got {selection!r}")
    train_role, val_role = ROLES[selection]
    on = resolve_augment_on(augment_on, device) if cfg.data.augment else "loader"
    df = load_manifest(cfg.data.manifest)
    train_ds = _dataset(cfg, df, fold, train_role, train=True, augment_on=on)
    val_ds = _dataset(cfg, df, fold, val_role, train=False)
    gen = torch.Generator().manual_seed(rank_seed(cfg.train.seed, rank))
    workers = cfg.data.num_workers
    pin = device is not None and torch.device(device).type == "cuda"
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=len(train_ds) >= batch_size,
                       num_workers=workers, generator=gen, persistent_workers=workers > 0, pin_memory=pin)
    val = DataLoader(val_ds, batch_size=eval_batch_size, shuffle=False, num_workers=workers, pin_memory=pin)
    mix = None
    if cfg.data.mix_prob > 0 and (cfg.data.mixup_alpha > 0 or cfg.data.cutmix_alpha > 0):
        mix = MixupCutmix(cfg.model.num_classes, mixup_alpha=cfg.data.mixup_alpha, cutmix_alpha=cfg.data.cutmix_alpha,
                          prob=cfg.data.mix_prob, switch_prob=cfg.data.switch_prob,
                          label_smoothing=cfg.loss.label_smoothing)
    counts = class_counts(fold_split(df, fold, train_role), cfg.model.num_classes)
    batch_transform = BatchTrainAugment(TrainTransform(cfg.model.image_size), mix) if on == "device" else mix
    return SplitLoaders(train, val, counts, batch_transform)


@dataclass
class TrainingParts:
    """What one fit needs besides the model and the data, all built from the run config."""

    loss_fn: IFDDLoss
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler | None


def build_training(cfg: RunConfig, model: torch.nn.Module, counts: list[int], *, steps_per_epoch: int,
                   device: str | torch.device) -> TrainingParts:
    """The loss (class-balanced from ``counts``), AdamW at the batch-scaled lr, the per-step schedule over
    ``cfg.train.epochs`` × ``steps_per_epoch`` (capped by ``max_steps_per_epoch``) and the fp16 grad scaler."""
    steps = steps_per_epoch if cfg.train.max_steps_per_epoch is None else min(steps_per_epoch,
                                                                              cfg.train.max_steps_per_epoch)
    optimizer = build_optimizer(model, cfg.optim, cfg.train.batch_size)
    schedule = LRSchedule.from_config(optimizer, cfg.optim, global_batch=cfg.train.batch_size,
                                      epochs=cfg.train.epochs, steps_per_epoch=max(1, steps))
    return TrainingParts(IFDDLoss(cfg.loss, cfg.model.num_classes, counts).to(device), optimizer, schedule,
                         make_grad_scaler(device, cfg.optim.amp))


def evaluate_checkpoint(path: str | Path, cfg: RunConfig, fold: int, *, role: str = "test",
                        device: str | torch.device = "cpu", batch_size: int | None = None) -> dict[str, Any]:
    """Load ``best.pt``-style weights and evaluate them once on ``role`` of ``fold`` (single process).

    Besides ``ifdd.engine.evaluate``'s metrics (``uar_classes``: the classes UAR averages over), the result says how
    much of the split it covers (``manifest.split_coverage``): ``listed_clips``, ``quarantined`` (ids never
    evaluated), ``official_clips`` (real release only) and ``coverage_gap``."""
    state = load_checkpoint(path)
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    model.to(device)
    df = load_manifest(cfg.data.manifest)
    loader = DataLoader(_dataset(cfg, df, fold, role, train=False),
                        batch_size=batch_size or cfg.train.eval_batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers)
    out = evaluate(model, loader, device=device, num_classes=cfg.model.num_classes)
    cov = split_coverage(df, fold, role)
    return {**out, "listed_clips": cov["listed"], "quarantined": cov["quarantined"],
            "official_clips": cov["official"], "coverage_gap": cov["gap"]}
