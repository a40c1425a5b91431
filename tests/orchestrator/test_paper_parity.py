"""Paper parity (``protocol.selection: test``, as dfew_paper_parity.yaml) on a real local Ray, at smoke size: nothing
searched, the trial trains on the fold's official training split (inner-train + inner-val), its checkpoint is
chosen on the test split itself, and the result is reported as optimistic, never as the nested estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ifdd_testkit.fixtures import split_size

from ifdd.checkpoint import load_checkpoint
from orchestrator.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]
BATCH, EPOCHS = 8, 2


def test_paper_parity_trains_on_trainval_selects_on_test_and_says_optimistic(small_manifest, tmp_path, ray_local,
                                                                             capsys, write_space):
    space = write_space(tmp_path / "pp.yaml", small_manifest,
                        base={"train": {"batch_size": BATCH, "eval_batch_size": 16}},  # whole epochs: steps count
                        objective={"metric": "val_war", "mode": "max"},
                        budget={"num_samples": 1, "max_epochs": EPOCHS, "scheduler": "none"},
                        protocol={"selection": "test", "folds": [1]})
    doc = yaml.safe_load(space.read_text())
    doc["search"] = {}  # nothing searched: one trial of the given values, as dfew_paper_parity.yaml
    space.write_text(yaml.safe_dump(doc))
    runs = tmp_path / "runs"
    assert main(["search", "--space", str(space), "--runs", str(runs), "--no-register"]) == 0
    out = capsys.readouterr().out
    study = json.loads((runs / "search" / "pp" / "pp-fold1.json").read_text())
    assert study["complete"] and study["selection"] == "test" and len(study["trials"]) == 1
    best = study["best"]
    state = load_checkpoint(Path(best["checkpoint"]) / "state.pt")

    # selected on the test split: every epoch was scored on the fold's test clips ...
    test_clips = split_size(small_manifest, 1, "test")
    assert [h["val_clips"] for h in state["history"]] == [test_clips] * EPOCHS
    # ... so the single test of the chosen checkpoint reproduces the value it was chosen by
    assert study["tests"]["1"]["clips"] == test_clips
    assert study["tests"]["1"]["war"] == pytest.approx(best["values"]["val_war"], abs=1e-9)

    # trained on inner-train + inner-val: the optimizer took len(trainval) // batch steps per epoch (drop_last)
    trainval, train = split_size(small_manifest, 1, "trainval"), split_size(small_manifest, 1, "train")
    assert trainval // BATCH != train // BATCH  # the two splits are told apart by the step count
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {EPOCHS * (trainval // BATCH)}, steps

    # reported as optimistic (best-on-test), not as the nested estimate, in the summary, its Markdown and the run
    summary = json.loads((runs / "search" / "pp" / "summary.json").read_text())
    assert summary["selection"] == "test"
    assert "optimistic" in (runs / "search" / "pp" / "summary.md").read_text().lower()
    assert "optimistic" in out.lower() and "nested estimate" not in out.lower()
