"""The reconcile after a study, on a real MLflow store (sqlite) and real checkpoint files, without Ray: every epoch
a trial's Train run checkpointed reaches MLflow once, also the epoch Tune never heard of (a Ctrl-C between the
checkpoint and Tune's result, then a resume with nothing left to train)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ifdd.checkpoint import save_checkpoint
from orchestrator.outputs import Outputs
from orchestrator.search.results import Paths, StudyResult, TrialRow
from orchestrator.search.space import load_space
from orchestrator.search.study_tracking import trial_histories
from orchestrator.search.trial import trainer_name
from orchestrator.tracking.tune_callback import TrialTracking, reconcile, run_history

ROOT = Path(__file__).resolve().parents[2]


def _epoch(e: int) -> dict:
    return {"epoch": e, "train_loss": 2.0 - e / 10, "val_uar": 0.2 + e / 100, "val_war": 0.3, "lr": 1e-3}


def _checkpoint(run: Path, stamp: str, epochs: int) -> Path:
    d = run / f"checkpoint_2026-01-01_00-00-{stamp}.000000"
    save_checkpoint(d / "state.pt", {"epoch": epochs, "history": [_epoch(e) for e in range(1, epochs + 1)],
                                     "model": {"w": torch.zeros(2)}})
    return d


@pytest.fixture
def study(tmp_path):
    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    out = Outputs.resolve(str(tmp_path / "runs"))
    paths = Paths(out, space.name, f"sqlite:///{tmp_path / 'optuna.db'}")
    name = f"{space.name}-fold1"
    tracking = TrialTracking(out.default_tracking_uri, str(out.root / "mlartifacts"), space.name, name,
                             {"ifdd.kind": "study"}, {}, {})
    return space, paths, name, tracking


def _steps(tracking: TrialTracking, run_id: str) -> list[int]:
    return sorted(m.step for m in tracking.tracker.client.get_metric_history(run_id, "val_uar"))


def test_an_epoch_checkpointed_after_tunes_last_result_is_logged_by_the_reconcile(study):
    space, paths, name, tracking = study
    run = Path(paths.trials) / trainer_name(name, "t1", 1)
    first = _checkpoint(run, "01", 1)  # the checkpoint of Tune's last result (epoch 1)
    _checkpoint(run, "02", 2)  # epoch 2 checkpointed as Ctrl-C landed: Tune never saw it
    done = _checkpoint(Path(paths.trials) / trainer_name(name, "t2", 1), "03", 2)  # a trial Tune saw to the end
    rows = [TrialRow("t1", {"loss.lambda_gc": 0.1}, "complete", 1, {"val_uar": 0.21}, checkpoint=str(first)),
            TrialRow("t2", {"loss.lambda_gc": 0.2}, "complete", 2, {"val_uar": 0.22}, checkpoint=str(done)),
            TrialRow("t3", {"loss.lambda_gc": 0.3}, "infeasible", 1, {"val_uar": 0.0})]  # never trained
    live = tracking.trial_run("t1", rows[0].params)
    tracking.tracker.log_metrics(live, _epoch(1), 1)  # what live logging got before the interrupt

    histories = trial_histories(StudyResult(name, [1], True, rows), space, paths)
    assert [h["epoch"] for h in histories["t1"]] == [1, 2] and histories["t3"] == []
    assert reconcile(tracking, rows, histories) == 3  # t1's epoch 2, t2's epochs 1 and 2
    runs = {r.data.tags["ifdd.trial_id"]: r.info.run_id for r in tracking.tracker.client.search_runs(
        [tracking.tracker.experiment(space.name)]) if "ifdd.trial_id" in r.data.tags}
    assert runs["t1"] == live  # the live run continued, not a second one
    assert {t: _steps(tracking, r) for t, r in runs.items()} == {"t1": [1, 2], "t2": [1, 2], "t3": []}
    assert reconcile(tracking, rows, histories) == 0  # a second reconcile (another --resume) adds nothing


def test_run_history_falls_back_past_a_corrupt_newest_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    _checkpoint(run, "01", 1)
    newest = _checkpoint(run, "02", 2)
    raw = bytearray((newest / "state.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (newest / "state.pt").write_bytes(bytes(raw))
    assert [h["epoch"] for h in run_history(run)] == [1]
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert run_history(tmp_path / "no-such-run") == []


def test_the_live_callback_logs_each_epoch_once_across_drivers_and_re_reports(study):
    """A trial resumed by a second driver (after a kill) re-reports the epoch it restored from; the run already
    has that point from the first driver, and a restored run may report its last epoch again."""
    from types import SimpleNamespace

    from orchestrator.tracking.tune_callback import MLflowTrialCallback

    _, _, _, tracking = study
    trial = SimpleNamespace(trial_id="t1", config={"loss.lambda_gc": 0.1})
    first = MLflowTrialCallback(tracking)  # the first driver: epochs 1-2, then killed
    for e in (1, 2):
        first.on_trial_result(0, [], trial, _epoch(e))
    second = MLflowTrialCallback(tracking)  # the resumed driver: epoch 2 again, then 3, then 3 re-reported
    for e in (2, 3, 3):
        second.on_trial_result(0, [], trial, _epoch(e))
    assert first.runs["t1"] == second.runs["t1"]
    assert _steps(tracking, second.runs["t1"]) == [1, 2, 3]
