"""A finished study into MLflow: the trials' runs reconciled from their checkpoints, the parent run with the test
results, the Optuna plots, and the fold winners registered; or, while the tracking store is down, the study marked
``tracking_pending`` so that ``--resume`` logs it later. Training never waits on tracking."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from orchestrator.outputs import write_json
from orchestrator.search.nested import trial_checkpoint
from orchestrator.search.results import Paths, StudyResult
from orchestrator.search.space import SearchSpace
from orchestrator.tracking.plots import optuna_plots
from orchestrator.tracking.registry import register_best
from orchestrator.tracking.study_runs import log_study
from orchestrator.tracking.tune_callback import TrialTracking, reconcile, run_history


def try_track(tracking: TrialTracking, res: StudyResult, space: SearchSpace, paths: Paths, model: str,
              payload: dict[str, Any], tags: dict[str, str], register: bool = True) -> bool:
    """``track_study`` unless the tracking store is down: then the study's payload is marked ``tracking_pending``
    (its Ray results are kept as they are) and False is returned; ``--resume`` logs it once the store is back. A
    failure while the store answers its health check is a bug and is raised."""
    try:
        tracking.tracker.check()  # fails in seconds instead of MLflow's minutes of HTTP retries
        tracking.tracker.set_tags(tracking.parent()[1], tags)
        track_study(tracking, res, space, paths, model, payload, register)
        return True
    except Exception as e:  # noqa: BLE001 - decided below: an outage is recorded, anything else re-raised
        try:
            tracking.tracker.check()
        except ValueError:
            payload["tracking_pending"] = f"MLflow unreachable: {' '.join(str(e).split())[:200]}"
            write_json(paths.study_json(res.study), payload)
            print(f"warning: study {res.study}: MLflow is unreachable; its results are saved in "
                  f"{paths.study_json(res.study)} and will be logged by --resume", file=sys.stderr, flush=True)
            return False
        raise


def track_study(tracking: TrialTracking, res: StudyResult, space: SearchSpace, paths: Paths, model: str,
                payload: dict[str, Any], register: bool = True) -> None:
    """Reconcile the trials' runs from their checkpoints, log the parent run, and unless ``register`` is False
    register the fold winners in ``model`` (the registered model of this space and protocol)."""
    from ifdd.runconfig import with_overrides

    added = reconcile(tracking, res.trials, trial_histories(res, space, paths))
    if added:
        print(f"MLflow: logged {added} epoch(s) the live logging had missed", flush=True)
    cfgs = {k: with_overrides(space.trial_base(), w.params) for k, w in res.winners.items()}
    parent = log_study(tracking, res, space, cfgs)
    if space.params:
        plots, skipped = optuna_plots(res.study, paths.optuna, paths.results / "plots")
        for path in plots:
            tracking.tracker.log_file(parent, path, "optuna")
        payload["plots"] = [str(p.relative_to(paths.results)) for p in plots]
        payload["plots_skipped"] = skipped
        write_json(paths.study_json(res.study), payload)
    if register and res.complete and res.winners and res.tests:
        checkpoints = {k: str(trial_checkpoint(w, res.study, k, res.folds, paths)) for k, w in res.winners.items()}
        versions = register_best(tracking, parent, res, cfgs, checkpoints, model, space)
        key = space.objective.metrics[0]
        payload["registered"] = [{"fold": f, "version": v, "selection_value": res.winners[f].fold_values[str(f)][key]}
                                 for f, v in versions.items()]
        write_json(paths.study_json(res.study), payload)


def trial_histories(res: StudyResult, space: SearchSpace, paths: Paths) -> dict[str, list[dict[str, Any]]]:
    """trial id -> every epoch's metrics, from the newest checkpoint of the trial's Train run (fold-wise studies:
    one run per trial; a cross-fold trial's epochs are its folds, logged live)."""
    from orchestrator.search.trial import trainer_name

    if space.protocol.strategy != "fold-wise":
        return {}
    fold = res.folds[0]
    return {row.trial_id: run_history(Path(paths.trials) / trainer_name(res.study, row.trial_id, fold), row.checkpoint)
            for row in res.trials}
