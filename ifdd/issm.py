"""ISSM: Inter-frame Static-dynamic Splitting Module (docs/model.md §5), generalised to any split ratio.

Each frame is summarised by a small descriptor e_t; the inter-frame Gram matrix G = E·Eᵀ / C gives two row-softmaxes,
softmax(+G) (frames like the others: static/global) and softmax(−G) (frames unlike the others: dynamic). Linear heads
on each flattened map predict bounded offsets tanh(·)·rf around evenly spread base positions, and the feature map is
sampled at those fractional temporal positions by linear interpolation, which is what makes the split differentiable.

Base positions for k static slots and T−k dynamic slots (the even/odd lazy split when k = T/2)::

    static  p_i = i · T/k              i = 0..k−1        (T=8, k=4: 0, 2, 4, 6)
    dynamic q_j = (j+1) · T/(T−k) − 1  j = 0..T−k−1      (T=8, k=4: 1, 3, 5, 7)

Positions are clamped to [0, T−1] (the reference's border padding), so an offset that points past an edge carries
no gradient for that sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DESCRIPTOR_CHANNELS = 7


def base_positions(num_slots: int, num_static: int) -> tuple[torch.Tensor, torch.Tensor]:
    k, n = num_static, num_slots
    static = torch.arange(k, dtype=torch.float32) * (n / k)
    dynamic = (torch.arange(n - k, dtype=torch.float32) + 1) * (n / (n - k)) - 1
    return static, dynamic


def temporal_sample(x: torch.Tensor, pos: torch.Tensor, reference_grid: bool = False) -> torch.Tensor:
    """Sample x (B, C, T, H, W) at fractional frame positions pos (B, K) -> (B, C, K, H, W).

    Linear interpolation between the two nearest frames, border-clamped. ``reference_grid`` reproduces the reference
    repo's shift: positions normalised by T−1 but sampled with align_corners=False land at p·T/(T−1) − 0.5.
    """
    b, c, t, h, w = x.shape
    if reference_grid:
        pos = pos * (t / (t - 1)) - 0.5
    pos = pos.clamp(0, t - 1)
    # A NaN position (diverged weights) indexes frame 0 instead of crashing the gather; frac stays NaN, so the
    # sample and then the loss turn NaN and training stops with that reason.
    lo = pos.detach().nan_to_num(0.0).floor().clamp(0, t - 2).long()  # (B, K)
    frac = (pos - lo.to(pos.dtype))[:, None, :, None, None]  # gradient to the offsets flows through here
    flat = x.flatten(3)  # (B, C, T, H·W)
    idx = lo[:, None, :, None].expand(b, c, -1, h * w)
    left = flat.gather(2, idx).view(b, c, -1, h, w)
    right = flat.gather(2, idx + 1).view(b, c, -1, h, w)
    return left + frac * (right - left)


class ISSM(nn.Module):
    """Content-aware split of T temporal slots into k static and T−k dynamic slots.

    Args:
        dim: channels C of the input feature map.
        num_slots: T, temporal slots of the input.
        num_static: k, slots routed to the static/global branch.
        pool_size: spatial size each frame is pooled to before the descriptor (7 for XS: a no-op).
        receptive_field: offsets lie in (−rf, rf).
        learn_offsets: False gives the fixed lazy split at the base positions (the no-ISSM ablation).
        reference_grid: reproduce the reference repo's shifted sampling grid.
        static_offsets: False keeps the static slots at their base positions with no offset head, for a caller
            whose static branch feeds nothing (the last lifting level without LADM): a parameter outside the loss's
            graph would stall DDP's gradient reduction.
    """

    def __init__(self, dim: int, num_slots: int, num_static: int, pool_size: int = 7, receptive_field: float = 2.0,
                 learn_offsets: bool = True, reference_grid: bool = False, static_offsets: bool = True):
        super().__init__()
        self.num_slots, self.num_static = num_slots, num_static
        self.pool_size, self.rf = pool_size, receptive_field
        self.learn_offsets, self.reference_grid = learn_offsets, reference_grid
        self.static_offsets = learn_offsets and static_offsets
        static, dynamic = base_positions(num_slots, num_static)
        self.register_buffer("base_static", static, persistent=False)
        self.register_buffer("base_dynamic", dynamic, persistent=False)
        if learn_offsets:
            self.descriptor = nn.Conv2d(dim, DESCRIPTOR_CHANNELS, 1)
            if self.static_offsets:
                self.offset_static = nn.Linear(num_slots * num_slots, num_static, bias=False)
            self.offset_dynamic = nn.Linear(num_slots * num_slots, num_slots - num_static, bias=False)
            self.reset_offsets()

    def reset_offsets(self) -> None:
        # std 0.03: offsets start near ±0.05 slots, i.e. close to the lazy split (docs/model.md §5.5)
        for lin in (self.offset_static, self.offset_dynamic) if self.static_offsets else (self.offset_dynamic,):
            nn.init.trunc_normal_(lin.weight, std=0.03)

    def positions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Static (B, k) and dynamic (B, T−k) fractional frame positions for x (B, C, T, H, W)."""
        b, c, t = x.shape[:3]
        static = self.base_static.expand(b, -1)
        dynamic = self.base_dynamic.expand(b, -1)
        if not self.learn_offsets:
            return static, dynamic
        frames = x.transpose(1, 2).flatten(0, 1)  # (B·T, C, H, W)
        frames = F.adaptive_avg_pool2d(frames, self.pool_size)
        e = F.gelu(self.descriptor(frames)).reshape(b, t, -1)  # (B, T, 7·p·p)
        gram = e @ e.transpose(1, 2) / c  # (B, T, T) inter-frame correlation
        off_d = torch.tanh(self.offset_dynamic((-gram).softmax(-1).flatten(1))) * self.rf
        if not self.static_offsets:
            return static, dynamic + off_d
        off_s = torch.tanh(self.offset_static(gram.softmax(-1).flatten(1))) * self.rf
        return static + off_s, dynamic + off_d

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T, H, W) -> static (B, C, k, H, W), dynamic (B, C, T−k, H, W)."""
        pos_s, pos_d = self.positions(x)
        return (temporal_sample(x, pos_s, self.reference_grid), temporal_sample(x, pos_d, self.reference_grid))
