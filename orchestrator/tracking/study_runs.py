"""A study's parent run: the study settings as params, the chosen trial, each fold's test metrics, per-class recall,
confusion matrices and the resolved config of the winner (the model registry is in tracking/registry.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from ifdd.config import to_dict
from ifdd.data.manifest import LABEL_NAMES
from orchestrator.protocol import SELECTION_LABEL
from orchestrator.tracking.client import flatten
from orchestrator.tracking.secrets import mask_secrets
from orchestrator.tracking.tune_callback import TrialTracking


def confusion_png(confusion: list[list[int]], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = LABEL_NAMES[: len(cm)]
    ax.set_xticks(range(len(cm)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(cm)), names)
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


NOTE_TAG = "mlflow.note.content"
"""The run's description in the MLflow UI (Markdown, shown on the run page and in the runs table's Description)."""
RUNS_VIEW_KEY = "ifdd-runs"
"""The experiment's saved runs-table view (MLflow UI's shared views: the experiment tag
``mlflow.sharedViewState.<key>``, opened by ``?viewStateShareKey=<key>``): MLflow 3 shows no metric column by
default, this view shows the study runs' test and selection metrics and their descriptions; `ifdd ui` links it."""
RUNS_VIEW_COLUMNS = ["metrics.`test_uar`", "metrics.`test_war`", "metrics.`selected_val_uar`",
                     "metrics.`selected_val_war`", "attributes.`Description`", "attributes.`Models`"]


def describe_study(tracker, exp: str, parent: str, res, space) -> None:
    """The parent run's description (``study_note``) and the experiment's runs view with the metric columns."""
    import json

    tracker.client.set_tag(parent, NOTE_TAG, mask_secrets(study_note(res, space)))
    tracker.client.set_experiment_tag(exp, f"mlflow.sharedViewState.{RUNS_VIEW_KEY}",
                                      json.dumps({"selectedColumns": RUNS_VIEW_COLUMNS}))


def study_note(res, space) -> str:
    """What the study concluded, in a few lines of Markdown: the winner, its parameters, the value it was chosen
    on, its single test evaluation per fold, and the selection rule those numbers follow."""
    from orchestrator.search.results import status_counts

    split = "test" if space.protocol.selection == "test" else "inner-val"
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status_counts([{"status": t.status} for t in res.trials]).items()))
    trials = f"{len(res.trials)} trial(s): {counts or 'none'}."
    if not res.best:
        why = res.note or "no trial produced a usable checkpoint"
        return f"**{res.study}**: no winner ({why}). {trials}"
    chosen = ", ".join(f"{k} {v:.4f}" for k, v in res.best.values.items())
    params = ", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`"
                       for k, v in sorted(res.best.params.items())) or "the base config (nothing searched)"
    tests = "; ".join(f"fold {fold}: **UAR {t['uar']:.4f}, WAR {t['war']:.4f}** ({t['clips']} clips)"
                      for fold, t in sorted(res.tests.items())) or "not tested"
    return (f"**{res.study}**: trial `{res.best.trial_id}` chosen on {split} ({chosen}), then tested once: {tests}."
            f"\n\nWinner's parameters: {params}.\n\nSelection: {SELECTION_LABEL[space.protocol.selection]}. "
            f"{trials}")


def log_study(tracking: TrialTracking, res, space, cfg) -> str:
    """Parent-run params, the fold test metrics, per-class recall, confusion matrices, the resolved config."""
    tracker = tracking.tracker
    exp, parent = tracking.parent()
    tracker.log_params(parent, {f"space.{k}": v for k, v in flatten(
        {"budget": to_dict(space.budget), "objective": to_dict(space.objective),
         "protocol": to_dict(space.protocol), "resources": to_dict(space.resources)}).items()})
    tracker.set_tags(parent, {"ifdd.complete": res.complete, "ifdd.trials": len(res.trials)})
    describe_study(tracker, exp, parent, res, space)
    if not res.best:
        tracker.end(parent, "FAILED" if not res.complete else "FINISHED")
        return parent
    tracker.set_tags(parent, {"ifdd.best_trial": res.best.trial_id})
    tracker.log_metrics(parent, {f"selected_{k}": v for k, v in res.best.values.items()}, 0)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "resolved_config.yaml").write_text(mask_secrets(yaml.safe_dump(to_dict(cfg), sort_keys=False)))
        tracker.log_file(parent, Path(d) / "resolved_config.yaml")
        for fold, test in sorted(res.tests.items()):
            suffix = "" if len(res.tests) == 1 else f"_fold{fold}"
            tracker.log_metrics(parent, {f"test_uar{suffix}": test["uar"], f"test_war{suffix}": test["war"]}, 0)
            recall = dict(zip(LABEL_NAMES, test.get("per_class_recall") or [], strict=False))
            tracker.log_json(parent, f"per_class_recall_fold{fold}.json",
                             {"fold": fold, "selection": SELECTION_LABEL[space.protocol.selection],
                              "per_class_recall": recall, "uar": test["uar"], "war": test["war"]})
            if test.get("confusion"):
                png = confusion_png(test["confusion"], f"{res.study} fold {fold} test "
                                    f"(UAR {test['uar']:.3f}, WAR {test['war']:.3f})",
                                    Path(d) / f"confusion_fold{fold}.png")
                tracker.log_file(parent, png)
    tracker.end(parent, "FINISHED")
    return parent
