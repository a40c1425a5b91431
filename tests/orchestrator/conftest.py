"""Fixtures for Ray-backed tests: a small synthetic DFEW set (64², 16 frames) and run configs pointing at it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ifdd.data.manifest import build_manifest, write_manifest
from ifdd.data.synth import write_synthetic


@pytest.fixture(scope="session")
def small_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dfew") / "DFEW"
    write_synthetic(root, clips_per_class=8, min_per_class=5, frames=16, size=64, seed=1, fmt="mp4", workers=2)
    return write_manifest(build_manifest(root, workers=2), root.parent / "manifest.parquet")


def _write_run_yaml(path: Path, manifest: Path, **sections) -> Path:
    base = {"model": {"preset": "tiny"}, "optim": {"lr": 2e-3, "warmup_epochs": 0},
            "data": {"manifest": str(manifest), "mix_prob": 0.0},
            "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "max_steps_per_epoch": 3}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    path.write_text(yaml.safe_dump({"base": base}))
    return path


@pytest.fixture
def write_run_yaml():
    """``write_run_yaml(path, manifest, **section_overrides)``: a search-space YAML whose ``base`` is a fast run."""
    return _write_run_yaml


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray per test module (the CLI joins it), shut down afterwards."""
    import ray

    from orchestrator.ray_env import init_ray

    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()
