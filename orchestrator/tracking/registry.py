"""The model registry: each fold's winner as an MLflow model version, aliases ``fold<k>`` and ``champion``.

Registered model ``ifdd-<dataset>`` (``ifdd-synthetic`` or ``ifdd-dfew``): one version per fold winner, with the
alias ``fold<k>``; ``champion`` is the fold winner with the best *selection* value (inner-val in the nested
protocol, so the choice never looks at a test split). A version is tagged with its study and trial, so registering
again after a resumed study reuses it instead of adding a duplicate. Models are logged as torch.export ``pt2``
programs: loading one runs no pickled code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.tracking.client import PIP_REQUIREMENTS
from orchestrator.tracking.tune_callback import TrialTracking


def dataset_name(manifest: str) -> str:
    from ifdd.data.manifest import load_manifest

    return "synthetic" if load_manifest(manifest).attrs["ifdd"].get("synthetic") else "dfew"


def register_best(tracking: TrialTracking, parent: str, res, cfg, checkpoints: dict[int, str],
                  dataset: str) -> dict[int, str]:
    """Log the winner of each fold as an MLflow model in the parent run and register it; alias ``fold<k>``.
    Returns fold -> registered version. Reuses a version already registered for this (study, trial, fold)."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    import ifdd
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
                                                code_paths=[str(Path(ifdd.__file__).parent)])
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
