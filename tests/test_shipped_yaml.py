"""Every shipped search-space YAML is a valid search space, its `base` a valid run config that builds its model."""

from pathlib import Path

import pytest

from ifdd.model import build_model
from ifdd.runconfig import load_run_config
from orchestrator.space import load_space

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))


def test_there_are_shipped_yamls():
    assert SHIPPED, "search_spaces/ holds no YAML"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_yaml_is_a_valid_run_config(path):
    cfg = load_run_config(path)
    assert cfg.train.epochs >= 1 and cfg.train.batch_size >= 1
    model = build_model(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_yaml_is_a_valid_search_space(path):
    space = load_space(path)
    assert space.name == path.stem
    assert space.budget.num_samples >= 1 and space.protocol.folds
    assert space.trial_base().train.epochs == space.budget.max_epochs
