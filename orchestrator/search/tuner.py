"""One study's Ray Tune run: the Tuner (Optuna TPE + ASHA, or FIFO), a new/restored/finished decision, and the
run itself up to its single test evaluation.

Layout under the Ray storage (``<runs>/ray`` by default)::

    search/<space>/<study>/               Tune experiment (resumable with Tuner.restore)
    search/<space>/trials/<trainer>/      Ray Train runs of the trials (checkpoints: state.pt, best.pt)

Optuna's history lives in the Optuna storage (one Optuna study per Tune study), so a resumed study keeps it. The
first trial of every study is the space's ``base`` config (``points_to_evaluate``: Optuna's ``enqueue_trial``), the
reference point the winners are compared with. The study record ``<study>.json`` is written with the study's
fingerprint before any trial runs; resuming or reusing a study under another fingerprint is refused.

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
from orchestrator.outputs import write_json
from orchestrator.planner import TrialPlan
from orchestrator.protocol import check_fingerprint
from orchestrator.search.nested import StudyChoice, choose_study, trial_checkpoint
from orchestrator.search.progress import study_progress
from orchestrator.search.results import Paths, StudyResult, deploy_payload, start_payload
from orchestrator.search.selection import collect, test_once
from orchestrator.search.space import SearchSpace
from orchestrator.search.trial import run_trial
from orchestrator.tracking.tune_callback import MLflowTrialCallback, TrialTracking


def tpe_sampler(budget):
    """The study's TPE sampler: seeded, with the budget's random start-up trials (single or multi-objective)."""
    import optuna

    return optuna.samplers.TPESampler(seed=budget.seed, n_startup_trials=budget.n_startup_trials)


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
                       storage=optuna.storages.RDBStorage(paths.optuna), sampler=tpe_sampler(space.budget),
                       points_to_evaluate=[space.base_point()])
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


def prepare_study(space: SearchSpace, study: str, folds: list[int], paths: Paths, fingerprint: dict, *,
                  resume: bool, fresh: bool) -> str:
    """``new`` | ``restore`` | ``done``; refuses to overwrite an existing study unless --fresh, and to resume or
    reuse one recorded under another fingerprint (the difference is named). A new or restored study's record is
    (re)written with the fingerprint before any trial runs."""
    import ray.tune

    exp = f"{paths.tune}/{study}"
    exists = Path(exp).exists()
    record = paths.study_json(study)
    if fresh:
        _delete_study(study, paths)
        mode = "new"
    elif resume:
        prior = json.loads(record.read_text()) if record.is_file() else None
        if prior is not None or exists:
            check_fingerprint((prior or {}).get("fingerprint"), fingerprint, f"study {study} ({record})",
                              "start it over with --fresh, or give the edited space another name")
        if prior is not None and prior.get("complete"):
            return "done"
        mode = "restore" if exists and ray.tune.Tuner.can_restore(exp) else "new"
    elif exists or record.is_file():
        raise ValueError(f"{exp}: study {study} already exists; continue it with --resume or start over with --fresh")
    else:
        mode = "new"
    write_json(record, start_payload(study, folds, space, fingerprint))
    return mode


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
              tracking: TrialTracking, fingerprint: dict) -> StudyResult:
    tuner = make_tuner(space, study, folds, paths, plan, restore=restore,
                       callbacks=[MLflowTrialCallback(tracking), study_progress(space, study, folds)])
    with tune_output():  # Tune's prints and Ray's relay to the log file, the progress line on the terminal
        grid = tuner.fit()
    rows, complete = collect(grid, space)
    res = StudyResult(study, folds, complete, rows, fingerprint=fingerprint)
    if not complete:
        finished = sum(r.status not in ("error",) for r in rows if r.epochs)
        res.note = (f"{grid.num_terminated} of {space.budget.num_samples} trials finished "
                    f"({grid.num_errors} errored, {len(rows) - grid.num_terminated - grid.num_errors} interrupted; "
                    f"{finished} reported results)")
        return res
    choice = choose_study(rows, space, study, folds, paths)  # the leakage check runs here, before any test
    if any(c.winner is None for c in choice.folds.values()):
        res.complete, res.note = False, "no trial produced a usable checkpoint (all infeasible or failed)"
        return res
    record_choice(res, choice, space)
    res.tests, res.base_tests = test_choice(res, study, folds, paths, space, plan)
    return res


def record_choice(res: StudyResult, choice: StudyChoice, space: SearchSpace) -> None:
    """The winners, every trial's value on each fold's scope, the leakage counts and the deploy choice."""
    by_id = {r.trial_id: r for r in res.trials}
    for row in res.trials:
        row.fold_values = {str(k): c.values[row.trial_id] for k, c in choice.folds.items() if row.trial_id in c.values}
    res.winners = {k: by_id[c.winner.trial_id] for k, c in choice.folds.items()}
    res.leakage = choice.leakage
    named = choice.deploy or choice.folds[res.folds[0]]
    res.best, res.pareto = by_id[named.winner.trial_id], named.pareto
    if choice.deploy is not None:
        res.deploy = deploy_payload(res.best, choice.deploy.values[res.best.trial_id], space.protocol.selection)


def test_choice(res: StudyResult, study: str, folds: list[int], paths: Paths, space: SearchSpace, plan
                ) -> tuple[dict[int, dict], dict[int, dict]]:
    """Each fold winner's fold model tested once; the base trial's fold model tested once beside it (the same
    evaluation when the base is the winner). The base's figure is reported, never used to choose."""
    base = next((r for r in res.trials if r.base and r.fold_values), None)
    jobs = {}
    for k, w in res.winners.items():
        jobs[("winner", k)] = (str(trial_checkpoint(w, study, k, folds, paths)), w.params)
        if base is not None and base.trial_id != w.trial_id:
            jobs[("base", k)] = (str(trial_checkpoint(base, study, k, folds, paths)), base.params)
    done = test_once(jobs, space, plan)
    tests = {k: done[("winner", k)] for k in res.winners}
    base_tests = {} if base is None else {k: done.get(("base", k), tests[k]) for k in res.winners}
    return tests, base_tests


