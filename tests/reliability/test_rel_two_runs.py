"""Two runs on one machine (docs/reliability.md, "Two runs on one machine"): two local searches started 20 s apart,
each with its own output root, each in its own isolated local Ray. Both finish, each root holds only its own
results, and neither hits Train's "multiple active Ray instances" cleaner failure (docs/stack.md P9) that left
placement groups behind and hung both. One trial at a time, so a placement group left by a finished trial would keep
the next one from ever being placed (the worker-group start timeout would then fail it)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from . import faults_common as fc

pytestmark = [pytest.mark.slow, pytest.mark.ray]


CLEANER_FAILURE = ("multiple active Ray instances", "Failed to query Ray Train Controller actor state",
                   "Failed to clean up placement group")
"""What Train's placement-group cleaner logs when it looks at the wrong Ray or none (docs/stack.md P9)."""


def _mlflow_runs(db: Path) -> list[tuple[str, str]]:
    """(run name, status) of every run in an MLflow sqlite store."""
    with sqlite3.connect(db) as con:
        return sorted(con.execute("SELECT name, status FROM runs").fetchall())


def test_two_local_searches_side_by_side_both_finish_with_their_own_results(small_manifest, write_space, tmp_path,
                                                                            ifdd_env):
    space = write_space(tmp_path / "two.yaml", small_manifest, budget={"num_samples": 2, "max_epochs": 1},
                        protocol={"folds": [1]}, resources={"workers_per_trial": 1, "max_concurrent_trials": 1})
    roots = [tmp_path / "first", tmp_path / "second"]
    t0 = time.time()
    first = fc.Proc(["search", "--space", str(space), "--runs", str(roots[0]), "--no-register"], tmp_path, ifdd_env)
    time.sleep(20)
    second = fc.Proc(["search", "--space", str(space), "--runs", str(roots[1]), "--no-register"], tmp_path, ifdd_env)
    rcs = [first.wait(900), second.wait(900)]
    took = time.time() - t0
    print(f"\ntwo searches 20 s apart: both done {took:.0f} s after the first started; exits {rcs}")
    assert rcs == [0, 0], first.out[-3000:] + "\n----\n" + second.out[-3000:]
    dashboards = []
    for proc, root, other in ((first, roots[0], roots[1]), (second, roots[1], roots[0])):
        for failure in CLEANER_FAILURE:
            assert failure not in proc.out, proc.out[-3000:]
        dashboards.append(re.search(r"local Ray: dashboard (\S+),", proc.out).group(1))
        study = json.loads((root / "search" / "two" / "two-fold1.json").read_text())
        assert study["complete"] and len(study["trials"]) == 2, study
        assert all(t["status"] != "error" for t in study["trials"]), study["trials"]
        assert study["tests"]["1"]["clips"] > 0
        # its results are its own: every checkpoint under its own root, none under the other's
        blob = json.dumps(study)
        assert str(root / "ray") in blob and str(other) not in blob
        assert len(list((root / "ray" / "search" / "two" / "trials").iterdir())) == 2
        runs = _mlflow_runs(root / "mlflow.db")
        assert len(runs) == 3 and all(status == "FINISHED" for _, status in runs), runs  # 1 parent + 2 trials
        # --no-register: the runs are logged, no model is registered, and the command says so
        with sqlite3.connect(root / "mlflow.db") as con:
            assert con.execute("SELECT COUNT(*) FROM registered_models").fetchone() == (0,)
        assert "no model registered (--no-register)" in proc.out and "registered ifdd-" not in proc.out
    assert dashboards[0] != dashboards[1]  # two isolated Rays, not one joined by the other
