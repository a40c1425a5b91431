"""One study's Ray Tune run: the Tuner (Optuna TPE + ASHA, or FIFO), a new/restored/finished decision, and the
run itself up to its single test evaluation.

Layout under the Ray storage (``<runs>/ray`` by default)::

    search/<space>/<study>/               Tune experiment (resumable with Tuner.restore)
    search/<space>/trials/<trainer>/      Ray Train runs of the trials (checkpoints: state.pt, best.pt)

Optuna's history lives in the Optuna storage (one Optuna study per Tune study), so a resumed study keeps it.
Nothing is selected from a partial study: an interrupted ``fit()`` (Ctrl-C, a killed driver, errored trials)
returns fewer finished trials than ``num_samples``; the study is then reported as partial.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from ifdd.config import to_dict
from orchestrator.console import tune_output
from orchestrator.planner import TrialPlan
from orchestrator.search.progress import study_progress
from orchestrator.search.results import Paths, StudyResult
from orchestrator.search.selection import best_checkpoints, collect, select, test_once
from orchestrator.search.space import SearchSpace
from orchestrator.search.trial import run_trial
from orchestrator.tracking.tune_callback import MLflowTrialCallback, TrialTracking


def make_tuner(space: SearchSpace, study: str, folds: list[int], paths: Paths, plan: TrialPlan, *, restore: bool,
               callbacks: list | None = None):
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    obj = space.objective
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(run_trial, base=to_dict(space.trial_base()), folds=folds, study=study,
                                 storage=paths.trials, worker=dataclasses.asdict(plan.worker),
                                 selection=space.protocol.selection, metrics=list(obj.metrics),
                                 backend=space.resources.backend),
        {"cpu": plan.driver_cpu})
    if restore:
        return ray.tune.Tuner.restore(f"{paths.tune}/{study}", trainable=trainable, resume_unfinished=True,
                                      resume_errored=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher_kw = dict(space={p.path: p.distribution() for p in space.params}, study_name=study,
                       storage=optuna.storages.RDBStorage(paths.optuna), seed=space.budget.seed)
    if not space.params:  # nothing searched (e.g. paper parity): num_samples runs of the base config
        searcher = None
        tune_metric, tune_mode, scheduler = obj.tune_metrics[0], obj.modes[0], FIFOScheduler()
    elif obj.multi:
        searcher = OptunaSearch(metric=obj.tune_metrics, mode=list(obj.modes), **searcher_kw)
        tune_metric, tune_mode, scheduler = None, None, FIFOScheduler()
    else:
        tune_metric, tune_mode = obj.tune_metrics[0], obj.modes[0]
        searcher = OptunaSearch(metric=tune_metric, mode=tune_mode, **searcher_kw)
        asha = space.budget.scheduler == "asha" and space.protocol.strategy == "fold-wise"
        scheduler = ASHAScheduler(time_attr="epoch", max_t=space.budget.max_epochs,
                                  grace_period=space.budget.grace_period,
                                  reduction_factor=space.budget.reduction_factor) if asha else FIFOScheduler()
    return ray.tune.Tuner(
        trainable,
        tune_config=ray.tune.TuneConfig(metric=tune_metric, mode=tune_mode, search_alg=searcher, scheduler=scheduler,
                                        num_samples=space.budget.num_samples,
                                        max_concurrent_trials=plan.max_concurrent),
        run_config=ray.tune.RunConfig(name=study, storage_path=paths.tune, verbose=0, callbacks=callbacks or [],
                                      failure_config=ray.tune.FailureConfig(max_failures=1)),
    )


def prepare_study(space: SearchSpace, study: str, paths: Paths, *, resume: bool, fresh: bool) -> str:
    """``new`` | ``restore`` | ``done``; refuses to overwrite an existing study unless --fresh."""
    import ray.tune

    exp = f"{paths.tune}/{study}"
    exists = Path(exp).exists()
    if fresh:
        _delete_study(study, paths)
        return "new"
    if resume:
        if paths.study_json(study).is_file():
            prior = json.loads(paths.study_json(study).read_text())
            if prior.get("complete"):
                return "done"
        return "restore" if exists and ray.tune.Tuner.can_restore(exp) else "new"
    if exists or paths.study_json(study).is_file():
        raise ValueError(f"{exp}: study {study} already exists; continue it with --resume or start over with --fresh")
    return "new"


def _delete_study(study: str, paths: Paths) -> None:
    import optuna

    shutil.rmtree(f"{paths.tune}/{study}", ignore_errors=True)
    for d in Path(paths.trials).glob(f"{study}-*") if Path(paths.trials).exists() else []:
        shutil.rmtree(d, ignore_errors=True)
    paths.study_json(study).unlink(missing_ok=True)
    try:
        optuna.delete_study(study_name=study, storage=paths.optuna)
    except KeyError:
        pass


def run_study(space: SearchSpace, study: str, folds: list[int], paths: Paths, plan, *, restore: bool,
              tracking: TrialTracking) -> StudyResult:
    tuner = make_tuner(space, study, folds, paths, plan, restore=restore,
                       callbacks=[MLflowTrialCallback(tracking), study_progress(space, study, folds)])
    with tune_output():  # Tune's prints and Ray's relay to the log file, the progress line on the terminal
        grid = tuner.fit()
    rows, complete = collect(grid, space)
    res = StudyResult(study, folds, complete, rows)
    if not complete:
        finished = sum(r.status not in ("error",) for r in rows if r.epochs)
        res.note = (f"{grid.num_terminated} of {space.budget.num_samples} trials finished "
                    f"({grid.num_errors} errored, {len(rows) - grid.num_terminated - grid.num_errors} interrupted; "
                    f"{finished} reported results)")
        return res
    res.best, res.pareto = select(rows, space)
    if res.best is None:
        res.complete, res.note = False, "no trial produced a usable checkpoint (all infeasible or failed)"
        return res
    res.tests = test_once(best_checkpoints(res.best, study, folds, paths), res.best, space, plan)
    return res


