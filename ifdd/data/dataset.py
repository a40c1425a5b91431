"""``ClipDataset``: one fold/role of the manifest as dict samples ``{video (C, T, H, W) float, label, clip_id}``.

A clip comes from the Arrow cache when one is given and holds it, else it is decoded from its media (``video.py``).
Training samples get ``TrainTransform`` (per-clip flip, RandomResizedCrop, colour jitter); evaluation samples are
only resized. With ``augment_on="device"`` training samples are the uint8 clips themselves, (C, T, S, S) at the
cache's size S (or decoded at ``size``), and ``transforms.BatchTrainAugment`` augments them in batch on the training
device. Randomness comes from torch's global RNG (one draw per sample seeds a numpy generator), which the
DataLoader seeds per worker and per epoch, so ``torch.manual_seed`` makes a run reproducible.

Decode failures at training time. ``ifdd data index`` opens every clip and quarantines the ones it cannot read, so
this is rare (a file changed or was truncated after indexing, a bad JPEG in the middle of a folder). It must not
kill a DataLoader worker, nor drop the clip silently:
- ``on_error="substitute"`` (default for training): warn, record the failure in ``failures``, and use the next
  clip of the same label in this split (deterministic), so the class balance of the epoch is unchanged.
- ``on_error="blank"`` (default for evaluation): warn, record, and return a mid-grey clip with the clip's own id
  and label, so the clip still counts in UAR/WAR (as a likely miss: metrics are never inflated).
- ``on_error="raise"``: raise ``MediaError`` naming the clip and its media.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ifdd.data.cache import ClipCache
from ifdd.data.manifest import class_counts, fold_split, load_manifest
from ifdd.data.transforms import EvalTransform, TrainTransform
from ifdd.data.video import MediaError, load_clip, read_clip

__all__ = ["ClipDataset"]


class ClipDataset(Dataset):
    """Usable clips of ``role`` in ``fold`` (see ``manifest.fold_split``).

    Args:
        manifest: a manifest DataFrame from ``load_manifest`` or the path of a manifest.parquet.
        fold: 1..5. role: train | val | test | trainval.
        root: dataset root the media paths are relative to; default the root recorded in the manifest.
        frames: T frames per sample. size: output side S (square).
        train: training transform (with ``augment``) and ``substitute`` failure policy.
        augment: False gives training samples the eval transform (resize only).
        cache_dir: an ``ifdd data cache`` folder built from this manifest with the same T.
        sampling: uniform (every frame of a 16-frame DFEW clip) or random (a random T-frame window; media only).
        on_error: substitute | blank | raise; default substitute when training, blank otherwise.
        augment_on: ``loader`` (augment here, per sample) or ``device``: training samples are uint8 clips
            (C, T, S, S) for ``transforms.BatchTrainAugment`` on the training device; S is the cache's size (clips
            missing from the cache are decoded at that size, as the cache would hold them), else ``size``.
    """

    def __init__(self, manifest: pd.DataFrame | str | Path, fold: int, role: str, *, root: str | Path | None = None,
                 frames: int = 16, size: int = 64, train: bool = False, augment: bool = True,
                 cache_dir: str | Path | None = None, sampling: str = "uniform", on_error: str | None = None,
                 augment_on: str = "loader"):
        df = manifest if isinstance(manifest, pd.DataFrame) else load_manifest(manifest)
        meta = df.attrs.get("ifdd", {})
        where = df.attrs.get("path", "manifest")
        rows = fold_split(df, fold, role)
        if rows.empty:
            raise ValueError(f"{where}: fold {fold} has no usable {role} clips")
        if frames < 1 or size < 8:
            raise ValueError(f"frames/size: need frames >= 1 and size >= 8, got {frames}/{size}")
        if sampling not in ("uniform", "random"):
            raise ValueError(f"sampling: must be uniform or random, got {sampling!r}")
        self.on_error = on_error or ("substitute" if train else "blank")
        if self.on_error not in ("substitute", "blank", "raise"):
            raise ValueError(f"on_error: must be substitute, blank or raise, got {self.on_error!r}")
        self.root = Path(root or meta.get("root") or "")
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dataset root not found (recorded in {where}; pass root=)")
        self.fold, self.role, self.frames, self.size, self.train = fold, role, frames, size, train
        self.sampling = sampling
        # Plain lists, not a DataFrame: cheap to fork/pickle into DataLoader workers.
        self.clip_ids: list[str] = rows["clip_id"].tolist()
        self.labels: np.ndarray = rows["label"].to_numpy(dtype=np.int64)
        self.media: list[tuple[str, str]] = list(zip(rows["media_path"], rows["media_kind"], strict=True))
        if augment_on not in ("loader", "device"):
            raise ValueError(f"augment_on: must be loader or device, got {augment_on!r}")
        self.transform = TrainTransform(size) if train and augment else EvalTransform(size)
        self.cache = self._open_cache(cache_dir, meta, where) if cache_dir else None
        self.raw_size: int | None = None
        """Side of the uint8 clips returned for device-side augmentation; None: samples are transformed here."""
        if train and augment and augment_on == "device":
            self.raw_size = self.cache.size if self.cache is not None else size
        self.failures: dict[str, str] = {}
        """Clips that failed to decode in this process: clip_id -> reason."""

    def _open_cache(self, cache_dir: str | Path, meta: dict[str, Any], where: str) -> ClipCache:
        cache = ClipCache(cache_dir)
        if meta.get("content_sha256") and cache.manifest_sha256 != meta["content_sha256"]:
            raise ValueError(f"{cache_dir}: the cache was built from another manifest than {where}; rebuild it "
                             "with `ifdd data cache`")
        if cache.frames != self.frames:
            raise ValueError(f"{cache_dir}: the cache holds {cache.frames} frames per clip, {self.frames} requested")
        if self.sampling != "uniform":
            raise ValueError(f"{cache_dir}: the cache stores uniformly sampled frames; sampling='random' needs "
                             "the media (drop cache_dir)")
        return cache

    def __len__(self) -> int:
        return len(self.clip_ids)

    def class_counts(self, num_classes: int = 7) -> list[int]:
        return class_counts(pd.DataFrame({"label": self.labels}), num_classes)

    def _clip(self, i: int, rng: np.random.Generator | None) -> np.ndarray:
        cid = self.clip_ids[i]
        if self.cache is not None and cid in self.cache:
            return self.cache.get(cid)
        rel, kind = self.media[i]
        mode = self.sampling if self.train else "uniform"
        if self.raw_size is not None:  # every clip at one size (uniform sampling: the bytes the cache would hold)
            return load_clip(self.root / rel, kind, self.frames, self.raw_size, mode, rng)
        return read_clip(self.root / rel, kind, self.frames, mode, rng)

    def _recover(self, i: int, err: MediaError, rng: np.random.Generator | None) -> np.ndarray:
        cid = self.clip_ids[i]
        reason = f"clip {cid} ({self.media[i][0]}): {' '.join(str(err).split())}"
        self.failures[cid] = reason
        if self.on_error == "raise":
            raise MediaError(reason, err.category) from None
        if self.on_error == "blank":
            warnings.warn(f"{reason}; evaluated as a blank clip", RuntimeWarning, stacklevel=3)
            side = self.raw_size or self.size
            return np.full((self.frames, side, side, 3), 128, dtype=np.uint8)
        same = np.flatnonzero(self.labels == self.labels[i])
        start = int(np.searchsorted(same, i))
        for j in np.roll(same, -start)[1:]:  # the following same-label clips, wrapping around
            if self.clip_ids[j] in self.failures:
                continue
            try:
                clip = self._clip(int(j), rng)
            except MediaError as e2:
                self.failures[self.clip_ids[j]] = f"clip {self.clip_ids[j]}: {' '.join(str(e2).split())}"
                continue
            warnings.warn(f"{reason}; substituted clip {self.clip_ids[j]} (same label)", RuntimeWarning, stacklevel=3)
            return clip
        raise RuntimeError(f"{reason}; and no other clip of label {int(self.labels[i])} in fold {self.fold} "
                           f"{self.role} could be decoded; re-run `ifdd data index`")

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item())) if self.train else None
        try:
            clip = self._clip(i, rng)  # (T, H, W, 3) uint8
        except MediaError as e:
            clip = self._recover(i, e, rng)
        if self.raw_size is not None:  # uint8 (C, T, S, S), a copy (the cache's memory is a read-only mapping)
            video = torch.from_numpy(np.array(clip.transpose(3, 0, 1, 2), order="C"))
        else:
            video = self.transform(clip, rng)  # (C, T, size, size) float in [0, 1]
        return {"video": video, "label": int(self.labels[i]), "clip_id": self.clip_ids[i]}
