"""Disentanglement loss against hand-computed values."""

import math

import pytest
import torch

from ifdd.config import LossConfig
from ifdd.loss import IFDDLoss, class_weights


def _log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _huber(x, beta=1.0):
    return 0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta


LOGITS = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]
LABELS = [0, 2]
# one lifting level, 2x2 map per sample
GC = [[[0.5, -2.0], [0.0, 1.0]], [[3.0, 0.2], [-0.4, 0.0]]]


def _hand(eps, lam, reduction, weights=(1.0, 1.0, 1.0)):
    k = 3
    ce = 0.0
    for row, y in zip(LOGITS, LABELS, strict=True):
        ls = _log_softmax(row)
        target = [(1 - eps) * (c == y) + eps / k for c in range(k)]
        ce += -sum(w * t * v for w, t, v in zip(weights, target, ls, strict=True))
    ce /= len(LOGITS)
    per_sample = [sum(_huber(v) for r in m for v in r) / 4 for m in GC]
    gc = sum(per_sample) if reduction == "batch_sum" else sum(per_sample) / 2
    return ce + lam * gc, ce, gc


@pytest.mark.parametrize("reduction", ["mean", "batch_sum"])
def test_loss_matches_hand_computation(reduction):
    cfg = LossConfig(label_smoothing=0.1, lambda_gc=0.3, gc_reduction=reduction)
    out = {"logits": torch.tensor(LOGITS), "gc_maps": [torch.tensor(GC)]}
    total, parts = IFDDLoss(cfg, 3)(out, torch.tensor(LABELS))
    want, ce, gc = _hand(0.1, 0.3, reduction)
    assert float(total) == pytest.approx(want, rel=1e-6)
    assert parts["ce"] == pytest.approx(ce, rel=1e-6) and parts["gc"] == pytest.approx(gc, rel=1e-6)


def test_class_balanced_weights_and_loss():
    counts = [10, 30, 60]
    w = class_weights(counts, 1.0)
    # inverse frequency, normalised so the data-average weight is 1
    raw = [1 / 10, 1 / 30, 1 / 60]
    norm = sum(c / 100 * r for c, r in zip(counts, raw, strict=True))
    assert w.tolist() == pytest.approx([r / norm for r in raw])
    assert float((torch.tensor(counts) / 100 * w).sum()) == pytest.approx(1.0)
    cfg = LossConfig(label_smoothing=0.0, lambda_gc=0.0, class_balance=1.0)
    total, _ = IFDDLoss(cfg, 3, class_counts=counts)({"logits": torch.tensor(LOGITS), "gc_maps": []},
                                                     torch.tensor(LABELS))
    want, _, _ = _hand(0.0, 0.0, "mean", weights=w.tolist())
    assert float(total) == pytest.approx(want, rel=1e-6)


def test_soft_targets_are_used_as_given():
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])
    total, _ = IFDDLoss(LossConfig(lambda_gc=0.0), 3)({"logits": torch.tensor(LOGITS)}, soft)
    want = -sum(sum(t * v for t, v in zip(s, _log_softmax(r), strict=True))
                for s, r in zip(soft.tolist(), LOGITS, strict=True)) / 2
    assert float(total) == pytest.approx(want, rel=1e-6)


def test_gc_is_averaged_over_lifting_levels():
    cfg = LossConfig(label_smoothing=0.0, lambda_gc=1.0)
    one = torch.tensor(GC)
    loss = IFDDLoss(cfg, 3)
    out1 = {"logits": torch.tensor(LOGITS), "gc_maps": [one]}
    out2 = {"logits": torch.tensor(LOGITS), "gc_maps": [one, torch.zeros_like(one)]}
    _, p1 = loss(out1, torch.tensor(LABELS))
    _, p2 = loss(out2, torch.tensor(LABELS))
    assert p2["gc"] == pytest.approx(p1["gc"] / 2)


def test_class_balance_without_counts_is_rejected():
    with pytest.raises(ValueError, match="class_counts"):
        IFDDLoss(LossConfig(class_balance=0.5), 3)
