"""Disentanglement loss (docs/model.md §8): L = CE_soft(w) + lambda_gc * L_gc.

- CE_soft: soft-target cross-entropy. Integer labels are label-smoothed here; soft targets (from mixup/cutmix, which
  smooth their own targets) are used as given. With ``class_balance`` = b > 0 each class's term is weighted by
  w_c ∝ freq_c^-b, normalised so that the data-average weight is 1 (b = 1: inverse frequency, which targets UAR).
- L_gc: the global-context constraint. Each lifting level gives a map m (B, H, W) = channel/time mean of
  (low-pass(x) − updated approximation); per sample mean_hw Huber_beta(m, 0), reduced over the batch by ``mean``
  (default) or ``batch_sum`` (the reference repo), and averaged over lifting levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ifdd.config import LossConfig


def class_weights(counts: Sequence[int], exponent: float) -> torch.Tensor:
    """w_c ∝ count_c^-exponent with sum_c p_c w_c = 1 (p_c the class frequency)."""
    n = torch.tensor([float(c) for c in counts])
    if (n <= 0).any():
        raise ValueError(f"class_counts: every class needs at least one training clip, got {list(counts)}")
    w = n.pow(-exponent)
    p = n / n.sum()
    return w / (p * w).sum()


class IFDDLoss(nn.Module):
    def __init__(self, cfg: LossConfig, num_classes: int, class_counts: Sequence[int] | None = None):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        if cfg.class_balance > 0:
            if class_counts is None or len(class_counts) != num_classes:
                raise ValueError("class_balance > 0 needs class_counts for every class (from the training split)")
            weights = class_weights(class_counts, cfg.class_balance)
        else:
            weights = torch.ones(num_classes)
        self.register_buffer("weights", weights, persistent=False)

    def soft_targets(self, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 2:
            return target
        eps = self.cfg.label_smoothing
        return F.one_hot(target, self.num_classes).float() * (1 - eps) + eps / self.num_classes

    def gc_term(self, gc_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        if not gc_maps:
            return torch.zeros(())
        terms = []
        for m in gc_maps:
            per_sample = F.smooth_l1_loss(m, torch.zeros_like(m), beta=self.cfg.huber_beta, reduction="none")
            per_sample = per_sample.flatten(1).mean(1)  # (B,)
            terms.append(per_sample.sum() if self.cfg.gc_reduction == "batch_sum" else per_sample.mean())
        return torch.stack(terms).mean()

    def forward(self, output: dict[str, torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """output: the model's dict (``logits`` (B, K), ``gc_maps``); target: labels (B,) or soft targets (B, K).

        Returns the total loss and its parts (detached floats) for logging.
        """
        logits = output["logits"]
        y = self.soft_targets(target).to(logits.dtype)
        ce = -(y * self.weights.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        gc = self.gc_term(output.get("gc_maps", [])).to(ce)
        total = ce + self.cfg.lambda_gc * gc
        return total, {"ce": float(ce.detach()), "gc": float(gc.detach())}
