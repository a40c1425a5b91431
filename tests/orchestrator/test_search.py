"""`ifdd search` end to end on a real local Ray: fold-wise studies, selection, one test per fold, summary, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ifdd_testkit.fixtures import no_pickle_loading, split_size

from orchestrator.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_fold_wise_search_selects_on_inner_val_and_tests_once(small_manifest, tmp_path, ray_local, capsys,
                                                              write_space):
    space = write_space(tmp_path / "fw.yaml", small_manifest)
    storage = tmp_path / "runs" / "ray"
    assert main(["search", "--space", str(space), "--runs", str(storage.parent)]) == 0
    out = capsys.readouterr().out
    assert "fold-wise summary (checkpoint chosen on the inner-val split, test split evaluated once" in out
    results = tmp_path / "runs" / "search" / "fw"
    summary = json.loads((results / "summary.json").read_text())
    assert [r["fold"] for r in summary["folds"]] == [1, 2]
    for fold in (1, 2):
        study = json.loads((results / f"fw-fold{fold}.json").read_text())
        assert study["complete"] and len(study["trials"]) == 4
        assert len({t["trial_id"] for t in study["trials"]}) == 4
        statuses = {t["status"] for t in study["trials"]}
        assert statuses <= {"complete", "stopped", "infeasible"}, statuses
        for t in study["trials"]:
            infeasible = t["params"]["model.split_ratio"] == 0.125 and t["params"]["model.lifting_depth"] == 2
            assert (t["status"] == "infeasible") == infeasible, t
        best = study["best"]
        assert best["status"] != "infeasible" and best["checkpoint"]
        ranked = max(t["values"]["val_uar"] for t in study["trials"] if t["status"] != "infeasible")
        assert best["values"]["val_uar"] == ranked  # the winner is the best on inner-val, never on test
        test = study["tests"][str(fold)]
        assert test["clips"] == split_size(small_manifest, fold, "test") and 0.0 <= test["uar"] <= 1.0
        assert sum(map(sum, test["confusion"])) == test["clips"]
    assert summary["test_uar_std"] >= 0.0 and 0.0 <= summary["test_uar_mean"] <= 1.0
    assert (results / "summary.md").read_text().count("| 1 |") == 1

    versions_before = _check_mlflow(tmp_path / "runs", summary)
    assert {"fw-fold1-optimization_history.json", "fw-fold1-parallel_coordinate.json", "fw-fold1-optuna.html"} <= {
        p.name for p in (results / "plots").iterdir()}

    assert main(["report", "--runs", str(tmp_path / "runs"), "--experiment", "fw"]) == 0
    report = (tmp_path / "runs" / "reports" / "fw" / "report.md").read_text()
    assert "nested estimate" in report and "| 1 | " in report and "| 2 | " in report
    assert "FineCLIPER | 65.98 | 76.21" in report and "not reproduced here" in report
    page = (tmp_path / "runs" / "reports" / "fw" / "report.html").read_text()
    assert "data:image/png;base64," in page and "<h3>fw-fold1: optimization history</h3>" in page
    assert "<h3>fw-fold2: learning curves (fold 2)</h3>" in page and page.count("plotly.js v") == 1

    # A second run refuses to overwrite; --resume reuses the finished folds without training or re-registering.
    assert main(["search", "--space", str(space), "--runs", str(storage.parent)]) == 2
    assert "already exists; continue it with --resume" in capsys.readouterr().err
    assert main(["search", "--space", str(space), "--runs", str(storage.parent), "--resume"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, reusing") == 2
    assert _check_mlflow(tmp_path / "runs", summary) == versions_before


def _check_mlflow(runs: Path, summary: dict) -> int:
    """Parent per fold, child per trial with per-epoch metrics, artifacts, aliases; the champion predicts."""
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{(runs / 'mlflow.db').resolve()}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("fw")
    assert exp is not None and exp.artifact_location.startswith((runs / "mlartifacts").resolve().as_uri())
    all_runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in all_runs if r.data.tags.get("ifdd.kind") == "study"]
    children = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["ifdd.study"] for r in parents) == ["fw-fold1", "fw-fold2"]
    assert len(children) == 8 and {c.data.tags["mlflow.parentRunId"] for c in children} == {
        p.info.run_id for p in parents}
    for c in children:
        assert c.data.tags["ifdd.selection"] == "val" and c.data.tags["ifdd.git_commit"]
        assert "model.split_ratio" in c.data.params or "search.model.split_ratio" in c.data.params
        if c.data.tags.get("ifdd.status") != "infeasible":
            steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_uar")]
            assert steps and steps == sorted(set(steps)) and steps[0] == 1  # one point per epoch, no duplicates
    for p in parents:
        assert "test_uar" in p.data.metrics
        names = {a.path for a in client.list_artifacts(p.info.run_id)}
        fold = p.data.tags["ifdd.fold"]
        assert {"resolved_config.yaml", f"per_class_recall_fold{fold}.json", f"confusion_fold{fold}.png"} <= names
    versions = client.search_model_versions("name='ifdd-synthetic'")
    model = client.get_registered_model("ifdd-synthetic")
    assert {"fold1", "fold2", "champion"} <= set(model.aliases)
    assert summary["registry"]["champion_version"] == str(model.aliases["champion"])
    mlflow.set_tracking_uri(uri)
    with no_pickle_loading():  # the registered pt2 passes MLflow's pickle-free check
        net = mlflow.pytorch.load_model("models:/ifdd-synthetic@champion", map_location="cpu")
    with torch.no_grad():
        logits = net(torch.rand(1, 3, 16, 64, 64))
    assert logits.shape == (1, 7)
    return len(versions)


def test_cross_fold_trial_trains_every_fold_and_winner_is_tested_on_each(small_manifest, tmp_path, ray_local,
                                                                         capsys, write_space):
    space = write_space(tmp_path / "cf.yaml", small_manifest, search={"loss.lambda_gc": {
        "type": "float", "low": 0.01, "high": 1.0, "log": True}}, budget={"num_samples": 2, "max_epochs": 1})
    storage = tmp_path / "runs" / "ray"
    assert main(["search", "--space", str(space), "--strategy", "cross-fold", "--runs", str(storage.parent)]) == 0
    study = json.loads((tmp_path / "runs" / "search" / "cf" / "cf-crossfold.json").read_text())
    assert study["complete"] and sorted(map(int, study["tests"])) == [1, 2]
    assert all(t["status"] == "complete" for t in study["trials"])
    assert "cross-fold summary" in capsys.readouterr().out


def test_multi_objective_reports_a_pareto_front(small_manifest, tmp_path, ray_local, capsys, write_space):
    space = write_space(tmp_path / "mo.yaml", small_manifest, objective={"metric": ["val_uar", "val_war"],
                                                                         "mode": ["max", "max"]},
                        budget={"num_samples": 3, "max_epochs": 1}, protocol={"folds": [1]})
    assert main(["search", "--space", str(space), "--runs", str(tmp_path / "runs")]) == 0
    study = json.loads((tmp_path / "runs" / "search" / "mo" / "mo-fold1.json").read_text())
    assert study["pareto"] and set(study["pareto"]) <= {t["trial_id"] for t in study["trials"]}
    assert "Pareto front (val_uar vs val_war)" in capsys.readouterr().out


def test_resources_the_cluster_cannot_satisfy_fail_before_training(small_manifest, tmp_path, ray_local, capsys,
                                                                  write_space):
    space = write_space(tmp_path / "gpu.yaml", small_manifest, resources={"gpus_per_worker": 1})
    assert main(["search", "--space", str(space), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: resources: a trial needs 1 GPU") and "the cluster has 0 GPU" in err
    assert not (tmp_path / "runs" / "search" / "gpu" / "gpu-fold1.json").exists()
