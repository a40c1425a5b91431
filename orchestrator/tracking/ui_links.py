"""Links into a running MLflow UI: the runs view of each experiment of its store (the page that lists a search's
study runs with their metrics and descriptions). Standard library only: `ifdd ui` calls it while its server runs,
and importing MLflow or Ray there would take seconds in which a Ctrl-C lands inside their import code."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

RUNS_VIEW = "{url}/#/experiments/{id}/runs?workflowType=machine_learning"
SHARED_VIEW_TAG = "mlflow.sharedViewState.{key}"
RUNS_VIEW_KEY = "ifdd-runs"
"""The experiment's saved runs-table view (MLflow UI's shared views: the experiment tag ``SHARED_VIEW_TAG``, opened by
``?viewStateShareKey=<key>``): MLflow 3 shows no metric column by default; this view, which a search saves
(orchestrator/tracking/study_runs.py ``describe_study``), shows the study runs' test, base and selection metrics and
their descriptions."""


def experiments(url: str, timeout: float = 10.0) -> list[dict]:
    """The active experiments of the server at ``url`` (its REST API), MLflow's empty ``Default`` left out."""
    query = urllib.parse.urlencode({"max_results": 1000, "view_type": "ACTIVE_ONLY"})
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?{query}", timeout=timeout) as r:
        found = json.loads(r.read().decode()).get("experiments", [])
    return [e for e in found if e.get("name") != "Default"]


def runs_view_link(url: str, experiment: dict) -> str:
    """The experiment's runs view; with the metric columns and descriptions when a search saved that view
    (``RUNS_VIEW_KEY``)."""
    link = RUNS_VIEW.format(url=url, id=experiment["experiment_id"])
    tags = {t["key"] for t in experiment.get("tags", [])}
    return f"{link}&viewStateShareKey={RUNS_VIEW_KEY}" if SHARED_VIEW_TAG.format(key=RUNS_VIEW_KEY) in tags else link


def runs_view_lines(url: str) -> list[str]:
    """One line per experiment with the link to its runs view, or a line saying the store holds none."""
    try:
        found = experiments(url)
    except (OSError, ValueError) as e:
        return [f"warning: could not list the experiments ({' '.join(str(e).split())[:160]}); open {url}"]
    if not found:
        return ["no experiments in this store yet: run `ifdd demo` or `ifdd search` with the same --runs"]
    return [f"runs of experiment {e['name']}: {runs_view_link(url, e)}" for e in sorted(found, key=lambda e: e["name"])]
