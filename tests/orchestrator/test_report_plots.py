"""The study plots without a cluster: Optuna's from a real Optuna study (JSON per plot, one page with one
plotly.js), the learning curves with ASHA's stops and rungs marked."""

from __future__ import annotations

import json

from orchestrator.tracking.plots import asha_rungs, learning_curves, optuna_plots


def test_optuna_plots_are_json_per_plot_and_one_page_with_one_plotly(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s-fold1", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) - t.suggest_float("y", 0, 1) ** 2, n_trials=6)
    written, skipped = optuna_plots("s-fold1", storage, tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == ["s-fold1-optimization_history.json", "s-fold1-optuna.html", "s-fold1-parallel_coordinate.json",
                     "s-fold1-param_importances.json"] and skipped == {}
    page = (tmp_path / "plots" / "s-fold1-optuna.html").read_text()
    assert page.count("Plotly.newPlot(") == 3
    assert page.count("plotly.js v") == 1  # the library's banner: one embedded copy for three plots
    fig = json.loads((tmp_path / "plots" / "s-fold1-optimization_history.json").read_text())
    assert len(fig["data"][0]["x"]) == 6


def test_a_study_with_one_finished_trial_says_why_it_has_no_plots(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="one", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), 1)
    written, skipped = optuna_plots("one", storage, tmp_path / "plots")
    assert written == [] and set(skipped.values()) == {"1 completed trial(s); needs 2"}


def test_learning_curves_mark_asha_stops_the_winner_and_the_rungs():
    study = {"study": "s-fold1", "best": {"trial_id": "a"},
             "trials": [{"trial_id": "a", "status": "complete"}, {"trial_id": "b", "status": "stopped"},
                        {"trial_id": "c", "status": "nonfinite"}]}
    histories = {"a": [{"epoch": e, "val_uar": 0.1 * e} for e in range(1, 9)],
                 "b": [{"epoch": 1, "val_uar": 0.05}, {"epoch": 2, "val_uar": 0.07}],
                 "c": [{"epoch": 1, "val_uar": 0.02}, {"epoch": 2, "val_uar": None}]}
    rungs = asha_rungs({"grace_period": 2, "reduction_factor": 2, "max_epochs": 8})
    assert rungs == [2, 4]
    fig = learning_curves(study, histories, metric="val_uar", split="inner-val", max_epochs=8, rungs=rungs)
    lines = {t.legendgroup: t for t in fig.data if t.mode == "lines+markers"}
    marks = {t.legendgroup: t for t in fig.data if t.mode == "markers"}
    assert lines["a"].line.width > lines["b"].line.width and "(chosen)" in lines["a"].name
    assert list(lines["a"].x) == list(range(1, 9)) and list(lines["c"].x) == [1]  # the NaN epoch is not drawn
    assert set(marks) == {"b", "c"} and marks["b"].marker.symbol == "x" and list(marks["b"].x) == [2]
    assert "stopped early by ASHA after epoch 2" in marks["b"].hovertext
    assert [s.x0 for s in fig.layout.shapes] == [2, 4]
