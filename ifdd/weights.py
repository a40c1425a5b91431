"""Backbone initialisation from a file: a pretext checkpoint of this project (``ifdd pretrain``, any preset) or a
torchvision Kinetics-400 ``mvit_v2_s`` state dict (xs preset only). ``load_init_weights`` tells them apart.

Pretext checkpoints (written by ``ifdd.pretrain``, checksummed by ``ifdd.checkpoint``) hold a backbone in this
project's own key layout; every ``backbone.*`` tensor is copied. When the fine-tune's clip shape differs from the
pretext's, the relative-position tables (``rel_pos_t`` has 2·T'−1 rows, ``rel_pos_h/w`` follow the spatial size)
are resized along their length by linear interpolation, as MViTv2 does when fine-tuning at another resolution; any
other shape difference is a different architecture and is refused.

Kinetics-400 (docs/model.md §4): MViTv2-S has stages [1, 2, 11, 2] (16 blocks); XS keeps [1, 2, 5, 2] (10
blocks). Source blocks 0–7 are copied unchanged and source blocks 14 and 15 (the last stage) become XS blocks 8 and
9; blocks 8–13 are unused. The stem (``conv_proj``) and the classifier (``head``) are skipped, as in the reference
repo; ``load_stem=True`` copies the stem too (its shape is identical). Every file is read with
``torch.load(weights_only=True)``: no unpickling of code.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ifdd.checkpoint import load_checkpoint
from ifdd.model import IFDD

PRETEXT_FORMAT = "ifdd-pretext"
"""``format`` entry of a pretext checkpoint (``ifdd.pretrain``)."""

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
    resized: list[str] = field(default_factory=list)
    """Loaded relative-position tables interpolated to this model's clip shape (pretext files)."""
    source: str = ""
    """What the file was: ``ifdd-pretext`` (``PRETEXT_FORMAT``) or ``kinetics400``."""

    def summary(self) -> str:
        """One line: counts, and the loaded keys grouped by module (``backbone.blocks.3`` ×18, ...)."""
        groups = Counter(".".join(k.split(".")[:3 if k.startswith("backbone.blocks.") else 2]) for k in self.loaded)
        loaded = ", ".join(f"{g} ×{n}" for g, n in groups.items())
        missing = f" ({', '.join(self.missing)})" if self.missing else ""
        return (f"{self.source}: {len(self.loaded)} tensors loaded ({loaded}); {len(self.missing)} backbone tensors "
                f"left at init{missing}; {len(self.resized)} resized; {len(self.unexpected)} unexpected")


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
    return _load_k400(model, torch.load(path, map_location="cpu", weights_only=True), path, load_stem)


def _load_k400(model: IFDD, obj: object, path: str | Path, load_stem: bool) -> LoadReport:
    cfg = model.cfg
    if tuple(cfg.stage_depths) != (1, 2, 5, 2) or cfg.embed_dim != 96 or cfg.num_heads != 1:
        raise ValueError(f"{path}: k400 weights: only the xs preset (96 wide, 1 head, stages [1,2,5,2]) matches "
                         "mvit_v2_s; for another preset use a pretext init (`ifdd pretrain`)")
    source = _unwrap(obj, str(path))
    target = model.state_dict()
    report, new = LoadReport(source="kinetics400"), {}
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


def _resize_rel_pos(value: torch.Tensor, rows: int) -> torch.Tensor:
    """(L, d) relative-position table -> (rows, d) by linear interpolation along L."""
    x = value.t()[None]  # (1, d, L)
    return F.interpolate(x.float(), size=rows, mode="linear", align_corners=True)[0].t().to(value.dtype)


def load_pretext_weights(model: IFDD, state: dict, path: str | Path) -> LoadReport:
    """Copy every ``backbone.*`` tensor of a pretext checkpoint's ``model`` into ``model``.

    Raises:
        ValueError: the file's backbone is another architecture (a tensor shape differs beyond the relative-position
            tables' length, or a backbone key is unknown here).
    """
    source = state.get("model")
    if not isinstance(source, dict) or not source:
        raise ValueError(f"{path}: pretext checkpoint without a 'model' state dict")
    target = model.state_dict()
    report, new = LoadReport(source=PRETEXT_FORMAT), {}
    for key, value in source.items():
        if not key.startswith("backbone."):
            report.skipped.append(key)
            continue
        if key not in target:
            report.unexpected.append(key)
            continue
        want = target[key].shape
        if value.shape != want:
            if key.rsplit(".", 1)[-1].startswith("rel_pos_") and value.ndim == 2 and value.shape[1] == want[1]:
                value = _resize_rel_pos(value, want[0])
                report.resized.append(key)
            else:
                raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, this model needs {tuple(want)}: "
                                 f"the pretext backbone ({state.get('arch', '?')}) is another architecture; pretrain "
                                 "one for this model with `ifdd pretrain`")
        new[key] = value.to(target[key].dtype)
    if report.unexpected:
        raise ValueError(f"{path}: backbone keys unknown to this model: {', '.join(report.unexpected[:3])}; the "
                         "pretext backbone is another architecture")
    model.load_state_dict(new, strict=False)
    report.loaded = sorted(new)
    report.missing = sorted(k for k in target if k.startswith("backbone.") and k not in new)
    return report


def load_init_weights(model: IFDD, path: str | Path) -> LoadReport:
    """Initialise ``model``'s backbone from ``path``: a pretext checkpoint (its checksum verified) or a torchvision
    Kinetics-400 ``mvit_v2_s`` state dict (xs only). The returned report says which keys were loaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: initial weights not found")
    checksummed = path.with_name(path.name + ".sha256").is_file()
    obj = load_checkpoint(path) if checksummed else torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and obj.get("format") == PRETEXT_FORMAT:
        if not checksummed:
            raise ValueError(f"{path}: pretext checkpoint without its checksum file {path.name}.sha256; recreate "
                             "it with `ifdd pretrain`")
        return load_pretext_weights(model, obj, path)
    return _load_k400(model, obj, path, load_stem=False)
