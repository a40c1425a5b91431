"""A study's parent run: the study settings as params, the protocol as tags, each fold's chosen trial, what it was
chosen on, its test metrics, per-class recall, confusion matrix and resolved config, the base config's test figure
beside it, and the leakage check (the model registry is in tracking/registry.py).

Metric names follow the selection rule (orchestrator/protocol.py ``metric_name``): ``selected_val_uar`` is an
inner-val figure; under paper parity the same figure is a test one and is logged as ``selected_test_uar``.
``test_*`` are the single test evaluations of the chosen checkpoints; ``base_test_*`` the base config's, which no
choice used."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from ifdd.config import to_dict
from ifdd.data.manifest import LABEL_NAMES
from orchestrator.protocol import label, metric_name, selection_split
from orchestrator.tracking.client import flatten
from orchestrator.tracking.secrets import mask_secrets
from orchestrator.tracking.tune_callback import TrialTracking
from orchestrator.tracking.ui_links import RUNS_VIEW_KEY, SHARED_VIEW_TAG


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
RUNS_VIEW_COLUMNS = ["metrics.`test_uar`", "metrics.`test_war`", "metrics.`base_test_uar`", "metrics.`base_test_war`",
                     "metrics.`selected_val_uar`", "metrics.`selected_val_war`", "metrics.`selected_test_uar`",
                     "metrics.`selected_test_war`", "attributes.`Description`", "attributes.`Models`"]


def describe_study(tracker, exp: str, parent: str, res, space) -> None:
    """The parent run's description (``study_note``) and the experiment's runs view with the metric columns."""
    import json

    tracker.client.set_tag(parent, NOTE_TAG, mask_secrets(study_note(res, space)))
    tracker.client.set_experiment_tag(exp, SHARED_VIEW_TAG.format(key=RUNS_VIEW_KEY),
                                      json.dumps({"selectedColumns": RUNS_VIEW_COLUMNS}))


def _params_md(params: dict) -> str:
    return ", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`"
                     for k, v in sorted(params.items())) or "the base config (nothing searched)"


def study_note(res, space) -> str:
    """What the study concluded, in a few lines of Markdown: per fold, the winner, the value it was chosen on (on
    that fold's selection scope), its single test evaluation and the base config's beside it; the winners'
    parameters; a cross-fold study's deploy choice; and the protocol those numbers follow."""
    from orchestrator.search.results import status_counts

    p = space.protocol
    split = selection_split(p.selection)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status_counts([{"status": t.status} for t in res.trials]).items()))
    trials = f"{len(res.trials)} trial(s): {counts or 'none'}."
    if not res.winners:
        why = res.note or "no trial produced a usable checkpoint"
        return f"**{res.study}**: no winner ({why}). {trials}"
    folds = []
    for fold, w in sorted(res.winners.items()):
        chosen = ", ".join(f"{metric_name(k, p.selection)} {v:.4f}"
                           for k, v in w.fold_values.get(str(fold), {}).items())
        t, b = res.tests.get(fold), res.base_tests.get(fold)
        test = f"**UAR {t['uar']:.4f}, WAR {t['war']:.4f}** ({t['clips']} clips)" if t else "not tested"
        base = f"; base config UAR {b['uar']:.4f}, WAR {b['war']:.4f}" if b else ""
        folds.append(f"fold {fold}: trial `{w.trial_id}` chosen on {split} ({chosen}), then tested once: {test}{base}")
    winners = {w.trial_id: w for w in res.winners.values()}
    params = "; ".join(f"`{tid}`: {_params_md(w.params)}" if len(winners) > 1 else _params_md(w.params)
                       for tid, w in sorted(winners.items()))
    deploy = ""
    if res.deploy:
        deploy = (f"\n\nDeploy: trial `{res.deploy['trial_id']}` ({_params_md(res.deploy['params'])}); "
                  f"{res.deploy['label']}.")
    return (f"**{res.study}**: " + ".\n\n".join(folds) + f".\n\nWinner's parameters: {params}.{deploy}"
            f"\n\nProtocol: {label(p.strategy, p.selection)}. {trials}")


def log_study(tracking: TrialTracking, res, space, cfgs: dict) -> str:
    """Parent-run params, protocol tags and description; per fold: the winner, what it was chosen on, the test
    metrics, the base config's test metrics, the leakage count, per-class recall, the confusion matrix and the
    resolved config."""
    tracker = tracking.tracker
    exp, parent = tracking.parent()
    p = space.protocol
    tracker.log_params(parent, {f"space.{k}": v for k, v in flatten(
        {"budget": to_dict(space.budget), "objective": to_dict(space.objective),
         "protocol": to_dict(p), "resources": to_dict(space.resources)}).items()})
    tracker.set_tags(parent, {"ifdd.complete": res.complete, "ifdd.trials": len(res.trials),
                              "ifdd.protocol_label": label(p.strategy, p.selection)})
    describe_study(tracker, exp, parent, res, space)
    if not res.winners:
        tracker.end(parent, "FAILED" if not res.complete else "FINISHED")
        return parent
    tracker.set_tags(parent, {"ifdd.best_trial": res.best.trial_id,
                              **{f"ifdd.winner_fold{k}": w.trial_id for k, w in res.winners.items()}})
    with tempfile.TemporaryDirectory() as d:
        for fold, test in sorted(res.tests.items()):
            suffix = "" if len(res.tests) == 1 else f"_fold{fold}"
            winner = res.winners[fold]
            chosen_on = winner.fold_values.get(str(fold), {})
            base = res.base_tests.get(fold)
            tracker.log_metrics(parent, {
                **{f"{metric_name('selected_' + k, p.selection)}{suffix}": v for k, v in chosen_on.items()},
                f"test_uar{suffix}": test["uar"], f"test_war{suffix}": test["war"],
                **({f"base_test_uar{suffix}": base["uar"], f"base_test_war{suffix}": base["war"]} if base else {}),
                f"selection_test_overlap{suffix}": res.leakage.get(fold, {}).get("overlap", 0)}, 0)
            cfg_file = Path(d) / f"resolved_config_fold{fold}.yaml"
            cfg_file.write_text(mask_secrets(yaml.safe_dump(to_dict(cfgs[fold]), sort_keys=False)))
            tracker.log_file(parent, cfg_file)
            recall = dict(zip(LABEL_NAMES, test.get("per_class_recall") or [], strict=False))
            tracker.log_json(parent, f"per_class_recall_fold{fold}.json",
                             {"fold": fold, "trial": winner.trial_id, "protocol": label(p.strategy, p.selection),
                              "per_class_recall": recall, "uar": test["uar"], "war": test["war"],
                              "uar_classes": test.get("uar_classes")})
            if test.get("confusion"):
                png = confusion_png(test["confusion"], f"{res.study} fold {fold} test "
                                    f"(UAR {test['uar']:.3f}, WAR {test['war']:.3f})",
                                    Path(d) / f"confusion_fold{fold}.png")
                tracker.log_file(parent, png)
    tracker.end(parent, "FINISHED")
    return parent
