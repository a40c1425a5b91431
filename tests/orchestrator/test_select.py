"""Selection after a study: best on the objective, never infeasible/errored trials, the Pareto front."""

from pathlib import Path

from orchestrator.outputs import Outputs
from orchestrator.search.results import TrialRow, mean_std, summary_payload
from orchestrator.search.selection import select
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


def test_no_eligible_trial_selects_nothing():
    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    assert select([_row("a", 0.0, 0.0, status="infeasible")], space) == (None, [])


def test_summary_mean_std_over_folds():
    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    studies = [{"study": f"s-fold{k}", "best": {"trial_id": "t", "params": {}, "values": {"val_uar": 0.5}},
                "tests": {str(k): {"uar": u, "war": w, "clips": 10}}, "trials": [{"status": "complete"}]}
               for k, u, w in ((1, 0.4, 0.5), (2, 0.6, 0.7))]
    s = summary_payload(space, studies)
    assert [r["fold"] for r in s["folds"]] == [1, 2]
    assert abs(s["test_uar_mean"] - 0.5) < 1e-12 and abs(s["test_uar_std"] - mean_std([0.4, 0.6])[1]) < 1e-12
    assert s["selection"] == "val"


def test_summary_takes_in_the_other_fold_jobs_finished_studies(tmp_path, capsys):
    """`ifdd launch` runs one job per fold; whichever finishes last writes a summary.json covering every fold."""
    import json

    from orchestrator.search.results import Paths
    from orchestrator.search.runner import sibling_studies

    space = load_space(ROOT / "search_spaces" / "smoke.yaml").with_folds([2], None)
    paths = Paths(Outputs.resolve(str(tmp_path)), space.name, "sqlite:///unused")
    paths.results.mkdir(parents=True)
    done = {"study": f"{space.name}-fold1", "folds": [1], "complete": True, "tests": {"1": {"uar": 0.3}},
            "registered": [{"fold": 1, "version": "1", "selection_value": 0.4}]}
    for name, payload in [("fold1", done), ("fold3", {**done, "study": f"{space.name}-fold3", "complete": False}),
                          ("fold4", {**done, "study": f"{space.name}-fold4", "tracking_pending": "down"}),
                          ("fold2", {**done, "study": f"{space.name}-fold2", "folds": [2]})]:
        (paths.results / f"{space.name}-{name}.json").write_text(json.dumps(payload))
    (paths.results / f"{space.name}-fold5.json").write_text("{not json")
    (paths.results / "summary.json").write_text("{}")
    got = sibling_studies(space, paths, have={f"{space.name}-fold2"})
    assert [g["study"] for g in got] == [f"{space.name}-fold1"]  # partial, untracked, ours and unreadable left out
    assert "fold5.json: not read into the summary" in capsys.readouterr().err
    assert sibling_studies(space.with_folds([1, 2], "cross-fold"), paths, set()) == []


def test_two_objective_front_keeps_every_trade_off_and_drops_each_dominated_trial():
    import dataclasses

    from orchestrator.search.space import Objective

    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    space = dataclasses.replace(space, objective=Objective(("val_uar", "val_war"), ("max", "max")))
    rows = [_row("uar", 0.60, 0.30), _row("war", 0.30, 0.60), _row("mid", 0.45, 0.45),  # three trade-offs
            _row("dom", 0.44, 0.44),  # below "mid" on both: dominated
            _row("tie", 0.30, 0.55),  # equal to "war" on UAR, worse on WAR: dominated by it
            _row("twin", 0.45, 0.45),  # equal to "mid" on both: not dominated (nothing is strictly better)
            _row("inf", 0.99, 0.99, status="infeasible"), _row("nock", 0.90, 0.90)]
    rows[-1] = dataclasses.replace(rows[-1], checkpoint=None)  # a fold-wise trial without a checkpoint: ineligible
    best, front = select(rows, space)
    assert best.trial_id == "uar"  # the first objective metric decides the best
    assert sorted(front) == ["mid", "twin", "uar", "war"]
