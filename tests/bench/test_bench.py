"""The benchmark scripts' own logic: search curves and the matching ratio, ablation statistics, the summary writer
(fast, on small hand-made JSON), and every script end to end in its --quick mode (slow, starts Ray)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    """bench/'s search, ablation and summary scripts as modules. They put bench/ on sys.path to import each other
    (bench_common); sys.path and sys.modules are put back afterwards, so no later test imports them by accident."""
    path = list(sys.path)
    sys.path.insert(0, str(BENCH))
    try:
        yield types.SimpleNamespace(**{name: importlib.import_module(name)
                                       for name in ("search", "ablation", "summary")})
    finally:
        sys.path[:] = path
        for name, mod in list(sys.modules.items()):  # bench's own modules only: third-party ones stay loaded
            if Path(getattr(mod, "__file__", None) or "/").resolve().parent == BENCH:
                del sys.modules[name]


def _events(vals: list[float], trial: str = "t") -> list[dict]:
    return [{"trial": trial, "epoch": i + 1, "val_uar": v, "time": float(i)} for i, v in enumerate(vals)]


def test_search_compare_counts_epochs_until_random_best_is_reached(bench):
    rnd = _events([0.1, 0.3, 0.2, 0.5, 0.4, 0.4], "r")  # best 0.5 after 4 of 6 epochs
    tpe = _events([0.2, 0.5, 0.6], "a")
    c = bench.search.compare(tpe, rnd, max_epochs=3)
    assert c["random_best"] == 0.5 and c["random_epochs_to_best"] == 4
    assert c["epochs_to_match"] == 2
    assert c["ratio_vs_random_total"] == pytest.approx(2 / 6) and c["ratio_vs_random_reach"] == pytest.approx(0.5)
    assert c["curves"]["tpe_asha"] == [(1, 0.2), (2, 0.5), (3, 0.6)]


def test_search_compare_reports_never_matched_as_none(bench):
    c = bench.search.compare(_events([0.1, 0.2]), _events([0.9]), max_epochs=2)
    assert c["epochs_to_match"] is None and c["ratio_vs_random_total"] is None


def test_ablation_summary_and_paired_differences(bench):
    runs = [{"variant": v, "group": "main", "seed": 0, "fold": f, "test_uar": u, "test_war": u, "val_uar": u,
             "best_epoch": 3} for v, us in (("full", [0.5, 0.7]), ("baseline", [0.4, 0.8])) for f, u in
            zip((1, 2), us, strict=True)]
    runs.append({"variant": "ratio0.25_depth2", "group": "grid", "infeasible": "split_ratio=0.25 ..."})
    table = {t["variant"]: t for t in bench.ablation.summarise(runs)}
    assert table["full"]["test_uar_mean"] == pytest.approx(0.6) and table["full"]["runs"] == 2
    assert table["baseline"]["test_uar_std"] == pytest.approx(0.2828, abs=1e-4)
    assert table["ratio0.25_depth2"]["infeasible"]
    p = bench.ablation.paired(runs, "full", "baseline")
    assert p["pairs"] == 2 and p["mean_diff"] == pytest.approx(0.0) and p["a_wins"] == 1 and p["a_losses"] == 1
    assert p["sign_test_p"] == pytest.approx(1.0)


def test_ablation_paired_tests_are_exact_two_sided(bench):
    """6 pairs, all won: both exact tests give 2 / 2**6; a tie is dropped by the sign test, not counted a win."""
    diffs = [0.05, 0.1, 0.02, 0.3, 0.07, 0.01]
    runs = [{"variant": v, "seed": 0, "fold": f, "test_uar": 0.5 + (d if v == "full" else 0.0)}
            for f, d in enumerate(diffs) for v in ("full", "no_ladm")]
    p = bench.ablation.paired(runs, "full", "no_ladm")
    assert p["a_wins"] == 6 and p["sign_test_p"] == pytest.approx(2 / 64) and p["wilcoxon_p"] == pytest.approx(2 / 64)
    runs += [{"variant": v, "seed": 1, "fold": 0, "test_uar": 0.5} for v in ("full", "no_ladm")]
    tied = bench.ablation.paired(runs, "full", "no_ladm")
    assert tied["pairs"] == 7 and tied["a_wins"] == 6 and tied["sign_test_p"] == pytest.approx(2 / 64)
    # per fold, the two seeds of fold 0 are averaged into one pair (0.025): still 6 folds won of 6
    assert tied["folds"]["pairs"] == 6 and tied["folds"]["a_wins"] == 6
    assert tied["folds"]["mean_diff"] == pytest.approx((0.025 + sum(diffs[1:])) / 6)


def test_ablation_grid_marks_unbuildable_points_infeasible(bench):
    todo, infeasible = bench.ablation.jobs([0], [1], [0], [1], epochs=2)
    assert {i["variant"] for i in infeasible} == {"ratio0.25_depth2"}  # 4 slots: 1 + 3, then 1 slot to split
    assert {j["variant"] for j in todo} >= {"full", "no_issm", "no_ladm", "baseline", "ratio0.75_depth2"}


def test_summary_writes_tables_plots_and_marks_gpu_estimates(bench, tmp_path):
    rnd, tpe = _events([0.2, 0.4], "r"), _events([0.4], "a")
    (tmp_path / "search.json").write_text(json.dumps({
        "measured": "inner-val UAR", "data": "fake", "matched_seeds": 1, "ratio_vs_random_total_mean": 0.5,
        "matched_within_third": 0,
        "budget": {"num_samples": 1, "max_epochs": 2, "grace_period": 1, "reduction_factor": 2, "random_samples": 2,
                   "n_startup_trials": 5, "max_concurrent_trials": 1},
        "seeds": [{"seed": 0, **bench.search.compare(tpe, rnd, 2),
                   "winners": {"random": {"test_uar": 0.6543}, "tpe_asha": {"test_uar": 0.5432}}}]}))
    (tmp_path / "proxy.json").write_text(json.dumps({
        "measured": "inner-val UAR per epoch", "data": "fake", "epochs": 5, "threshold": 0.3,
        "pretext": {"wall_s": 1.0, "checkpoint": "init.pt"},
        "summary": {"pretext": {"seeds": 1, "passed_by_epoch_2": 1}, "scratch": {"seeds": 1, "passed_by_epoch_2": 0}},
        "runs": [{"init": "pretext", "seed": 0, "val_uar": [0.5, 0.6, 0.7, 0.7, 0.8], "first_epoch_above": 1,
                  "test_uar": 0.75},
                 {"init": "scratch", "seed": 0, "val_uar": [0.1, 0.2, 0.1, 0.2, 0.2], "first_epoch_above": None,
                  "test_uar": 0.15}]}))
    (tmp_path / "ablation.json").write_text(json.dumps({
        "data": "fake", "protocol": {"selection": "val", "main_seeds": [0], "main_folds": [1], "grid_seeds": [0],
                                     "grid_folds": [1], "epochs": 2},
        "table": [{"variant": "full", "group": "main", "runs": 1, "test_uar_mean": 0.4321, "test_uar_std": 0.0,
                   "test_war_mean": 0.5, "test_war_std": 0.0, "inner_val_uar_mean": 0.4, "best_epoch_mean": 2.0},
                  {"variant": "ratio0.25_depth2", "group": "grid", "infeasible": "no slot"}],
        "runs": [{"variant": "full", "seed": 0, "fold": f, "test_uar": u, "best_epoch": 2, "val_uar_curve": [0.3, 0.4]}
                 for f, u in ((1, 0.4321), (2, 0.9))],
        "paired": []}))
    (tmp_path / "wall.json").write_text(json.dumps({"wall_s": 1234.0, "cpus": 2}))
    path = bench.summary.write_summary(tmp_path, flops={"ifdd": 1e11, "baseline": 9e10})
    text = path.read_text()
    assert "0.432 ± 0.000" in text and "| 0 | 0.400 | 2 | 2 | 0.400 | 1 |" in text
    assert "| 0.654 | 0.543 |" in text and "first 5 trials random" in text  # winners' test UAR, n_startup_trials
    assert "| pretext | 0 | 1 | 0.600 | 0.800 |" in text and "| scratch | 0 | never | 0.200 | 0.200 |" in text
    assert "pretext 1/1; scratch 0/1" in text
    assert "2 of 2 runs selected their last epoch" in text
    assert "folds [1] it scored test UAR 0.432 (1 runs)" in text  # the paper's grid point, on the grid's folds only
    assert "1234 s" in text and "Estimates, not measurements" in text
    assert (tmp_path / "plots" / "search_curve.html").is_file() and (tmp_path / "plots" / "ablation.html").is_file()


@pytest.mark.slow
@pytest.mark.load  # `make test-load`, not CI: every benchmark script end to end (159 s on a 2-core box)
@pytest.mark.ray
@pytest.mark.timeout(1800)  # ~3 min on 2 quiet cores
def test_every_bench_script_runs_in_quick_mode_and_logs_to_mlflow(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--dir", str(tmp_path / "bench"),
                    "--runs", str(tmp_path / "runs")], env=env, check=True, timeout=1500)
    names = {p.stem for p in (tmp_path / "bench").glob("*.json")}
    assert names >= {"model", "data", "train", "proxy", "search", "ablation", "overhead", "wall"}
    assert "## Orchestration overhead" in (tmp_path / "bench" / "summary.md").read_text()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bench")
    assert exp.artifact_location.startswith((tmp_path / "runs" / "mlartifacts").resolve().as_uri())
    run = client.search_runs([exp.experiment_id])[0]
    assert "search_ratio_vs_random_total_mean" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"json", "plots", "summary.md"}
