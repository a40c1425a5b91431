"""`ifdd search` end to end on a real local Ray: fold-wise studies, the base config as every study's first trial,
selection, the leakage check, one test per fold, winner vs base, the cross-fold nested choice, summary, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ifdd_testkit.fixtures import TWO_AT_A_TIME, no_pickle_loading, split_size

from orchestrator.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_fold_wise_search_selects_on_inner_val_and_tests_once(small_manifest, tmp_path, ray_local, capsys,
                                                              write_space):
    # 3 trials, 2 at a time on 2 CPUs (docs/stack.md P22): the third starts after ASHA's first rung, which can stop
    # it ("stopped")
    space = write_space(tmp_path / "fw.yaml", small_manifest, budget={"num_samples": 3}, resources=TWO_AT_A_TIME)
    storage = tmp_path / "runs" / "ray"
    assert main(["search", "--space", str(space), "--runs", str(storage.parent)]) == 0
    out = capsys.readouterr().out
    assert "fold-wise summary (fold-wise nested: each fold's config and checkpoint chosen on that fold's" in out
    from ray.util.state import list_actors

    started = {a.class_name for a in list_actors(limit=10000, raise_on_missing_output=False)}
    assert "TrainController" in started and "DatasetManager" not in started, started  # docs/stack.md P22
    results = tmp_path / "runs" / "search" / "fw"
    summary = json.loads((results / "summary.json").read_text())
    assert [r["fold"] for r in summary["folds"]] == [1, 2] and summary["leakage"] == {"1": 0, "2": 0}
    for fold in (1, 2):
        study = json.loads((results / f"fw-fold{fold}.json").read_text())
        assert study["complete"] and len(study["trials"]) == 3 and study["protocol"] == "fold-wise-nested"
        assert len({t["trial_id"] for t in study["trials"]}) == 3
        # the first trial Tune created (its trial folder's counter is 1; trial ids are random hex) is the space's
        # base config, the reference the winner is compared with
        first = study["trials"][0]
        assert list((storage / "search" / "fw" / f"fw-fold{fold}").glob(f"run_trial_{first['trial_id']}_1_*"))
        assert first["base"] and [t["base"] for t in study["trials"]].count(True) == 1
        assert first["params"] == {"model.split_ratio": 0.5, "model.lifting_depth": 1, "loss.lambda_gc": 0.1}
        statuses = {t["status"] for t in study["trials"]}
        assert statuses <= {"complete", "stopped", "infeasible"}, statuses
        for t in study["trials"]:
            infeasible = t["params"]["model.split_ratio"] == 0.125 and t["params"]["model.lifting_depth"] == 2
            assert (t["status"] == "infeasible") == infeasible, t
        best = study["best"]
        assert best["status"] != "infeasible" and best["checkpoint"] and study["winners"][str(fold)] == best
        ranked = max(t["values"]["val_uar"] for t in study["trials"] if t["status"] != "infeasible")
        assert best["values"]["val_uar"] == ranked  # the winner is the best on inner-val, never on test
        # the value recomputed from the per-clip records is the one Tune ranked on
        assert best["fold_values"][str(fold)]["val_uar"] == pytest.approx(ranked, abs=1e-9)
        leak = study["leakage"][str(fold)]
        chosen_on = json.loads((Path(best["checkpoint"]) / "selection.json").read_text())["clip_id"]
        assert leak["overlap"] == 0 and leak["selection_clips"] == len(chosen_on)
        test = study["tests"][str(fold)]
        assert test["clips"] == split_size(small_manifest, fold, "test") and 0.0 <= test["uar"] <= 1.0
        assert test["uar_classes"] == 7
        assert sum(map(sum, test["confusion"])) == test["clips"] == test["listed_clips"]
        base_test = study["base_tests"][str(fold)]
        assert base_test["clips"] == test["clips"]
        if first["trial_id"] == best["trial_id"]:
            assert base_test == test  # one evaluation, reported twice
    assert summary["test_uar_std"] >= 0.0 and 0.0 <= summary["test_uar_mean"] <= 1.0
    paired = summary["paired"]["test_uar"]
    assert paired["folds"] == [1, 2] and paired["mean_diff"] == pytest.approx(
        sum(r["test_uar"] - r["base"]["test_uar"] for r in summary["folds"]) / 2)
    md = (results / "summary.md").read_text()
    assert md.count("| 1 | ") == 2  # the per-fold table and the winner-vs-base table
    assert "What the search bought" in md and "winner − base, test UAR" in md and "sign test p =" in md

    versions_before = _check_mlflow(tmp_path / "runs", summary)
    assert {"fw-fold1-optimization_history.json", "fw-fold1-parallel_coordinate.json", "fw-fold1-optuna.html"} <= {
        p.name for p in (results / "plots").iterdir()}

    assert main(["report", "--runs", str(tmp_path / "runs"), "--experiment", "fw"]) == 0
    report = (tmp_path / "runs" / "reports" / "fw" / "report.md").read_text()
    assert "protocol: **fold-wise nested" in report and "| 1 | " in report and "| 2 | " in report
    assert "winner vs the base config" in report and "winner − base, test UAR" in report
    assert "FineCLIPER | 65.98 | 76.21" in report and "not reproduced here" in report
    page = (tmp_path / "runs" / "reports" / "fw" / "report.html").read_text()
    assert "data:image/png;base64," in page and "<h3>fw-fold1: optimization history</h3>" in page
    assert "<h3>fw-fold2: learning curves (fold 2)</h3>" in page and page.count("plotly.js v") == 1
    assert "<table id='base'>" in page and "sign test p =" in page

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
    assert len(children) == 2 * 3 and {c.data.tags["mlflow.parentRunId"] for c in children} == {  # folds × trials
        p.info.run_id for p in parents}
    for c in children:
        assert c.data.tags["ifdd.selection"] == "val" and c.data.tags["ifdd.git_commit"]
        assert "model.split_ratio" in c.data.params or "search.model.split_ratio" in c.data.params
        if c.data.tags.get("ifdd.status") != "infeasible":
            steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_uar")]
            assert steps and steps == sorted(set(steps)) and steps[0] == 1  # one point per epoch, no duplicates
    for p in parents:
        assert {"test_uar", "base_test_uar", "selected_val_uar", "selection_test_overlap"} <= set(p.data.metrics)
        assert p.data.tags["ifdd.protocol"] == "fold-wise-nested"
        names = {a.path for a in client.list_artifacts(p.info.run_id)}
        fold = p.data.tags["ifdd.fold"]
        assert {f"resolved_config_fold{fold}.yaml", f"per_class_recall_fold{fold}.json",
                f"confusion_fold{fold}.png"} <= names
    name = summary["registry"]["model"]
    assert name == "ifdd-synthetic-fw-foldwise"  # one registered model per space and protocol
    versions = client.search_model_versions(f"name='{name}'")
    assert versions and all(v.tags["ifdd.selection"] == "val" and v.tags["ifdd.protocol"] == "fold-wise-nested"
                            and "val_uar" in json.loads(v.tags["ifdd.selected_on"]) for v in versions)
    model = client.get_registered_model(name)
    assert {"fold1", "fold2", "champion"} <= set(model.aliases)
    assert summary["registry"]["champion_version"] == str(model.aliases["champion"])
    mlflow.set_tracking_uri(uri)
    with no_pickle_loading():  # the registered pt2 passes MLflow's pickle-free check
        net = mlflow.pytorch.load_model(f"models:/{name}@champion", map_location="cpu")
    with torch.no_grad():
        logits = net(torch.rand(1, 3, 16, 64, 64))
    assert logits.shape == (1, 7)
    return len(versions)


def test_cross_fold_chooses_each_fold_without_its_test_clips(small_manifest, tmp_path, ray_local, capsys,
                                                             write_space):
    """Each trial trains every fold; fold k's winner is the best on every fold's inner-val clips minus fold k's
    test clips (recomputed here from the trials' per-clip records), tested once with its fold-k model; the deploy
    choice is reported apart, as a choice."""
    from ifdd.data.manifest import fold_split, listed_ids, load_manifest
    from ifdd.metrics import confusion_matrix, uar

    space = write_space(tmp_path / "cf.yaml", small_manifest, search={"loss.lambda_gc": {
        "type": "float", "low": 0.01, "high": 1.0, "log": True}}, budget={"num_samples": 2, "max_epochs": 1},
        resources=TWO_AT_A_TIME)
    storage = tmp_path / "runs" / "ray"
    assert main(["search", "--space", str(space), "--strategy", "cross-fold", "--runs", str(storage.parent),
                 "--no-register"]) == 0
    out = capsys.readouterr().out
    assert "cross-fold summary (cross-fold nested (leave-fold-out selection)" in out
    study = json.loads((tmp_path / "runs" / "search" / "cf" / "cf-crossfold.json").read_text())
    assert study["complete"] and sorted(map(int, study["tests"])) == [1, 2]
    assert study["protocol"] == "cross-fold-nested"
    assert all(t["status"] == "complete" for t in study["trials"])
    assert [t["params"] for t in study["trials"] if t["base"]] == [
        {"model.split_ratio": 0.5, "model.lifting_depth": 1, "loss.lambda_gc": 0.1}]

    df = load_manifest(small_manifest)
    def latest(run: Path) -> Path:
        return max(p for p in run.glob("checkpoint_*") if p.is_dir())

    records = {(t["trial_id"], j): json.loads((latest(storage / "search" / "cf" / "trials" /
                                                      f"cf-crossfold-{t['trial_id']}-fold{j}") /
                                               "selection.json").read_text())
               for t in study["trials"] for j in (1, 2)}
    for k in (1, 2):
        test = listed_ids(df, k, "test")
        assert set(fold_split(df, 3 - k, "val")["clip_id"]) & test  # the other fold's inner-val holds some of them
        scope = {j: set(fold_split(df, j, "val")["clip_id"]) - test for j in (1, 2)}
        scores = {}
        for t in study["trials"]:
            pairs = [(p, y) for j in (1, 2) for c, p, y in zip(*(records[(t["trial_id"], j)][x] for x in (
                "clip_id", "pred", "label")), strict=True) if c in scope[j]]
            cm = confusion_matrix(torch.tensor([p for p, _ in pairs]), torch.tensor([y for _, y in pairs]), 7)
            scores[t["trial_id"]] = uar(cm)
        winner = study["winners"][str(k)]
        assert winner["fold_values"][str(k)]["val_uar"] == pytest.approx(scores[winner["trial_id"]])
        assert scores[winner["trial_id"]] == max(scores.values())
        assert study["leakage"][str(k)] == {"selection_clips": len(scope[1] | scope[2]), "test_clips": len(test),
                                             "overlap": 0}
        assert study["tests"][str(k)]["clips"] == len(fold_split(df, k, "test"))
    summary = json.loads((tmp_path / "runs" / "search" / "cf" / "summary.json").read_text())
    assert summary["leakage"] == {"1": 0, "2": 0}
    assert [r["trial"] for r in summary["folds"]] == [study["winners"][k]["trial_id"] for k in ("1", "2")]
    deploy = summary["deploy"]
    assert deploy["trial_id"] == study["best"]["trial_id"] and "a choice, not an estimate" in deploy["label"]
    md = (tmp_path / "runs" / "search" / "cf" / "summary.md").read_text()
    assert "deploy choice" in md and "What the search bought" in md


def test_multi_objective_reports_a_pareto_front(small_manifest, tmp_path, ray_local, capsys, write_space):
    space = write_space(tmp_path / "mo.yaml", small_manifest, objective={"metric": ["val_uar", "val_war"],
                                                                         "mode": ["max", "max"]},
                        budget={"num_samples": 2, "max_epochs": 1}, protocol={"folds": [1]}, resources=TWO_AT_A_TIME)
    assert main(["search", "--space", str(space), "--runs", str(tmp_path / "runs"), "--no-register"]) == 0
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
