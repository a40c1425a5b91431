"""Choosing from a finished study: its trials' rows from Tune's results, the best trial and the Pareto front, the
chosen checkpoint per fold, and that checkpoint's single evaluation on each fold's test split.

Nothing is chosen from a partial study (``collect`` says whether every trial finished), and infeasible or errored
trials and trials without a checkpoint are never chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ifdd.config import to_dict
from orchestrator.planner import TrialPlan
from orchestrator.search.results import Paths, TrialRow
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
    from orchestrator.search.trial import trainer_name

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


