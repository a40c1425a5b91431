"""`ifdd demo` end to end, as a user runs it, in an empty folder: the embedded synthetic DFEW-format set created
under --runs (the default-data branch of orchestrator/inputs.py), indexed, cached, searched fold-wise on a local
Ray it starts itself, tested once, summarised and tracked. At a reduced budget: demo.yaml with one trial of two
epochs on fold 1 (the shipped budget is the demo's business, not this test's). The trial fine-tunes the default
pretext init, which the demo copies from the package's shipped one on first use (tests/test_pretrain_shipped.py
checks that the default recipe still makes such an init from scratch), and leaves chance within those 2 epochs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from ifdd_testkit.fixtures import split_size
from ifdd_testkit.procio import Proc

from orchestrator.console import parse_epoch_line
from orchestrator.search.shipped import resolve_space

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.timeout(1200)  # ~3 min on a 2-core box
def test_demo_runs_end_to_end_in_an_empty_folder_and_its_fine_tune_leaves_chance_within_2_epochs(tmp_path, ifdd_env):
    doc = yaml.safe_load(resolve_space("demo").read_text())  # the shipped space `demo`
    assert doc["base"]["train"]["init_weights"] == "pretext"
    doc["budget"].update({"num_samples": 1, "max_epochs": 2, "scheduler": "none", "grace_period": 1})
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
    # the trial started from the whole pretext backbone, and learned (7 classes: chance UAR 1/7). The worker's lines
    # are in the demo's log, the terminal stays quiet.
    shipped = re.search(r"default pretext init: copying the shipped (\S+) \(made by `ifdd pretrain`", out)
    assert shipped and "default pretext init missing" not in out, out[-3000:]  # copied, not pretrained
    copied = runs / "pretrain" / Path(shipped.group(1)).name
    log = "".join(p.read_text() for p in (runs / "logs").glob("demo-*.log"))
    loaded = re.search(r"backbone from (\S+): ifdd-pretext: (\d+) tensors loaded .*?; (\d+) backbone tensors left at "
                       r"init", log)
    assert loaded and Path(loaded.group(1)).resolve().parent == copied.resolve(), log[-4000:]
    assert int(loaded.group(2)) > 100 and loaded.group(3) == "0"
    epochs = [e for e in map(parse_epoch_line, (line.split(") ", 1)[-1] for line in log.splitlines())) if e]
    assert [e["epoch"] for e in epochs] == [1, 2], log[-4000:]
    assert max(e["value"] for e in epochs) > 0.30, epochs  # inner-val UAR; from scratch it sits near 1/7
