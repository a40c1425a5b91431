"""Selection after a study: best on the objective, never infeasible/errored trials, the Pareto front, the base
trial; the summary across folds (labels, the leakage counts, winner vs base) and sibling fold studies."""

from pathlib import Path

import pytest

from orchestrator.outputs import Outputs
from orchestrator.search.results import TrialRow, mean_std, summary_payload
from orchestrator.search.selection import mark_base, select
from orchestrator.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]


def _row(tid, uar, war, status="complete", epochs=2):
    return TrialRow(tid, {"loss.lambda_gc": 0.1}, status, epochs, {"val_uar": uar, "val_war": war},
                    checkpoint=f"/ckpt/{tid}")


def test_best_on_first_metric_skips_infeasible_and_errors():
    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    rows = [_row("a", 0.30, 0.40), _row("b", 0.90, 0.90, status="infeasible"), _row("c", 0.95, 0.2, status="error"),
            _row("d", 0.35, 0.30, status="stopped", epochs=1), _row("e", 0.35, 0.50)]
    best, front = select(rows, space)
    assert best.trial_id == "d"  # tie on val_uar: fewer epochs (ASHA-stopped at its best) wins, then the id
    assert set(front) == {"d", "e"}


def test_the_base_trial_is_the_first_created_that_has_the_base_values_not_the_lowest_id():
    # Tune's trial ids are random hex: the grid's order (creation order) says which trial came first
    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    point = space.base_point()
    rows = [TrialRow("f3", dict(point), "complete", 2, {}), TrialRow("0a", {**point, "loss.lambda_gc": 0.77},
                                                                     "complete", 2, {}),
            TrialRow("01", dict(point), "complete", 2, {})]
    mark_base(rows, point)
    assert [r.base for r in rows] == [True, False, False]


def test_no_eligible_trial_selects_nothing():
    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    assert select([_row("a", 0.0, 0.0, status="infeasible")], space) == (None, [])


def _study(k, uar, war, base_uar, base_war, selection="val", classes=7):
    """A fold-wise study payload as the runner saves it: winner t1, base trial t0 (tested once beside it)."""
    rows = [{"trial_id": "t0", "params": {"loss.lambda_gc": 0.1}, "status": "complete", "epochs": 2, "base": True,
             "values": {"val_uar": 0.3}, "fold_values": {str(k): {"val_uar": 0.3}}},
            {"trial_id": "t1", "params": {"loss.lambda_gc": 0.5}, "status": "complete", "epochs": 2, "base": False,
             "values": {"val_uar": 0.5}, "fold_values": {str(k): {"val_uar": 0.5}}}]
    return {"study": f"s-fold{k}", "folds": [k], "winners": {str(k): rows[1]}, "trials": rows,
            "tests": {str(k): {"uar": uar, "war": war, "clips": 10, "listed_clips": 10, "uar_classes": classes}},
            "base_tests": {str(k): {"uar": base_uar, "war": base_war, "clips": 10}},
            "leakage": {str(k): {"selection_clips": 8, "test_clips": 10, "overlap": 0 if selection == "val" else 10}}}


def test_summary_mean_std_over_folds_with_the_base_config_beside_each_winner():
    from orchestrator.search.summary import summary_markdown

    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    studies = [_study(1, 0.4, 0.5, 0.3, 0.45), _study(2, 0.6, 0.7, 0.5, 0.7, classes=6)]
    s = summary_payload(space, studies)
    assert [r["fold"] for r in s["folds"]] == [1, 2]
    assert abs(s["test_uar_mean"] - 0.5) < 1e-12 and abs(s["test_uar_std"] - mean_std([0.4, 0.6])[1]) < 1e-12
    assert s["selection"] == "val" and s["protocol"] == "fold-wise-nested" and s["leakage"] == {"1": 0, "2": 0}
    uar = s["paired"]["test_uar"]
    assert uar["diffs"] == pytest.approx([0.1, 0.1]) and uar["wins"] == 2 and uar["p"] == 0.5
    war = s["paired"]["test_war"]
    assert war["mean_diff"] == pytest.approx(0.025) and (war["wins"], war["ties"]) == (1, 1)
    assert s["paired"]["selected:val_uar"]["mean_diff"] == pytest.approx(0.2)
    md = summary_markdown(s)
    assert "protocol: **fold-wise nested" in md and "chosen on (inner-val)" in md
    assert "| 2 | t1 | lambda_gc=0.5 | val_uar 0.5000 | 8 | 0 | 60.00 (6) |" in md
    assert "## What the search bought: winner vs the base config" in md
    assert "| 1 | t1 | t0 | 0.5000 | 0.3000 | 40.00 | 30.00 | 10.00 |" in md
    assert "winner − base, test UAR: +0.1000 mean over folds [1, 2] (2 up, 0 down, 0 tied; sign test p = 0.5)" in md
    assert "warning: fold 2 test split holds clips of 6 of 7 classes" in md


def test_parity_summary_names_test_metrics_as_test_and_counts_the_overlap():
    from orchestrator.search.summary import summary_markdown

    space = load_space(ROOT / "search_spaces" / "dfew_paper_parity.yaml").with_folds((1,), None)
    s = summary_payload(space, [_study(1, 0.4, 0.5, 0.3, 0.45, selection="test")])
    md = summary_markdown(s)
    assert s["label"].startswith("paper parity (best on test, optimistic)") and s["leakage"] == {"1": 10}
    assert "chosen on (test)" in md and "test_uar 0.5000" in md and "inner-val" not in md


def test_summary_takes_in_the_other_fold_jobs_finished_studies(tmp_path, capsys):
    """`ifdd launch` runs one job per fold; whichever finishes last writes a summary.json covering every fold."""
    import json

    from orchestrator.search.results import Paths
    from orchestrator.search.runner import sibling_studies

    space = load_space(ROOT / "search_spaces" / "smoke.yaml").with_folds([2], None)
    paths = Paths(Outputs.resolve(str(tmp_path)), space.name, "sqlite:///unused")
    paths.results.mkdir(parents=True)
    from orchestrator.search.results import study_fingerprint

    def fingerprint(folds):
        return study_fingerprint(space, folds, "m" * 64)

    done = {"study": f"{space.name}-fold1", "folds": [1], "complete": True, "tests": {"1": {"uar": 0.3}},
            "registered": [{"fold": 1, "version": "1", "selection_value": 0.4}], "fingerprint": fingerprint([1])}
    edited = {**done, "study": f"{space.name}-fold5", "folds": [5],
              "fingerprint": {**fingerprint([5]), "selection": "test"}}
    for name, payload in [("fold1", done), ("fold3", {**done, "study": f"{space.name}-fold3", "complete": False}),
                          ("fold4", {**done, "study": f"{space.name}-fold4", "tracking_pending": "down"}),
                          ("fold2", {**done, "study": f"{space.name}-fold2", "folds": [2]})]:
        (paths.results / f"{space.name}-{name}.json").write_text(json.dumps(payload))
    (paths.results / f"{space.name}-fold5.json").write_text(json.dumps(edited))
    (paths.results / f"{space.name}-fold6.json").write_text("{not json")
    (paths.results / "summary.json").write_text("{}")
    got = sibling_studies(space, paths, have={f"{space.name}-fold2"}, fingerprint=fingerprint)
    assert [g["study"] for g in got] == [f"{space.name}-fold1"]  # partial, untracked, ours and unreadable left out
    err = capsys.readouterr().err
    assert "fold6.json: not read into the summary" in err
    assert "fold5.json: left out of the summary, recorded under another fingerprint (selection: saved test, now val)" \
        in err
    assert sibling_studies(space.with_folds([1, 2], "cross-fold"), paths, set(), fingerprint) == []


def test_two_objective_front_keeps_every_trade_off_and_drops_each_dominated_trial():
    import dataclasses

    from orchestrator.search.space import Objective

    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    space = dataclasses.replace(space, objective=Objective(("val_uar", "val_war"), ("max", "max")))
    rows = [_row("uar", 0.60, 0.30), _row("war", 0.30, 0.60), _row("mid", 0.45, 0.45),  # three trade-offs
            _row("dom", 0.44, 0.44),  # below "mid" on both: dominated
            _row("tie", 0.30, 0.55),  # equal to "war" on UAR, worse on WAR: dominated by it
            _row("twin", 0.45, 0.45),  # equal to "mid" on both: not dominated (nothing is strictly better)
            _row("inf", 0.99, 0.99, status="infeasible"), _row("err", 0.99, 0.99, status="error")]
    best, front = select(rows, space)
    assert best.trial_id == "uar"  # the first objective metric decides the best
    assert sorted(front) == ["mid", "twin", "uar", "war"]
