"""`ifdd search` on a real Ray head: preempted by SIGTERM (exit 143, partial, resumable), then its driver SIGKILLed
mid-study, then resumed with one command. Exactly num_samples trials, and in MLflow exactly one run per trial, one
parent run and one registered version, also after a further `--resume`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from . import faults_common as fc

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _trial_ckpts(storage: Path) -> int:
    return len(list(storage.glob("search/*/trials/*/checkpoint_*")))


def test_sigterm_and_sigkill_then_resume_no_duplicate_trials_runs_or_versions(small_manifest, tmp_path, ray_head,
                                                                              write_space, ifdd_env):
    address, _ = ray_head
    space = write_space(tmp_path / "pk.yaml", small_manifest,
                        search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
                        budget={"num_samples": 3, "max_epochs": 2, "scheduler": "none"}, protocol={"folds": [1]},
                        resources={"workers_per_trial": 1, "max_concurrent_trials": 1})
    runs = tmp_path / "runs"
    storage = runs / "ray"
    argv = ["search", "--space", str(space), "--runs", str(storage.parent), "--address", address]
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    study_json = runs / "search" / "pk" / "pk-fold1.json"

    # 1) SIGTERM (preemption): Tune stops gracefully, the study is saved as partial, exit 143 with the resume command
    first = fc.Proc(argv, tmp_path, ifdd_env)
    fc.wait_for(lambda: _trial_ckpts(storage) >= 2, 300, "two trial checkpoints", first)
    first.signal(signal.SIGTERM)
    assert first.wait(180) == 143, first.out[-3000:]
    line = fc.grep(r"^preempted: ", first.out)
    assert len(line) == 1 and line[0].endswith(f"ifdd search --space {space} --runs {storage.parent} --address "
                                               f"{address} --resume"), first.out[-3000:]
    partial = json.loads(study_json.read_text())
    assert not partial["complete"] and partial["best"] is None and not partial["tests"]

    # 2) the resumed driver is SIGKILLed mid-study (no chance to save anything itself)
    second = fc.Proc([*argv, "--resume"], tmp_path, ifdd_env)
    before = _trial_ckpts(storage)
    fc.wait_for(lambda: _trial_ckpts(storage) >= before + 2, 300, "progress after resume", second)
    second.signal(signal.SIGKILL)
    second.wait(60)

    # 3) one command finishes it
    third = fc.Proc([*argv, "--resume"], tmp_path, ifdd_env)
    assert third.wait(900) == 0, third.out[-4000:]
    study = json.loads(study_json.read_text())
    ids = [t["trial_id"] for t in study["trials"]]
    assert study["complete"] and len(ids) == 3 == len(set(ids))
    assert all(t["status"] == "complete" and t["epochs"] == 2 for t in study["trials"]), study["trials"]
    assert len(list((storage / "search" / "pk" / "trials").iterdir())) == 3  # one Train run per trial

    got = fc.mlflow_counts(uri, "pk", "ifdd-synthetic-pk-foldwise")
    assert got["parents"] == 1 and got["children"] == 3 and got["trial_ids"] == sorted(ids), got
    assert all(steps == [1, 2] for steps in got["epochs"].values()), got["epochs"]  # each epoch logged once
    assert got["statuses"] == ["FINISHED"] * 3 and got["versions"] == [1], got
    assert got["aliases"] == {"fold1": 1, "champion": 1}

    # 4) resuming a finished search changes nothing
    again = fc.Proc([*argv, "--resume"], tmp_path, ifdd_env)
    assert again.wait(300) == 0, again.out[-3000:]
    assert "finished earlier" in again.out
    assert fc.mlflow_counts(uri, "pk", "ifdd-synthetic-pk-foldwise") == got
