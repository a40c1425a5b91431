"""Study-level tracking: the parent run's results and artifacts, and the model registry.

Registered model ``ifdd-<dataset>`` (``ifdd-synthetic`` or ``ifdd-dfew``): one version per fold winner, with the alias
``fold<k>``; ``champion`` is the fold winner with the best *selection* value (inner-val in the nested protocol, so
the choice never looks at a test split). A version is tagged with its study and trial, so registering again after a
resumed study reuses it instead of adding a duplicate.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ifdd.config import to_dict
from orchestrator.report_text import SELECTION_LABEL
from orchestrator.tracking import PIP_REQUIREMENTS, flatten, mask_secrets
from orchestrator.tracking_tune import TrialTracking

CLASS_NAMES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")


def dataset_name(manifest: str) -> str:
    from ifdd.data.manifest import load_manifest

    return "synthetic" if load_manifest(manifest).attrs["ifdd"].get("synthetic") else "dfew"


def confusion_png(confusion: list[list[int]], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = CLASS_NAMES[: len(cm)]
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


def log_study(tracking: TrialTracking, res, space, cfg) -> str:
    """Parent-run params, the fold test metrics, per-class recall, confusion matrices, the resolved config."""
    tracker = tracking.tracker
    _, parent = tracking.parent()
    tracker.log_params(parent, {f"space.{k}": v for k, v in flatten(
        {"budget": to_dict(space.budget), "objective": to_dict(space.objective),
         "protocol": to_dict(space.protocol), "resources": to_dict(space.resources)}).items()})
    tracker.set_tags(parent, {"ifdd.complete": res.complete, "ifdd.trials": len(res.trials)})
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
            recall = dict(zip(CLASS_NAMES, test.get("per_class_recall") or [], strict=False))
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


def register_best(tracking: TrialTracking, parent: str, res, cfg, checkpoints: dict[int, str],
                  dataset: str) -> dict[int, str]:
    """Log the winner of each fold as an MLflow model in the parent run and register it; alias ``fold<k>``.
    Returns fold -> registered version. Reuses a version already registered for this (study, trial, fold)."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    from ifdd.checkpoint import load_checkpoint
    from ifdd.model import LogitsOnly, build_model

    client, name = tracking.tracker.client, f"ifdd-{dataset}"
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="IFDD fold winners; aliases fold<k> and champion")
    versions = {}
    for fold, ckpt in sorted(checkpoints.items()):
        key = {"ifdd.study": res.study, "ifdd.trial_id": res.best.trial_id, "ifdd.fold": str(fold)}
        found = [v for v in client.search_model_versions(f"name='{name}'")
                 if all(v.tags.get(k) == val for k, val in key.items())]
        if found:
            version = found[0].version
        else:
            model = build_model(cfg.model)
            model.load_state_dict(load_checkpoint(Path(ckpt) / "best.pt")["model"])
            model.eval()
            x = torch.rand(2, 3, cfg.model.num_frames, cfg.model.image_size, cfg.model.image_size)
            with torch.no_grad():
                logits = model(x)["logits"]
            wrapped = LogitsOnly(model).eval()  # the pyfunc flavour serves one tensor
            signature = infer_signature(x.numpy(), logits.numpy().astype(np.float32))
            with mlflow.start_run(run_id=parent):
                # pt2 (torch.export): loading it runs no pickled code, unlike the "pickle" format
                info = mlflow.pytorch.log_model(wrapped, name=f"model_fold{fold}", signature=signature,
                                                input_example=x.numpy(), serialization_format="pt2",
                                                pip_requirements=PIP_REQUIREMENTS,
                                                code_paths=[str(Path(__file__).resolve().parents[1] / "ifdd")])
            test = res.tests.get(fold, {})
            mv = mlflow.register_model(info.model_uri, name, tags={
                **key, "ifdd.selection": json.dumps(res.best.values), "ifdd.test_uar": str(test.get("uar")),
                "ifdd.test_war": str(test.get("war"))})
            version = mv.version
        client.set_registered_model_alias(name, f"fold{fold}", version)
        versions[fold] = str(version)
    return versions


def set_champion(tracker, dataset: str, candidates: list[dict[str, Any]]) -> str | None:
    """``candidates``: [{version, selection_value}] across folds; the best selection value becomes ``champion``."""
    if not candidates:
        return None
    best = max(candidates, key=lambda c: (c["selection_value"], -int(c["version"])))
    tracker.client.set_registered_model_alias(f"ifdd-{dataset}", "champion", best["version"])
    return best["version"]
