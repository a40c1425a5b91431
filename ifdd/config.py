"""Typed, validated configuration for the IFDD model and its loss.

Every dataclass is frozen and checks itself in ``__post_init__``: a combination that cannot build or train raises a
``ValueError`` that names the field and the reason, before any tensor is allocated. ``from_dict`` turns plain
mappings (e.g. parsed YAML) into these classes and rejects unknown keys and wrong types.

Shapes and defaults follow docs/model.md §2–§8 (the reference MViTv2-XS model on 16×224² DFEW clips).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ModelConfig", "LossConfig", "OptimConfig", "PRESETS", "model_preset", "slot_plan", "from_dict", "to_dict",
           "coerce_value"]


def _round_half_up(x: float) -> int:
    # Python's round() rounds half to even (round(0.5) == 0); slot counts must not depend on that.
    return math.floor(x + 0.5)


def slot_plan(num_slots: int, split_ratio: float, lifting_depth: int) -> list[tuple[int, int]]:
    """Temporal slots per lifting level as ``[(approx, detail), ...]``.

    Level 1 splits the ``num_slots`` frames of the fused feature map; level l+1 splits level l's updated
    approximation again. ``approx = round_half_up(ratio * n)``, ``detail = n - approx``.

    Raises:
        ValueError: if some level would leave a branch with no slot.
    """
    plan, n = [], num_slots
    for level in range(1, lifting_depth + 1):
        k = _round_half_up(split_ratio * n)
        if k < 1 or n - k < 1:
            raise ValueError(
                f"split_ratio={split_ratio} with lifting_depth={lifting_depth}: level {level} has {n} temporal "
                f"slot(s) and would give {k} to the static branch and {n - k} to the dynamic branch; "
                "each branch needs at least 1"
            )
        plan.append((k, n - k))
        n = k
    return plan


@dataclass(frozen=True)
class ModelConfig:
    """IFDD on a multiscale ViT (MViTv2) backbone. Defaults are the paper's XS model (docs/model.md §2.1)."""

    num_classes: int = 7
    """Output classes (DFEW: 7)."""
    num_frames: int = 16
    """Input frames T; the stem halves time, so the backbone sees T/2 temporal tokens."""
    image_size: int = 224
    """Square input side; the stem divides it by 4 and each later stage by 2."""
    in_chans: int = 3
    input_norm: Literal["kinetics", "none"] = "kinetics"
    """``kinetics``: the model standardises its [0, 1] input with the Kinetics mean/std (0.45, 0.225) per channel
    before the stem. ``none``: raw [0, 1] input, as the reference repo does (measured here: the tiny preset
    trained from scratch on the synthetic set stays at chance without it, and learns with it)."""
    linear_init: Literal["mvit", "torch"] = "mvit"
    """Initial linear layers of the backbone and the lifting module. ``mvit``: truncated-normal(0.02) weights and
    zero biases, MViTv2's (and ViT's) init, sized for widths of 96 and more. ``torch``: PyTorch's own ``nn.Linear``
    init (weights and biases uniform in ±1/√fan_in). At width 16 (the tiny preset) std 0.02 leaves attention
    uniform and every block near the identity; measured in docs/proxy.md on fresh pretext clips, the tiny model
    stays at chance for 1,500 steps with ``mvit`` and leaves it after 1,000–1,500 with ``torch``."""
    embed_dim: int = 96
    """Channels after the stem (stage 0). Each later stage doubles the width."""
    num_heads: int = 1
    """Attention heads in stage 0. Each later stage doubles the heads."""
    stage_depths: tuple[int, ...] = (1, 2, 5, 2)
    """Blocks per stage. XS = MViTv2-S's [1, 2, 11, 2] shortened to [1, 2, 5, 2]."""
    kv_stride: int = 8
    """Spatial key/value pooling stride in stage 0; divided by 2 at each stage (8, 4, 2, 1 for XS)."""
    pool_kernel: int = 3
    """Kernel of the depthwise pooling convolutions on q, k and v."""
    mlp_ratio: float = 4.0
    drop_path: float = 0.2
    """Stochastic depth of the last backbone block (linear ramp from 0)."""
    head_dropout: float = 0.5
    """Dropout before the classifier."""
    attention_impl: Literal["auto", "eager", "sdpa", "flex"] = "auto"
    """How pooling attention computes softmax(q·kᵀ/√d + E_rel)·v; every choice computes the same function (fp64
    tests). ``eager``: the (B, heads, Nq, Nk) logits are materialised and the decomposed bias E_rel is added in
    place. ``sdpa``: E_rel is folded into the q·kᵀ product (per-axis bias terms appended to q, one-hot key
    positions to k) and ``F.scaled_dot_product_attention`` runs its fused kernels, gradients included, with no
    full-size tensor kept. ``flex``: FlexAttention with E_rel as a score_mod (compiled on first use; on CPU
    inference only, float32). ``auto``: per device type and mode, the fastest measured (``ifdd.backbone.
    AUTO_ATTENTION``): sdpa. CPU, xs at batch 2 (bench/model.py, against the implementation before): sdpa 1.40x
    inference at 0.82x its peak RSS and 1.22x training; eager 1.32x / 1.00x; flex 1.25x inference at 0.70x RSS
    after a 43 s compile. CUDA: not yet measured (bench/gpu.py A/Bs them); sdpa, whose fused kernels take bf16
    and fp32 with gradients, until it has."""
    pool_conv: Literal["auto", "channels_last", "contiguous", "shifted"] = "auto"
    """Kernel of the depthwise pooling convs (same function, ``ifdd.backbone.TokenPool``): ``channels_last`` runs on
    the token memory (oneDNN on CPU, cuDNN on CUDA), ``contiguous`` copies to NCDHW first (PyTorch's depthwise-3D
    kernel on CUDA), ``shifted`` sums k³ strided slices (``ifdd.depthwise``). ``auto``: per device type, the fastest
    measured (``ifdd.backbone.AUTO_POOL_CONV``): channels_last on CPU (xs training with sdpa, bench/model.py:
    1.22x the implementation before, against 1.10x contiguous and 1.09x shifted); CUDA keeps channels_last (the
    measured H100 setup) until bench/gpu.py has measured the others."""

    use_issm: bool = True
    """Content-aware split (ISSM). Off: the fixed base positions are used with no learned offsets."""
    use_ladm: bool = True
    """Lifting update/predict (LADM). Off: the split dynamic branch goes to the post-block directly, no GC loss."""
    split_ratio: float = 0.5
    """Fraction of the temporal slots routed to the static/global branch (paper: 0.5, i.e. 4 + 4 of 8)."""
    lifting_depth: int = 1
    """Lifting levels; level l+1 splits level l's updated approximation again (paper: 1)."""
    issm_pool_size: int = 7
    """ISSM pools each frame to this spatial size before the 7-channel descriptor (XS: 7, a no-op)."""
    issm_receptive_field: float = 2.0
    """Learned offsets lie in (-rf, rf) slots around the base positions."""
    issm_positions: Literal["exact", "reference"] = "exact"
    """``exact``: sample at the computed positions. ``reference``: reproduce the reference repo's grid shift
    (positions p*T/(T-1) - 0.5, from normalising by T-1 but sampling with align_corners=False)."""
    lifting_heads: int = 8
    update_first: bool = True
    """Update-then-predict (the paper's order); False gives the classic predict-first lifting."""
    value_residual: bool = True
    """Add the (temporally aligned) value tensor to the cross-attention output, as the reference does."""
    ladm_drop_path: float = 0.2
    """Stochastic depth of the post self-attention block on the dynamic branch."""
    ladm_mlp_drop_path: bool = False
    """Reference quirk: also apply row stochastic depth to the post-MLP output, which *replaces* the feature, so a
    dropped sample's whole feature is zero. Off by default; on reproduces the reference repo."""
    feature_norm: bool = True
    """LayerNorm on the dynamic feature before the head. The lifting path ends in a token-pooling Linear after an
    MLP whose output replaces the feature, so at init the feature is ~1e-3 in scale and the backbone's gradients
    vanish; the norm restores unit scale (measured: the tiny preset from scratch left chance within 200 steps
    with it and not in 400 without). False reproduces the reference head."""

    def __post_init__(self) -> None:
        _check_positive(self, "num_classes", "num_frames", "image_size", "in_chans", "embed_dim", "num_heads",
                        "kv_stride", "pool_kernel", "lifting_depth", "lifting_heads", "issm_pool_size")
        if self.num_classes < 2:
            raise ValueError(f"num_classes: must be >= 2, got {self.num_classes}")
        if len(self.stage_depths) != 4 or any(d < 1 for d in self.stage_depths):
            raise ValueError(f"stage_depths: need 4 stages of >= 1 block each, got {list(self.stage_depths)}")
        if self.num_frames % 2 or self.num_frames < 4:
            raise ValueError(f"num_frames: must be even and >= 4 (the stem halves time), got {self.num_frames}")
        if self.image_size % 32:
            raise ValueError(f"image_size: must be a multiple of 32 (stem /4, three stage strides /2), "
                             f"got {self.image_size}")
        if self.pool_kernel % 2 == 0:
            raise ValueError(f"pool_kernel: must be odd, got {self.pool_kernel}")
        if not 0.0 <= self.drop_path < 1.0 or not 0.0 <= self.ladm_drop_path < 1.0:
            raise ValueError("drop_path/ladm_drop_path: must be in [0, 1)")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout: must be in [0, 1), got {self.head_dropout}")
        if not 0.0 < self.split_ratio < 1.0:
            raise ValueError(f"split_ratio: must be in (0, 1), got {self.split_ratio}")
        if self.issm_receptive_field <= 0:
            raise ValueError(f"issm_receptive_field: must be > 0, got {self.issm_receptive_field}")
        if self.input_norm not in ("kinetics", "none"):
            raise ValueError(f"input_norm: must be 'kinetics' or 'none', got {self.input_norm!r}")
        if self.linear_init not in ("mvit", "torch"):
            raise ValueError(f"linear_init: must be 'mvit' or 'torch', got {self.linear_init!r}")
        if self.attention_impl not in ("auto", "eager", "sdpa", "flex"):
            raise ValueError(f"attention_impl: must be 'auto', 'eager', 'sdpa' or 'flex', got {self.attention_impl!r}")
        if self.pool_conv not in ("auto", "channels_last", "contiguous", "shifted"):
            raise ValueError(f"pool_conv: must be 'auto', 'channels_last', 'contiguous' or 'shifted', "
                             f"got {self.pool_conv!r}")
        if self.issm_positions not in ("exact", "reference"):
            raise ValueError(f"issm_positions: must be 'exact' or 'reference', got {self.issm_positions!r}")
        top = self.top_dim
        if top % self.lifting_heads:
            raise ValueError(f"lifting_heads: {self.lifting_heads} does not divide the fused width {top}")
        for s in range(4):
            if self.stage_dim(s) % self.stage_heads(s):
                raise ValueError(f"num_heads: stage {s} width {self.stage_dim(s)} is not divisible by its "
                                 f"{self.stage_heads(s)} heads")
        if self.use_issm or self.use_ladm:
            slot_plan(self.temporal_slots, self.split_ratio, self.lifting_depth)

    # Derived sizes -------------------------------------------------------------------------------------------
    def stage_dim(self, stage: int) -> int:
        return self.embed_dim * 2**stage

    def stage_heads(self, stage: int) -> int:
        return self.num_heads * 2**stage

    @property
    def top_dim(self) -> int:
        """Width of stage 3 and of the fused pyramid feature (XS: 768)."""
        return self.stage_dim(3)

    @property
    def temporal_slots(self) -> int:
        """Temporal tokens after the stem (XS: 8)."""
        return self.num_frames // 2

    @property
    def fused_size(self) -> int:
        """Spatial side of the fused feature map (XS: 7)."""
        return self.image_size // 32

    @property
    def slots(self) -> list[tuple[int, int]]:
        return slot_plan(self.temporal_slots, self.split_ratio, self.lifting_depth)


@dataclass(frozen=True)
class LossConfig:
    """Disentanglement loss: task CE + lambda_gc * global-context constraint (docs/model.md §8)."""

    label_smoothing: float = 0.1
    lambda_gc: float = 0.1
    """Weight of the global-context (Huber) constraint. 0 disables it."""
    gc_reduction: Literal["mean", "batch_sum"] = "mean"
    """``mean`` over the batch (independent of the per-worker batch size), or ``batch_sum``, the reference repo's
    per-sample sum (effective weight lambda * batch)."""
    huber_beta: float = 1.0
    class_balance: float = 0.0
    """Class-balanced CE exponent: weight_c ∝ freq_c^-class_balance (0 = plain CE, 1 = inverse frequency)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.lambda_gc < 0:
            raise ValueError(f"lambda_gc: must be >= 0, got {self.lambda_gc}")
        if self.gc_reduction not in ("mean", "batch_sum"):
            raise ValueError(f"gc_reduction: must be 'mean' or 'batch_sum', got {self.gc_reduction!r}")
        if self.huber_beta <= 0:
            raise ValueError(f"huber_beta: must be > 0, got {self.huber_beta}")
        if not 0.0 <= self.class_balance <= 2.0:
            raise ValueError(f"class_balance: must be in [0, 2], got {self.class_balance}")


def _check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name}: must be > 0, got {getattr(cfg, name)}")


# Presets ------------------------------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's model: 16x224² -> stem 8x56²x96 -> 10 MViTv2 blocks [1,2,5,2] -> fused 8x7²x768.
    "xs": {},
    # Same architecture at CPU-test size: 16x64² -> 8x16²x16 -> 5 blocks -> fused 8x2²x128.
    "tiny": dict(image_size=64, linear_init="torch", embed_dim=16, num_heads=1, stage_depths=(1, 1, 2, 1), kv_stride=4,
                 issm_pool_size=2, lifting_heads=4, drop_path=0.1, ladm_drop_path=0.1),
}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset with ``overrides`` applied (validated)."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


# Dict <-> dataclass ------------------------------------------------------------------------------------------
def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-friendly dict (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ValueError naming the key."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {k: coerce_value(hints[k], v, f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{prefix}{e}" if prefix else str(e)) from None


def coerce_value(tp: Any, value: Any, key: str) -> Any:
    """``value`` checked (and ints widened to float) against the type hint ``tp``; ValueError names ``key``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{key}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce_value(a, value, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item, *_rest) = typing.get_args(tp)
        return tuple(coerce_value(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + warmup/cosine schedule (docs/model.md §9.1–§9.2). Used by ``ifdd.engine``.

    The effective base lr is ``lr * global_batch / 32`` when ``lr_scale_batch`` is on (the reference's rule: lr 1e-4
    at batch 16 trains at 5e-5), else ``lr`` as given.
    """

    lr: float = 1e-4
    """Base learning rate per 32 clips (see ``lr_scale_batch``)."""
    lr_scale_batch: bool = True
    """Scale ``lr`` linearly with the global batch: effective lr = lr * global_batch / 32 (the reference). Off: the
    effective lr is ``lr`` whatever the batch."""
    weight_decay: float = 1e-3
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    decay_norm_bias: bool = True
    """Apply weight decay to every parameter, in one group (the reference). False: biases, norm weights, the class
    token and relative-position tables go to a second group with no decay."""
    warmup_epochs: int = 10
    """Epochs of warmup before the cosine decay (0: none). Must be below the run's epoch count."""
    min_lr_ratio: float = 0.01
    """End of the cosine as a fraction of the effective base lr (reference: 1 %)."""
    warmup_mode: Literal["linear", "reference"] = "linear"
    """``linear``: per-step ramp from ~0 to the base lr, then per-step cosine. ``reference``: the reference repo's
    per-epoch schedule with its quirk: warmup ramps from 1e-6 to a target computed from hard-coded defaults
    (lr 1e-4, end 1e-6, offset 1 epoch; ≈8.8e-5 at epoch 9 for 100/10 epochs), then drops to the base lr when the
    cosine starts."""
    grad_clip: float = 0.0
    """Max global gradient L2 norm; 0 turns clipping off (the reference)."""
    amp: Literal["off", "bf16", "fp16"] = "off"
    """Mixed precision on CUDA (autocast; ``fp16`` adds a GradScaler). Ignored on CPU."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: need two values in [0, 1), got {list(self.betas)}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs: must be >= 0, got {self.warmup_epochs}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_mode not in ("linear", "reference"):
            raise ValueError(f"warmup_mode: must be 'linear' or 'reference', got {self.warmup_mode!r}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"grad_clip: must be >= 0 (0 = off), got {self.grad_clip}")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"amp: must be 'off', 'bf16' or 'fp16', got {self.amp!r}")

    def effective_lr(self, global_batch: int) -> float:
        """Base lr actually used for ``global_batch`` clips per optimizer step."""
        if global_batch < 1:
            raise ValueError(f"global_batch: must be >= 1, got {global_batch}")
        return self.lr * global_batch / 32 if self.lr_scale_batch else self.lr
