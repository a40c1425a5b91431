"""Choosing from a finished study: its trials' rows from Tune's results (the base config's trial marked), the best
of a set of scored trials and their Pareto front, and the single test evaluation of each chosen checkpoint (and of
the base trial's, beside it). Which clips score the trials for each reported fold is orchestrator/search/nested.py.

Nothing is chosen from a partial study (``collect`` says whether every trial finished), and infeasible or errored
trials and trials without a checkpoint are never chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ifdd.config import to_dict
from orchestrator.planner import TrialPlan
from orchestrator.search.results import TrialRow
from orchestrator.search.space import SearchSpace


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
    mark_base(rows, space.base_point())
    complete = len(rows) == space.budget.num_samples and grid.num_errors == 0 and \
        grid.num_terminated == space.budget.num_samples
    return rows, complete


def mark_base(rows: list[TrialRow], point: dict[str, Any]) -> None:
    """The base config's trial: the first whose sampled values are the base's (``tuner.make_tuner`` enqueues it
    first; a space with nothing searched runs the base in every trial). ``rows`` are in the order Tune created the
    trials (its result grid's order); trial ids are random hex, so they say nothing about that order."""
    for row in rows:
        if all(row.params.get(k) == v for k, v in point.items()):
            row.base = True
            return


def select(rows: list[TrialRow], space: SearchSpace) -> tuple[TrialRow | None, list[str]]:
    """The best of ``rows`` (each already scored on one scope) on the first objective metric (ties: fewer epochs,
    then trial id), and the Pareto front over all objective metrics (every metric is maximised). Infeasible and
    errored trials are never chosen."""
    metrics = space.objective.metrics
    eligible = [r for r in rows if r.status not in ("infeasible", "error")]
    if not eligible:
        return None, []
    best = max(eligible, key=lambda r: (r.values[metrics[0]], -r.epochs, r.trial_id))
    front = [r.trial_id for r in eligible
             if not any(all(o.values[m] >= r.values[m] for m in metrics)
                        and any(o.values[m] > r.values[m] for m in metrics) for o in eligible)]
    return best, front


def test_once(jobs: dict[tuple[str, int], tuple[str, dict[str, Any]]], space: SearchSpace, plan: TrialPlan
              ) -> dict[tuple[str, int], dict[str, Any]]:
    """Evaluate each chosen checkpoint once on its fold's test split, as Ray tasks with the trial's per-worker
    resources (a GPU on a GPU cluster; the checkpoints are on the study's shared storage).

    ``jobs``: (what, fold) -> (checkpoint dir, the trial's sampled params); ``what`` is ``winner`` or ``base``."""
    import ray

    from ifdd.runconfig import with_overrides

    w = plan.worker
    task = ray.remote(num_cpus=min(w.cpus_per_worker, 1.0), num_gpus=w.gpus_per_worker if w.use_gpu else 0)(
        _evaluate_task)
    refs = {key: task.remote(str(Path(ckpt) / "best.pt"), to_dict(with_overrides(space.trial_base(), params)),
                             key[1], w.threads, w.use_gpu)
            for key, (ckpt, params) in jobs.items()}
    return {key: ray.get(ref) for key, ref in refs.items()}


def _evaluate_task(path: str, cfg: dict, fold: int, threads: int, use_gpu: bool) -> dict[str, Any]:
    import torch

    from ifdd.pipeline import evaluate_checkpoint
    from ifdd.runconfig import run_config_from_dict

    torch.set_num_threads(max(1, threads))
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    out = evaluate_checkpoint(path, run_config_from_dict(cfg), fold, role="test", device=device)
    return {k: out[k] for k in ("uar", "war", "clips", "per_class_recall", "confusion", "loss", "uar_classes",
                                "listed_clips", "quarantined", "official_clips", "coverage_gap") if k in out}


