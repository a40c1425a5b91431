"""Classification metrics of DFER: the confusion matrix, per-class recall, UAR (unweighted average recall, the
selection and headline metric) and WAR (weighted average recall = accuracy). Pure functions of predictions and
labels (docs/model.md §9)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def confusion_matrix(preds: Sequence[int] | torch.Tensor, targets: Sequence[int] | torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts; entry [t, p] = clips of true class t predicted as p."""
    p = torch.as_tensor(preds, dtype=torch.long).flatten()
    t = torch.as_tensor(targets, dtype=torch.long).flatten()
    if p.shape != t.shape:
        raise ValueError(f"confusion_matrix: {p.numel()} predictions for {t.numel()} targets")
    for name, v in (("predictions", p), ("targets", t)):
        if v.numel() and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"confusion_matrix: {name} must be in [0, {num_classes}), got {v.min()}..{v.max()}")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_recall(cm: torch.Tensor | Sequence[Sequence[int]]) -> list[float]:
    """Recall of each true class (row); NaN for a class with no clip (undefined, not 0)."""
    cm = torch.as_tensor(cm, dtype=torch.float64)
    support = cm.sum(1)
    return [float(cm[k, k] / support[k]) if support[k] > 0 else math.nan for k in range(cm.shape[0])]


def uar(cm: torch.Tensor | Sequence[Sequence[int]]) -> float:
    """Unweighted average recall: mean recall over the classes with >= 1 clip.

    A class absent from the targets is left out rather than counted as 0 (torchmetrics' macro recall would count it
    as 0 if it were predicted). On DFEW's test folds all 7 classes are present, so both agree.
    """
    present = [r for r in per_class_recall(cm) if not math.isnan(r)]
    if not present:
        raise ValueError("uar: the confusion matrix is empty")
    return sum(present) / len(present)


def war(cm: torch.Tensor | Sequence[Sequence[int]]) -> float:
    """Weighted average recall = overall accuracy."""
    cm = torch.as_tensor(cm, dtype=torch.float64)
    if cm.sum() == 0:
        raise ValueError("war: the confusion matrix is empty")
    return float(cm.trace() / cm.sum())
