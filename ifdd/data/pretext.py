"""Synthetic *action* clips for pretext pretraining (``ifdd pretrain``), the small-scale stand-in for Kinetics-400.

The real study fine-tunes a backbone pretrained on generic human actions (Kinetics-400) on facial expressions
(DFEW). Here the fine-tune data is the synthetic DFEW-format set (``ifdd.data.synth``: one face-like shape whose
mouth, brows or head move); this module is the stand-in for Kinetics: generic objects doing generic motions. It
shares no class and no rendering code with the facial generator, so what transfers is motion features, not the
task.

A clip (T, S, S, 3) uint8: a random textured background (a few colour gratings over low-frequency colour noise)
with 1–3 convex polygons (triangles, rectangles, irregular quadrilaterals, pentagons, radius 0.16–0.28 S) painted in
random depth order. 1 or 2 of them, the *actors*, each perform the clip's class motion with their own random
amplitude, speed and phase; the others stay still (distractors). Per-frame sensor noise is added. (Version 1 drew
2–4 smaller polygons, 0.09–0.16 S, with up to 3 actors: at 32² the tiny model was still at chance after 3,000
steps of fresh clips, see docs/proxy.md.) Classes (``PRETEXT_CLASSES``), t in [0, 1] over the clip:

    move_right / move_left / move_up / move_down   linear translation by 0.25–0.5 S
    rotate_cw / rotate_ccw                         rotation by 0.5–1 pi radians
    grow / shrink                                  scale ×e^(±0.6..1.1 (t − 0.5))
    shake                                          horizontal oscillation, 2–3 cycles, 0.06–0.12 S
    orbit                                          one circle of radius 0.1–0.2 S, either direction
    squash                                         aspect oscillation (stretch x, squash y), 1–2 cycles
    flicker                                        brightness blinking (square wave), 2–4 cycles

Telling move_left from move_right, rotate_cw from rotate_ccw or grow from shrink needs the order of the frames,
not only their content, as the facial classes do. Every clip is drawn from ``numpy.random.default_rng([seed,
index, _STREAM])``: the same (seed, index, frames, size) gives the same pixels, whatever the other clips are.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["PRETEXT_CLASSES", "PRETEXT_VERSION", "render_action", "make_pretext", "data_hash"]

PRETEXT_VERSION = 2
"""Bumped whenever the generator's output changes for the same arguments (a cached init then no longer matches)."""
PRETEXT_CLASSES = ("move_right", "move_left", "move_up", "move_down", "rotate_cw", "rotate_ccw", "grow", "shrink",
                   "shake", "orbit", "squash", "flicker")
_STREAM = 0x5EED_AC7  # keeps these generators apart from any other use of the same seed
_SIDES = {"triangle": 3, "rectangle": 4, "quad": 4, "pentagon": 5}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(S, S, 3) float texture: low-frequency colour noise (a 4×4 grid, bilinearly upsampled) plus gratings."""
    grid = rng.uniform(0.1, 0.9, (4, 4, 3))
    u = np.linspace(0, 3, size)
    i0 = np.minimum(u.astype(int), 2)
    f = (u - i0)[:, None]
    rows = grid[i0] * (1 - f[..., None]) + grid[i0 + 1] * f[..., None]  # (S, 4, 3)
    bg = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]  # (S, S, 3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for _ in range(int(rng.integers(1, 4))):
        theta, freq = rng.uniform(0, math.pi), rng.uniform(2, 8) * 2 * math.pi
        wave = np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)) + rng.uniform(0, 2 * math.pi))
        bg = bg + rng.uniform(0.04, 0.12) * wave[..., None] * rng.uniform(-1, 1, 3)
    return bg


def _unit_polygon(kind: str, rng: np.random.Generator) -> np.ndarray:
    """(V, 2) counter-clockwise vertices of a convex polygon of radius ~1 around the origin."""
    if kind == "rectangle":
        a = rng.uniform(0.35, 0.7)
        return np.array([[-1, -a], [1, -a], [1, a], [-1, a]], dtype=np.float64)
    n = _SIDES[kind]
    angles = np.sort((np.arange(n) + rng.uniform(-0.25, 0.25, n)) * 2 * math.pi / n)
    radius = rng.uniform(0.75, 1.0, n) if kind == "quad" else np.ones(n)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _coverage(verts: np.ndarray, size: int) -> np.ndarray:
    """Soft coverage (T, S, S) in [0, 1] of a convex polygon per frame; ``verts`` (T, V, 2) in pixels, CCW.

    Inside a convex polygon every edge's inward signed distance is positive; the coverage is the smallest of them
    shifted by half a pixel, so edges are anti-aliased over ~1 px.
    """
    p = np.arange(size, dtype=np.float64) + 0.5
    a, b = verts, np.roll(verts, -1, axis=1)  # edges a -> b, (T, V, 2)
    edge = b - a
    length = np.maximum(np.hypot(edge[..., 0], edge[..., 1]), 1e-9)
    nx, ny = -edge[..., 1] / length, edge[..., 0] / length  # inward normals of a CCW polygon, (T, V)
    c = nx * a[..., 0] + ny * a[..., 1]
    # distance of pixel (y, x) to edge v: nx·x + ny·y − c, broadcast to (T, V, S, S)
    dist = nx[..., None, None] * p[None, None, None, :] + ny[..., None, None] * p[None, None, :, None] \
        - c[..., None, None]
    return np.clip(dist.min(axis=1) + 0.5, 0.0, 1.0)


def _motion(label: int, t: np.ndarray, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-frame offsets of one actor for class ``label``: dx, dy (px), angle (rad), scale, aspect, brightness."""
    n = len(t)
    out = {"dx": np.zeros(n), "dy": np.zeros(n), "angle": np.zeros(n), "scale": np.ones(n), "aspect": np.ones(n),
           "bright": np.ones(n)}
    name = PRETEXT_CLASSES[label]
    if name.startswith("move_"):
        shift = rng.uniform(0.25, 0.5) * size * (t - 0.5)
        axis, sign = {"move_right": ("dx", 1), "move_left": ("dx", -1), "move_up": ("dy", -1),
                      "move_down": ("dy", 1)}[name]
        out[axis] = sign * shift
    elif name.startswith("rotate_"):
        out["angle"] = (1 if name == "rotate_cw" else -1) * rng.uniform(0.5, 1.0) * math.pi * t
    elif name in ("grow", "shrink"):
        out["scale"] = np.exp((1 if name == "grow" else -1) * rng.uniform(0.6, 1.1) * (t - 0.5))
    elif name == "shake":
        out["dx"] = rng.uniform(0.06, 0.12) * size * np.sin(2 * math.pi * rng.integers(2, 4) * t
                                                            + rng.uniform(0, 2 * math.pi))
    elif name == "orbit":
        r, phase, way = rng.uniform(0.1, 0.2) * size, rng.uniform(0, 2 * math.pi), rng.choice([-1, 1])
        out["dx"] = r * np.cos(way * 2 * math.pi * t + phase)
        out["dy"] = r * np.sin(way * 2 * math.pi * t + phase)
    elif name == "squash":
        out["aspect"] = np.exp(rng.uniform(0.3, 0.5) * np.sin(2 * math.pi * rng.integers(1, 3) * t
                                                              + rng.uniform(0, 2 * math.pi)))
    elif name == "flicker":
        wave = np.sin(2 * math.pi * rng.integers(2, 5) * t + rng.uniform(0, 2 * math.pi))
        out["bright"] = np.where(wave >= 0, 1.0, rng.uniform(0.2, 0.45))
    return out


def render_action(label: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of class ``label`` (index into ``PRETEXT_CLASSES``) -> (T, S, S, 3) uint8."""
    if not 0 <= label < len(PRETEXT_CLASSES):
        raise ValueError(f"label: must be in [0, {len(PRETEXT_CLASSES)}), got {label}")
    t = np.linspace(0.0, 1.0, frames)
    img = np.broadcast_to(_background(rng, size).astype(np.float32), (frames, size, size, 3)).copy()
    objects = int(rng.integers(1, 4))
    actors = set(rng.choice(objects, size=int(rng.integers(1, min(2, objects) + 1)), replace=False).tolist())
    still = {"dx": 0.0, "dy": 0.0, "angle": 0.0, "scale": 1.0, "aspect": 1.0, "bright": 1.0}
    for k in range(objects):
        kind = str(rng.choice(list(_SIDES)))
        shape = _unit_polygon(kind, rng)  # (V, 2)
        radius = rng.uniform(0.16, 0.28) * size
        centre = rng.uniform(0.25, 0.75, 2) * size
        angle0 = rng.uniform(0, 2 * math.pi)
        colour = rng.uniform(0.0, 1.0, 3)
        if np.abs(colour - img[0].mean((0, 1))).mean() < 0.25:  # keep every object visible on its background
            colour = 1.0 - colour
        m = _motion(label, t, size, rng) if k in actors else still
        per_frame = {key: np.broadcast_to(np.asarray(v, dtype=np.float64), (frames,)) for key, v in m.items()}
        ang = angle0 + per_frame["angle"]
        sx = radius * per_frame["scale"] * per_frame["aspect"]
        sy = radius * per_frame["scale"] / per_frame["aspect"]
        # vertices per frame: scale per axis, then rotate (keeps the CCW order), then translate: (T, V, 2)
        x, y = shape[None, :, 0] * sx[:, None], shape[None, :, 1] * sy[:, None]
        cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
        verts = np.stack([centre[0] + per_frame["dx"][:, None] + x * cos - y * sin,
                          centre[1] + per_frame["dy"][:, None] + x * sin + y * cos], axis=-1)
        alpha = _coverage(verts, size).astype(np.float32)[..., None]  # (T, S, S, 1)
        shade = (colour[None, :] * per_frame["bright"][:, None]).astype(np.float32)  # (T, 3)
        img += alpha * (shade[:, None, None, :] - img)
    img += 0.01 * rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_pretext(clips: int, *, frames: int, size: int, seed: int = 0, start: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Clips ``start .. start + clips − 1`` of the pretext set: video (N, T, S, S, 3) uint8, labels (N,) int64.

    Labels cycle through the classes (clip i has class i mod K), so every class gets the same number of clips.
    """
    if clips < 1 or frames < 2 or size < 16:
        raise ValueError(f"pretext: need clips >= 1, frames >= 2 and size >= 16, got {clips}, {frames}, {size}")
    labels = (np.arange(start, start + clips) % len(PRETEXT_CLASSES)).astype(np.int64)
    video = np.empty((clips, frames, size, size, 3), np.uint8)
    for j, i in enumerate(range(start, start + clips)):
        video[j] = render_action(int(labels[j]), frames, size, np.random.default_rng([seed, i, _STREAM]))
    return video, labels


def data_hash(arrays: Sequence[np.ndarray]) -> str:
    """SHA-256 over the arrays' shapes, dtypes and bytes (what a pretext init records about its data)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
