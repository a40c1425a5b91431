"""`ifdd demo` end to end, as a user runs it, in an empty folder: the embedded synthetic DFEW-format set created
under --runs (the default-data branch of orchestrator/inputs.py), indexed, cached, searched fold-wise on a local
Ray it starts itself, tested once, summarised and tracked. At a reduced budget: demo.yaml with one trial of one
short epoch on fold 1 (the shipped budget is the demo's business, not this test's)."""

from __future__ import annotations

import json

import pytest
import yaml
from ifdd_testkit.fixtures import split_size
from ifdd_testkit.procio import Proc

from orchestrator.search.shipped import resolve_space

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.timeout(900)  # ~90 s on 2 quiet cores: 700 synthetic clips, Ray start, one trial, the pt2 export
def test_demo_runs_end_to_end_in_an_empty_folder(tmp_path, ifdd_env):
    doc = yaml.safe_load(resolve_space("demo").read_text())  # the shipped space `demo`
    doc["base"]["train"].update({"max_steps_per_epoch": 2})
    doc["base"]["optim"].update({"warmup_epochs": 0})  # a warmup must end before the (single) epoch does
    doc["budget"].update({"num_samples": 1, "max_epochs": 1, "scheduler": "none", "grace_period": 1})
    doc["resources"].update({"workers_per_trial": 1, "max_concurrent_trials": 1})
    space = tmp_path / "demo.yaml"
    space.write_text(yaml.safe_dump(doc))
    work = tmp_path / "work"
    work.mkdir()
    runs = tmp_path / "runs"
    proc = Proc(["demo", "--space", str(space), "--folds", "1", "--runs", str(runs)], work, ifdd_env)
    assert proc.wait(800) == 0, proc.out[-4000:]
    out = proc.out
    assert "default synthetic dataset missing: creating it in" in out and "default clip cache missing" in out
    manifest = runs / "data" / "synthetic" / "manifest.parquet"
    assert manifest.is_file() and (runs / "data" / "synthetic" / "cache64" / "cache.json").is_file()
    results = runs / "search" / doc["name"]
    study = json.loads((results / f"{doc['name']}-fold1.json").read_text())
    assert study["complete"] and len(study["trials"]) == 1 and study["best"] is not None
    assert study["tests"]["1"]["clips"] == split_size(manifest, 1, "test")  # the default set's fold-1 test split
    summary = json.loads((results / "summary.json").read_text())
    assert [r["fold"] for r in summary["folds"]] == [1] and summary["registry"]["champion_version"]
    assert (runs / "mlflow.db").is_file() and "demo finished in" in out
    assert list(work.iterdir()) == []  # nothing written to the working directory: everything under --runs
