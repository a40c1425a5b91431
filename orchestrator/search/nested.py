"""The choice behind every reported test figure, made from the trials' per-clip selection records, and the leakage
check that runs before each test evaluation (docs/protocol.md).

Each trial's Train run of fold j keeps its best epoch's predictions on fold j's selection split
(``selection.json``, orchestrator/training/records.py). For an outer fold k a trial is scored on the clips its
*scope* allows, pooled over folds (one confusion matrix, so UAR/WAR are those of the pooled clips):

- fold-wise: fold k's selection split (inner-val; the test split under paper parity);
- cross-fold, ``selection: val``: every study fold's inner-val clips minus fold k's listed test clips (DFEW's test
  splits partition the clips, so another fold's inner-val holds part of fold k's test split);
- cross-fold, ``selection: test``: every study fold's test split, fold k's own included (paper parity).

The winner for fold k is the best trial on that score; its fold-k model is what fold k reports. A cross-fold study
also names one config to deploy, chosen on every fold's selection split with nothing held out: a choice, not an
estimate. Before fold k is tested, the clips that actually scored its choice are checked against every clip fold
k's test split lists (``orchestrator.protocol.check_leakage``): none may be there under ``selection: val``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.protocol import check_leakage
from orchestrator.search.results import Paths, TrialRow
from orchestrator.search.space import SearchSpace

Scope = dict[int, set[str]]
"""fold j -> the clips of fold j's selection split that may score a trial."""


def selection_role(selection: str) -> str:
    """The manifest role trials are ranked on: inner-val, or the test split under paper parity."""
    return "val" if selection == "val" else "test"


def selection_scope(df: pd.DataFrame, strategy: str, selection: str, folds: list[int], outer: int) -> Scope:
    """The clips that may score the choice of what fold ``outer`` reports (rules in the module docstring)."""
    from ifdd.data.manifest import fold_split, listed_ids

    role = selection_role(selection)
    held_out = listed_ids(df, outer, "test") if selection == "val" else set()
    scored = [outer] if strategy == "fold-wise" else list(folds)
    return {j: set(fold_split(df, j, role)["clip_id"]) - held_out for j in scored}


def deploy_scope(df: pd.DataFrame, selection: str, folds: list[int]) -> Scope:
    """Every study fold's whole selection split: the deploy choice of a cross-fold study holds nothing out."""
    from ifdd.data.manifest import fold_split

    return {j: set(fold_split(df, j, selection_role(selection))["clip_id"]) for j in folds}


def score(records: dict[int, dict[str, Any]], scope: Scope, metrics: tuple[str, ...], num_classes: int
          ) -> tuple[dict[str, float], set[str]]:
    """A trial's objective on the clips of ``scope``, pooled over its folds, and those clips' ids.

    Raises:
        ValueError: a record lacks clips the scope asks for (the trial was evaluated on another split).
    """
    import torch

    from ifdd.metrics import confusion_matrix, uar, war

    preds, labels, used = [], [], set()
    for j, clips in scope.items():
        rec = records[j]
        have = dict(zip(rec["clip_id"], zip(rec["pred"], rec["label"], strict=True), strict=True))
        missing = clips - have.keys()
        if missing:
            raise ValueError(f"fold {j}: the selection record lacks {len(missing)} clip(s) of the split it should "
                             f"cover (e.g. {sorted(missing)[0]}); was the manifest changed after training?")
        for cid in sorted(clips):
            preds.append(have[cid][0])
            labels.append(have[cid][1])
        used |= clips
    if not preds:
        raise ValueError("no clip left to score a trial on")
    cm = confusion_matrix(torch.tensor(preds), torch.tensor(labels), num_classes)
    values = {"val_uar": uar(cm), "val_war": war(cm)}
    return {m: values[m] for m in metrics}, used


def trial_checkpoint(row: TrialRow, study: str, fold: int, folds: list[int], paths: Paths) -> Path | None:
    """The latest Train checkpoint of ``row``'s run on ``fold`` (its best.pt and selection.json are the best
    epoch's): the checkpoint Tune reported for a one-fold study, else the newest in the run's folder."""
    from orchestrator.search.trial import trainer_name
    from orchestrator.training.trainer import latest_checkpoint

    if len(folds) == 1 and row.checkpoint:
        return Path(row.checkpoint)
    return latest_checkpoint(Path(paths.trials) / trainer_name(study, row.trial_id, fold))


def load_records(rows: list[TrialRow], study: str, folds: list[int], paths: Paths, selection: str
                 ) -> dict[str, dict[int, dict[str, Any]]]:
    """trial id -> fold -> selection record, for every trial that finished every fold of the study (the only
    ones that can be chosen; an infeasible, errored or stopped-early cross-fold trial has none)."""
    from orchestrator.training.records import read_selection

    out: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        if row.status in ("infeasible", "error", "nonfinite") or (len(folds) > 1 and row.status != "complete"):
            continue
        recs = {}
        for fold in folds:
            ckpt = trial_checkpoint(row, study, fold, folds, paths)
            if ckpt is None:
                break
            rec = read_selection(ckpt)
            fp = rec["fingerprint"]
            if fp.get("fold") != fold or fp.get("selection") != selection:
                raise ValueError(f"{ckpt}: selection record of fold {fp.get('fold')} / selection "
                                 f"{fp.get('selection')}, expected fold {fold} / {selection}")
            recs[fold] = rec
        if len(recs) == len(folds):
            out[row.trial_id] = recs
    return out


@dataclass
class Choice:
    """What was chosen on one scope: the winner, every candidate's values there, and the clips that scored them."""

    winner: TrialRow | None
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    """trial id -> objective values on this scope."""
    pareto: list[str] = field(default_factory=list)
    clips: set[str] = field(default_factory=set)


def choose(rows: list[TrialRow], records: dict[str, dict[int, dict[str, Any]]], scope: Scope, space: SearchSpace
           ) -> Choice:
    """The best trial on ``scope`` (``selection.select``'s rule: first metric, then fewer epochs, then the id)."""
    from orchestrator.search.selection import select

    metrics, k = space.objective.metrics, space.base.model.num_classes
    values, clips = {}, set()
    for tid, recs in records.items():
        values[tid], used = score({j: recs[j] for j in scope}, scope, metrics, k)
        clips |= used
    scored = [dataclasses.replace(r, values=values[r.trial_id]) for r in rows if r.trial_id in values]
    winner, front = select(scored, space)
    return Choice(winner, values, front, clips)


@dataclass
class StudyChoice:
    folds: dict[int, Choice]
    """outer fold -> its choice (for a fold-wise study: its one fold)."""
    deploy: Choice | None
    """Cross-fold only: the config chosen on every fold's selection split."""
    leakage: dict[int, dict[str, int]]
    """outer fold -> selection_clips (clips that scored its choice), test_clips (listed), overlap."""


def choose_study(rows: list[TrialRow], space: SearchSpace, study: str, folds: list[int], paths: Paths
                 ) -> StudyChoice:
    """Every outer fold's choice and the leakage check of each; the deploy choice of a cross-fold study.

    Raises:
        orchestrator.protocol.LeakageError: under ``selection: val``, a choice scored on its fold's test clips.
    """
    from ifdd.data.manifest import listed_ids, load_manifest

    p = space.protocol
    df = load_manifest(space.base.data.manifest)
    records = load_records(rows, study, folds, paths, p.selection)
    choices, leakage = {}, {}
    for k in folds:
        choices[k] = choose(rows, records, selection_scope(df, p.strategy, p.selection, folds, k), space)
        test = listed_ids(df, k, "test")
        overlap = check_leakage(choices[k].clips, test, selection=p.selection, fold=k)
        leakage[k] = {"selection_clips": len(choices[k].clips), "test_clips": len(test), "overlap": overlap}
    deploy = choose(rows, records, deploy_scope(df, p.selection, folds), space) if len(folds) > 1 else None
    return StudyChoice(choices, deploy, leakage)
