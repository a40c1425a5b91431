"""Depthwise 3-D convolution as a sum of shifted slices (``ModelConfig.pool_conv: shifted``).

out[n, o] = Σ_taps w[c, tap] · x[n, o·s + tap - k//2] with zero padding k//2, computed on the token layout
(N, T, H, W, C) (C innermost, as the attention pooling holds it), so no layout copy is made. Each of the k³ taps is
one fused multiply-add over the strided slice of the input that it reads; the backward pass does the same per tap
for the input gradient and one reduction per tap for the weight gradient. Same function as
``F.conv3d(x, w, stride=s, padding=k//2, groups=C)``; the weight gradient has the weight's own strides.
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["depthwise_shifted"]

Slices = tuple[slice, slice, slice]


def _taps(in_size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]
          ) -> tuple[tuple[int, ...], list[tuple[tuple[int, int, int], Slices, Slices]]]:
    """Output size and, per kernel tap (a, b, c), the output slices it writes and the input slices it reads."""
    out_size = tuple((n + 2 * (k // 2) - k) // s + 1 for n, k, s in zip(in_size, kernel, stride, strict=True))
    taps = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        outs, ins = [], []
        for a, n, k, s, o in zip(tap, in_size, kernel, stride, out_size, strict=True):
            off = a - k // 2  # input index = o * s + off
            lo = (-off + s - 1) // s if off < 0 else 0  # first output whose input index is >= 0
            hi = min(o, (n - 1 - off) // s + 1)  # one past the last whose input index is <= n - 1
            outs.append(slice(lo, max(lo, hi)))
            ins.append(slice(lo * s + off, max(lo, hi - 1) * s + off + 1, s))
        if all(sl.stop > sl.start for sl in outs):
            taps.append((tap, tuple(outs), tuple(ins)))
    return out_size, taps


class _ShiftedDepthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
        # x: (N, T, H, W, C); weight: (C, 1, kt, kh, kw) -> (N, T', H', W', C)
        out_size, taps = _taps(tuple(x.shape[1:4]), tuple(weight.shape[2:]), stride)
        w = weight[:, 0].to(x.dtype).permute(1, 2, 3, 0)  # (kt, kh, kw, C): per tap, a C-vector
        out = x.new_zeros(x.shape[0], *out_size, x.shape[-1])
        for tap, o, i in taps:
            out[(slice(None), *o)].addcmul_(x[(slice(None), *i)], w[tap])
        ctx.save_for_backward(x, weight)
        ctx.taps = taps
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        gx = gw = None
        if ctx.needs_input_grad[0]:
            w = weight[:, 0].to(grad.dtype).permute(1, 2, 3, 0)
            gx = torch.zeros_like(x, memory_format=torch.contiguous_format)
            for tap, o, i in ctx.taps:
                gx[(slice(None), *i)].addcmul_(grad[(slice(None), *o)], w[tap])
        if ctx.needs_input_grad[1]:
            gw = torch.zeros_like(weight)  # keeps the weight's strides (what DDP's bucket views expect)
            gw_taps = gw[:, 0].permute(1, 2, 3, 0)  # (kt, kh, kw, C) view
            for tap, o, i in ctx.taps:
                prod = grad[(slice(None), *o)] * x[(slice(None), *i)]
                acc = torch.float32 if prod.dtype in (torch.float16, torch.bfloat16) else prod.dtype
                gw_taps[tap] = prod.sum(dim=(0, 1, 2, 3), dtype=acc).to(gw.dtype)
        return gx, gw, None


def depthwise_shifted(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int, int]) -> torch.Tensor:
    """(N, T, H, W, C) -> (N, T', H', W', C): depthwise conv with ``weight`` (C, 1, k, k, k), padding k//2."""
    if x.ndim != 5 or weight.ndim != 5 or weight.shape[0] != x.shape[-1] or weight.shape[1] != 1:
        raise ValueError(f"depthwise_shifted: expected x (N, T, H, W, C) and weight (C, 1, k, k, k), got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    return _ShiftedDepthwise.apply(x, weight, tuple(stride))
