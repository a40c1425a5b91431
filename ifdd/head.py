"""Recognition head: Dropout + Linear on the (B, C) dynamic feature (docs/model.md §7)."""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    def __init__(self, dim: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(feature))  # (B, C) -> (B, num_classes)
