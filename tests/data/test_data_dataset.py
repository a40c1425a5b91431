"""ClipDataset samples, DataLoader workers, and the decode-failure policy (never a crash, never a silent drop)."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from ifdd.data.dataset import ClipDataset
from ifdd.data.manifest import build_manifest, fold_split, load_manifest
from ifdd.data.video import MediaError


def test_samples_are_dicts_of_float_clips(manifest_path):
    df = load_manifest(manifest_path)
    ds = ClipDataset(manifest_path, 1, "train", frames=16, size=32, train=True)
    assert len(ds) == len(fold_split(df, 1, "train")) and sum(ds.class_counts()) == len(ds)
    s = ds[0]
    assert set(s) == {"video", "label", "clip_id"}
    assert s["video"].shape == (3, 16, 32, 32) and s["video"].dtype == torch.float32
    assert 0.0 <= s["video"].min() and s["video"].max() <= 1.0
    assert isinstance(s["label"], int) and s["clip_id"] == ds.clip_ids[0]
    torch.manual_seed(5)
    a = ds[3]["video"]
    torch.manual_seed(5)
    assert torch.equal(a, ds[3]["video"])  # augmentation follows torch's RNG
    ev = ClipDataset(df, 1, "test", frames=8, size=16)
    assert ev[0]["video"].shape == (3, 8, 16, 16) and torch.equal(ev[0]["video"], ev[0]["video"])


def test_dataloader_workers_see_every_clip_once(manifest_path):
    ds = ClipDataset(manifest_path, 3, "val", size=32, train=True, sampling="random")
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    seen = [cid for batch in loader for cid in batch["clip_id"]]
    assert sorted(seen) == sorted(ds.clip_ids)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["video"].shape == (2, 3, 16, 32, 32) and batch["label"].dtype == torch.int64


def test_decode_failure_after_indexing(tree):
    df = build_manifest(tree)
    victim = fold_split(df, 1, "train")["clip_id"].iloc[0]
    shutil.rmtree(tree / "Clip" / "clip_224x224_16f" / victim)  # media lost after indexing

    train = ClipDataset(df, 1, "train", size=32, train=True)
    i = train.clip_ids.index(victim)
    with pytest.warns(RuntimeWarning, match=f"clip {victim} .*substituted clip"):
        s = train[i]
    assert s["label"] == int(train.labels[i]) and victim in train.failures
    # inside DataLoader workers the epoch completes, every sample present (workers print their own warnings)
    n = sum(len(b["clip_id"]) for b in DataLoader(train, batch_size=8, num_workers=2))
    assert n == len(train)

    val = ClipDataset(df, 1, "trainval", size=32)  # evaluation: the clip stays, as a blank clip with its label
    j = val.clip_ids.index(victim)
    with pytest.warns(RuntimeWarning, match="evaluated as a blank clip"):
        s = val[j]
    assert s["clip_id"] == victim and torch.allclose(s["video"], torch.full_like(s["video"], 128 / 255))

    strict = ClipDataset(df, 1, "train", size=32, on_error="raise")
    with pytest.raises(MediaError, match=f"clip {victim} \\(Clip/clip_224x224_16f/{victim}\\): missing frame folder"):
        strict[strict.clip_ids.index(victim)]


def test_dataset_argument_errors(manifest_path, tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        ClipDataset(manifest_path, 1, "train", on_error="skip")
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        ClipDataset(manifest_path, 1, "train", root=tmp_path / "nope")
    with pytest.raises(ValueError, match="role: must be one of"):
        ClipDataset(manifest_path, 1, "inner")
