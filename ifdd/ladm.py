"""LADM: Lifting-based Aggregation-Disentanglement Module (docs/model.md §6), with ``lifting_depth`` levels.

Classic lifting splits a signal into even/odd samples, predicts the odd from the even (detail d ← d − P(s)) and
updates the even with the detail (approximation s ← s + U(d)). IFDD learns it: ISSM does the split, P and U are
multi-head cross-attention, and the paper's order is update first, then predict::

    x (B, C, T, H, W) --ISSM--> x_a (k slots), x_d (T−k slots) --LayerNorm each-->
    a ← a + U(q=a, kv=d)          (aggregate the global context)
    d ← d − P(q=d, kv=a)          (remove it from the dynamic branch)
    d ← d + SelfAttn(d);  d ← MLP(d)   (post-processing; the MLP output replaces d)
    feature = Linear over tokens(d) -> (B, C)

Level l+1 repeats this on level l's updated approximation ``a``; the per-level features are fused for the head.
Each level also returns its global-context map (B, H, W): channel/time mean of (temporal low-pass of x − a), which
the loss pushes to 0 (the relaxed Haar update constraint).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ifdd.backbone import DropPath, Mlp
from ifdd.config import ModelConfig
from ifdd.issm import ISSM


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, T, H, W) -> (B, T·H·W, C)


def _grid(tokens: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, t, h, w)  # (B, T·H·W, C) -> (B, C, T, H, W)


def _align_time(v: torch.Tensor, src: int, dst: int, hw: int) -> torch.Tensor:
    """Resample per-head values (B, heads, src·HW, d) to dst temporal slots by linear interpolation."""
    if src == dst:
        return v
    b, h, _, d = v.shape
    x = v.reshape(b * h, src, hw * d).transpose(1, 2)  # (B·heads, HW·d, src)
    x = F.interpolate(x, size=dst, mode="linear", align_corners=True)
    return x.transpose(1, 2).reshape(b, h, dst * hw, d)


class CrossAttention(nn.Module):
    """Global multi-head cross-attention (queries from one branch, keys/values from the other), no locality.

    With ``value_residual`` the value tensor itself is added to the attention output, as in the reference; when the
    branches have different slot counts (split ratio ≠ 0.5) the values are first resampled in time to the queries'.
    """

    def __init__(self, dim: int, heads: int, value_residual: bool = True):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.value_residual = value_residual
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, q_slots: int, kv_slots: int, hw: int) -> torch.Tensor:
        b, nq, c = xq.shape
        q = self.q(xq).view(b, nq, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, Nq, d)
        k, v = self.kv(xkv).view(b, -1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        if self.value_residual:
            out = out + _align_time(v, kv_slots, q_slots, hw)
        return self.proj(out.transpose(1, 2).reshape(b, nq, c))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LiftingLevel(nn.Module):
    """One split + (update, predict) + post-processing + token pooling. See the module docstring."""

    def __init__(self, cfg: ModelConfig, num_slots: int, num_static: int, last: bool = True):
        super().__init__()
        dim, side = cfg.top_dim, cfg.fused_size
        self.slots, self.static = num_slots, num_static
        self.dynamic = num_slots - num_static
        self.use_ladm, self.update_first = cfg.use_ladm, cfg.update_first
        # Without LADM the static branch only feeds the next level: in the last level it feeds nothing, so its
        # offsets and norm are not built (DDP cannot reduce gradients of parameters outside the graph).
        self.issm = ISSM(dim, num_slots, num_static, pool_size=cfg.issm_pool_size,
                         receptive_field=cfg.issm_receptive_field, learn_offsets=cfg.use_issm,
                         reference_grid=cfg.issm_positions == "reference", static_offsets=cfg.use_ladm or not last)
        self.norm_static = nn.LayerNorm(dim) if cfg.use_ladm else None
        self.norm_dynamic = nn.LayerNorm(dim)
        if cfg.use_ladm:
            self.update = CrossAttention(dim, cfg.lifting_heads, cfg.value_residual)
            self.predict = CrossAttention(dim, cfg.lifting_heads, cfg.value_residual)
        self.post_norm1 = nn.LayerNorm(dim)
        self.post_attn = SelfAttention(dim, cfg.lifting_heads)
        self.post_drop = DropPath(cfg.ladm_drop_path)
        self.post_norm2 = nn.LayerNorm(dim)
        self.post_mlp = Mlp(dim, int(dim * cfg.mlp_ratio), dim)
        self.mlp_drop = DropPath(cfg.ladm_drop_path) if cfg.ladm_mlp_drop_path else nn.Identity()
        self.token_pool = nn.Linear(self.dynamic * side * side, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x (B, C, T, H, W) -> feature (B, C), next-level input (B, C, k, H, W), gc map (B, H, W) or None."""
        _, _, _, h, w = x.shape
        x_a, x_d = self.issm(x)
        d = self.norm_dynamic(_tokens(x_d))  # (B, (T−k)·H·W, C)
        gc_map, nxt = None, x_a
        if self.use_ladm:
            a = self.norm_static(_tokens(x_a))  # (B, k·H·W, C)
            hw = h * w
            if self.update_first:
                a = a + self.update(a, d, self.static, self.dynamic, hw)
                d = d - self.predict(d, a, self.dynamic, self.static, hw)
            else:
                d = d - self.predict(d, a, self.dynamic, self.static, hw)
                a = a + self.update(a, d, self.static, self.dynamic, hw)
            nxt = _grid(a, self.static, h, w)
            # Ideal low-pass of x at k slots (pairwise means when k = T/2) minus the updated approximation.
            lowpass = F.adaptive_avg_pool3d(x, (self.static, h, w))
            gc_map = (lowpass - nxt).mean(dim=(1, 2))
        d = d + self.post_drop(self.post_attn(self.post_norm1(d)))
        d = self.mlp_drop(self.post_mlp(self.post_norm2(d)))
        feature = self.token_pool(d.transpose(1, 2)).squeeze(-1)  # (B, C)
        return feature, nxt, gc_map


class LADM(nn.Module):
    """``lifting_depth`` lifting levels on the fused (B, C, T, H, W) map; returns the fused dynamic feature."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.levels = nn.ModuleList()
        n, plan = cfg.temporal_slots, cfg.slots
        for i, (k, _) in enumerate(plan):
            self.levels.append(LiftingLevel(cfg, n, k, last=i == len(plan) - 1))
            n = k
        depth = len(self.levels)
        self.level_fuse = nn.Linear(depth * cfg.top_dim, cfg.top_dim) if depth > 1 else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features, gc_maps = [], []
        for level in self.levels:
            feat, x, gc = level(x)
            features.append(feat)
            if gc is not None:
                gc_maps.append(gc)
        fused = features[0] if self.level_fuse is None else self.level_fuse(torch.cat(features, dim=1))
        return fused, gc_maps
