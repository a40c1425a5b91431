"""IFDD (Wang & Chai, AAAI 2025, arXiv 2412.13168): MViTv2-XS backbone + pyramid fusion + ISSM/LADM + head.

``build_model(cfg)`` is the single entry point. The forward pass returns a dict:

- ``logits``  (B, num_classes)
- ``feature`` (B, C): the emotion-related dynamic feature sent to the head (after ``feature_norm``)
- ``gc_maps`` list of (B, H, W), one per lifting level when LADM is on (the global-context constraint inputs)

Ablations: ``use_issm=False`` keeps the lifting on a fixed lazy split; ``use_ladm=False`` drops update/predict;
both off is the plain baseline, backbone + fused features mean-pooled over (T, H, W) -> head.
"""

from __future__ import annotations

import torch
from torch import nn

from ifdd.backbone import MViTBackbone, PyramidFusion, init_weights
from ifdd.config import ModelConfig
from ifdd.head import Head
from ifdd.issm import ISSM
from ifdd.ladm import LADM

KINETICS_MEAN, KINETICS_STD = 0.45, 0.225
"""Per-channel input statistics of Kinetics as used by the MViT family (``ModelConfig.input_norm``)."""


class IFDD(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = MViTBackbone(cfg)
        self.fusion = PyramidFusion(cfg.stage_dim(2), cfg.stage_dim(3))
        self.lifting = LADM(cfg) if (cfg.use_issm or cfg.use_ladm) else None
        self.feature_norm = nn.LayerNorm(cfg.top_dim) if cfg.feature_norm else nn.Identity()
        self.head = Head(cfg.top_dim, cfg.num_classes, cfg.head_dropout)
        norm = cfg.input_norm == "kinetics"
        self.register_buffer("input_mean", torch.full((1, cfg.in_chans, 1, 1, 1), KINETICS_MEAN if norm else 0.0),
                             persistent=False)
        self.register_buffer("input_std", torch.full((1, cfg.in_chans, 1, 1, 1), KINETICS_STD if norm else 1.0),
                             persistent=False)
        init_weights(self.backbone, cfg.linear_init)
        if self.lifting is not None:
            init_weights(self.lifting, cfg.linear_init)
            for m in self.lifting.modules():
                if isinstance(m, ISSM) and m.learn_offsets:
                    m.reset_offsets()

    def forward_features(self, video: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stages = self.backbone((video - self.input_mean) / self.input_std)
        fused = self.fusion(stages[2], stages[3])  # (B, C, T', H', W')
        if self.lifting is None:
            return fused.mean(dim=(2, 3, 4)), []
        return self.lifting(fused)

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """video: (B, 3, T, H, W) float in [0, 1] (standardised inside when ``input_norm`` is ``kinetics``)."""
        feature, gc_maps = self.forward_features(video)
        feature = self.feature_norm(feature)
        return {"logits": self.head(feature), "feature": feature, "gc_maps": gc_maps}


class LogitsOnly(nn.Module):
    """``IFDD`` returning only the logits tensor (B, num_classes): what a served or exported model needs."""

    def __init__(self, model: IFDD):
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model(video)["logits"]


def build_model(cfg: ModelConfig) -> IFDD:
    return IFDD(cfg)
