"""Synthetic data in the DFEW release layout (``ifdd data synth``), for tests, demos and CPU smoke runs.

What is written under ``out`` (docs/model.md §11.7):

    Clip/clip_224x224_16f/<5-digit id>/<n>.jpg       frame folders, n = 1..T   (format frames|both)
    Clip/original/<5-digit id>.mp4                   H.264 yuv420p, GOP = T    (format mp4|both)
    EmoLabel_DataSplit/train(single-labeled)/set_{1..5}.csv   header video_name,label; labels 1–7
    EmoLabel_DataSplit/test(single-labeled)/set_{1..5}.csv
    Annotation/annotation.csv                        7 vote counts, order (clip id), label
    SYNTHETIC.json                                   the parameters and class sizes (marks the tree as synthetic)

The folder keeps the release's name ``clip_224x224_16f`` whatever ``size``/``frames`` are, so the index reads a
synthetic tree exactly like the real one.

Class sizes follow DFEW's imbalance: class c gets round(share_c * 7 * clips_per_class) clips with shares Happy .22,
Sad .16, Neutral .23, Angry .19, Surprise .12, Disgust .013, Fear .07, and at least ``min_per_class`` (default 25:
five clips of every class in every test fold, so every class is present in every test fold and in every inner-val
split at 10 %). Folds: each class's clips are shuffled and dealt round-robin to the five test folds; fold k trains
on the other four.

The signal is temporal. A face-like shape (head, eyes, brows, mouth) sits on a random textured background; its
colours, position, scale and the background are random per clip and carry no class information. Four facial
parameters (mouth opening, brow height, head x and y offset) each take the value 0.5 + 0.5 sin(phase) with a
uniform random phase; a class sets which one *moves* and how fast: value(t) = 0.5 + 0.5 sin(2 pi k t / T + phase):

    Happy: mouth k=1   Sad: brows k=1   Neutral: nothing moves   Angry: brows k=2   Surprise: mouth k=2
    Disgust: head shake (x) k=2          Fear: head nod (y) k=2

At any single frame every parameter has the same (arcsine) distribution in every class, so one frame alone says
nothing about the class; only how the parameters change over time does. Random eye blinks, per-frame pixel noise
and brightness flicker add class-independent temporal nuisance. Each clip is drawn from
``numpy.random.default_rng([seed, clip_index])``: the same seed gives the same files byte for byte.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ifdd.data.manifest import LABEL_NAMES, NUM_FOLDS, SYNTH_MARKER

__all__ = ["DFEW_SHARES", "CLASS_MOTION", "class_sizes", "render_clip", "write_mp4", "write_synthetic"]

DFEW_SHARES = (0.22, 0.16, 0.23, 0.19, 0.12, 0.013, 0.07)
# label -> (moving parameter, cycles per clip); parameters: 0 mouth, 1 brows, 2 head x, 3 head y
CLASS_MOTION: dict[int, tuple[int, int] | None] = {0: (0, 1), 1: (1, 1), 2: None, 3: (1, 2), 4: (0, 2),
                                                  5: (2, 2), 6: (3, 2)}
FRAMES_DIR = "Clip/clip_224x224_16f"
VIDEO_DIR = "Clip/original"
_OURS = ("Clip", "EmoLabel_DataSplit", "Annotation", SYNTH_MARKER)


def class_sizes(clips_per_class: int, min_per_class: int = 25) -> list[int]:
    """Clips per label 0..6: DFEW shares of 7 * clips_per_class, at least ``min_per_class`` each."""
    total = len(DFEW_SHARES) * clips_per_class
    return [max(min_per_class, math.floor(s * total + 0.5)) for s in DFEW_SHARES]


# Rendering ----------------------------------------------------------------------------------------------------
def _ellipse(xx: np.ndarray, yy: np.ndarray, cx, cy, rx, ry) -> np.ndarray:
    """Coverage in [0, 1] of an ellipse, ~1 px soft edge. Centres/radii broadcast over (T, 1, 1) -> (T, S, S)."""
    d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return np.clip((1.0 - d) * np.minimum(rx, ry) + 0.5, 0.0, 1.0)


def _paint(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    # img (T, S, S, 3), alpha (T, S, S), colour (3,)
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * colour


def render_clip(label: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic clip of class ``label`` -> (T, S, S, 3) uint8 (see the module docstring)."""
    s, t = float(size), np.arange(frames, dtype=np.float64)[:, None, None]  # t: (T, 1, 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)  # (S, S) pixel grids
    # Static appearance: background colour + gratings + clutter, face and feature colours, position, scale.
    bg = np.broadcast_to(rng.uniform(0.1, 0.9, 3), (size, size, 3)).copy()
    for _ in range(2):
        theta, freq = rng.uniform(0, math.pi), rng.uniform(1, 4) * 2 * math.pi / s
        wave = np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)) + rng.uniform(0, 2 * math.pi))
        bg += rng.uniform(0.03, 0.1) * wave[..., None] * rng.uniform(-1, 1, 3)
    for _ in range(int(rng.integers(0, 3))):
        a = _ellipse(xx, yy, *rng.uniform(0, s, 2), *rng.uniform(0.05, 0.15, 2) * s)
        bg = bg * (1 - a[..., None]) + a[..., None] * rng.uniform(0, 1, 3)
    face = rng.uniform(0.25, 1.0, 3)
    if np.abs(face - bg.mean((0, 1))).mean() < 0.2:  # keep the face visible against the background
        face = 1.0 - face
    feature = face * rng.uniform(0.05, 0.35)
    rx = rng.uniform(0.27, 0.33) * s
    ry = rx * rng.uniform(1.1, 1.25)
    cx0, cy0 = rng.uniform(0.5 * s - 0.06 * s, 0.5 * s + 0.06 * s, 2)

    # Facial parameters in [0, 1]: static ones sit at 0.5 + 0.5 sin(phase), the class's moving one oscillates.
    phase = rng.uniform(0, 2 * math.pi, 4)
    values = [np.full((frames, 1, 1), 0.5 + 0.5 * math.sin(p)) for p in phase]
    motion = CLASS_MOTION[label]
    if motion is not None:
        which, cycles = motion
        values[which] = 0.5 + 0.5 * np.sin(2 * math.pi * cycles * t / frames + phase[which])
    mouth, brow, hx, hy = values
    cx = cx0 + (hx - 0.5) * 0.24 * s
    cy = cy0 + (hy - 0.5) * 0.2 * s
    eye_open = np.full((frames, 1, 1), rng.uniform(0.6, 1.0))
    if rng.random() < 0.1:  # a blink at a random time, in any class
        b = int(rng.integers(0, frames))
        eye_open[b:b + max(1, frames // 8)] = 0.15

    img = np.broadcast_to(bg, (frames, size, size, 3)).copy()
    _paint(img, _ellipse(xx, yy, cx, cy, rx, ry), face)
    for side in (-1.0, 1.0):
        ex, ey = cx + side * 0.4 * rx, cy - 0.2 * ry
        _paint(img, _ellipse(xx, yy, ex, ey, 0.16 * rx, np.maximum(0.12 * ry * eye_open, 0.6)), feature)
        by = ey - (0.15 + 0.5 * brow) * ry
        _paint(img, _ellipse(xx, yy, ex, by, 0.32 * rx, np.maximum(0.1 * ry, 0.7)), feature)
    _paint(img, _ellipse(xx, yy, cx, cy + 0.45 * ry, 0.5 * rx, np.maximum((0.04 + 0.40 * mouth) * ry, 0.6)),
           feature)
    img *= rng.uniform(0.995, 1.005, (frames, 1, 1, 1))  # brightness flicker
    img += rng.normal(0.0, 0.004, img.shape)  # sensor noise, new in every frame
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# Writers ------------------------------------------------------------------------------------------------------
def write_mp4(path: Path, clip: np.ndarray, fps: int = 25) -> None:
    """(T, H, W, 3) uint8 -> H.264 mp4 (yuv420p, one keyframe per T frames so random access is cheap: docs/stack.md
    P14)."""
    import av  # deferred: only synth writes videos

    frames, height, width, _ = clip.shape
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = frames
        # x264's macroblock-tree rate control gave different bytes for identical input from run to run (measured,
        # one thread); without it the output is byte-identical, so the same seed gives the same files.
        stream.codec_context.options = {"crf": "18", "threads": "1", "x264-params": "mbtree=0"}
        for i, f in enumerate(clip):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _write_clip(out: Path, clip_id: str, clip: np.ndarray, fmt: str) -> None:
    if fmt in ("frames", "both"):
        folder = out / FRAMES_DIR / clip_id
        folder.mkdir(parents=True, exist_ok=True)
        for n, f in enumerate(clip, start=1):
            Image.fromarray(f).save(folder / f"{n}.jpg", quality=95)
    if fmt in ("mp4", "both"):
        write_mp4(out / VIDEO_DIR / f"{clip_id}.mp4", clip)


def _check_decodable(size: int, out: Path) -> None:
    """decord mis-sizes some small frame widths (measured: 16, 24, 48, 72 among even sizes up to 480) and fails
    on every such mp4; refuse those sizes up front instead of writing a tree whose clips all get quarantined."""
    from ifdd.data.video import MediaError, read_video

    with tempfile.TemporaryDirectory(prefix="ifdd-synth-") as tmp:
        probe_path = Path(tmp) / "probe.mp4"
        write_mp4(probe_path, np.zeros((2, size, size, 3), np.uint8))
        try:
            read_video(probe_path, np.arange(2))
        except MediaError:
            raise ValueError(f"size: decord cannot decode {size}x{size} H.264 videos (a decord limitation); "
                             f"choose another --size or --format frames ({out})") from None


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SYNTH_MARKER).is_file():
            raise ValueError(f"{out}: folder is not empty and holds no {SYNTH_MARKER}; refusing to write a "
                             "synthetic tree into it (choose an empty --out)")
        for name in _OURS:  # replace a previous synthetic tree; leave anything else there alone
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def write_synthetic(out: str | Path, *, clips_per_class: int = 100, frames: int = 16, size: int = 64, seed: int = 0,
                    fmt: str = "mp4", min_per_class: int = 25, workers: int | None = None,
                    progress: Callable | None = None) -> dict[str, Any]:
    """Write a synthetic DFEW tree; returns what SYNTHETIC.json records (parameters, class sizes, folds)."""
    if fmt not in ("mp4", "frames", "both"):
        raise ValueError(f"format: must be mp4, frames or both, got {fmt!r}")
    if clips_per_class < 1 or min_per_class < NUM_FOLDS:
        raise ValueError(f"clips_per_class must be >= 1 and min_per_class >= {NUM_FOLDS} (one clip per test fold)")
    if frames < 2:
        raise ValueError(f"frames: must be >= 2 (the signal is motion), got {frames}")
    if size < 16 or size % 2:
        raise ValueError(f"size: must be even and >= 16 (H.264 yuv420p), got {size}")
    out = Path(out)
    if fmt != "frames":
        _check_decodable(size, out)
    _prepare_out(out)
    sizes = class_sizes(clips_per_class, min_per_class)
    labels = np.repeat(np.arange(len(sizes)), sizes)  # clip index -> label
    rng = np.random.default_rng([seed, 2**31])  # ids and folds; clip pixels use [seed, clip index]
    ids = rng.permutation(len(labels)) + 1  # clip index -> DFEW-style id 1..N, classes interleaved
    fold_of = np.empty(len(labels), dtype=np.int64)
    dealt = 0
    for c in range(len(sizes)):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold_of[members] = (dealt + np.arange(len(members))) % NUM_FOLDS  # round-robin, continuing across classes
        dealt += len(members)

    for d in ([FRAMES_DIR] if fmt != "mp4" else []) + ([VIDEO_DIR] if fmt != "frames" else []):
        (out / d).mkdir(parents=True, exist_ok=True)

    def make(i: int) -> None:
        clip = render_clip(int(labels[i]), frames, size, np.random.default_rng([seed, i]))
        _write_clip(out, f"{ids[i]:05d}", clip, fmt)

    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        done = pool.map(make, range(len(labels)))
        for _ in (progress(done, len(labels)) if progress else done):
            pass

    order = np.argsort(ids)
    for side in ("train", "test"):
        folder = out / "EmoLabel_DataSplit" / f"{side}(single-labeled)"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(NUM_FOLDS):
            pick = [i for i in order if (fold_of[i] == k) == (side == "test")]
            lines = ["video_name,label"] + [f"{ids[i]},{labels[i] + 1}" for i in pick]
            (folder / f"set_{k + 1}.csv").write_text("\n".join(lines) + "\n")
    (out / "Annotation").mkdir(exist_ok=True)
    vote_rng = np.random.default_rng([seed, 2**31 + 1])
    rows = ["happy,sad,neutral,angry,surprise,disgust,fear,order,label"]
    for i in order:
        votes = np.bincount(vote_rng.integers(0, 7, 4), minlength=7)  # 4 stray votes, 6 for the label
        votes[labels[i]] += 6
        rows.append(",".join(map(str, votes)) + f",{ids[i]:05d},{labels[i] + 1}")
    (out / "Annotation" / "annotation.csv").write_text("\n".join(rows) + "\n")

    record = {
        "generator": "ifdd data synth", "seed": seed, "frames": frames, "size": size, "format": fmt,
        "clips_per_class": clips_per_class, "min_per_class": min_per_class, "clips": int(len(labels)),
        "class_sizes": dict(zip(LABEL_NAMES, sizes, strict=True)),
        "test_fold_sizes": [int((fold_of == k).sum()) for k in range(NUM_FOLDS)],
        "motion": {LABEL_NAMES[c]: m for c, m in CLASS_MOTION.items()},
    }
    (out / SYNTH_MARKER).write_text(json.dumps(record, indent=1) + "\n")
    return record
