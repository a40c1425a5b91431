"""The Tune side of tracking: a child MLflow run per trial, fed live from Tune's results, reconciled after a study.

Live logging is best effort: if the tracking store fails mid-study (a killed server), the study goes on, a warning
is printed once, and ``reconcile`` later logs every epoch MLflow is missing from the trials' checkpoints (each
``state.pt`` carries the full epoch history), so a tracking outage never loses a number and never stops training.
The history is read from the newest checkpoint of the trial's Train run (``run_history``), not from the one Tune last
heard of: an epoch can be checkpointed after the driver's last result (Ctrl-C between the two), and the resumed
run, with nothing left to train, reports nothing more.

The workers name the selection split's metrics ``val_*`` whatever that split is; under ``selection: test`` (paper
parity) they are test metrics and each trial's run logs them as ``test_*`` / ``ckpt_test_*`` (orchestrator/protocol.py
``metric_name``), with the tag ``ifdd.selection_split``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ray.tune

from orchestrator.protocol import metric_name, selection_split
from orchestrator.tracking.secrets import mask_secrets

EPOCH_METRICS = ("train_loss", "train_ce", "train_gc", "val_uar", "val_war", "val_loss", "lr", "clips_per_s",
                 "epoch_s", "ckpt_val_uar", "ckpt_val_war", "infeasible")


class TrialTracking:
    """What identifies the runs of one study, and the helpers shared by the callback and ``reconcile``."""

    def __init__(self, uri: str, artifact_root: str | None, experiment: str, study: str, parent_tags: dict[str, str],
                 base_params: dict[str, Any], trial_tags: dict[str, str], selection: str = "val"):
        self.uri, self.artifact_root = uri, artifact_root
        self.experiment, self.study = experiment, study
        self.parent_tags, self.base_params, self.trial_tags = parent_tags, base_params, trial_tags
        self.selection = selection
        self._tracker = None

    def __getstate__(self):  # Tune pickles callbacks into its experiment state: never the client
        state = dict(self.__dict__)
        state["_tracker"] = None
        return state

    @property
    def tracker(self):
        if self._tracker is None:
            from orchestrator.tracking.client import Tracker

            self._tracker = Tracker(self.uri, Path(self.artifact_root) if self.artifact_root else None)
        return self._tracker

    def parent(self) -> tuple[str, str]:
        exp = self.tracker.experiment(self.experiment)
        return exp, self.tracker.run(exp, self.study, self.parent_tags)

    def trial_run(self, trial_id: str, config: dict[str, Any]) -> str:
        exp, parent = self.parent()
        tags = {"ifdd.study": self.study, "ifdd.trial_id": trial_id}
        run_id = self.tracker.run(exp, f"{self.study}-{trial_id}", tags, parent=parent)
        self.tracker.set_tags(run_id, {**self.trial_tags, "ifdd.selection_split": selection_split(self.selection)})
        self.tracker.log_params(run_id, {**self.base_params, **{f"search.{k}": v for k, v in config.items()}})
        return run_id

    def epoch_metrics(self, result: dict[str, Any]) -> dict[str, Any]:
        """One epoch's metrics as the trial's run logs them (named after the split they come from)."""
        return {metric_name(k, self.selection): result[k] for k in EPOCH_METRICS if k in result}


class MLflowTrialCallback(ray.tune.Callback):
    """One point per epoch: a trial resumed in a later driver (after a kill), or a restored run that reports its
    last epoch again, would otherwise log an epoch twice; the steps already in MLflow are read once per run."""

    def __init__(self, tracking: TrialTracking):
        self.tracking = tracking
        self.runs: dict[str, str] = {}
        self.logged: dict[str, set[int]] = {}
        self.failed = False

    def _safe(self, fn, *args) -> Any:
        if self.failed:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - tracking must never stop a study
            self.failed = True
            detail = mask_secrets(" ".join(str(e).split()))[:200]
            print(f"warning: MLflow logging failed ({detail}); the study continues and the "
                  "missing epochs are logged from the checkpoints after it", file=sys.stderr, flush=True)
            return None

    def _run(self, trial) -> str | None:
        if trial.trial_id not in self.runs:
            run_id = self._safe(self.tracking.trial_run, trial.trial_id, dict(trial.config or {}))
            history = self._safe(self.tracking.tracker.client.get_metric_history, run_id,
                                 metric_name("val_uar", self.tracking.selection)) if run_id else None
            if run_id and history is not None:
                self.runs[trial.trial_id] = run_id
                self.logged[run_id] = {int(m.step) for m in history}
        return self.runs.get(trial.trial_id)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run(trial)
        if run_id and "epoch" in result and int(result["epoch"]) not in self.logged[run_id]:
            self._safe(self.tracking.tracker.log_metrics, run_id, self.tracking.epoch_metrics(result),
                       int(result["epoch"]))
            if not self.failed:
                self.logged[run_id].add(int(result["epoch"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        if run_id:
            self._safe(self.tracking.tracker.end, run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        if run_id:
            self._safe(self.tracking.tracker.end, run_id, "FAILED")


def run_history(run_dir: str | Path, reported: str | None = None) -> list[dict[str, Any]]:
    """Every epoch a trial's Train run finished: the history in the newest of its checkpoints that verifies
    (``checkpoint_<timestamp>`` names sort by time; ``reported``, the checkpoint Tune last heard of, is a candidate
    too). Empty when the run has no usable checkpoint (an infeasible trial never started one)."""
    from ifdd.checkpoint import CheckpointError, checkpoint_dirs_newest_first, load_first_valid

    run_dir = Path(run_dir)
    found = checkpoint_dirs_newest_first(run_dir)
    if reported and (Path(reported) / "state.pt").is_file() and Path(reported) not in found:
        found.append(Path(reported))
    if not found:
        return []
    try:
        _, files = load_first_valid(found, ("state.pt",), warn=lambda msg: print(
            f"warning: {run_dir.name}: {msg}", file=sys.stderr, flush=True))
    except CheckpointError as e:
        print(f"warning: {run_dir.name}: {e}; its epochs are not logged from the checkpoints", file=sys.stderr,
              flush=True)
        return []
    return list(files["state.pt"].get("history", []))


def reconcile(tracking: TrialTracking, rows, histories: dict[str, list[dict[str, Any]]]) -> int:
    """Log every epoch a trial's run is missing (after an outage or a resume); returns the points added."""
    tracker = tracking.tracker
    added = 0
    for row in rows:
        run_id = tracking.trial_run(row.trial_id, row.params)
        tracker.set_tags(run_id, {"ifdd.status": row.status, **({"ifdd.reason": row.reason[:250]} if row.reason
                                                                  else {})})
        uar = metric_name("val_uar", tracking.selection)
        have = {m.step for m in tracker.client.get_metric_history(run_id, uar)}
        for h in histories.get(row.trial_id, []):
            if h.get("val_uar") is None or int(h["epoch"]) in have:
                continue
            tracker.log_metrics(run_id, tracking.epoch_metrics(h), int(h["epoch"]))
            added += 1
        if row.status == "infeasible":
            tracker.log_metrics(run_id, {"infeasible": 1}, 1)
        tracker.end(run_id, "FAILED" if row.status == "error" else "FINISHED")
    return added
