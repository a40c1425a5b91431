"""The Arrow clip cache: byte-for-byte equal to decoding, tied to its manifest, reachable from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ifdd.data.cache import ClipCache, write_cache
from ifdd.data.dataset import ClipDataset
from ifdd.data.manifest import build_manifest, load_manifest, write_manifest
from ifdd.data.transforms import to_float_video
from ifdd.data.video import load_clip
from orchestrator.cli import main


@pytest.mark.parametrize("media", ["frames16", "mp4"])
def test_cached_clips_equal_decoded_clips_byte_for_byte(synth_tree, tmp_path, media):
    df = build_manifest(synth_tree, media=media)
    write_manifest(df, tmp_path / "m.parquet")
    df = load_manifest(tmp_path / "m.parquet")
    index = write_cache(df, tmp_path / "cache", size=24, frames=16, shard_bytes=200_000)  # forces several shards
    assert index["clips"] == len(df) and len(index["shards"]) > 1 and not index["failed"]
    cache = ClipCache(tmp_path / "cache")
    assert len(cache) == len(df) and cache.clip_ids == set(df["clip_id"])
    for row in df.itertuples():
        got = cache.get(row.clip_id)
        want = load_clip(Path(synth_tree) / row.media_path, row.media_kind, 16, 24)
        assert got.shape == want.shape == (16, 24, 24, 3) and got.dtype == np.uint8
        assert got.tobytes() == want.tobytes(), row.clip_id
    # the dataset reads the cache when given one: eval sample = the cached clip as float
    ds = ClipDataset(df, 2, "val", size=24, cache_dir=tmp_path / "cache")
    s = ds[0]
    assert torch.equal(s["video"], to_float_video(cache.get(s["clip_id"])))


def test_cache_is_tied_to_its_manifest_and_frames(manifest_path, synth_tree, tmp_path):
    df = load_manifest(manifest_path)
    write_cache(df, tmp_path / "cache", size=16, frames=8)
    with pytest.raises(ValueError, match="holds 8 frames per clip, 16 requested"):
        ClipDataset(df, 1, "train", cache_dir=tmp_path / "cache")
    other = build_manifest(synth_tree, seed=9)  # different inner-val split -> different content hash
    with pytest.raises(ValueError, match="built from another manifest"):
        ClipDataset(other, 1, "train", frames=8, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="uniformly sampled frames"):
        ClipDataset(df, 1, "train", frames=8, train=True, sampling="random", cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="no clip cache here"):
        ClipCache(tmp_path)


def test_cache_cli(manifest_path, tmp_path, capsys):
    out = tmp_path / "cache"
    argv = ["data", "cache", "--manifest", str(manifest_path), "--out", str(out), "--size", "16", "--quiet"]
    assert main(argv) == 0
    assert "wrote 37 clips (16x16x16 uint8) in 1 shard(s)" in capsys.readouterr().out
    assert json.loads((out / "cache.json").read_text())["size"] == 16
    assert main(argv) == 0  # rewriting a previous cache is fine
    capsys.readouterr()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    assert main(["data", "cache", "--manifest", str(manifest_path), "--out", str(tmp_path / "busy")]) == 2
    assert "not empty and not an ifdd clip cache" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").exists()
