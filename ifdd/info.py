"""Model accounting: parameters, MACs per clip (attention matmuls included) and the tensor shape after each stage."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ifdd.config import ModelConfig, to_dict
from ifdd.model import build_model


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_info(cfg: ModelConfig) -> dict[str, Any]:
    """Build ``cfg`` on the meta device (no memory, no compute) and account for one clip.

    MACs come from ``torch.utils.flop_counter`` (which counts convolutions, linear layers *and* the attention
    matmuls) divided by 2; a thop-style count of Conv/Linear modules alone would miss the attention.
    """
    with torch.device("meta"):
        model = build_model(cfg).eval()
        clip = torch.empty(1, cfg.in_chans, cfg.num_frames, cfg.image_size, cfg.image_size)
    counter = FlopCounterMode(display=False, depth=1)
    with counter, torch.no_grad():
        stages = model.backbone(clip)
        fused = model.fusion(stages[2], stages[3])
        feature, gc_maps = (fused.mean(dim=(2, 3, 4)), []) if model.lifting is None else model.lifting(fused)
        logits = model.head(feature)
    # The counter names modules by class when called directly; report them under the model's attribute names.
    attr = {type(getattr(model, a)).__name__: a for a in ("backbone", "fusion", "lifting", "head")}
    per_module = {attr[name]: sum(ops.values()) // 2 for name, ops in counter.get_flop_counts().items()
                  if name in attr}
    shapes = {}
    for i, (tokens, thw) in enumerate(stages):
        shapes[f"stage{i}"] = [*thw, tokens.shape[-1]]  # (T, H, W, C), class token not counted
    shapes["fused"] = [fused.shape[2], fused.shape[3], fused.shape[4], fused.shape[1]]
    shapes["feature"] = [feature.shape[-1]]
    shapes["logits"] = [logits.shape[-1]]
    params = {name: count_params(getattr(model, name)) for name in ("backbone", "fusion", "lifting", "head")
              if getattr(model, name) is not None}
    return {
        "params": count_params(model),
        "params_by_module": params,
        "macs_per_clip": counter.get_total_flops() // 2,
        "macs_by_module": per_module,
        "input_shape": [cfg.in_chans, cfg.num_frames, cfg.image_size, cfg.image_size],
        "stage_shapes": shapes,
        "lifting_slots": [list(s) for s in cfg.slots] if model.lifting is not None else [],
        "config": to_dict(cfg),
    }
