"""`ifdd train` end to end on a real local Ray cluster: 2 DDP workers, checkpoints, restart, fingerprints, bad
input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ifdd_testkit.fixtures import split_size

from orchestrator.cli import main

pytestmark = pytest.mark.ray


def _summary(storage: Path, name: str) -> dict:
    return json.loads((storage.parent / "train" / name / "summary.json").read_text())


def test_two_workers_train_checkpoint_and_restart(small_manifest, tmp_path, ray_local, capsys, write_run_yaml):
    cfg = write_run_yaml(tmp_path / "run.yaml", small_manifest)
    storage = tmp_path / "runs" / "ray"
    argv = ["train", "--config", str(cfg), "--fold", "2", "--workers", "2", "--runs", str(storage.parent),
            "--name", "r"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fold 2 test: UAR" in out and "fold-wise nested" in out and "over 7 classes" in out
    s = _summary(storage, "r")
    assert s["selection_test_overlap"] == 0 and s["test"]["listed_clips"] == s["test"]["clips"]
    assert [int(h["epoch"]) for h in s["history"] if h.get("val_uar") is not None] == [1, 2]
    assert all(h["world_size"] == 2 for h in s["history"])
    # every test clip counted once: the manifest's fold-2 test split, no more, no fewer
    assert s["test"]["clips"] == split_size(small_manifest, 2, "test") and 0.0 <= s["test"]["uar"] <= 1.0
    assert sum(map(sum, s["test"]["confusion"])) == s["test"]["clips"]
    assert (Path(s["checkpoint"]) / "state.pt").is_file() and (Path(s["checkpoint"]) / "best.pt").is_file()
    # every inner-val clip counted exactly once although 2 workers each evaluated a padded shard (5 clips: odd)
    val = split_size(small_manifest, 2, "val")
    assert val % 2 == 1 and [h["val_clips"] for h in s["history"]] == [val, val]
    ckpt = Path(s["checkpoint"])
    chosen_on = json.loads((ckpt / "selection.json").read_text())
    assert len(set(chosen_on["clip_id"])) == len(chosen_on["clip_id"]) == val
    assert chosen_on["fingerprint"]["fold"] == 2 and chosen_on["fingerprint"]["selection"] == "val"
    # each rank keeps its own RNG streams (resuming all ranks from rank 0's would make them draw alike)
    from ifdd.checkpoint import load_checkpoint

    rng = [load_checkpoint(ckpt / f"rng_rank{r}.pt")["rng"]["torch"] for r in (0, 1)]
    assert not bool((rng[0] == rng[1]).all())

    # Same name, same epochs: the finished run restores, trains nothing, and reports its last epoch again with a
    # fresh checkpoint (else the driver, or Tune, keeps a stale result).
    assert main(argv) == 0
    again = _summary(storage, "r")
    assert again["checkpoint"] != s["checkpoint"] and again["best_epoch"] == s["best_epoch"]
    assert again["test"] == s["test"]

    # The same name for another fold or selection rule would test a model trained on that fold's test clips (or
    # chosen on them): refused before anything trains, naming the difference.
    capsys.readouterr()
    assert main([*argv[:4], "1", *argv[5:]]) == 2
    err = capsys.readouterr().err
    assert "error: run r" in err and "fold: saved 2, now 1" in err and "--fresh" in err
    assert main([*argv, "--selection", "test"]) == 2
    assert "selection: saved val, now test" in capsys.readouterr().err

    # Same name + storage, more epochs: continues from the epoch-2 checkpoint and trains only epoch 3.
    assert main(argv + ["--epochs", "3"]) == 0
    s = _summary(storage, "r")
    trained = [h for h in s["history"] if h.get("val_uar") is not None]
    assert trained[-1]["epoch"] == 3 and trained[-1]["start_epoch"] == 3


def test_default_run_name_holds_the_selection_rule():
    from orchestrator.commands.train import default_name

    assert default_name("search_spaces/smoke.yaml", 1, "val") == "train-smoke-fold1-val"
    assert default_name("a b.yaml", 3, "test") == "train-a_b-fold3-test"


@pytest.mark.parametrize("edit,needle", [
    ({"model": {"split_rato": 0.5}}, "base.model.split_rato: unknown key"),
    ({"train": {"epochs": "two"}}, "base.train.epochs: expected an integer"),
])
def test_bad_config_exits_2(small_manifest, tmp_path, capsys, edit, needle, write_run_yaml):
    cfg = write_run_yaml(tmp_path / "bad.yaml", small_manifest, **edit)
    assert main(["train", "--config", str(cfg), "--fold", "1", "--storage", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and str(cfg) in err


def test_fold_out_of_range_and_missing_manifest(small_manifest, tmp_path, capsys, write_run_yaml):
    cfg = write_run_yaml(tmp_path / "run.yaml", small_manifest)
    assert main(["train", "--config", str(cfg), "--fold", "6"]) == 2
    assert "--fold: must be 1-5, got 6" in capsys.readouterr().err
    missing = write_run_yaml(tmp_path / "m.yaml", tmp_path / "nowhere" / "manifest.parquet")
    assert main(["train", "--config", str(missing), "--fold", "1"]) == 2
    err = capsys.readouterr().err
    assert "manifest.parquet: manifest not found" in err and "ifdd data index" in err


def test_nan_loss_stops_the_run_with_its_reason(small_manifest, tmp_path, ray_local, capsys, write_run_yaml):
    # An absurd learning rate blows the weights up within a step or two: the loss turns non-finite.
    cfg = write_run_yaml(tmp_path / "nan.yaml", small_manifest, optim={"lr": 1.0e12, "warmup_epochs": 0},
                         train={"epochs": 3})
    storage = tmp_path / "runs" / "ray"
    argv = ["train", "--config", str(cfg), "--fold", "1", "--workers", "2", "--runs", str(storage.parent),
            "--name", "n"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "error: training stopped: non-finite loss" in captured.err
    s = _summary(storage, "n")
    assert s["status"] == "nonfinite" and ("nan" in s["reason"] or "inf" in s["reason"])
    assert s["test"] is None  # nothing is tested after a failed run
