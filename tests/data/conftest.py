"""Fixtures for the data-layer tests: one tiny synthetic DFEW tree per session (both media kinds, 16 frames at
32², 37 clips), copied per test when a test needs to break it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ifdd.data.manifest import build_manifest, write_manifest
from ifdd.data.synth import write_synthetic

SIZE, FRAMES = 32, 16
SYNTH = dict(clips_per_class=4, min_per_class=5, frames=FRAMES, size=SIZE, seed=3, fmt="both", workers=2)


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dfew") / "DFEW"
    write_synthetic(root, **SYNTH)
    return root


@pytest.fixture(scope="session")
def manifest_path(synth_tree, tmp_path_factory) -> Path:
    return write_manifest(build_manifest(synth_tree, workers=2), tmp_path_factory.mktemp("m") / "manifest.parquet")


@pytest.fixture
def tree(synth_tree, tmp_path) -> Path:
    """A private copy of the synthetic tree, free to break."""
    return Path(shutil.copytree(synth_tree, tmp_path / "DFEW"))

