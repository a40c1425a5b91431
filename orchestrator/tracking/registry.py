"""The model registry: each fold's winner as an MLflow model version, aliases ``fold<k>`` and ``champion``.

One registered model per search space and protocol, ``ifdd-<dataset>-<space>-<foldwise|crossfold|parity>`` (e.g.
``ifdd-synthetic-demo-foldwise``): a parity search never shares a model, or an alias, with a nested one. One version
per fold winner, with the alias ``fold<k>``, tagged with the rule that chose it (``ifdd.selection``,
``ifdd.protocol``, ``ifdd.selected_on``: the values it was chosen on). ``champion`` is the fold winner with the
best inner-val value, and only in a nested search: a best-on-test search gets no champion. A version is tagged with
its study and trial, so registering again after a resumed study reuses it instead of adding a duplicate. Models are
logged as torch.export ``pt2`` programs: loading one runs no pickled code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.protocol import PROTOCOLS, SLUG, is_nested, metric_name, protocol_key
from orchestrator.tracking.client import PIP_REQUIREMENTS
from orchestrator.tracking.tune_callback import TrialTracking


def dataset_name(manifest: str) -> str:
    from ifdd.data.manifest import load_manifest

    return "synthetic" if load_manifest(manifest).attrs["ifdd"].get("synthetic") else "dfew"


def model_name(dataset: str, space: str, protocol: str) -> str:
    """``ifdd-<dataset>-<space>-<protocol slug>``: the registered model of one space under one protocol."""
    return f"ifdd-{dataset}-{space}-{SLUG[protocol]}"


def register_best(tracking: TrialTracking, parent: str, res, cfgs: dict[int, Any], checkpoints: dict[int, str],
                  name: str, space) -> dict[int, str]:
    """Log the winner of each fold (``res.winners``, its config in ``cfgs``) as an MLflow model in the parent run
    and register it in ``name``; alias ``fold<k>``. Returns fold -> registered version. Reuses a version already
    registered for this (study, trial, fold)."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    import ifdd
    from ifdd.checkpoint import load_checkpoint
    from ifdd.model import LogitsOnly, build_model

    client = tracking.tracker.client
    p = space.protocol
    proto = protocol_key(p.strategy, p.selection)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description=f"IFDD fold winners of {space.name}, {PROTOCOLS[proto]}; "
                                       "aliases fold<k>" + (" and champion" if is_nested(p.selection) else ""))
    versions = {}
    for fold, ckpt in sorted(checkpoints.items()):
        winner, cfg = res.winners[fold], cfgs[fold]
        key = {"ifdd.study": res.study, "ifdd.trial_id": winner.trial_id, "ifdd.fold": str(fold)}
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
                # pt2 (torch.export): loading it runs no pickled code, unlike the "pickle" format. MLflow's
                # serving check (reload the saved model, predict the example) is off: it took 15 of the 34 s a
                # fold's registration cost on 2 cores and only warns when it fails; the registry tests load the
                # registered pt2 and run it at another batch size instead.
                info = mlflow.pytorch.log_model(wrapped, name=f"model_fold{fold}", signature=signature,
                                                input_example=x.numpy(), serialization_format="pt2",
                                                pip_requirements=PIP_REQUIREMENTS,
                                                code_paths=[str(Path(ifdd.__file__).parent)],
                                                validate_serving_input=False)
            test = res.tests.get(fold, {})
            chosen_on = {metric_name(m, p.selection): v for m, v in winner.fold_values.get(str(fold), {}).items()}
            mv = mlflow.register_model(info.model_uri, name, tags={
                **key, "ifdd.selection": p.selection, "ifdd.strategy": p.strategy, "ifdd.protocol": proto,
                "ifdd.protocol_label": PROTOCOLS[proto], "ifdd.selected_on": json.dumps(chosen_on),
                "ifdd.test_uar": str(test.get("uar")), "ifdd.test_war": str(test.get("war"))})
            version = mv.version
        client.set_registered_model_alias(name, f"fold{fold}", version)
        versions[fold] = str(version)
    return versions


def set_champion(tracker, name: str, candidates: list[dict[str, Any]], selection: str) -> str | None:
    """``candidates``: [{version, selection_value}] across folds; the best inner-val value becomes ``champion``.
    Under ``selection: test`` there is none: a best-on-test choice is no model to deploy."""
    if not candidates or not is_nested(selection):
        return None
    best = max(candidates, key=lambda c: (c["selection_value"], -int(c["version"])))
    tracker.client.set_registered_model_alias(name, "champion", best["version"])
    return best["version"]
