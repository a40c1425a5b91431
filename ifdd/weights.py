"""Kinetics-400 initialisation: map a torchvision ``mvit_v2_s`` state dict onto the XS backbone (docs/model.md §4).

MViTv2-S has stages [1, 2, 11, 2] (16 blocks); XS keeps [1, 2, 5, 2] (10 blocks). Source blocks 0–7 are copied
unchanged and source blocks 14 and 15 (the last stage) become XS blocks 8 and 9; blocks 8–13 are unused. The stem
(``conv_proj``) and the classifier (``head``) are skipped, as in the reference repo; ``load_stem=True`` copies the
stem too (its shape is identical). The file is read with ``torch.load(weights_only=True)``: no unpickling of code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ifdd.model import IFDD

# XS block index -> MViTv2-S block index
XS_FROM_S = {**{i: i for i in range(8)}, 8: 14, 9: 15}

# torchvision key suffix inside a block -> this project's suffix
_BLOCK_SUFFIX = [
    (re.compile(r"^attn\.project\.0\.(weight|bias)$"), r"attn.proj.\1"),
    (re.compile(r"^attn\.pool_([qkv])\.pool\.weight$"), r"attn.pool_\1.conv.weight"),
    (re.compile(r"^attn\.pool_([qkv])\.norm_act\.0\.(weight|bias)$"), r"attn.pool_\1.norm.\2"),
    (re.compile(r"^mlp\.0\.(weight|bias)$"), r"mlp.fc1.\1"),
    (re.compile(r"^mlp\.3\.(weight|bias)$"), r"mlp.fc2.\1"),
    (re.compile(r"^project\.(weight|bias)$"), r"proj.\1"),
    (re.compile(r"^(norm1|norm2|attn\.qkv)\.(weight|bias)$"), r"\1.\2"),
    (re.compile(r"^attn\.(rel_pos_[hwt])$"), r"attn.\1"),
]


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    """Target keys filled from the file."""
    missing: list[str] = field(default_factory=list)
    """Backbone keys the file did not provide (the stem unless ``load_stem``)."""
    skipped: list[str] = field(default_factory=list)
    """Source keys deliberately not used (stem, head, MViTv2-S blocks 8–13)."""
    unexpected: list[str] = field(default_factory=list)
    """Source keys that match nothing known: a sign of a wrong file."""


def _unwrap(obj: object, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict", "model_state"):
            if isinstance(obj.get(key), dict):
                return _unwrap(obj[key], path)
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def map_torchvision_key(key: str, load_stem: bool = False) -> str | None | bool:
    """Target key for a torchvision ``mvit_v2_s`` key; None if deliberately skipped; False if unknown."""
    if key.startswith("head."):
        return None
    if key.startswith("conv_proj."):
        return "backbone.stem." + key.split(".", 1)[1] if load_stem else None
    if key == "pos_encoding.class_token":
        return "backbone.cls_token"
    if key in ("norm.weight", "norm.bias"):
        return "backbone." + key
    m = re.match(r"^blocks\.(\d+)\.(.+)$", key)
    if not m:
        return False
    src, suffix = int(m.group(1)), m.group(2)
    targets = [dst for dst, s in XS_FROM_S.items() if s == src]
    if not targets:
        return None  # MViTv2-S blocks 8–13 have no XS counterpart
    for pattern, repl in _BLOCK_SUFFIX:
        if pattern.match(suffix):
            return f"backbone.blocks.{targets[0]}.{pattern.sub(repl, suffix)}"
    return False


def load_k400_weights(model: IFDD, path: str | Path, load_stem: bool = False) -> LoadReport:
    """Copy torchvision ``mvit_v2_s`` weights from ``path`` into ``model``'s backbone (XS preset only).

    Raises:
        ValueError: if the model is not the XS layout, the file is not a state dict, or a shape does not match.
    """
    cfg = model.cfg
    if tuple(cfg.stage_depths) != (1, 2, 5, 2) or cfg.embed_dim != 96 or cfg.num_heads != 1:
        raise ValueError("k400 weights: only the xs preset (96 wide, 1 head, stages [1,2,5,2]) matches mvit_v2_s")
    source = _unwrap(torch.load(path, map_location="cpu", weights_only=True), str(path))
    target = model.state_dict()
    report, new = LoadReport(), {}
    for key, value in source.items():
        dst = map_torchvision_key(key, load_stem)
        if dst is None:
            report.skipped.append(key)
            continue
        if dst is False or dst not in target:
            report.unexpected.append(key)
            continue
        if dst == "backbone.cls_token":
            value = value.reshape(target[dst].shape)
        if value.shape != target[dst].shape:
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, "
                             f"{dst} needs {tuple(target[dst].shape)}")
        new[dst] = value.to(target[dst].dtype)
    model.load_state_dict(new, strict=False)
    report.loaded = sorted(new)
    report.missing = sorted(k for k in target if k.startswith("backbone.") and k not in new)
    return report
