"""Clip transforms on tensors (no torchvision: its wheels do not import with the CPU torch, stack-notes P9b).

Data flow (design.md): decoded uint8 (T, H, W, 3) -> float (C, T, H, W) in [0, 1], no mean/std normalisation
(the reference does none, ``ifdd-spec.md`` §8 5e).

- ``EvalTransform``: convert, and resize to ``size`` (bicubic, antialiased) when the clip is another size.
- ``TrainTransform`` (spec §5.1, strong aug): one set of random parameters per clip, shared by all T frames:
  horizontal flip p=0.5; RandomResizedCrop to ``size`` with scale (0.5, 1) and aspect ratio (3/4, 4/3), bilinear
  with antialias; ColorJitter with brightness, contrast and saturation 0.4 and hue 0.4, applied in a random order
  (hue through RGB -> HSV -> RGB). The crop is taken on the uint8 clip before conversion, so only the crop is
  converted to float. Jitter works on floats (no uint8 rounding between the steps, unlike torchvision on uint8).
- ``MixupCutmix``: batch mixing with label-smoothed soft targets (timm-style batch mode): with probability ``prob``
  the batch is mixed with its reverse, by cutmix (probability ``switch_prob``, Beta(1, 1)) or mixup (Beta(0.8, 0.8));
  the cutmix box spans all frames and lambda is corrected to the box's true area.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["to_float_video", "resize_video", "random_resized_crop_box", "color_jitter", "EvalTransform",
           "TrainTransform", "MixupCutmix", "smooth_one_hot"]

_INV_255 = np.float32(1.0 / 255.0)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, as torchvision's rgb_to_grayscale


def to_float_video(clip: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) (any strides: a crop, a flipped view, the cache's channel-first storage) -> float32
    (C, T, H, W) in [0, 1], C-contiguous. One numpy pass; when the memory is already channel-first (the Arrow cache)
    it is a straight linear conversion."""
    out = np.multiply(clip.transpose(3, 0, 1, 2), _INV_255, dtype=np.float32, order="C")
    return torch.from_numpy(out)


def resize_video(x: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """(C, T, H, W) float -> (C, T, size, size), antialiased; bicubic overshoot is clamped to [0, 1]."""
    c, t, h, w = x.shape
    if h == size and w == size:
        return x
    # Treat the C*T planes as channels of one image: spatial resampling only, each plane independent.
    y = F.interpolate(x.reshape(1, c * t, h, w), size=(size, size), mode=mode, antialias=True, align_corners=False)
    y = y.reshape(c, t, size, size)
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


# Colour jitter on (3, T, H, W) float in [0, 1] -------------------------------------------------------------------
def _gray(x: torch.Tensor) -> torch.Tensor:
    # (3, T, H, W) -> (1, T, H, W)
    return (_LUMA[0] * x[0] + _LUMA[1] * x[1] + _LUMA[2] * x[2]).unsqueeze(0)


def _blend(x: torch.Tensor, other: torch.Tensor | float, factor: float) -> torch.Tensor:
    # factor * x + (1 - factor) * other, in place: x is always a tensor this module just created.
    x.mul_(factor)
    if isinstance(other, torch.Tensor):
        x.add_(other, alpha=1.0 - factor)
    elif other:
        x.add_((1.0 - factor) * other)
    return x.clamp_(0.0, 1.0)


# Pure-hue colour of a hue position H in [0, 6): R = clamp(|H-3|-1), G = clamp(2-|H-2|), B = clamp(2-|H-4|), as
# (centre, sign, bias) of clamp(sign*|H - centre| + bias, 0, 1).
_PURE_HUE = ((3.0, 1.0, -1.0), (2.0, -1.0, 2.0), (4.0, -1.0, 2.0))


def _shift_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the HSV hue of every pixel of (3, T, H, W) by ``shift`` turns; value and saturation are kept.

    Pixel = min + chroma * pure_hue(H) with chroma = max - min, so the rotation only moves H (in sextants, 0..6):
    H = (g - b)/chroma when r is the max, 2 + (b - r)/chroma when g is, 4 + (r - g)/chroma when b is.
    Greys (chroma 0) stay grey.
    """
    r, g, b = x.unbind(0)  # each (T, H, W)
    mx = torch.maximum(torch.maximum(r, g), b)
    mn = torch.minimum(torch.minimum(r, g), b)
    chroma = mx - mn
    is_r = mx == r
    is_g = (mx == g) & ~is_r
    h = torch.where(is_r, g - b, torch.where(is_g, (b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0)))
    h.div_(chroma.clamp_min(1e-8)).add_(6.0 * shift)
    h.sub_(torch.floor(h / 6.0).mul_(6.0))  # wrap into [0, 6)
    out = torch.empty_like(x)
    for c, (centre, sign, bias) in enumerate(_PURE_HUE):
        pure = (h - centre).abs_().mul_(sign).add_(bias).clamp_(0.0, 1.0)
        torch.addcmul(mn, chroma, pure, out=out[c])
    return out


def color_jitter(x: torch.Tensor, rng: np.random.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.4) -> torch.Tensor:
    """ColorJitter on a whole clip (3, T, H, W): one factor per property per clip, properties in random order.

    Contrast blends each frame with its own mean grey level (as torchvision does on a stack of frames).
    """
    ops = []
    if brightness > 0:
        f = rng.uniform(max(0.0, 1 - brightness), 1 + brightness)
        ops.append(lambda v, f=f: _blend(v, 0.0, f))
    if contrast > 0:
        f = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)
        ops.append(lambda v, f=f: _blend(v, _gray(v).mean(dim=(-2, -1), keepdim=True), f))
    if saturation > 0:
        f = rng.uniform(max(0.0, 1 - saturation), 1 + saturation)
        ops.append(lambda v, f=f: _blend(v, _gray(v), f))
    if hue > 0:
        h = rng.uniform(-hue, hue)
        ops.append(lambda v, h=h: _shift_hue(v, h))
    for i in rng.permutation(len(ops)):
        x = ops[i](x)
    return x


# Per-clip transforms ------------------------------------------------------------------------------------------
class EvalTransform:
    """uint8 (T, H, W, 3) -> float (C, T, size, size): resize only (bicubic, antialiased; spec §5.1 test protocol)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, clip: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        return resize_video(to_float_video(clip), self.size, "bicubic")


class TrainTransform:
    """uint8 (T, H, W, 3) -> float (C, T, size, size): flip, RandomResizedCrop, ColorJitter, shared by all frames."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 flip_p: float = 0.5, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.4):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale: need 0 < min <= max <= 1, got {scale}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue: must be in [0, 0.5], got {hue}")
        self.size, self.scale, self.ratio, self.flip_p = size, scale, ratio, flip_p
        self.jitter = dict(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        _, height, width, _ = clip.shape
        top, left, h, w = random_resized_crop_box(height, width, self.scale, self.ratio, rng)
        crop = clip[:, top:top + h, left:left + w]  # a view: only the crop is converted below
        if rng.random() < self.flip_p:
            crop = crop[:, :, ::-1]  # mirror W; the same flip for every frame
        x = resize_video(to_float_video(crop), self.size, "bilinear")  # (C, T, size, size)
        return color_jitter(x, rng, **self.jitter)


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
