"""The MLflow tracking server (a real `mlflow server` on 127.0.0.1) killed mid-study: training goes on, nothing Ray
produced is lost, the user is told what is missing and how to fill it in, a resume while the server is still down
fails fast, and `--resume` once it is back logs every missing run and epoch and registers the fold winner once."""

from __future__ import annotations

import json

import pytest
from ifdd_testkit.fixtures import free_port, split_size

from . import faults_common as fc

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_tracking_server_killed_mid_study_then_resume_fills_in(small_manifest, tmp_path, ray_head, write_space,
                                                              ifdd_env):
    from orchestrator.outputs import Outputs
    from orchestrator.tracking.client import Tracker

    address, _ = ray_head
    store = tmp_path / "server"
    Tracker(Outputs.resolve(str(store)).default_tracking_uri, store / "mlartifacts")  # an empty store for the server
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    # MLflow retries a failed HTTP call for minutes by default; the first failing live call would stall the driver
    env = {**ifdd_env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    server = fc.start_mlflow_server(store, port, env, tmp_path / "mlflow.log")
    space = write_space(tmp_path / "mo.yaml", small_manifest, protocol={"folds": [1]},
                        budget={"num_samples": 2, "max_epochs": 2, "scheduler": "none"},
                        search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
                        resources={"workers_per_trial": 1, "max_concurrent_trials": 1})
    runs = tmp_path / "runs"
    argv = ["search", "--space", str(space), "--runs", str(runs), "--address", address,
            "--tracking-uri", uri]
    study_json = runs / "search" / "mo" / "mo-fold1.json"
    try:
        first = fc.Proc(argv, tmp_path, env)
        model = "ifdd-synthetic-mo-foldwise"
        fc.wait_for(lambda: fc.mlflow_counts(uri, "mo", model)["epochs"] and any(
            fc.mlflow_counts(uri, "mo", model)["epochs"].values()), 300, "a first epoch in MLflow", first)
        fc.kill_group(server)  # the tracking server dies mid-study
        assert first.wait(900) == 1, first.out[-4000:]
        out = first.out
        assert len(fc.grep(r"^warning: MLflow logging failed", out)) == 1, out[-4000:]  # told once, not per epoch
        assert fc.grep(rf"^error: MLflow at {uri} was unreachable; every trial and test result is saved", out)
        assert fc.grep(r"log them with: ifdd search .* --resume$", out)
        study = json.loads(study_json.read_text())  # the Ray results are all there
        assert study["complete"] and study["tracking_pending"]
        assert study["tests"]["1"]["clips"] == split_size(small_manifest, 1, "test")
        assert len(study["trials"]) == 2 and all(t["epochs"] == 2 for t in study["trials"])
        assert (runs / "search" / "mo" / "summary.json").is_file()

        still_down = fc.Proc([*argv, "--resume"], tmp_path, env)
        assert still_down.wait(120) == 2, still_down.out[-2000:]
        assert fc.grep(rf"^error: --tracking-uri: no MLflow server answers at {uri}", still_down.out)

        server = fc.start_mlflow_server(store, port, env, tmp_path / "mlflow.log")  # back, same store
        back = fc.Proc([*argv, "--resume"], tmp_path, env)
        assert back.wait(600) == 0, back.out[-4000:]
        assert "logging it to MLflow now" in back.out
        got = fc.mlflow_counts(uri, "mo", model)
        ids = sorted(t["trial_id"] for t in study["trials"])
        assert got["parents"] == 1 and got["children"] == 2 and got["trial_ids"] == ids, got
        assert all(steps == [1, 2] for steps in got["epochs"].values()), got["epochs"]  # no epoch lost or doubled
        assert got["versions"] == [1] and got["aliases"] == {"fold1": 1, "champion": 1}, got
        assert "tracking_pending" not in json.loads(study_json.read_text())
    finally:
        fc.kill_group(server)
