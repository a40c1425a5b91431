"""`ifdd search`: Ray Tune + Optuna (TPE) + ASHA over a search space, fold-wise or cross-fold, nested by default.

Layout under the storage root (default ``runs/ray``)::

    search/<space>/<study>/               Tune experiment (resumable with Tuner.restore)
    search/<space>/trials/<trainer>/      Ray Train runs of the trials (checkpoints: state.pt, best.pt)

and the results under ``runs/search/<space>/``: ``<study>.json`` per finished study (its trials, the selected one,
its single test evaluation) and ``summary.json`` / ``summary.md`` across folds. Optuna's history lives in
``runs/optuna.db`` or the ``--optuna-storage`` database (one Optuna study per Tune study), so a resumed study
keeps it.

Nothing is selected from a partial study: an interrupted ``fit()`` (Ctrl-C, a killed driver, errored trials)
returns fewer finished trials than ``num_samples``; the study is then reported as partial with the command that
resumes it, and neither tested nor summarised.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ifdd.config import to_dict
from orchestrator.ray_env import TrialPlan
from orchestrator.space import SearchSpace, space_summary
from orchestrator.stores import default_optuna_storage
from orchestrator.trial import run_trial


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    status: str
    """complete | stopped (ASHA, before max_epochs) | infeasible | nonfinite | error"""
    epochs: int
    values: dict[str, float]
    """The objective metrics of the trial's best checkpoint (inner-val, or test in parity mode)."""
    reason: str = ""
    checkpoint: str | None = None


@dataclass
class StudyResult:
    study: str
    folds: list[int]
    complete: bool
    trials: list[TrialRow]
    best: TrialRow | None = None
    pareto: list[str] = field(default_factory=list)
    tests: dict[int, dict[str, Any]] = field(default_factory=dict)
    """fold -> the selected checkpoint's single evaluation on that fold's test split."""
    note: str = ""


def study_names(space: SearchSpace) -> list[tuple[str, list[int]]]:
    if space.protocol.strategy == "cross-fold":
        return [(f"{space.name}-crossfold", list(space.protocol.folds))]
    return [(f"{space.name}-fold{k}", [k]) for k in space.protocol.folds]


class Paths:
    def __init__(self, storage: str, runs: Path, space: str, optuna: str | None = None):
        self.tune = f"{storage.rstrip('/')}/search/{space}"
        self.trials = f"{self.tune}/trials"
        self.results = runs / "search" / space
        self.optuna = optuna or default_optuna_storage(runs)

    def study_json(self, study: str) -> Path:
        return self.results / f"{study}.json"


# Running ------------------------------------------------------------------------------------------------------
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


# Collecting and selecting -------------------------------------------------------------------------------------
def collect(grid, space: SearchSpace) -> tuple[list[TrialRow], bool]:
    rows = []
    metrics = space.objective.metrics
    for r in grid:
        m = r.metrics or {}
        values = {k: float(m.get(f"ckpt_{k}", 0.0)) for k in metrics}
        epochs = int(m.get("epoch", 0) or 0)
        reason = str(m.get("stop_reason") or "")
        if r.error is not None:
            status, reason = "error", " ".join(str(r.error).split())[:300]
        elif m.get("infeasible"):
            status = "infeasible"
        elif reason:
            status = "nonfinite"
        elif space.protocol.strategy == "cross-fold":
            status = "complete" if int(m.get("folds_done", 0)) == len(space.protocol.folds) else "stopped"
        else:
            status = "complete" if epochs >= space.budget.max_epochs else "stopped"
        params = {k: v for k, v in (r.config or {}).items()}
        rows.append(TrialRow(str(m.get("trial_id") or Path(r.path).name), params, status, epochs, values, reason,
                             m.get("checkpoint_path")))
    complete = len(rows) == space.budget.num_samples and grid.num_errors == 0 and \
        grid.num_terminated == space.budget.num_samples
    return rows, complete


def select(rows: list[TrialRow], space: SearchSpace) -> tuple[TrialRow | None, list[str]]:
    """The best trial on the first objective metric (ties: fewer epochs, then trial id), and the Pareto front
    over all objective metrics. Infeasible and errored trials, and trials without a checkpoint, are never chosen."""
    obj = space.objective
    eligible = [r for r in rows if r.status not in ("infeasible", "error") and (
        r.checkpoint or space.protocol.strategy == "cross-fold")]
    if not eligible:
        return None, []
    sign = [1.0 if m == "max" else -1.0 for m in obj.modes]
    key = obj.metrics[0]
    best = max(eligible, key=lambda r: (sign[0] * r.values[key], -r.epochs, r.trial_id))
    front = []
    for r in eligible:
        dominated = any(all(sign[i] * o.values[m] >= sign[i] * r.values[m] for i, m in enumerate(obj.metrics))
                        and any(sign[i] * o.values[m] > sign[i] * r.values[m] for i, m in enumerate(obj.metrics))
                        for o in eligible)
        if not dominated:
            front.append(r.trial_id)
    return best, front


def best_checkpoints(best: TrialRow, study: str, folds: list[int], paths: Paths) -> dict[int, str]:
    """fold -> the latest Train checkpoint dir of the selected trial (its ``best.pt`` holds the chosen weights)."""
    from orchestrator.trial import trainer_name

    out = {}
    for fold in folds:
        run = Path(paths.trials) / trainer_name(study, best.trial_id, fold)
        if len(folds) == 1 and best.checkpoint:
            out[fold] = best.checkpoint
            continue
        ckpts = sorted((p for p in run.glob("checkpoint_*") if p.is_dir()), key=lambda p: p.stat().st_mtime) \
            if run.exists() else []
        if not ckpts:
            raise RuntimeError(f"{run}: no checkpoint for the selected trial {best.trial_id} on fold {fold}")
        out[fold] = str(ckpts[-1])
    return out


def test_once(checkpoints: dict[int, str], best: TrialRow, space: SearchSpace, plan: TrialPlan) -> dict[int, dict]:
    """Evaluate the selected checkpoint once per fold on that fold's test split, as a Ray task with the trial's
    per-worker resources (a GPU on a GPU cluster; the checkpoint is on the study's shared storage)."""
    import ray

    from ifdd.runconfig import with_overrides

    cfg = with_overrides(space.trial_base(), best.params)
    w = plan.worker
    task = ray.remote(num_cpus=min(w.cpus_per_worker, 1.0), num_gpus=w.gpus_per_worker if w.use_gpu else 0)(
        _evaluate_task)
    refs = {fold: task.remote(str(Path(ckpt) / "best.pt"), to_dict(cfg), fold, w.threads, w.use_gpu)
            for fold, ckpt in checkpoints.items()}
    return {fold: ray.get(ref) for fold, ref in refs.items()}


def _evaluate_task(path: str, cfg: dict, fold: int, threads: int, use_gpu: bool) -> dict[str, Any]:
    import torch

    from ifdd.pipeline import evaluate_checkpoint
    from ifdd.runconfig import run_config_from_dict

    torch.set_num_threads(max(1, threads))
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    out = evaluate_checkpoint(path, run_config_from_dict(cfg), fold, role="test", device=device)
    return {k: out[k] for k in ("uar", "war", "clips", "per_class_recall", "confusion", "loss") if k in out}


# Summaries ----------------------------------------------------------------------------------------------------
def study_payload(res: StudyResult, space: SearchSpace) -> dict[str, Any]:
    return {"study": res.study, "folds": res.folds, "complete": res.complete, "note": res.note,
            "selection": space.protocol.selection, "strategy": space.protocol.strategy,
            "objective": list(space.objective.metrics),
            "best": dataclasses.asdict(res.best) if res.best else None, "pareto": res.pareto,
            "tests": {str(k): v for k, v in res.tests.items()},
            "trials": [dataclasses.asdict(t) for t in res.trials]}


def fold_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for res in results:
        best = res.get("best") or {}
        for fold, test in sorted(res.get("tests", {}).items(), key=lambda kv: int(kv[0])):
            rows.append({"fold": int(fold), "study": res["study"], "trial": best.get("trial_id"),
                         "params": best.get("params", {}), "selected_on": best.get("values", {}),
                         "test_uar": test["uar"], "test_war": test["war"], "test_clips": test["clips"],
                         "per_class_recall": test.get("per_class_recall"), "confusion": test.get("confusion")})
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_payload(space: SearchSpace, results: list[dict[str, Any]]) -> dict[str, Any]:
    rows = fold_rows(results)
    uar, war = mean_std([r["test_uar"] for r in rows]), mean_std([r["test_war"] for r in rows])
    return {"space": space_summary(space), "selection": space.protocol.selection,
            "strategy": space.protocol.strategy, "folds": rows,
            "test_uar_mean": uar[0], "test_uar_std": uar[1], "test_war_mean": war[0], "test_war_std": war[1],
            "trials": {r["study"]: status_counts(r["trials"]) for r in results}}


def status_counts(trials: list[dict[str, Any]]) -> dict[str, int]:
    """Trials per status (complete, stopped, infeasible, …) of one study's saved trials."""
    out: dict[str, int] = {}
    for t in trials:
        out[t["status"]] = out.get(t["status"], 0) + 1
    return out
