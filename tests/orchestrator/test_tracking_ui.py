"""MLflow end to end on one search tracked on a real tracking server (`ifdd ui` over HTTP): its layout there, and the
MLflow UI and the report in a real headless chromium."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ifdd_testkit.fixtures import TWO_AT_A_TIME
from ifdd_testkit.procio import LineReader

from orchestrator.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
INIT_SCRIPT = """
localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""


@pytest.fixture(scope="module")
def searched(small_manifest, tmp_path_factory, ray_local, write_space, ifdd_env):
    """One finished 1-fold study (2 trials: the compare view needs two) tracked on a real tracking server (`ifdd ui`
    serving another runs root's sqlite store, over HTTP), plus its report. Yields (the search's runs root, the
    server's runs root, the server's URL); the server stops afterwards, and Ctrl-C must close its port."""
    root = tmp_path_factory.mktemp("ui")
    server_runs = root / "server"
    from orchestrator.outputs import Outputs
    from orchestrator.tracking.client import Tracker

    Tracker(Outputs.resolve(str(server_runs)).default_tracking_uri, server_runs / "mlartifacts")  # an empty store
    port = free_port_for_ui()
    ui = _start_ui(server_runs, port, ifdd_env)
    try:
        uri = f"http://127.0.0.1:{port}"
        space = write_space(root / "ui.yaml", small_manifest, protocol={"folds": [1]},
                            budget={"num_samples": 2, "max_epochs": 2, "scheduler": "none"}, resources=TWO_AT_A_TIME,
                            search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}})
        assert main(["search", "--space", str(space), "--runs", str(root / "runs"), "--tracking-uri", uri]) == 0
        assert main(["report", "--runs", str(root / "runs"), "--experiment", "ui"]) == 0
        yield root / "runs", server_runs, uri
    finally:
        _stop_ui(ui, port)


@pytest.mark.needs_system("chromium")
def test_mlflow_ui_in_chromium_runs_under_parents_and_compare_view(searched):
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    runs, _, base = searched
    client = MlflowClient(base)
    exp = client.get_experiment_by_name("ui")
    children = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    shots = runs / "screenshots"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        page.add_init_script(INIT_SCRIPT)
        page.goto(f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
        page.get_by_text("ui-fold1").first.wait_for(timeout=60000)  # the parent run
        page.screenshot(path=str(shots / "experiment-runs.png"))
        # the parent row's expander must be there (a changed UI fails here instead of skipping the check), and
        # expanding it must show the trials' child runs
        # (MLflow 3.17: the one icon button in the parent's Run Name cell, before its colour swatch and link)
        expand = page.get_by_role("gridcell").filter(has_text="ui-fold1").locator("button").first
        expand.wait_for(state="visible", timeout=30000)
        expand.click()
        page.get_by_text(children[0].info.run_name).first.wait_for(timeout=30000)
        page.screenshot(path=str(shots / "experiment-runs-expanded.png"))
        ids = json.dumps([children[0].info.run_id, children[1].info.run_id])
        page.goto(f"{base}/#/compare-runs?runs={ids}&experiments={json.dumps([exp.experiment_id])}")
        page.get_by_text("Comparing 2 Runs from 1 Experiment").first.wait_for(timeout=60000)
        page.get_by_text("val_uar").first.wait_for(timeout=30000)  # the metric charts
        page.screenshot(path=str(shots / "compare-two-trials.png"), full_page=True)

        report = runs / "reports" / "ui" / "report.html"
        page.goto(report.resolve().as_uri())
        page.get_by_text("Per-fold test results").wait_for(timeout=30000)
        assert page.locator("#folds tr").count() == 2  # header + fold 1
        assert "fold-wise nested" in page.locator(".label").inner_text()
        assert page.locator("img").count() == 1 and page.locator(".js-plotly-plot").count() >= 2
        page.screenshot(path=str(shots / "report.png"), full_page=True)
        browser.close()
    assert all((shots / n).stat().st_size > 10_000 for n in ("experiment-runs.png", "compare-two-trials.png",
                                                             "report.png"))


def test_remote_tracking_server_gets_the_same_layout(searched):
    from mlflow.tracking import MlflowClient

    runs, server_runs, uri = searched
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ui")
    all_runs = client.search_runs([exp.experiment_id])
    assert len([r for r in all_runs if "mlflow.parentRunId" in r.data.tags]) == 2
    parent = next(r for r in all_runs if r.data.tags.get("ifdd.kind") == "study")
    assert "test_uar" in parent.data.metrics
    assert {"resolved_config_fold1.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "fold1" in client.get_registered_model("ifdd-synthetic-ui-foldwise").aliases
    assert not (runs / "mlflow.db").exists()  # nothing went to a local store: all of it is in the server's
    assert (server_runs / "mlflow.db").is_file() and list((server_runs / "mlartifacts").rglob("*.yaml"))


def free_port_for_ui() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ui(runs: Path, port: int, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ifdd"), "ui", "--runs", str(runs), "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        LineReader(proc.stdout, proc).wait_for_line("MLflow UI: ", 90, "ifdd ui to start")  # keeps draining it
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc


def _stop_ui(proc: subprocess.Popen, port: int) -> None:
    import socket

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "port still open after Ctrl-C"
