"""Search-space validation: every bad space fails before Ray starts, with exit 2 and the offending key named."""

from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]
SMOKE = yaml.safe_load((ROOT / "search_spaces" / "smoke.yaml").read_text())


def _write(tmp_path, doc) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _with(**changes):
    doc = yaml.safe_load(yaml.safe_dump(SMOKE))
    for dotted, value in changes.items():
        node = doc
        *parents, last = dotted.split("/")
        for k in parents:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


BAD = {
    "unknown top key": (_with(budgett={"num_samples": 2}), "budgett: unknown key"),
    "unknown param key": (_with(**{"search/loss.lambda_gc": {"type": "float", "low": 0.1, "high": 1, "lg": True}}),
                          "search.loss.lambda_gc.lg: unknown key"),
    "unknown budget key": (_with(**{"budget/max_epoch": 3}), "budget.max_epoch: unknown key"),
    "path not in config": (_with(**{"search/model.split_rato": {"type": "float", "low": 0.25, "high": 0.75}}),
                           "search.model.split_rato: not a path in the run config"),
    "section, not value": (_with(**{"search/loss": {"type": "float", "low": 0.1, "high": 0.5}}),
                           "search.loss: is a section"),
    "low >= high": (_with(**{"search/loss.lambda_gc": {"type": "float", "low": 1.0, "high": 0.5}}),
                    "search.loss.lambda_gc.low: 1.0 must be below high"),
    "log with low <= 0": (_with(**{"search/optim.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}),
                          "search.optim.lr.low: a log-scale range needs low > 0"),
    "choices of wrong type": (_with(**{"search/model.lifting_depth": {"type": "categorical", "choices": [1, "two"]}}),
                              "search.model.lifting_depth.choices[1]: expected an integer"),
    "choice not allowed": (_with(**{"search/loss.gc_reduction": {"type": "categorical", "choices": ["mean", "sum"]}}),
                           "search.loss.gc_reduction.choices[1]: must be one of"),
    "float range on int field": (_with(**{"search/model.lifting_depth": {"type": "float", "low": 1, "high": 3}}),
                                 "search.model.lifting_depth.type: float does not match"),
    "no valid split x depth": (_with(**{"search/model.split_ratio": {"type": "float", "low": 0.05, "high": 0.1},
                                        "search/model.lifting_depth": {"type": "int", "low": 2, "high": 3}}),
                               "search: no valid configuration in model.lifting_depth in [2, 3] × model.split_ratio"),
    "value never valid": (_with(**{"search/model.split_ratio": {"type": "float", "low": 0.5, "high": 0.99}}),
                          "search.model.split_ratio: value 0.99 is never valid"),
    "bad objective": (_with(objective={"metric": "val_acc", "mode": "max"}), "objective.metric: unknown metric"),
    "bad mode count": (_with(objective={"metric": ["val_uar", "val_war"], "mode": "max"}),
                       "objective.mode: need one mode per metric"),
    # the checkpoint choice, ASHA and the champion maximise: a minimised UAR would be chosen as its opposite
    "mode min": (_with(objective={"metric": "val_uar", "mode": "min"}),
                 "objective.mode: 'min' is not supported: val_uar can only be maximised"),
    "base outside its range": (_with(**{"search/loss.lambda_gc": {"type": "float", "low": 0.2, "high": 1.0}}),
                               "search.loss.lambda_gc: the base value 0.1 is outside [0.2, 1]"),
    "base off the step grid": (_with(**{"search/model.split_ratio": {"type": "float", "low": 0.25, "high": 0.75,
                                                                     "step": 0.2}}),
                               "search.model.split_ratio: the base value 0.5 is outside [0.25, 0.75] (step 0.2)"),
    "grace above max": (_with(budget={"num_samples": 2, "max_epochs": 2, "grace_period": 3}),
                        "budget.grace_period: 3 is above max_epochs"),
    "negative start-up": (_with(budget={"num_samples": 2, "n_startup_trials": -1}),
                          "budget.n_startup_trials: must be >= 0, got -1"),
    "fold out of range": (_with(protocol={"folds": [1, 6]}), "protocol.folds"),
    "bad base": (_with(**{"base/model/split_rato": 0.5}), "base.model.split_rato: unknown key"),
    "negative gpus": (_with(resources={"gpus_per_worker": -1}), "resources.gpus_per_worker: must be >= 0"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_bad_space_exits_2_naming_the_key(case, tmp_path, capsys):
    doc, needle = BAD[case]
    path = _write(tmp_path, doc)
    assert main(["search", "--space", str(path), "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert str(path) in err and needle in err, err


def test_bad_folds_flag(tmp_path, capsys):
    assert main(["search", "--space", str(ROOT / "search_spaces/smoke.yaml"), "--folds", "0-2"]) == 2
    assert "--folds" in capsys.readouterr().err


def test_infeasible_share_is_a_warning_not_an_error(tmp_path):
    doc = _with(**{"search/model.split_ratio": {"type": "float", "low": 0.25, "high": 0.875, "step": 0.125},
                   "search/model.lifting_depth": {"type": "int", "low": 1, "high": 3}})
    space = load_space(_write(tmp_path, doc))
    assert space.warnings and "infeasible" in space.warnings[0]


def test_params_map_to_optuna_distributions():
    space = load_space(ROOT / "search_spaces" / "dfew_ifdd.yaml")
    dists = {p.path: p.distribution() for p in space.params}
    assert dists["loss.lambda_gc"].log and dists["model.lifting_depth"].high == 3
    assert space.trial_base().train.epochs == space.budget.max_epochs


# CLI flag errors of search and launch (no cluster needed) --------------------------------------------------
def test_search_resume_and_fresh_together(capsys):
    assert main(["search", "--space", str(ROOT / "search_spaces/smoke.yaml"), "--resume", "--fresh"]) == 2
    assert "--resume and --fresh" in capsys.readouterr().err


def test_launch_bad_inputs(tmp_path, capsys):
    assert main(["launch"]) == 2
    assert "--space: required unless --status" in capsys.readouterr().err
    cross = _write(tmp_path, _with(protocol={"strategy": "cross-fold", "folds": [1, 2]}))
    assert main(["launch", "--space", str(cross)]) == 2
    assert "launch submits fold-wise jobs" in capsys.readouterr().err
    assert main(["launch", "--space", str(ROOT / "search_spaces/smoke.yaml"), "--address", "http://127.0.0.1:9"]) == 2
    assert "--address: cannot reach a Ray dashboard at http://127.0.0.1:9" in capsys.readouterr().err


def test_unreachable_tracking_server_fails_before_training(tmp_path, capsys):
    argv = ["search", "--space", str(ROOT / "search_spaces/smoke.yaml"), "--runs", str(tmp_path / "runs"),
            "--tracking-uri", "http://127.0.0.1:9"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --tracking-uri: no MLflow server answers at http://127.0.0.1:9")
    assert not (tmp_path / "runs" / "ray" / "search").exists()


def test_report_bad_inputs(tmp_path, capsys):
    assert main(["report", "--runs", str(tmp_path)]) == 2
    assert "no finished search" in capsys.readouterr().err
    assert main(["ui", "--runs", str(tmp_path)]) == 2
    assert "mlflow.db: no tracking store yet" in capsys.readouterr().err


def test_tpe_samples_at_random_for_exactly_the_budgets_start_up_trials():
    """Same seed, start-up 3 vs 50: the first 3 trials are the same random draws, the 4th is TPE's own choice."""
    import optuna

    from orchestrator.search.space import Budget
    from orchestrator.search.tuner import tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def draws(n_startup: int) -> list[float]:
        sampler = tpe_sampler(Budget(seed=4, n_startup_trials=n_startup))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda t: -(t.suggest_float("x", -10.0, 10.0) - 3.0) ** 2, n_trials=4)
        return [t.params["x"] for t in study.trials]

    tpe, random = draws(3), draws(50)
    assert tpe[:3] == random[:3] and tpe[3] != random[3]
