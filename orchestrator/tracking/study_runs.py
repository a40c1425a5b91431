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
from orchestrator.protocol import label, metric_name
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


def log_study(tracking: TrialTracking, res, space, cfgs: dict) -> str:
    """Parent-run params and protocol tags; per fold: the winner, what it was chosen on, the test metrics, the base
    config's test metrics, the leakage count, per-class recall, the confusion matrix and the resolved config."""
    tracker = tracking.tracker
    _, parent = tracking.parent()
    p = space.protocol
    tracker.log_params(parent, {f"space.{k}": v for k, v in flatten(
        {"budget": to_dict(space.budget), "objective": to_dict(space.objective),
         "protocol": to_dict(p), "resources": to_dict(space.resources)}).items()})
    tracker.set_tags(parent, {"ifdd.complete": res.complete, "ifdd.trials": len(res.trials),
                              "ifdd.protocol_label": label(p.strategy, p.selection)})
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
