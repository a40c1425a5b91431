"""What a search produces, as data: one row per trial, one result per study, the study/summary payloads saved as
JSON under ``<runs>/search/<space>/``, the study's fingerprint, and where a space's studies live.

Every number in a payload says which protocol produced it (``protocol``, ``label``; orchestrator/protocol.py). A
study payload holds, per reported fold, the winner chosen for it (``winners``), that winner's single test
evaluation (``tests``), the base config's trial tested once beside it (``base_tests``, never used in a choice) and
the leakage check (``leakage``: how many clips scored the choice, how many of them are in the fold's test split).
``best`` is the trial the study names to deploy: a fold-wise study's winner, or a cross-fold study's config chosen
on every fold's selection split (``deploy``: a choice, not an estimate).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from orchestrator.outputs import Outputs
from orchestrator.protocol import BASE_LABEL, DEPLOY_LABEL, PROTOCOLS, config_sha256, protocol_key, test_warnings
from orchestrator.search.space import SearchSpace, space_summary


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    status: str
    """complete | stopped (ASHA, before max_epochs) | infeasible | nonfinite | error"""
    epochs: int
    values: dict[str, float]
    """The objective as Tune saw it: the best checkpoint's selection-split metrics (a cross-fold trial: their mean
    over the folds, which only guides the sampler; the reported choices use ``fold_values``)."""
    reason: str = ""
    checkpoint: str | None = None
    base: bool = False
    """The base config's trial (the study's reference point)."""
    fold_values: dict[str, dict[str, float]] = field(default_factory=dict)
    """outer fold -> the objective on the clips that fold's choice may use (orchestrator/search/nested.py)."""


@dataclass
class StudyResult:
    study: str
    folds: list[int]
    complete: bool
    trials: list[TrialRow]
    best: TrialRow | None = None
    pareto: list[str] = field(default_factory=list)
    tests: dict[int, dict[str, Any]] = field(default_factory=dict)
    """fold -> the fold winner's single evaluation on that fold's test split."""
    note: str = ""
    winners: dict[int, TrialRow] = field(default_factory=dict)
    """fold -> the trial chosen for that fold (its fold model is what ``tests`` evaluated)."""
    base_tests: dict[int, dict[str, Any]] = field(default_factory=dict)
    """fold -> the base trial's fold model, evaluated once on the fold's test split (no part in any choice)."""
    leakage: dict[int, dict[str, int]] = field(default_factory=dict)
    deploy: dict[str, Any] | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)


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


def study_fingerprint(space: SearchSpace, folds: list[int], manifest_sha256: str) -> dict[str, Any]:
    """What a study's record, trials and results must agree on to be resumed or reused: its folds, strategy,
    selection rule, the config it searches (base, searched ranges, objective, budget) and the manifest."""
    from ifdd.config import to_dict

    extra = {"search": space_summary(space)["search"], "objective": to_dict(space.objective),
             "budget": to_dict(space.budget), "epochs": space.budget.max_epochs}
    return {"folds": list(folds), "strategy": space.protocol.strategy, "selection": space.protocol.selection,
            "config_sha256": config_sha256(to_dict(space.trial_base()), extra), "manifest_sha256": manifest_sha256}


def _protocol(space: SearchSpace) -> dict[str, str]:
    key = protocol_key(space.protocol.strategy, space.protocol.selection)
    return {"protocol": key, "label": PROTOCOLS[key], "selection": space.protocol.selection,
            "strategy": space.protocol.strategy}


def start_payload(study: str, folds: list[int], space: SearchSpace, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The study record written before any trial runs: its fingerprint, so a resume can be checked against it."""
    return {"study": study, "folds": folds, "complete": False, "note": "running", **_protocol(space),
            "fingerprint": fingerprint, "trials": [], "tests": {}, "best": None}


def study_payload(res: StudyResult, space: SearchSpace) -> dict[str, Any]:
    def row(r: TrialRow | None) -> dict[str, Any] | None:
        return dataclasses.asdict(r) if r else None

    return {"study": res.study, "folds": res.folds, "complete": res.complete, "note": res.note, **_protocol(space),
            "fingerprint": res.fingerprint, "objective": list(space.objective.metrics),
            "best": row(res.best), "pareto": res.pareto,
            "winners": {str(k): row(v) for k, v in res.winners.items()},
            "tests": {str(k): v for k, v in res.tests.items()},
            "base_label": BASE_LABEL, "base_tests": {str(k): v for k, v in res.base_tests.items()},
            "leakage": {str(k): v for k, v in res.leakage.items()}, "deploy": res.deploy,
            "trials": [row(t) for t in res.trials]}


def result_from_payload(p: dict[str, Any]) -> StudyResult:
    """The StudyResult a saved ``<study>.json`` describes (to log a study finished during a tracking outage)."""
    def row(d: dict[str, Any] | None) -> TrialRow | None:
        return TrialRow(**d) if d else None

    return StudyResult(p["study"], list(p["folds"]), bool(p["complete"]), [TrialRow(**t) for t in p["trials"]],
                       row(p.get("best")), list(p.get("pareto", [])),
                       {int(k): v for k, v in p.get("tests", {}).items()}, p.get("note", ""),
                       {int(k): row(v) for k, v in p.get("winners", {}).items()},
                       {int(k): v for k, v in p.get("base_tests", {}).items()},
                       {int(k): v for k, v in p.get("leakage", {}).items()}, p.get("deploy"),
                       p.get("fingerprint", {}))


def deploy_payload(winner: TrialRow, values: dict[str, float], selection: str) -> dict[str, Any]:
    return {"trial_id": winner.trial_id, "params": winner.params, "values": values, "label": DEPLOY_LABEL[selection]}


# The summary across folds ---------------------------------------------------------------------------------------
def _test_fields(test: dict[str, Any], prefix: str = "test") -> dict[str, Any]:
    return {f"{prefix}_uar": test["uar"], f"{prefix}_war": test["war"], f"{prefix}_clips": test["clips"]}


def fold_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per reported fold: its winner, what it was chosen on, its test figure and coverage, the leakage
    check, and the base config beside it."""
    rows = []
    for res in results:
        base = next((t for t in res.get("trials", []) if t.get("base")), None)
        for fold, test in sorted(res.get("tests", {}).items(), key=lambda kv: int(kv[0])):
            win = res["winners"][fold]
            base_test = res.get("base_tests", {}).get(fold)
            rows.append({
                "fold": int(fold), "study": res["study"], "trial": win["trial_id"], "params": win["params"],
                "selected_on": win["fold_values"].get(fold, {}), **_test_fields(test),
                "uar_classes": test.get("uar_classes"), "listed_clips": test.get("listed_clips"),
                "quarantined": test.get("quarantined", []), "official_clips": test.get("official_clips"),
                "per_class_recall": test.get("per_class_recall"), "confusion": test.get("confusion"),
                "leakage": res.get("leakage", {}).get(fold),
                "warnings": test_warnings(test, int(fold), len(test.get("per_class_recall") or []) or 7),
                "base": None if base is None or base_test is None else {
                    "trial": base["trial_id"], "same_trial": base["trial_id"] == win["trial_id"],
                    "status": base["status"], "epochs": base["epochs"],
                    "selected_on": base["fold_values"].get(fold, {}), **_test_fields(base_test)}})
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def sign_test(diffs: list[float]) -> dict[str, Any]:
    """Two-sided exact sign test of paired differences (ties dropped): wins, losses, ties and the p-value, the
    probability of a split at least this uneven if winner and base were equally likely to be ahead on each fold."""
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    n = wins + losses
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n if n else 1.0
    return {"wins": wins, "losses": losses, "ties": len(diffs) - n, "p": min(1.0, 2 * tail)}


def paired(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """Winner minus base, fold by fold, on the test split (``test_uar``/``test_war``) or on what the choice was made
    on (``selected:<objective metric>``): the mean difference and the sign test over the folds."""
    pairs = []
    for r in rows:
        b = r.get("base")
        if b is None:
            continue
        if metric.startswith("selected:"):
            key = metric.split(":", 1)[1]
            if key in r["selected_on"] and key in b["selected_on"]:
                pairs.append((r["fold"], r["selected_on"][key], b["selected_on"][key]))
        else:
            pairs.append((r["fold"], r[metric], b[metric]))
    if not pairs:
        return None
    diffs = [w - b for _, w, b in pairs]
    return {"metric": metric, "folds": [f for f, _, _ in pairs],
            "winner_mean": statistics.fmean(w for _, w, _ in pairs),
            "base_mean": statistics.fmean(b for _, _, b in pairs), "diffs": diffs,
            "mean_diff": statistics.fmean(diffs), **sign_test(diffs)}


def summary_payload(space: SearchSpace, results: list[dict[str, Any]]) -> dict[str, Any]:
    rows = fold_rows(results)
    uar, war = mean_std([r["test_uar"] for r in rows]), mean_std([r["test_war"] for r in rows])
    first = space.objective.metrics[0]
    deploy = [r["deploy"] for r in results if r.get("deploy")]
    return {"space": space_summary(space), **_protocol(space), "folds": rows,
            "test_uar_mean": uar[0], "test_uar_std": uar[1], "test_war_mean": war[0], "test_war_std": war[1],
            "leakage": {str(r["fold"]): (r["leakage"] or {}).get("overlap") for r in rows},
            "base_label": BASE_LABEL,
            "paired": {m: paired(rows, m) for m in ("test_uar", "test_war", f"selected:{first}")},
            "deploy": deploy[0] if deploy else None,
            "trials": {r["study"]: status_counts(r["trials"]) for r in results}}


def status_counts(trials: list[dict[str, Any]]) -> dict[str, int]:
    """Trials per status (complete, stopped, infeasible, …) of one study's saved trials."""
    out: dict[str, int] = {}
    for t in trials:
        out[t["status"]] = out.get(t["status"], 0) + 1
    return out
