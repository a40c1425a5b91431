"""MViTv2 backbone (Li et al., "MViTv2", CVPR 2022) truncated to IFDD's XS stack, and the stage-2/3 pyramid fusion.

Written from the papers' maths (docs/model.md §3): pooling attention with residual pooling, decomposed relative
position embeddings, a class token kept out of pooling and of the residual, projection after attention when the
width changes, row-mode stochastic depth growing linearly over the blocks.

Data flow for the XS preset::

    (B, 3, 16, 224, 224) -stem-> (B, 96, 8, 56, 56) -> tokens (B, 1 + 8·56·56, 96)
      -> stage 0 [1 block] -> stage 1 [2] -> stage 2 [5] (B, 1 + 8·14·14, 384) -> stage 3 [2] + LayerNorm
      -> PyramidFusion(stage 2, stage 3) -> (B, 768, 8, 7, 7)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ifdd.config import ModelConfig
from ifdd.depthwise import depthwise_shifted

THW = tuple[int, int, int]


class DropPath(nn.Module):
    """Row-mode stochastic depth: each sample's whole branch is zeroed with probability p, else scaled by 1/(1-p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dim_out: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _pooled_size(n: int, kernel: int, stride: int) -> int:
    return (n + 2 * (kernel // 2) - kernel) // stride + 1


# Per device type, the pooling-conv layout and attention kernel that ``auto`` means (bench/model.py on CPU,
# bench/gpu.py on CUDA; see ModelConfig.pool_conv and attention_impl for what was measured).
AUTO_POOL_CONV = {"cpu": "channels_last", "cuda": "channels_last"}
AUTO_ATTENTION = {("cpu", "train"): "sdpa", ("cpu", "infer"): "sdpa", ("cuda", "train"): "sdpa",
                  ("cuda", "infer"): "sdpa"}


def resolve_pool_conv(choice: str, device_type: str) -> str:
    return AUTO_POOL_CONV.get(device_type, "channels_last") if choice == "auto" else choice


def resolve_attention(choice: str, device_type: str, training: bool) -> str:
    if choice != "auto":
        return choice
    # Other device types (meta: `ifdd model info` counts the architecture's MACs, not a kernel's padded ones) get
    # the plain computation.
    return AUTO_ATTENTION.get((device_type, "train" if training else "infer"), "eager")


class TokenPool(nn.Module):
    """Depthwise Conv3d pooling of per-head tokens, class token passed through, then LayerNorm over head_dim.

    ``layout`` (ModelConfig.pool_conv) picks the kernel; each computes the same convolution:
    ``channels_last`` runs the conv on the token memory viewed as (B·heads, d, T, H, W) with d innermost (oneDNN on
    CPU, cuDNN on CUDA); ``contiguous`` copies to NCDHW first (PyTorch's own depthwise-3D kernel on CUDA);
    ``shifted`` sums k³ strided slices of the token grid times per-channel weights (``ifdd.depthwise``).
    """

    fp32_under_autocast = True
    """Run the pooling conv in fp32 under CUDA autocast (see ``forward``); bench/gpu.py switches it off for its A/B."""

    def __init__(self, head_dim: int, kernel: int, stride: THW, layout: str = "auto"):
        super().__init__()
        self.layout, self.stride = layout, stride
        self.conv = nn.Conv3d(head_dim, head_dim, kernel, stride=stride, padding=kernel // 2, groups=head_dim,
                              bias=False)
        if {resolve_pool_conv(layout, d) for d in ("cpu", "cuda")} == {"channels_last"}:
            # The channels-last kernels return the weight gradient with channels-last strides: for this
            # (d, 1, k, k, k) weight the same memory as contiguous, but the stride of the size-1 dim differs, and
            # DistributedDataParallel compares all strides ("Grad strides do not match bucket view strides", then
            # a copy per step). Giving the weight those strides up front makes gradient and bucket view agree.
            weight = torch.empty_like(self.conv.weight, memory_format=torch.channels_last_3d)
            self.conv.weight = nn.Parameter(weight.copy_(self.conv.weight.detach()))
        self.norm = nn.LayerNorm(head_dim, eps=1e-6)

    def _conv(self, grid: torch.Tensor) -> torch.Tensor:
        # grid: (B·heads, T, H, W, d) -> (B·heads, T', H', W', d), any strides
        layout = resolve_pool_conv(self.layout, grid.device.type)
        if layout == "shifted":
            return depthwise_shifted(grid, self.conv.weight, self.stride)
        x = grid.permute(0, 4, 1, 2, 3)  # (B·heads, d, T, H, W)
        if layout == "contiguous":
            x = x.contiguous()
        return self.conv(x).permute(0, 2, 3, 4, 1)

    def forward(self, x: torch.Tensor, thw: THW) -> tuple[torch.Tensor, THW]:
        # x: (B, heads, 1 + T*H*W, d)
        b, h, _, d = x.shape
        cls, grid = x[:, :, :1], x[:, :, 1:].reshape(b * h, *thw, d)
        kind = grid.device.type
        if (kind == "cuda" and self.fp32_under_autocast and torch.is_grad_enabled() and self.conv.weight.requires_grad
                and torch.is_autocast_enabled(kind)):
            # cuDNN's bf16/fp16 weight-gradient kernel for depthwise Conv3d took ~80% of an XS training step on an
            # H100; in fp32 a training step runs 1.21x faster (bench/gpu.py, same-process A/B). Inference keeps bf16.
            with torch.autocast(kind, enabled=False):
                grid = self._conv(grid.float())
            cls = cls.float()
        else:
            grid = self._conv(grid)
        new_thw = tuple(grid.shape[1:4])
        grid = grid.reshape(b, h, -1, d)
        return self.norm(torch.cat([cls, grid], dim=2)), new_thw


def _rel_index(q_size: int, k_size: int, device: torch.device) -> torch.Tensor:
    """Index into a relative-position table for every (query, key) coordinate pair along one axis.

    Coordinates are rescaled to the finer of the two grids so that pooled queries/keys measure distance in the
    same units (MViTv2 eq. 4); the offset makes every index non-negative.
    """
    q_ratio = max(k_size / q_size, 1.0)
    k_ratio = max(q_size / k_size, 1.0)
    q = torch.arange(q_size, device=device)[:, None] * q_ratio
    k = torch.arange(k_size, device=device)[None, :] * k_ratio
    return (q - k + (k_size - 1) * k_ratio).long()


def _key_coords(k_thw: THW, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, h, w) grid coordinates of the non-class keys in token order, each (kt·kh·kw,)."""
    kt, kh, kw = k_thw
    j = torch.arange(kt * kh * kw, device=device)
    return j // (kh * kw), (j // kw) % kh, j % kw


def _residual(out: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Residual pooling: out + q on all tokens but the class token, (B, heads, N, d), as a new tensor (the fused
    kernels keep their output for backward, so it is not modified in place)."""
    return torch.cat([out[:, :, :1], out[:, :, 1:] + q[:, :, 1:]], dim=2)


_FLEX = None


def _flex_attention():
    """FlexAttention compiled once per process (uncompiled it runs a slow reference that materialises the logits)."""
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


class PoolingAttention(nn.Module):
    """Multi-head pooling attention with decomposed relative positions and residual pooling.

    logits = (q·s)kᵀ + E_rel with E_rel(i, j) = q_i·(R_t[t_i, t_j] + R_h[h_i, h_j] + R_w[w_i, w_j]); the output adds
    the pooled query back (residual pooling) on all tokens but the class token. ``impl`` (ModelConfig.attention_impl)
    picks how softmax(logits)·v is computed; all give the same result (tests/test_attention_impl.py, fp64).
    """

    def __init__(self, dim: int, dim_out: int, heads: int, input_thw: THW, stride_q: THW, stride_kv: THW,
                 kernel: int, impl: str = "auto", pool_conv: str = "auto"):
        super().__init__()
        self.heads = heads
        self.head_dim = dim_out // heads
        self.scale = self.head_dim**-0.5
        self.impl = impl
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)
        self.pool_q = TokenPool(self.head_dim, kernel, stride_q, pool_conv)
        self.pool_k = TokenPool(self.head_dim, kernel, stride_kv, pool_conv)
        self.pool_v = TokenPool(self.head_dim, kernel, stride_kv, pool_conv)
        t, hgt, wid = input_thw
        size = max(hgt, wid)
        span = 2 * max(size // stride_q[1], size // stride_kv[1]) - 1
        self.rel_pos_h = nn.Parameter(torch.zeros(span, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(span, self.head_dim))
        self.rel_pos_t = nn.Parameter(torch.zeros(2 * t - 1, self.head_dim))

    def _rel_terms(self, q: torch.Tensor, q_thw: THW, k_thw: THW) -> list[torch.Tensor]:
        """The three factors of E_rel for the non-class queries: (B, heads, qt, qh, qw, k_axis) for t, h, w."""
        b, h, _, d = q.shape
        (qt, qh, qw), (kt, kh, kw) = q_thw, k_thw
        r_q = q[:, :, 1:].reshape(b, h, qt, qh, qw, d)
        rt = self.rel_pos_t[_rel_index(qt, kt, q.device)]  # (qt, kt, d)
        rh = self.rel_pos_h[_rel_index(qh, kh, q.device)]  # (qh, kh, d)
        rw = self.rel_pos_w[_rel_index(qw, kw, q.device)]  # (qw, kw, d)
        return [torch.einsum("bnthwd,tkd->bnthwk", r_q, rt), torch.einsum("bnthwd,hkd->bnthwk", r_q, rh),
                torch.einsum("bnthwd,wkd->bnthwk", r_q, rw)]

    def _eager(self, q, k, v, q_thw: THW, k_thw: THW) -> torch.Tensor:
        # The (B, heads, Nq, Nk) logits are the only full-size tensor: E_rel is added in place on the non-class
        # block, as two broadcast passes (t, then h+w summed at (.., kh, kw) size), and residual pooling too.
        b, h = q.shape[:2]
        bt, bh, bw = self._rel_terms(q, q_thw, k_thw)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        grid = attn[:, :, 1:, 1:].view(b, h, *q_thw, *k_thw)
        grid.add_(bt[..., :, None, None]).add_((bh[..., :, None] + bw[..., None, :])[..., None, :, :])
        out = attn.softmax(dim=-1) @ v
        if out.dtype != q.dtype:  # under autocast: bf16 attention, fp32 pooled q; the sum is fp32 as before
            return _residual(out, q)
        out[:, :, 1:] += q[:, :, 1:]
        return out

    def _sdpa(self, q, k, v, q_thw: THW, k_thw: THW) -> torch.Tensor:
        # E_rel(i, j) = bt[i, t_j] + bh[i, h_j] + bw[i, w_j] is a dot product of [bt_i | bh_i | bw_i] with the
        # one-hot codes of key j's (t, h, w): appended to q·s and to k, one GEMM gives the biased logits and no
        # attention mask is needed, so the fused (flash) kernels apply, with gradients. The class query/key get
        # zero codes (no relative term). Widths are padded to a multiple of 8 and v to the same width: the CPU
        # flash kernel needs equal q/k/v widths, CUDA's kernels 8-aligned ones.
        b, h, _, d = q.shape
        rel = torch.cat(self._rel_terms(q, q_thw, k_thw), dim=-1).flatten(2, 4)  # (B, heads, Nq-1, kt+kh+kw)
        codes = torch.cat([F.one_hot(c, n) for c, n in zip(_key_coords(k_thw, q.device), k_thw, strict=True)], -1)
        extra = codes.shape[-1]
        pad = -(d + extra) % 8
        qa = torch.cat([q * self.scale, F.pad(rel, (0, pad, 1, 0))], dim=-1)
        codes = F.pad(codes.to(k.dtype), (0, pad, 1, 0))  # (Nk, extra + pad), class key first
        ka = torch.cat([k, codes.expand(b, h, -1, -1)], dim=-1)
        va = F.pad(v, (0, extra + pad))
        return _residual(F.scaled_dot_product_attention(qa, ka, va, scale=1.0)[..., :d], q)

    def _flex(self, q, k, v, q_thw: THW, k_thw: THW) -> torch.Tensor:
        if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
            raise RuntimeError("attention_impl='flex': PyTorch's FlexAttention has no backward on CPU; train with "
                               "attention_impl 'sdpa' or 'auto' (flex serves CPU inference only)")
        if q.device.type == "cpu" and q.dtype == torch.float64:
            raise RuntimeError("attention_impl='flex': no float64 FlexAttention on CPU; use 'sdpa' or 'eager'")
        b, h = q.shape[:2]
        # Tables (B, heads, Nq, 1 + k_axis): row 0 (class query) and column 0 (class key) are zeros.
        tables = [F.pad(r.flatten(2, 4), (1, 0, 1, 0)) for r in self._rel_terms(q, q_thw, k_thw)]
        zero = torch.zeros(1, dtype=torch.long, device=q.device)
        idx = [torch.cat([zero, c + 1]) for c in _key_coords(k_thw, q.device)]  # (Nk,) per axis
        tt, th, tw = tables
        it, ih, iw = idx

        def score_mod(score, bi, hi, qi, ki):
            return score + tt[bi, hi, qi, it[ki]] + th[bi, hi, qi, ih[ki]] + tw[bi, hi, qi, iw[ki]]

        kind = q.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else q.dtype  # flex: no autocast
        out = _flex_attention()(q.to(dtype), k.to(dtype), v.to(dtype), score_mod=score_mod, scale=self.scale)
        return _residual(out, q)

    def forward(self, x: torch.Tensor, thw: THW) -> tuple[torch.Tensor, THW]:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, d)
        q, q_thw = self.pool_q(q, thw)
        k, k_thw = self.pool_k(k, thw)
        v, _ = self.pool_v(v, thw)
        impl = resolve_attention(self.impl, x.device.type, torch.is_grad_enabled())
        out = {"eager": self._eager, "sdpa": self._sdpa, "flex": self._flex}[impl](q, k, v, q_thw, k_thw)
        out = out.transpose(1, 2).reshape(b, -1, self.heads * self.head_dim)
        return self.proj(out), q_thw


class MViTBlock(nn.Module):
    """Pre-norm block: x + attn(norm1 x) with a pooled (and, on width change, projected) skip; then x + mlp(norm2 x)."""

    def __init__(self, dim: int, dim_out: int, heads: int, input_thw: THW, stride_q: THW, stride_kv: THW,
                 kernel: int, mlp_ratio: float, drop_path: float, attention_impl: str = "auto",
                 pool_conv: str = "auto"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PoolingAttention(dim, dim_out, heads, input_thw, stride_q, stride_kv, kernel, attention_impl,
                                     pool_conv)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), dim_out)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None
        self.skip_pool = None
        if max(stride_q) > 1:
            k = tuple(s + 1 if s > 1 else 1 for s in stride_q)
            self.skip_pool = nn.MaxPool3d(k, stride_q, tuple(i // 2 for i in k))

    def _pool_skip(self, x: torch.Tensor, thw: THW) -> torch.Tensor:
        if self.skip_pool is None:
            return x
        b, _, c = x.shape
        grid = x[:, 1:].transpose(1, 2).reshape(b, c, *thw)
        grid = self.skip_pool(grid).flatten(2).transpose(1, 2)
        return torch.cat([x[:, :1], grid], dim=1)

    def forward(self, x: torch.Tensor, thw: THW) -> tuple[torch.Tensor, THW]:
        xn = self.norm1(x)
        attn, new_thw = self.attn(xn, thw)
        skip = self.proj(xn) if self.proj is not None else x
        x = self._pool_skip(skip, thw) + self.drop_path(attn)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, new_thw


class MViTBackbone(nn.Module):
    """Stem + class token + 4-stage MViTv2 stack. ``forward`` returns every stage's tokens (class token first)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.stem = nn.Conv3d(cfg.in_chans, cfg.embed_dim, (3, 7, 7), stride=(2, 4, 4), padding=(1, 3, 3))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        thw = (cfg.temporal_slots, cfg.image_size // 4, cfg.image_size // 4)
        total = sum(cfg.stage_depths)
        kv, idx = cfg.kv_stride, 0
        self.blocks = nn.ModuleList()
        self.stage_ends: list[int] = []  # index of the last block of each stage
        for stage, depth in enumerate(cfg.stage_depths):
            for j in range(depth):
                first = j == 0 and stage > 0
                stride_q = (1, 2, 2) if first else (1, 1, 1)
                if first:
                    kv = max(kv // 2, 1)
                dim_in = cfg.stage_dim(stage - 1) if first else cfg.stage_dim(stage)
                self.blocks.append(MViTBlock(
                    dim_in, cfg.stage_dim(stage), cfg.stage_heads(stage), thw, stride_q, (1, kv, kv),
                    cfg.pool_kernel, cfg.mlp_ratio, cfg.drop_path * idx / max(total - 1, 1), cfg.attention_impl,
                    cfg.pool_conv))
                thw = (thw[0], _pooled_size(thw[1], cfg.pool_kernel, stride_q[1]),
                       _pooled_size(thw[2], cfg.pool_kernel, stride_q[2]))
                idx += 1
            self.stage_ends.append(idx - 1)
        self.norm = nn.LayerNorm(cfg.top_dim, eps=1e-6)

    def forward(self, video: torch.Tensor) -> list[tuple[torch.Tensor, THW]]:
        """(B, C, T, H, W) -> per stage (tokens (B, 1 + T'·H'·W', C_s), (T', H', W')); stage 3 is normalised."""
        x = self.stem(video)  # (B, embed, T/2, H/4, W/4)
        thw = tuple(x.shape[2:])
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        stages = []
        for i, block in enumerate(self.blocks):
            x, thw = block(x, thw)
            if i in self.stage_ends:
                stages.append((x, thw))
        stages[-1] = (self.norm(stages[-1][0]), stages[-1][1])
        return stages


class PyramidFusion(nn.Module):
    """Fuse stage 2 into stage 3 per frame: dilated stride-2 conv on stage 2, concat, 1×1 conv (no temporal mixing)."""

    def __init__(self, dim2: int, dim3: int):
        super().__init__()
        self.down = nn.Conv2d(dim2, dim2, 3, stride=2, padding=2, dilation=2, bias=False)
        self.fuse = nn.Conv2d(dim2 + dim3, dim3, 1, bias=False)

    @staticmethod
    def _frames(tokens: torch.Tensor, thw: THW) -> torch.Tensor:
        # (B, 1 + T·H·W, C) -> (B·T, C, H, W), class token dropped
        b, _, c = tokens.shape
        t, h, w = thw
        return tokens[:, 1:].reshape(b, t, h, w, c).permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w)

    def forward(self, s2: tuple[torch.Tensor, THW], s3: tuple[torch.Tensor, THW]) -> torch.Tensor:
        b, t = s3[0].shape[0], s3[1][0]
        x = torch.cat([self.down(self._frames(*s2)), self._frames(*s3)], dim=1)
        x = self.fuse(x)  # (B·T, C3, H3, W3)
        return x.reshape(b, t, *x.shape[1:]).transpose(1, 2)  # (B, C3, T, H3, W3)


def init_weights(module: nn.Module, linear: str = "mvit") -> None:
    """MViT-style init: truncated-normal(0.02) linear weights and zero biases (``linear="torch"``: PyTorch's own
    ``nn.Linear`` init instead, see ``ModelConfig.linear_init``), unit LayerNorms, truncated-normal(0.02) rel-pos
    tables."""
    for m in module.modules():
        if isinstance(m, nn.Linear) and linear == "torch":
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, PoolingAttention):
            for p in (m.rel_pos_h, m.rel_pos_w, m.rel_pos_t):
                nn.init.trunc_normal_(p, std=0.02)
        elif isinstance(m, MViTBackbone):
            nn.init.trunc_normal_(m.cls_token, std=0.02)
