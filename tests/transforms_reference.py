"""The training transform as it was before it was split into ``ClipParams`` draws and batched jitter, kept outside
the library as the baseline that tests/data/test_data_augment_paths.py compares both new paths with (same seed, same
result up to float rounding) and that bench/data.py times beside them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ifdd.data.transforms import random_resized_crop_box, to_float_video

_LUMA = (0.299, 0.587, 0.114)


def resize_video(x: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """(C, T, H, W) float -> (C, T, size, size), antialiased; bicubic overshoot is clamped to [0, 1]."""
    c, t, h, w = x.shape
    if h == size and w == size:
        return x
    # Treat the C*T planes as channels of one image: spatial resampling only, each plane independent.
    y = F.interpolate(x.reshape(1, c * t, h, w), size=(size, size), mode=mode, antialias=True, align_corners=False)
    y = y.reshape(c, t, size, size)
    return y.clamp_(0.0, 1.0) if mode == "bicubic" else y


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


class ReferenceTrainTransform:
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
