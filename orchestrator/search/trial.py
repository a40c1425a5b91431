"""The Tune trial: a plain function that builds one Ray Train ``TorchTrainer`` per fold (Train V2 driver pattern).

Tuner(TorchTrainer) is broken under Train V2 (docs/stack.md P1), so each trial is this function. It applies the
sampled values to the study's base config; a combination the model cannot build (e.g. a split ratio that leaves a
lifting branch empty at that depth) is reported once as *infeasible* (objective 0, the worst UAR/WAR, flagged
``infeasible=1``) so the sampler learns to avoid it, and such a trial is never selected.

Fold-wise trials train one fold; every epoch the workers' report reaches Tune through ``TuneReportCallback``, so
ASHA can stop the trial at its rungs (on ``epoch``, which survives a resume, not ``training_iteration``).
Cross-fold trials train each fold in turn and report once per fold the running mean of the fold results: that mean
guides the sampler only; what each fold reports is chosen afterwards from the runs' per-clip records, leaving that
fold's test clips out (orchestrator/search/nested.py).

Trainer names are deterministic (``<study>-<trial id>[-fold<k>]``) under the study's storage, so a resumed study
re-runs an interrupted trial into the same Ray Train run, which continues from its last checkpoint.
"""

from __future__ import annotations

from typing import Any

from ifdd.runconfig import run_config_from_dict, with_overrides
from orchestrator.planner import WorkerResources


def trainer_name(study: str, trial_id: str, fold: int) -> str:
    """``<study>-<trial>`` for a fold-wise study (its name holds the fold), ``<study>-<trial>-fold<k>`` otherwise."""
    return f"{study}-{trial_id}" if study.endswith(f"-fold{fold}") else f"{study}-{trial_id}-fold{fold}"


def run_trial(config: dict[str, Any], *, base: dict[str, Any], folds: list[int], study: str, storage: str,
              worker: dict[str, Any], selection: str, metrics: list[str], backend: str) -> None:
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.training.trainer import make_trainer, outcome_from_result

    trial_id = ray.tune.get_context().get_trial_id()
    res = WorkerResources(**worker)
    try:
        cfg = with_overrides(run_config_from_dict(base), dict(config))
    except ValueError as e:
        ray.tune.report({"epoch": 1, "infeasible": 1, **{f"ckpt_{m}": 0.0 for m in metrics},
                         "stop_reason": f"infeasible: {' '.join(str(e).split())}"})
        return
    if len(folds) == 1:
        trainer = make_trainer(cfg, folds[0], name=trainer_name(study, trial_id, folds[0]), storage=storage, res=res,
                               selection=selection, backend=backend, callbacks=[TuneReportCallback()])
        trainer.fit()
        return
    done: list[dict[str, Any]] = []
    for i, fold in enumerate(folds, 1):
        trainer = make_trainer(cfg, fold, name=trainer_name(study, trial_id, fold), storage=storage, res=res,
                               selection=selection, backend=backend)
        outcome = outcome_from_result(trainer_name(study, trial_id, fold), trainer.fit())
        done.append({m: float(outcome.best_val.get(m, 0.0)) for m in metrics})
        report = {"epoch": i, "folds_done": i, "infeasible": 0,
                  **{f"ckpt_{m}": sum(d[m] for d in done) / len(done) for m in metrics},
                  **{f"fold{fold}_{m}": done[-1][m] for m in metrics}}
        if outcome.status != "finished":
            report["stop_reason"] = f"fold {fold}: {outcome.reason}"
            ray.tune.report(report)
            return
        ray.tune.report(report)
