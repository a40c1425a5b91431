"""Shared by the reliability input tests (imported, not a conftest): a tiny synthetic DFEW tree (both media kinds),
and a project folder holding earlier outputs that a failed command must leave byte-identical."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from ifdd.data.cache import write_cache
from ifdd.data.manifest import build_manifest, load_manifest, write_manifest
from ifdd.data.synth import write_synthetic


@pytest.fixture(scope="session")
def dfew(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rel") / "DFEW"
    write_synthetic(root, clips_per_class=4, min_per_class=5, frames=16, size=32, seed=5, fmt="both", workers=2)
    return root


@pytest.fixture(scope="session")
def manifest(dfew) -> Path:
    return write_manifest(build_manifest(dfew, workers=2), dfew.parent / "manifest.parquet")


@pytest.fixture(scope="session")
def cache(manifest) -> Path:
    out = manifest.parent / "cache"
    write_cache(load_manifest(manifest), out, size=16, frames=16, workers=2)
    return out


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def project(tmp_path, manifest, cache, monkeypatch) -> Path:
    """A working directory with earlier outputs: a run's checkpoint and summary, a manifest, a cache, a tracking
    store and a search summary. The tests run `ifdd` in it (relative defaults land in its runs/)."""
    p = tmp_path / "project"
    runs = p / "runs"
    ckpt = runs / "ray" / "train-run-fold1" / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    (ckpt / "best.pt").write_bytes(b"\x80\x04earlier checkpoint bytes")
    (ckpt / "best.pt.sha256").write_text("0" * 64 + "  best.pt\n")
    (runs / "train" / "train-run-fold1").mkdir(parents=True)
    (runs / "train" / "train-run-fold1" / "summary.json").write_text('{"status": "finished", "best_val": 0.5}\n')
    (runs / "search" / "demo").mkdir(parents=True)
    (runs / "search" / "demo" / "summary.json").write_text('{"folds": [1]}\n')
    (runs / "mlflow.db").write_bytes(b"SQLite format 3\x00 earlier store")
    shutil.copy(manifest, p / "manifest.parquet")
    shutil.copytree(cache, p / "cache")
    (p / "run.yaml").write_text(yaml.safe_dump({"base": {
        "model": {"preset": "tiny"}, "optim": {"warmup_epochs": 0},
        "data": {"manifest": str(p / "manifest.parquet"), "mix_prob": 0.0},
        "train": {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 1}}}))
    monkeypatch.chdir(p)
    return p
