"""The pooling attention as it was before its kernels became selectable (``attention_impl``/``pool_conv``), kept
outside the library as the baseline that tests/test_attention_impl.py checks every kernel against (fp64) and that
bench/model.py and bench/gpu.py time beside them. It uses a ``PoolingAttention`` module's parameters.

``reference_forward()`` (a context manager) runs every ``PoolingAttention`` the old way meanwhile.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ifdd.backbone import PoolingAttention, TokenPool, _rel_index


def _reference_pool(pool: TokenPool, x: torch.Tensor, thw):
    b, h, _, d = x.shape
    cls, grid = x[:, :, :1], x[:, :, 1:]
    grid = grid.reshape(b * h, *thw, d).permute(0, 4, 1, 2, 3)  # a channels-last view
    conv = lambda g: F.conv3d(g, pool.conv.weight, stride=pool.conv.stride, padding=pool.conv.padding,  # noqa: E731
                              groups=d)
    kind = grid.device.type
    if (kind == "cuda" and pool.fp32_under_autocast and torch.is_grad_enabled() and pool.conv.weight.requires_grad
            and torch.is_autocast_enabled(kind)):
        with torch.autocast(kind, enabled=False):
            grid = conv(grid.float())
        cls = cls.float()
    else:
        grid = conv(grid)
    new_thw = tuple(grid.shape[2:])
    grid = grid.flatten(2).transpose(1, 2).reshape(b, h, -1, d)
    return pool.norm(torch.cat([cls, grid], dim=2)), new_thw


def _reference_rel_bias(attn: PoolingAttention, q, q_thw, k_thw):
    b, h, _, d = q.shape
    (qt, qh, qw), (kt, kh, kw) = q_thw, k_thw
    r_q = q[:, :, 1:].reshape(b, h, qt, qh, qw, d)
    rt = attn.rel_pos_t[_rel_index(qt, kt, q.device)]
    rh = attn.rel_pos_h[_rel_index(qh, kh, q.device)]
    rw = attn.rel_pos_w[_rel_index(qw, kw, q.device)]
    bt = torch.einsum("bnthwd,tkd->bnthwk", r_q, rt)
    bh = torch.einsum("bnthwd,hkd->bnthwk", r_q, rh)
    bw = torch.einsum("bnthwd,wkd->bnthwk", r_q, rw)
    bias = bt[..., :, None, None] + bh[..., None, :, None] + bw[..., None, None, :]
    return bias.reshape(b, h, qt * qh * qw, kt * kh * kw)


def reference_attention(attn: PoolingAttention, x: torch.Tensor, thw):
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, q_thw = _reference_pool(attn.pool_q, q, thw)
    k, k_thw = _reference_pool(attn.pool_k, k, thw)
    v, _ = _reference_pool(attn.pool_v, v, thw)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    bias = F.pad(_reference_rel_bias(attn, q, q_thw, k_thw), (1, 0, 1, 0))
    out = (logits + bias).softmax(dim=-1) @ v
    out = out + F.pad(q[:, :, 1:], (0, 0, 1, 0))
    out = out.transpose(1, 2).reshape(b, -1, attn.heads * attn.head_dim)
    return attn.proj(out), q_thw


@contextmanager
def reference_forward(active: bool = True):
    """While active, every PoolingAttention runs ``reference_attention`` (the implementation before)."""
    saved = PoolingAttention.forward
    if active:
        PoolingAttention.forward = reference_attention
    try:
        yield
    finally:
        PoolingAttention.forward = saved
