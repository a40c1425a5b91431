"""Every MLflow call of the project: experiments, parent/child runs, per-epoch metrics, artifacts, the registry.

Layout (docs/architecture.md, "MLflow layout"): one experiment per search space, created with an explicit artifact
location under the store root (never a stray ``./mlruns``); a parent run per study (one fold, or the cross-fold study);
a child run per trial with the flattened config as params, one metric point per epoch (step = epoch) and tags (fold,
trial id, selection rule, strategy, git commit, manifest hash). Metrics reach MLflow from the search driver through a
Tune callback (Tune forwards rank 0's reports only, so only rank 0 is logged). Runs are found again by their tags, so a
resumed study continues its runs instead of duplicating them, and a registered version is never registered twice for the
same (study, trial).

Default store: ``sqlite:///<abs>/runs/mlflow.db`` with artifacts in ``runs/mlartifacts``; ``--tracking-uri
postgresql+psycopg2://USER@HOST:PORT/DB`` keeps the backend store in PostgreSQL (artifacts still in
``runs/mlartifacts``; the password from PGPASSWORD, see ``orchestrator/tracking/stores.py``); ``--tracking-uri
http://…`` uses a tracking server (its artifact root). An unreachable server or database fails before any training.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.env import no_calls_home
from orchestrator.tracking.secrets import mask_secrets, safe_params, split_credentials
from orchestrator.tracking.stores import check_uri

PIP_REQUIREMENTS = ["torch==2.13.0", "numpy", "ifdd"]
"""Explicit requirements for logged models: an autodetected ``torch==2.13.0+cpu`` would not resolve on a GPU box."""


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


class Tracker:
    """One MLflow client bound to a tracking URI and the project's artifact root."""

    def __init__(self, uri: str, artifact_root: Path | None):
        no_calls_home()
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = uri = split_credentials(uri)
        self.artifact_root = artifact_root
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(tracking_uri=uri)
        self.check()

    def check(self) -> None:
        check_uri(self.uri)

    def experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.artifact_root is not None:
            self.artifact_root.mkdir(parents=True, exist_ok=True)
            location = (self.artifact_root / name).resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def find_run(self, exp_id: str, tags: dict[str, str]) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([exp_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def run(self, exp_id: str, name: str, tags: dict[str, str], parent: str | None = None) -> str:
        """The run with these identifying tags (reused after a resume), or a new one."""
        found = self.find_run(exp_id, tags)
        if found:
            return found
        all_tags = dict(tags)
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        return self.client.create_run(exp_id, tags=safe_params(all_tags), run_name=name).info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in safe_params(params).items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for k, v in safe_params(tags).items():
            self.client.set_tag(run_id, k, v)

    def log_json(self, run_id: str, name: str, payload: Any) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / name
            path.write_text(mask_secrets(json.dumps(payload, indent=2, default=str)))
            self.client.log_artifact(run_id, str(path))

    def log_file(self, run_id: str, path: Path, subdir: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), subdir)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def delete_study_runs(self, experiment: str, study: str) -> int:
        """Soft-delete every run of ``study`` (a study started over with --fresh gets new runs)."""
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return 0
        runs = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`ifdd.study` = '{study}'",
                                       max_results=10_000)
        for r in runs:
            self.client.delete_run(r.info.run_id)
        return len(runs)
