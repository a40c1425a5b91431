"""What a search produces, as data: one row per trial, one result per study, the study/summary payloads saved as
JSON under ``<runs>/search/<space>/``, and where a space's studies live.

Every number in a payload says how it was selected (``selection``, ``strategy``; orchestrator/protocol.py).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from orchestrator.outputs import Outputs
from orchestrator.search.space import SearchSpace, space_summary


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
    """Where one search space's studies live: Tune experiments and Train runs under the Ray storage, the results
    (``<study>.json``, ``summary.json``) under the runs root, Optuna's history in its storage."""

    def __init__(self, out: Outputs, space: str, optuna: str):
        self.tune = f"{out.storage.rstrip('/')}/search/{space}"
        self.trials = f"{self.tune}/trials"
        self.results = out.search_dir(space)
        self.optuna = optuna

    def study_json(self, study: str):
        return self.results / f"{study}.json"


def study_payload(res: StudyResult, space: SearchSpace) -> dict[str, Any]:
    return {"study": res.study, "folds": res.folds, "complete": res.complete, "note": res.note,
            "selection": space.protocol.selection, "strategy": space.protocol.strategy,
            "objective": list(space.objective.metrics),
            "best": dataclasses.asdict(res.best) if res.best else None, "pareto": res.pareto,
            "tests": {str(k): v for k, v in res.tests.items()},
            "trials": [dataclasses.asdict(t) for t in res.trials]}


def result_from_payload(p: dict[str, Any]) -> StudyResult:
    """The StudyResult a saved ``<study>.json`` describes (to log a study finished during a tracking outage)."""
    return StudyResult(p["study"], list(p["folds"]), bool(p["complete"]), [TrialRow(**t) for t in p["trials"]],
                       TrialRow(**p["best"]) if p.get("best") else None, list(p.get("pareto", [])),
                       {int(k): v for k, v in p.get("tests", {}).items()}, p.get("note", ""))


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
