"""Arrow IPC clip cache (``ifdd data cache``): every usable clip decoded once to uint8 at a fixed size, stored in
memory-mapped shards so any node reads a clip with no decoding and no copy until the float conversion.

Layout of a cache folder:

    cache.json           format, version, frames T, size S, manifest content_sha256, dataset root, clip count,
                         shard list, and the clips that failed to decode while caching (with reasons)
    shard-00000.arrow    Arrow IPC file; record batches of (clip_id string, label int8, video large_binary)

``video`` holds one clip's T frames at S x S as uint8 in channel-first order (C, T, H, W): the float conversion
the model needs, (T, H, W, C) uint8 -> (C, T, H, W) float, is then a linear pass over memory. ``ClipCache.get``
returns the clip as a (T, H, W, 3) read-only view of the mapped bytes, equal byte for byte to
``video.load_clip(..., frames=T, size=S)`` (uniform sampling; the same decoder and resize produce both).

``cache.json`` is written last, so an interrupted run leaves no usable cache. Random-window sampling needs the
media itself; the cache stores the uniform T-frame sample (every frame of a DFEW 16-frame clip).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ifdd.data.video import MediaError, load_clip

__all__ = ["ClipCache", "write_cache", "CACHE_INDEX"]

CACHE_INDEX = "cache.json"
FORMAT = "ifdd-clip-cache"
VERSION = 1
_SCHEMA = pa.schema([("clip_id", pa.string()), ("label", pa.int8()), ("video", pa.large_binary())])
_BATCH = 32  # clips decoded concurrently and written as one record batch


def write_cache(manifest: pd.DataFrame, out: str | Path, *, size: int = 112, frames: int = 16,
                root: str | Path | None = None, shard_bytes: int = 1 << 30, workers: int | None = None,
                progress: Callable | None = None) -> dict[str, Any]:
    """Decode every ``ok`` clip of ``manifest`` and write the cache; returns the ``cache.json`` content.

    Args:
        manifest: from ``load_manifest`` (its ``attrs["ifdd"]`` gives the root and the content hash).
        root: dataset root; default the one recorded in the manifest.
        progress: wraps an iterator of clip counts, e.g. ``lambda it, total: tqdm(it, total=total)``.
    """
    if size < 8 or frames < 1:
        raise ValueError(f"size/frames: need size >= 8 and frames >= 1, got {size}/{frames}")
    meta = manifest.attrs.get("ifdd") or {}
    root = Path(root or meta.get("root") or "")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found (pass --root)")
    out = Path(out)
    _prepare_out(out)
    rows = manifest[manifest["status"].eq("ok")].sort_values("clip_id")
    items = list(zip(rows["clip_id"], rows["label"].astype(int), rows["media_path"], rows["media_kind"], strict=True))

    def decode(item: tuple[str, int, str, str]) -> tuple[str, int, np.ndarray | None, str]:
        cid, label, rel, kind = item
        try:
            clip = load_clip(root / rel, kind, frames, size)  # (T, S, S, 3) uint8
        except MediaError as e:
            return cid, label, None, f"{e.category}: {str(e).replace(str(root) + os.sep, '')}"
        return cid, label, np.ascontiguousarray(clip.transpose(3, 0, 1, 2)), ""  # stored (C, T, S, S)

    shards: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    writer, sink, shard_used = None, None, 0
    clip_bytes = 3 * frames * size * size
    chunks = [items[i:i + _BATCH] for i in range(0, len(items), _BATCH)]
    counter = progress(iter(chunks), len(chunks)) if progress else iter(chunks)
    try:
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            for chunk in counter:
                done = [r for r in pool.map(decode, chunk)]
                for cid, _, _, reason in done:
                    if reason:
                        failed[cid] = reason
                good = [(cid, label, arr) for cid, label, arr, reason in done if not reason]
                if not good:
                    continue
                if writer is None or shard_used + clip_bytes * len(good) > shard_bytes:
                    if writer is not None:
                        writer.close()
                        sink.close()
                    name = f"shard-{len(shards):05d}.arrow"
                    sink = pa.OSFile(str(out / name), "wb")
                    writer = pa.ipc.new_file(sink, _SCHEMA)
                    shards.append({"file": name, "clips": 0})
                    shard_used = 0
                batch = pa.record_batch([
                    pa.array([g[0] for g in good], pa.string()),
                    pa.array([g[1] for g in good], pa.int8()),
                    pa.array([g[2].tobytes() for g in good], pa.large_binary()),
                ], schema=_SCHEMA)
                writer.write_batch(batch)
                shards[-1]["clips"] += len(good)
                shard_used += clip_bytes * len(good)
    finally:
        if writer is not None:
            writer.close()
            sink.close()
    index = {
        "format": FORMAT, "version": VERSION, "frames": frames, "size": size, "layout": "CTHW",
        "manifest_sha256": meta.get("content_sha256", ""), "root": str(root.absolute()),
        "clips": sum(s["clips"] for s in shards), "shards": shards, "failed": failed,
    }
    tmp = out / f".{CACHE_INDEX}.tmp"
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    os.replace(tmp, out / CACHE_INDEX)
    return index


def _prepare_out(out: Path) -> None:
    """Create ``out``, or empty a previous cache there; refuse a non-empty folder that is not a cache."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    entries = list(out.iterdir())
    ours = [p for p in entries if p.name == CACHE_INDEX or (p.name.startswith("shard-") and p.suffix == ".arrow")]
    if len(ours) != len(entries) or (entries and not (out / CACHE_INDEX).exists()):
        raise ValueError(f"{out}: folder is not empty and not an ifdd clip cache; choose an empty --out")
    (out / CACHE_INDEX).unlink(missing_ok=True)  # first, so a crash below leaves no index over stale shards
    for p in ours:
        p.unlink(missing_ok=True)


class ClipCache:
    """Read side: ``get(clip_id)`` -> (T, H, W, 3) uint8 read-only view. Shards are mapped lazily in each process,
    so a dataset holding a ClipCache can be sent to DataLoader workers (fork or spawn)."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir)
        path = self.dir / CACHE_INDEX
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no clip cache here (write one with `ifdd data cache`)")
        try:
            index = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
            fmt = index if not isinstance(index, dict) else f"{index.get('format')!r} v{index.get('version')}"
            raise ValueError(f"{path}: unsupported cache format {fmt}")
        missing = [k for k in ("frames", "size", "manifest_sha256", "clips", "shards") if k not in index]
        if missing:
            raise ValueError(f"{path}: {', '.join(missing)} missing; not written by `ifdd data cache`")
        for s in index["shards"]:
            if not isinstance(s, dict) or not isinstance(s.get("file"), str) or Path(s["file"]).name != s["file"]:
                raise ValueError(f"{path}: shards: expected entries {{file: shard-NNNNN.arrow}}, got {s!r}")
            if not (self.dir / s["file"]).is_file():
                raise FileNotFoundError(f"{self.dir / s['file']}: cache shard missing")
        self.index = index
        self.frames, self.size = int(index["frames"]), int(index["size"])
        self.manifest_sha256 = index["manifest_sha256"]
        self.failed: dict[str, str] = dict(index.get("failed", {}))
        self._where: dict[str, tuple[int, int, int]] | None = None
        self._chunks: list[list[tuple[np.ndarray, np.ndarray]]] = []

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_where"], state["_chunks"] = None, []  # mappings are per process
        return state

    def _open(self) -> None:
        where, chunks = {}, []
        for si, s in enumerate(self.index["shards"]):
            reader = pa.ipc.open_file(pa.memory_map(str(self.dir / s["file"]), "r"))
            shard = []
            for bi in range(reader.num_record_batches):
                batch = reader.get_batch(bi)
                ids, video = batch.column(0), batch.column(2)
                # large_binary buffers: [validity, int64 offsets, data]; numpy views over the mapped file.
                _, off_buf, data_buf = video.buffers()
                offsets = np.frombuffer(off_buf, dtype=np.int64)[video.offset: video.offset + len(video) + 1]
                shard.append((offsets, np.frombuffer(data_buf, dtype=np.uint8)))
                for ri, cid in enumerate(ids.to_pylist()):
                    where[cid] = (si, bi, ri)
            chunks.append(shard)
        self._where, self._chunks = where, chunks

    @property
    def clip_ids(self) -> set[str]:
        if self._where is None:
            self._open()
        return set(self._where)

    def __contains__(self, clip_id: str) -> bool:
        if self._where is None:
            self._open()
        return clip_id in self._where

    def __len__(self) -> int:
        return int(self.index["clips"])

    def get(self, clip_id: str) -> np.ndarray:
        """(T, H, W, 3) uint8 view (memory is channel-first; ``transforms.to_float_video`` reads it linearly)."""
        if self._where is None:
            self._open()
        try:
            si, bi, ri = self._where[clip_id]
        except KeyError:
            raise KeyError(f"clip {clip_id} is not in the cache {self.dir}") from None
        offsets, data = self._chunks[si][bi]
        flat = data[offsets[ri]: offsets[ri + 1]]
        return flat.reshape(3, self.frames, self.size, self.size).transpose(1, 2, 3, 0)
