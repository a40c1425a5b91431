"""Clip decoding: JPEG frame folders (PIL) and videos (decord), frame sampling, probing for the index.

Every reader returns ``uint8`` arrays shaped (T, H, W, 3), RGB. A clip's media is either a frame folder
(``kind="frames"``, one image per frame, ordered by the trailing integer of the file stem, so ``x_10.jpg`` follows
``x_9.jpg``; docs/model.md §11.4) or a video file (``kind="video"``, read with decord on one thread: the index
and the DataLoader workers supply the parallelism).

Frame sampling (``sample_indices``):
- ``uniform``: T indices at the centres of T equal segments of the clip. With n == T this is every frame (the DFEW
  16-frame TIM clips); with n < T each frame is repeated evenly (0,0,1,1,… for n = T/2), which is the "stretch"
  rule for short clips.
- ``random``: a random contiguous T-frame window (stride 1); clips shorter than T are stretched as above.

Anything that goes wrong while reading a clip raises ``MediaError`` naming the file; the index turns these into
quarantined manifest rows and the dataset applies its documented failure policy (``ifdd/data/dataset.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

__all__ = ["MediaError", "MediaInfo", "FRAME_SUFFIXES", "frame_number", "list_frames", "sample_indices",
           "read_frames", "read_video", "read_clip", "probe", "load_clip", "resize_uint8"]

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
MediaKind = Literal["frames", "video"]
_TRAILING_INT = re.compile(r"(\d+)$")


class MediaError(Exception):
    """A clip's media cannot be read (missing, truncated, not an image/video, too short). The message names it;
    ``category`` is the short reason the index summary counts."""

    def __init__(self, message: str, category: str = "undecodable media"):
        super().__init__(message)
        self.category = category


@dataclass(frozen=True)
class MediaInfo:
    n_frames: int
    height: int
    width: int


# Frame folders ------------------------------------------------------------------------------------------------
def frame_number(name: str) -> int | None:
    """Trailing integer of a frame file's stem: ``"00012_7.jpg"`` -> 7, ``"3.jpg"`` -> 3, ``"a.jpg"`` -> None."""
    m = _TRAILING_INT.search(Path(name).stem)
    return int(m.group(1)) if m else None


def list_frames(folder: Path) -> list[Path]:
    """Image files of a frame folder in frame order. Other files (thumbnails indexes, notes) are ignored.

    Raises:
        MediaError: the folder is missing, holds no image, or has a frame without / with a duplicate number.
    """
    if not folder.is_dir():
        raise MediaError(f"missing frame folder {folder}", "missing media")
    numbered: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() not in FRAME_SUFFIXES or not p.is_file():
            continue
        k = frame_number(p.name)
        if k is None:
            raise MediaError(f"frame file without a trailing frame number: {p}", "bad frame names")
        if k in numbered:
            raise MediaError(f"two frame files with number {k}: {numbered[k].name} and {p.name} in {folder}",
                             "bad frame names")
        numbered[k] = p
    if not numbered:
        raise MediaError(f"empty frame folder {folder}", "empty frame folder")
    return [numbered[k] for k in sorted(numbered)]


def _open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise MediaError(f"not a readable image: {path} ({type(e).__name__})") from None


def _decode_image(path: Path) -> np.ndarray:
    try:
        with _open_image(path) as im:
            return np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
    except MediaError:
        raise
    except (OSError, ValueError) as e:  # e.g. "image file is truncated"
        raise MediaError(f"cannot decode image {path}: {' '.join(str(e).split())}") from None


def read_frames(folder: Path, indices: np.ndarray, frames: list[Path] | None = None) -> np.ndarray:
    """Decode the frames ``indices`` of a frame folder -> (T, H, W, 3) uint8."""
    frames = frames if frames is not None else list_frames(folder)
    out = [_decode_image(frames[i]) for i in indices.tolist()]
    shapes = {a.shape for a in out}
    if len(shapes) != 1:
        raise MediaError(f"frames of different sizes in {folder}: {sorted(shapes)}", "inconsistent frame sizes")
    return np.stack(out)


# Videos -------------------------------------------------------------------------------------------------------
def _video_reader(path: Path):
    import decord  # deferred: decord loads FFmpeg libraries; only needed when videos are read

    if not path.is_file():
        raise MediaError(f"missing video {path}", "missing media")
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises RuntimeError / DECORDError with FFmpeg's message
        raise MediaError(f"cannot open video {path}: {_short(e)}") from None


def _short(e: Exception) -> str:
    # decord messages carry a C++ source location and a stack; keep the first line's gist.
    text = " ".join(str(e).split())
    return (text[:160] + "…") if len(text) > 160 else text or type(e).__name__


def _get_batch(vr, path: Path, indices: np.ndarray) -> np.ndarray:
    try:
        batch = vr.get_batch([int(i) for i in indices])
    except Exception as e:  # truncated streams fail here, not at open
        raise MediaError(f"cannot decode video {path}: {_short(e)}") from None
    # The decord bridge is global; another library may have switched it to torch.
    arr = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    return np.ascontiguousarray(arr)


def read_video(path: Path, indices: np.ndarray) -> np.ndarray:
    """Decode frames ``indices`` of a video -> (T, H, W, 3) uint8."""
    vr = _video_reader(path)
    if indices.size and int(indices.max()) >= len(vr):
        raise MediaError(f"video {path} has {len(vr)} frames, index {int(indices.max())} requested")
    return _get_batch(vr, path, indices)


# Sampling -----------------------------------------------------------------------------------------------------
def sample_indices(n: int, frames: int, mode: str = "uniform", rng: np.random.Generator | None = None) -> np.ndarray:
    """``frames`` frame indices into a clip of ``n`` frames (see the module docstring). Returns int64 (T,)."""
    if n < 1:
        raise MediaError("clip has no frames")
    if mode == "random" and n > frames:
        rng = rng if rng is not None else np.random.default_rng()
        start = int(rng.integers(0, n - frames + 1))
        return np.arange(start, start + frames, dtype=np.int64)
    if mode not in ("uniform", "random"):
        raise ValueError(f"sampling: must be 'uniform' or 'random', got {mode!r}")
    # Segment centres: n >= T spreads T samples evenly; n < T repeats each frame T/n times, evenly.
    return ((np.arange(frames) + 0.5) * n / frames).astype(np.int64)


def read_clip(path: Path, kind: str, frames: int, mode: str = "uniform",
              rng: np.random.Generator | None = None) -> np.ndarray:
    """Sample and decode ``frames`` frames of one clip -> (T, H, W, 3) uint8. Opens the media once."""
    if kind == "frames":
        files = list_frames(path)
        return read_frames(path, sample_indices(len(files), frames, mode, rng), files)
    if kind == "video":
        vr = _video_reader(path)
        return _get_batch(vr, path, sample_indices(len(vr), frames, mode, rng))
    raise ValueError(f"media_kind: must be 'frames' or 'video', got {kind!r}")


def resize_uint8(clip: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size, size, 3) uint8: bicubic with antialias, clamped and rounded.

    The Arrow cache stores clips made by this function, so cached and freshly decoded clips agree byte for byte.
    """
    if clip.shape[1] == size and clip.shape[2] == size:
        return clip
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    y = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return y.clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def load_clip(path: Path, kind: str, frames: int, size: int | None = None, mode: str = "uniform",
              rng: np.random.Generator | None = None) -> np.ndarray:
    """``read_clip`` followed by ``resize_uint8`` when ``size`` is given: the clip as the cache stores it."""
    clip = read_clip(path, kind, frames, mode, rng)
    return clip if size is None else resize_uint8(clip, size)


# Probing (the index) ------------------------------------------------------------------------------------------
def probe(path: Path, kind: str, full: bool = False) -> MediaInfo:
    """Open a clip's media the way training will and return its frame count and size.

    ``full=False`` (quick): frame folders check every frame's image header and decode the first and last frame;
    videos are opened and their first and last frame decoded (a truncated stream fails there). ``full=True``
    decodes every frame.

    Raises:
        MediaError: naming the file and what is wrong.
    """
    if kind == "frames":
        files = list_frames(path)
        sizes = set()
        for f in files:
            with _open_image(f) as im:
                sizes.add(im.size)
        if len(sizes) != 1:
            raise MediaError(f"frames of different sizes in {path}: {sorted(sizes)}", "inconsistent frame sizes")
        idx = np.arange(len(files)) if full else np.unique([0, len(files) - 1])
        arr = read_frames(path, idx, files)
        return MediaInfo(len(files), int(arr.shape[1]), int(arr.shape[2]))
    if kind == "video":
        vr = _video_reader(path)
        n = len(vr)
        if n < 1:
            raise MediaError(f"video {path} has no frames")
        # Full checks go in chunks so a long high-resolution video never sits in memory whole.
        chunks = np.array_split(np.arange(n), max(1, n // 32)) if full else [np.unique([0, n - 1])]
        for idx in chunks:
            arr = _get_batch(vr, path, idx)
        return MediaInfo(n, int(arr.shape[1]), int(arr.shape[2]))
    raise ValueError(f"media_kind: must be 'frames' or 'video', got {kind!r}")
