"""Clip transforms on tensors (no torchvision: its wheels do not import with the CPU torch, docs/stack.md P16).

Data flow (docs/architecture.md): decoded uint8 (T, H, W, 3) -> float (C, T, H, W) in [0, 1], no mean/std normalisation
(the reference does none, docs/model.md §3.6 and §10.1).

- ``EvalTransform``: convert, and resize to ``size`` (bicubic, antialiased) when the clip is another size.
- ``TrainTransform`` (spec §5.1, strong aug): one set of random parameters per clip (``ClipParams``), shared by all
  T frames: horizontal flip p=0.5; RandomResizedCrop to ``size`` with scale (0.5, 1) and aspect ratio (3/4, 4/3),
  bilinear (antialiased when it shrinks an axis); ColorJitter with brightness, contrast and saturation 0.4 and hue
  0.4, applied in a random order (hue through RGB -> HSV -> RGB). The crop is taken on the uint8 clip before
  conversion, so only the crop is converted to float. Jitter works on floats (no uint8 rounding between the steps,
  unlike torchvision on uint8).
- ``BatchTrainAugment``: the same augmentation, the same code, on a batch of uint8 clips on the training device
  (after a uint8 transfer), then ``MixupCutmix``: the DataLoader's CPU work is then reading the clip alone. Given the
  same ``ClipParams`` both paths give the same floats up to rounding (tests/data/test_data_augment_paths.py).
- ``MixupCutmix``: batch mixing with label-smoothed soft targets (timm-style batch mode): with probability ``prob``
  the batch is mixed with its reverse, by cutmix (probability ``switch_prob``, Beta(1, 1)) or mixup (Beta(0.8, 0.8));
  the cutmix box spans all frames and lambda is corrected to the box's true area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["to_float_video", "resize_video", "random_resized_crop_box", "ClipParams", "jitter_batch", "EvalTransform",
           "TrainTransform", "BatchTrainAugment", "MixupCutmix", "smooth_one_hot"]

_INV_255 = np.float32(1.0 / 255.0)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, as torchvision's rgb_to_grayscale


def to_float_video(clip: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) (any strides: a crop, a flipped view, the cache's channel-first storage) -> float32
    (C, T, H, W) in [0, 1], C-contiguous. One numpy pass; when the memory is already channel-first (the Arrow cache)
    it is a straight linear conversion."""
    out = np.multiply(clip.transpose(3, 0, 1, 2), _INV_255, dtype=np.float32, order="C")
    return torch.from_numpy(out)


def resize_video(x: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """(C, T, H, W) float -> (C, T, size, size), antialiased; bicubic overshoot is clamped to [0, 1].

    Bilinear that only enlarges (or keeps) both axes runs without the antialias filter, on channels-last memory: the
    same weights (the antialias filter differs from plain interpolation only when an axis shrinks; agreement ~1e-6),
    and on CPU ~7x faster even with the layout copies (the result is contiguous again: plane-wise colour ops on
    channels-last memory are slower)."""
    c, t, h, w = x.shape
    if h == size and w == size:
        return x
    # Treat the C*T planes as channels of one image: spatial resampling only, each plane independent.
    planes = x.reshape(1, c * t, h, w)
    antialias = mode != "bilinear" or h > size or w > size
    if not antialias:
        planes = planes.contiguous(memory_format=torch.channels_last)
    y = F.interpolate(planes, size=(size, size), mode=mode, antialias=antialias, align_corners=False)
    y = y.contiguous().reshape(c, t, size, size)
    return y.clamp_(0.0, 1.0) if mode == "bicubic" else y


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                            rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Inception-style crop: area fraction ~ U(scale), log aspect ~ U(log ratio); ten tries, then a centre crop
    with the aspect clamped into ``ratio``. Returns (top, left, h, w)."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class ClipParams:
    """One clip's augmentation: crop box (top, left, h, w) on the source frames, mirror, and the colour operations in
    the order they apply, each ``(name, value)``: brightness/contrast/saturation factors, hue shift in turns."""

    box: tuple[int, int, int, int]
    flip: bool
    ops: tuple[tuple[str, float], ...]


# Colour jitter on (B, 3, T, H, W) float in [0, 1], one value per clip: ``f`` is (B, 1, 1, 1, 1) ------------------
def _luma(x: torch.Tensor) -> torch.Tensor:
    # (B, 3, T, H, W) -> (B, 1, T, H, W) grey level
    g = x[:, 0] * _LUMA[0]
    return g.add_(x[:, 1], alpha=_LUMA[1]).add_(x[:, 2], alpha=_LUMA[2]).unsqueeze(1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return x.mul_(f).clamp_(0.0, 1.0)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    # Blend each frame with its own mean grey level (as torchvision does on a stack of frames); the mean grey is the
    # luma-weighted sum of the channel means (one reduction over the clip).
    means = x.mean(dim=(-2, -1))  # (B, 3, T)
    grey = (means[:, 0] * _LUMA[0] + means[:, 1] * _LUMA[1] + means[:, 2] * _LUMA[2])[:, None, :, None, None]
    return torch.lerp(grey, x, f).clamp_(0.0, 1.0)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return torch.lerp(_luma(x), x, f).clamp_(0.0, 1.0)


# Pure-hue colour of a hue position H in [0, 6): R = clamp(|H-3|-1), G = clamp(2-|H-2|), B = clamp(2-|H-4|), as
# (centre, sign, bias) of clamp(sign*|H - centre| + bias, 0, 1).
_PURE_HUE = ((3.0, 1.0, -1.0), (2.0, -1.0, 2.0), (4.0, -1.0, 2.0))


def _shift_hue(x: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """Rotate the HSV hue of every pixel of (B, 3, T, H, W) (or one clip (3, T, H, W)) by ``shift`` turns (a float,
    or (B, 1, 1, 1, 1) per clip); value and saturation are kept.

    Pixel = min + chroma * pure_hue(H) with chroma = max - min, so the rotation only moves H (in sextants, 0..6):
    H = (g - b)/chroma when r is the max, 2 + (b - r)/chroma when g is, 4 + (r - g)/chroma when b is.
    Greys (chroma 0) stay grey. (Pairwise max/min and per-channel passes: on CPU a reduction over the 3-long channel
    dim, or one broadcast over it, is several times slower than these plane-wise ops.)
    """
    if x.ndim == 4:
        return _shift_hue(x.unsqueeze(0), shift).squeeze(0)
    # Few fresh tensors, results written into them (out=, in place): on a CPU a new clip-sized tensor costs more
    # (page faults) than the arithmetic done in it.
    r, g, b = x.unbind(1)  # each (B, T, H, W)
    mx = torch.maximum(r, g)
    torch.maximum(mx, b, out=mx)
    mn = torch.minimum(r, g)
    torch.minimum(mn, b, out=mn)
    chroma = mx - mn
    h, t2, t4 = g - b, (b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0)
    is_max = mx == g
    torch.where(is_max, t2, t4, out=t2)  # g is the max (unless r is, below)
    torch.where(torch.eq(mx, r, out=is_max), h, t2, out=h)  # r is the max
    h.div_(torch.clamp_min(chroma, 1e-8, out=t4))
    h.add_(shift.flatten(1)[..., None, None] * 6.0 if torch.is_tensor(shift) else 6.0 * shift)  # (B, 1, 1, 1)
    h.sub_(torch.div(h, 6.0, out=t2).floor_().mul_(6.0))  # wrap into [0, 6)
    out = torch.empty_like(x)
    for c, (centre, sign, bias) in enumerate(_PURE_HUE):
        pure = torch.sub(h, centre, out=t2).abs_().mul_(sign).add_(bias).clamp_(0.0, 1.0)
        torch.addcmul(mn, chroma, pure, out=out[:, c])
    return out


_JITTER = {"brightness": _brightness, "contrast": _contrast, "saturation": _saturation, "hue": _shift_hue}


def jitter_batch(x: torch.Tensor, params: list[ClipParams]) -> torch.Tensor:
    """Colour jitter of a float batch (B, 3, T, H, W), clip i by ``params[i].ops`` in its own order. Step by step,
    the clips whose next operation is the same are done together (one call per operation and step)."""
    if len(params) != x.shape[0]:
        raise ValueError(f"jitter_batch: {x.shape[0]} clips but {len(params)} parameter sets")
    for step in range(max((len(p.ops) for p in params), default=0)):
        for name, op in _JITTER.items():
            idx = [i for i, p in enumerate(params) if step < len(p.ops) and p.ops[step][0] == name]
            if not idx:
                continue
            f = torch.tensor([params[i].ops[step][1] for i in idx], dtype=x.dtype, device=x.device)
            f = f.view(-1, 1, 1, 1, 1)
            if len(idx) == x.shape[0]:
                x = op(x, f)
            elif x.device.type == "cuda":  # gather the group, one call, scatter back (few kernel launches)
                sel = torch.tensor(idx, device=x.device)
                x.index_copy_(0, sel, op(x.index_select(0, sel), f))
            else:  # runs of consecutive clips as views: no gather copies, which cost more than the ops on a CPU
                for start, stop, fs in _runs(idx, f):
                    y = op(x[start:stop], fs)
                    if y.data_ptr() != x[start:stop].data_ptr():
                        x[start:stop] = y
    return x


def _runs(idx: list[int], f: torch.Tensor):
    """(start, stop, f rows) for each run of consecutive indices in the sorted list ``idx``."""
    first = 0
    for k in range(1, len(idx) + 1):
        if k == len(idx) or idx[k] != idx[k - 1] + 1:
            yield idx[first], idx[k - 1] + 1, f[first:k]
            first = k


# Per-clip transforms ------------------------------------------------------------------------------------------
class EvalTransform:
    """uint8 (T, H, W, 3) -> float (C, T, size, size): resize only (bicubic, antialiased; spec §5.1 test protocol)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, clip: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        return resize_video(to_float_video(clip), self.size, "bicubic")


class TrainTransform:
    """uint8 (T, H, W, 3) -> float (C, T, size, size): flip, RandomResizedCrop, ColorJitter, shared by all frames.

    ``draw`` picks a clip's ``ClipParams`` (consuming ``rng`` in a fixed order: crop, flip, jitter values, jitter
    order), ``crop_resize`` applies the geometry to a numpy view or a uint8 tensor on any device, ``jitter_batch``
    the colour; ``__call__`` does all three on one clip."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 flip_p: float = 0.5, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.4):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale: need 0 < min <= max <= 1, got {scale}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue: must be in [0, 0.5], got {hue}")
        self.size, self.scale, self.ratio, self.flip_p = size, scale, ratio, flip_p
        self.jitter = dict(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    def draw(self, height: int, width: int, rng: np.random.Generator) -> ClipParams:
        box = random_resized_crop_box(height, width, self.scale, self.ratio, rng)
        flip = bool(rng.random() < self.flip_p)
        ops = []
        for name, amount in self.jitter.items():
            if amount > 0:
                lo, hi = (-amount, amount) if name == "hue" else (max(0.0, 1 - amount), 1 + amount)
                ops.append((name, float(rng.uniform(lo, hi))))
        return ClipParams(box, flip, tuple(ops[i] for i in rng.permutation(len(ops))))

    def crop_resize(self, clip: np.ndarray | torch.Tensor, p: ClipParams) -> torch.Tensor:
        """numpy uint8 (T, H, W, 3) or torch uint8 (3, T, H, W) on any device -> float (3, T, size, size)."""
        top, left, h, w = p.box
        if isinstance(clip, np.ndarray):
            crop = clip[:, top:top + h, left:left + w]  # a view: only the crop is converted
            x = to_float_video(crop[:, :, ::-1] if p.flip else crop)
        else:
            crop = clip[:, :, top:top + h, left:left + w]
            x = (crop.flip(-1) if p.flip else crop).to(torch.float32).mul_(_INV_255.item())
        return resize_video(x, self.size, "bilinear")

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        p = self.draw(clip.shape[1], clip.shape[2], rng)
        return jitter_batch(self.crop_resize(clip, p).unsqueeze(0), [p])[0]


class BatchTrainAugment:
    """``(uint8 video (B, 3, T, H, W) on the training device, labels (B,)) -> (float video (B, 3, T, S, S), labels or
    mixup/cutmix soft targets)``: ``TrainTransform`` per clip (its own ``ClipParams``) done where the batch is,
    then ``mix``. The engine's ``batch_transform`` hook, for loaders whose dataset returns uint8 clips.

    Args:
        seed: seeds the parameter RNG; None draws it from torch's global RNG (so per-rank seeding applies).
    """

    def __init__(self, transform: TrainTransform, mix: MixupCutmix | None = None, seed: int | None = None):
        self.transform, self.mix = transform, mix
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.rng = np.random.default_rng(seed)
        self.last: list[ClipParams] = []

    def __call__(self, video: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if video.dtype != torch.uint8 or video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"BatchTrainAugment: expected uint8 video (B, 3, T, H, W), got {video.dtype} "
                             f"{tuple(video.shape)} (build the training set with augment_on='device')")
        height, width = video.shape[-2:]
        params = [self.transform.draw(height, width, self.rng) for _ in range(video.shape[0])]
        x = torch.stack([self.transform.crop_resize(clip, p) for clip, p in zip(video, params, strict=True)])
        self.last = params
        x = jitter_batch(x, params)
        return self.mix(x, labels) if self.mix is not None else (x, labels)


# Batch mixing -------------------------------------------------------------------------------------------------
def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(B,) int -> (B, K) float: 1 - smoothing + smoothing/K on the label, smoothing/K elsewhere."""
    off = smoothing / num_classes
    return F.one_hot(labels.long(), num_classes).float().mul_(1.0 - smoothing).add_(off)


class MixupCutmix:
    """``(video (B, C, T, H, W), labels (B,)) -> (mixed video, soft targets (B, K))``; each clip is paired with the
    clip at the mirrored batch position (timm's batch mode), and the whole batch shares one lambda.

    Args:
        num_classes: K.
        mixup_alpha, cutmix_alpha: Beta parameters; 0 disables that kind.
        prob: probability that a batch is mixed at all (unmixed batches still get smoothed targets).
        switch_prob: probability of cutmix rather than mixup when both are enabled.
        label_smoothing: applied to both targets before mixing.
        correct_lam: set lambda to the kept area after the cutmix box is clipped to the frame.
        seed: seeds the mixing RNG; None draws the seed from torch's global RNG (so per-rank seeding applies).
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, correct_lam: bool = True,
                 seed: int | None = None):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup_alpha/cutmix_alpha: must be >= 0")
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise ValueError("prob/switch_prob: must be in [0, 1]")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing, self.correct_lam = prob, switch_prob, label_smoothing, \
            correct_lam
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.rng = np.random.default_rng(seed)
        self.last: dict[str, float | str] = {}  # what the last call did (for tests and logging)

    def _params(self) -> tuple[str, float]:
        if self.rng.random() >= self.prob or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return "none", 1.0
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cut = self.rng.random() < self.switch_prob
        else:
            cut = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if cut else self.mixup_alpha
        return ("cutmix" if cut else "mixup"), float(self.rng.beta(alpha, alpha))

    def _box(self, height: int, width: int, lam: float) -> tuple[int, int, int, int]:
        # A box of area (1 - lam) * H * W around a uniform centre, clipped to the frame.
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(height * cut), int(width * cut)
        cy, cx = int(self.rng.integers(0, height)), int(self.rng.integers(0, width))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
        return y0, y1, x0, x1

    def __call__(self, video: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if video.ndim != 5 or labels.ndim != 1 or video.shape[0] != labels.shape[0]:
            raise ValueError(f"MixupCutmix: expected video (B, C, T, H, W) and labels (B,), got "
                             f"{tuple(video.shape)} and {tuple(labels.shape)}")
        kind, lam = self._params()
        if kind == "cutmix":
            height, width = video.shape[-2:]
            y0, y1, x0, x1 = self._box(height, width, lam)
            video = video.clone()
            # The box spans all frames: (B, C, T, y0:y1, x0:x1) comes from the paired clip.
            video[..., y0:y1, x0:x1] = video[..., y0:y1, x0:x1].flip(0)
            if self.correct_lam:
                lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
        elif kind == "mixup":
            video = video * lam + video.flip(0) * (1.0 - lam)
        y = smooth_one_hot(labels, self.num_classes, self.label_smoothing).to(video.device)
        targets = y * lam + y.flip(0) * (1.0 - lam)
        self.last = {"kind": kind, "lam": lam}
        return video, targets.to(video.dtype)
