"""ifdd.engine / ifdd.metrics / ifdd.checkpoint: metrics, schedule, the fit loop, training loop guards,
de-duplicated evaluation, checkpoints."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
import torch
from ifdd_testkit import ddp_workers
from ifdd_testkit.ddp_workers import LogitsInVideo
from torch import nn

from ifdd.checkpoint import CheckpointError, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from ifdd.config import LossConfig, OptimConfig, from_dict, model_preset
from ifdd.engine import (
    LRSchedule,
    NonFiniteLossError,
    build_optimizer,
    evaluate,
    fit,
    train_one_epoch,
)
from ifdd.loss import IFDDLoss
from ifdd.metrics import confusion_matrix, per_class_recall, uar, war
from ifdd.model import build_model

K = 3


class TinyNet(nn.Module):
    """Pointwise conv + global pool + linear; returns the model's output dict without gc maps."""

    def __init__(self, k: int = K, nan: bool = False):
        super().__init__()
        self.conv, self.fc, self.nan = nn.Conv3d(3, 8, 1), nn.Linear(8, k), nan

    def forward(self, video: torch.Tensor) -> dict:
        logits = self.fc(torch.relu(self.conv(video)).mean(dim=(2, 3, 4)))  # (B, 8, T, H, W) -> (B, K)
        return {"logits": logits * math.nan if self.nan else logits, "gc_maps": []}


def batch(videos: torch.Tensor, labels: list[int], ids: list[str]) -> dict:
    return {"video": videos, "label": torch.tensor(labels), "clip_id": ids}


def separable_batch(n: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = [i % K for i in range(n)]
    video = 0.1 * torch.randn(n, 3, 2, 4, 4, generator=g)
    for i, y in enumerate(labels):
        video[i, y] += 1.0  # class y lights up channel y
    return batch(video, labels, [f"c{i}" for i in range(n)])


# Metrics --------------------------------------------------------------------------------------------------------
def test_metrics_match_hand_computed_case():
    targets, preds = [0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 2, 2]
    cm = confusion_matrix(preds, targets, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert per_class_recall(cm) == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert uar(cm) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert war(cm) == pytest.approx(4 / 6)


def test_uar_skips_classes_absent_from_targets():
    cm = confusion_matrix([0, 3, 1, 1], [0, 0, 1, 1], 4)  # classes 2, 3 have no clip; class 3 is predicted once
    recall = per_class_recall(cm)
    assert recall[:2] == [0.5, 1.0] and math.isnan(recall[2]) and math.isnan(recall[3])
    assert uar(cm) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="targets must be in"):
        confusion_matrix([0], [7], 4)
    with pytest.raises(ValueError, match="empty"):
        uar(torch.zeros(3, 3))


# Optimizer and schedule -----------------------------------------------------------------------------------------
def test_optimizer_effective_lr_and_groups():
    model = build_model(model_preset("tiny"))
    opt = build_optimizer(model, OptimConfig(), global_batch=16)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == pytest.approx(5e-5)
    assert build_optimizer(model, OptimConfig(lr_scale_batch=False), 16).param_groups[0]["lr"] == 1e-4
    split = build_optimizer(model, OptimConfig(decay_norm_bias=False), 16)
    decay, no_decay = split.param_groups
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-3
    names = {id(p): n for n, p in model.named_parameters()}
    assert any("rel_pos" in names[id(p)] for p in no_decay["params"])
    assert all(p.ndim > 1 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_linear_schedule_warmup_peak_and_end():
    base, low = 1e-3, 1e-5
    s = LRSchedule(None, base_lr=base, min_lr=low, epochs=5, steps_per_epoch=4, warmup_epochs=1)
    lrs = [s.step() for _ in range(s.total_steps)]
    warm, decay = lrs[:4], lrs[4:]
    assert 0 < warm[0] <= base / 4 and all(a < b for a, b in zip(warm, warm[1:], strict=False))
    assert warm[-1] == pytest.approx(base) and decay[0] == pytest.approx(base) and max(lrs) == pytest.approx(base)
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert decay[-1] == pytest.approx(low) and s.lr_at(10_000) == pytest.approx(low)


def test_schedule_sets_optimizer_lr_and_round_trips():
    opt = torch.optim.AdamW(TinyNet().parameters(), lr=1.0)
    cfg = OptimConfig(warmup_epochs=2)
    s = LRSchedule.from_config(opt, cfg, global_batch=32, epochs=6, steps_per_epoch=5)
    for _ in range(7):
        lr = s.step()
    assert opt.param_groups[0]["lr"] == lr
    resumed = LRSchedule.from_config(opt, cfg, global_batch=32, epochs=6, steps_per_epoch=5)
    resumed.load_state_dict(s.state_dict())
    assert resumed.step() == s.step()
    # Resuming with twice the steps per epoch (half the workers) keeps the elapsed fraction of the run.
    half = LRSchedule.from_config(opt, cfg, global_batch=32, epochs=6, steps_per_epoch=10)
    half.load_state_dict({"step": 10, "steps_per_epoch": 5})
    assert half.step_count == 20


def test_reference_schedule_reproduces_quoted_values():
    cfg = from_dict(OptimConfig, {"lr": 1e-4, "warmup_epochs": 10, "warmup_mode": "reference"})
    s = LRSchedule.from_config(None, cfg, global_batch=16, epochs=100, steps_per_epoch=3)
    quoted = {0: 1e-6, 5: 4.95e-5, 9: 8.83e-5, 10: 5e-5, 50: 2.95e-5, 99: 5.2e-7}
    for epoch, value in quoted.items():
        assert s.lr_at(3 * epoch) == pytest.approx(value, rel=0.01), epoch
        assert s.lr_at(3 * epoch + 2) == s.lr_at(3 * epoch)  # constant within an epoch
    assert s.lr_at(3 * 9) > s.lr_at(3 * 10)  # the quirk: warmup overshoots, then drops


# Training -------------------------------------------------------------------------------------------------------
def test_nan_loss_raises_naming_epoch_step_and_parts():
    model = TinyNet(nan=True)
    opt = build_optimizer(model, OptimConfig(), 4)
    loss = IFDDLoss(LossConfig(), K)
    with pytest.raises(NonFiniteLossError, match=r"epoch 3, step 0: total=nan \(ce=nan, gc=0"):
        train_one_epoch(model, [separable_batch(4)], loss, opt, None, device="cpu", epoch=3)


def test_training_learns_a_separable_batch():
    torch.manual_seed(0)
    model, data = TinyNet(), separable_batch()
    cfg = OptimConfig(lr=3e-2, lr_scale_batch=False, warmup_epochs=1, grad_clip=1.0)
    opt = build_optimizer(model, cfg, 12)
    sched = LRSchedule.from_config(opt, cfg, global_batch=12, epochs=4, steps_per_epoch=10)
    loss = IFDDLoss(LossConfig(label_smoothing=0.0), K)
    stats = [train_one_epoch(model, [data] * 10, loss, opt, sched, device="cpu", epoch=e, grad_clip=cfg.grad_clip)
             for e in range(4)]
    assert stats[-1]["loss"] < 0.3 * stats[0]["loss"]
    assert stats[0]["clips"] == 120 and stats[0]["steps"] == 10 and stats[0]["clips_per_s"] > 0
    assert set(stats[0]) >= {"loss", "ce", "gc", "lr", "time_s"}
    metrics = evaluate(model, [data], device="cpu", num_classes=K)
    assert metrics["war"] == 1.0 and metrics["uar"] == 1.0 and metrics["clips"] == 12


def test_ifdd_tiny_step_with_soft_targets():
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    model = build_model(cfg)
    loss = IFDDLoss(LossConfig(), cfg.num_classes)
    opt = build_optimizer(model, OptimConfig(), 2)
    data = batch(torch.rand(2, 3, 16, 64, 64), [1, 5], ["a", "b"])

    def mix(video, labels):  # stand-in for MixupCutmix: pair each clip with the flipped batch
        soft = torch.nn.functional.one_hot(labels, cfg.num_classes).float()
        return 0.7 * video + 0.3 * video.flip(0), 0.7 * soft + 0.3 * soft.flip(0)

    out = train_one_epoch(model, [data, data], loss, opt, None, device="cpu", batch_transform=mix, max_steps=1)
    assert out["steps"] == 1 and math.isfinite(out["loss"]) and out["gc"] > 0
    assert evaluate(model, [data], device="cpu", num_classes=cfg.num_classes)["clips"] == 2


# Evaluation with padded data-parallel shards --------------------------------------------------------------------
# Five clips, labels and predictions chosen by hand; a DistributedSampler over 2 ranks pads rank 1 with clip 0.
LABELS, PREDS = [0, 1, 2, 2, 0], [0, 1, 2, 0, 1]
RANK_INDICES = [[0, 2, 4], [1, 3, 0]]


def shard(rank: int) -> list[dict]:
    idx = RANK_INDICES[rank]
    video = torch.zeros(len(idx), 3, 1, 1, K)
    for row, i in enumerate(idx):
        video[row, 0, 0, 0, PREDS[i]] = 5.0
    return [batch(video[:2], [LABELS[i] for i in idx[:2]], [f"clip{i}" for i in idx[:2]]),
            batch(video[2:], [LABELS[i] for i in idx[2:]], [f"clip{i}" for i in idx[2:]])]


def check_dedup_metrics(m: dict) -> None:
    # True 0: clips 0 (->0), 4 (->1); true 1: clip 1 (->1); true 2: clips 2 (->2), 3 (->0).
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert m["clips"] == 5 and m["war"] == pytest.approx(3 / 5)
    assert m["uar"] == pytest.approx((0.5 + 1 + 0.5) / 3) and m["uar_classes"] == 3


def test_evaluate_counts_each_clip_once_across_ranks():
    model = LogitsInVideo(K)
    rank1 = []
    evaluate(model, shard(1), device="cpu", num_classes=K, gather=lambda recs: rank1.extend(recs) or recs)
    merged = evaluate(model, shard(0), device="cpu", num_classes=K, gather=lambda recs: recs + rank1)
    check_dedup_metrics(merged)
    assert merged["duplicates"] == 1
    single = evaluate(model, shard(0) + shard(1), device="cpu", num_classes=K)  # same records, no gather
    assert single["confusion"] == merged["confusion"] and single["loss"] == pytest.approx(merged["loss"])
    conflicting = [(cid, logits, (y + 1) % K) for cid, logits, y in rank1]
    with pytest.raises(ValueError, match="appears with labels"):
        evaluate(model, shard(0), device="cpu", num_classes=K, gather=lambda recs: recs + conflicting)


@pytest.mark.timeout(60)
def test_torch_distributed_gather_with_gloo(tmp_path):
    torch.multiprocessing.spawn(ddp_workers.evaluate_rank, args=(2, str(tmp_path / "init"), str(tmp_path),
                                                              [shard(0), shard(1)], K), nprocs=2)
    for rank in range(2):
        check_dedup_metrics(json.loads((tmp_path / f"rank{rank}.json").read_text()))


# Checkpoints ----------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_with_rng_state(tmp_path):
    model = TinyNet()
    opt = build_optimizer(model, OptimConfig(), 4)
    train_one_epoch(model, [separable_batch(4)], IFDDLoss(LossConfig(), K), opt, None, device="cpu")
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "rng": capture_rng_state(),
             "config": {"optim": {"lr": 1e-4, "betas": [0.9, 0.999]}, "note": None}}
    path = tmp_path / "ckpt" / "state.pt"
    digest = save_checkpoint(path, state)
    assert (tmp_path / "ckpt" / "state.pt.sha256").read_text().split()[0] == digest
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["config"] == state["config"]
    assert all(torch.equal(loaded["model"][k], v) for k, v in model.state_dict().items())
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    restore_rng_state(loaded["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})

    def torch_save_then_crash(obj, f):
        f.write(b"partial")  # the temp file exists and holds garbage when the "crash" happens
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torch_save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()

    def replace_crash(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", replace_crash)
    with pytest.raises(OSError, match="disk went away"):
        save_checkpoint(path, {"epoch": 3, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt", "state.pt.sha256"]  # no temp files left


def test_corrupted_or_unverifiable_checkpoint_raises(tmp_path):
    path = tmp_path / "state.pt"
    save_checkpoint(path, {"w": torch.arange(1000.0)})
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"state\.pt: SHA-256 mismatch"):
        load_checkpoint(path)
    (tmp_path / "state.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match="checksum file state.pt.sha256 is missing"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


# fit: the one epoch loop ----------------------------------------------------------------------------------------
def _fit_parts(seed: int = 0, nan: bool = False, lr: float = 0.05):
    torch.manual_seed(seed)
    model = TinyNet(nan=nan)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    data = separable_batch(12, seed=1)
    train = [batch(data["video"][i:i + 4], data["label"][i:i + 4].tolist(), data["clip_id"][i:i + 4])
             for i in range(0, 12, 4)]
    val = [separable_batch(6, seed=2)]
    return model, opt, train, val


def _ce(output, target):
    loss = torch.nn.functional.cross_entropy(output["logits"], target)
    return loss, {"ce": float(loss)}


def test_fit_keeps_the_best_epoch_on_the_selection_metric_and_calls_the_hook_each_epoch():
    model, opt, train, val = _fit_parts()
    seen = []
    state = fit(model, train, val, _ce, opt, None, epochs=4, select_metric="val_uar", device="cpu", num_classes=K,
                tags={"node_id": "n1"}, on_epoch=lambda m, s: seen.append((m["epoch"], len(s.history))))
    assert seen == [(1, 1), (2, 2), (3, 3), (4, 4)] and state.epoch == 4 and not state.stop_reason
    uars = [h["val_uar"] for h in state.history]
    best = max(range(4), key=lambda i: (uars[i], -i))  # the first epoch with the best value
    assert state.best["epoch"] == best + 1 and state.best["value"] == uars[best]
    assert all(h["node_id"] == "n1" and h["ckpt_val_uar"] == max(uars[: h["epoch"]]) for h in state.history)
    assert state.best_weights is not None and set(state.best_weights) == set(model.state_dict())


def test_fit_resumed_from_its_state_continues_where_it_stopped():
    model, opt, train, val = _fit_parts()
    whole = fit(model, train, val, _ce, opt, None, epochs=3, select_metric="val_uar", device="cpu", num_classes=K)
    model2, opt2, _, _ = _fit_parts()
    part = fit(model2, train, val, _ce, opt2, None, epochs=1, select_metric="val_uar", device="cpu", num_classes=K)
    rest = fit(model2, train, val, _ce, opt2, None, epochs=3, select_metric="val_uar", device="cpu", num_classes=K,
               state=part)
    assert [h["epoch"] for h in rest.history] == [1, 2, 3] and rest.history[-1]["start_epoch"] == 2
    assert [h["train_loss"] for h in rest.history] == pytest.approx([h["train_loss"] for h in whole.history])


def test_fit_stops_on_a_non_finite_loss_and_says_so_once():
    model, opt, train, val = _fit_parts(nan=True)
    stops, epochs = [], []
    state = fit(model, train, val, _ce, opt, None, epochs=3, select_metric="val_uar", device="cpu", num_classes=K,
                on_epoch=lambda m, s: epochs.append(m), on_stop=lambda m, s: stops.append(m))
    assert epochs == [] and len(stops) == 1 and stops[0]["epoch"] == 1
    assert state.stop_reason.startswith("non-finite loss") and state.epoch == 0 and state.best_weights is None


def test_a_hook_that_sets_the_stop_reason_ends_the_fit_after_that_epoch():
    model, opt, train, val = _fit_parts()

    def stop_at_two(m, state):
        if m["epoch"] == 2:
            state.stop_reason = "target reached"

    state = fit(model, train, val, _ce, opt, None, epochs=5, select_metric="val_uar", device="cpu", num_classes=K,
                on_epoch=stop_at_two)
    assert state.epoch == 2 and [h["epoch"] for h in state.history] == [1, 2]
    assert state.stop_reason == "target reached" and state.best_weights is not None
