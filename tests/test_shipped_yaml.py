"""Every shipped search-space YAML is a valid search space whose settings all take effect: each `base` key reaches the
run config with its value, the built model, loss, optimizer and schedule are the configured ones, and each searched
parameter lands in the trial's run config."""

import re
from pathlib import Path

import pytest
import yaml
from torch import nn

from ifdd.backbone import DropPath
from ifdd.config import model_preset, to_dict
from ifdd.model import build_model
from ifdd.pipeline import build_training
from ifdd.runconfig import load_run_config, with_overrides
from orchestrator.search.space import load_space

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))


def test_there_are_shipped_yamls():
    assert SHIPPED, "search_spaces/ holds no YAML"


def _values(cfg) -> dict:
    """A resolved config section as plain values (tuples as lists, as YAML writes them)."""
    return yaml.safe_load(yaml.safe_dump(to_dict(cfg)))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_base_setting_reaches_the_run_config(path):
    """Each key the YAML sets under ``base`` has that value in the resolved run config, and the model section is
    exactly its preset plus the YAML's overrides: no setting ignored, renamed or overridden on the way."""
    raw = yaml.safe_load(path.read_text())["base"]
    cfg = load_run_config(path)
    resolved = _values(cfg)
    overrides = {k: v for k, v in raw["model"].items() if k != "preset"}
    assert resolved["model"] == _values(model_preset(raw["model"]["preset"], **overrides))
    for section, values in raw.items():
        for key, value in values.items():
            if (section, key) != ("model", "preset"):
                assert resolved[section][key] == value, f"base.{section}.{key}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_built_model_loss_and_optimizer_are_the_configured_ones(path):
    cfg = load_run_config(path)
    m = cfg.model
    model = build_model(m)
    assert len(model.backbone.blocks) == sum(m.stage_depths)
    assert model.head.dropout.p == m.head_dropout and model.head.fc.out_features == m.num_classes
    assert isinstance(model.feature_norm, nn.LayerNorm) == m.feature_norm
    assert float(model.input_std.flatten()[0]) == pytest.approx(1.0 if m.input_norm == "none" else 0.225)
    levels = list(model.lifting.levels) if model.lifting is not None else []
    assert [(lvl.static, lvl.dynamic) for lvl in levels] == [tuple(s) for s in m.slots]
    for lvl in levels:
        assert lvl.update_first == m.update_first and lvl.issm.reference_grid == (m.issm_positions == "reference")
        assert lvl.post_drop.p == m.ladm_drop_path and isinstance(lvl.mlp_drop, DropPath) == m.ladm_mlp_drop_path
        if m.use_ladm:
            assert lvl.update.value_residual == m.value_residual
    parts = build_training(cfg, model, [1] * m.num_classes, steps_per_epoch=10, device="cpu")
    assert parts.loss_fn.cfg == cfg.loss
    groups = parts.optimizer.param_groups
    assert len(groups) == (1 if cfg.optim.decay_norm_bias else 2) and groups[0]["weight_decay"] == \
        cfg.optim.weight_decay
    assert parts.schedule.base_lr == pytest.approx(cfg.optim.effective_lr(cfg.train.batch_size))
    assert parts.schedule.mode == cfg.optim.warmup_mode and parts.schedule.epochs == cfg.train.epochs
    assert parts.schedule.warmup_epochs == cfg.optim.warmup_epochs


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_yaml_is_a_valid_search_space(path):
    space = load_space(path)
    raw = yaml.safe_load(path.read_text())
    assert space.name == path.stem == raw["name"]
    assert space.budget.num_samples == raw["budget"]["num_samples"] and list(space.protocol.folds) == \
        raw["protocol"]["folds"]
    assert space.protocol.selection == raw["protocol"]["selection"]
    assert space.trial_base().train.epochs == space.budget.max_epochs == raw["budget"]["max_epochs"]
    assert [p.path for p in space.params] == list(raw["search"])
    for p in space.params:  # a sampled value of every searched parameter lands in the trial's run config
        value = p.grid()[-1]
        section, key = p.path.split(".")
        assert getattr(getattr(with_overrides(space.trial_base(), {p.path: value}), section), key) == value, p.path


CLUSTER_FILES = sorted((Path(__file__).resolve().parents[1] / "cluster").glob("*.yaml"))


def test_there_are_shipped_cluster_yamls():
    assert len(CLUSTER_FILES) >= 4, "cluster/ should hold the AWS, GCP, on-prem and KubeRay files"


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_shipped_cluster_yaml_validates(path, tmp_path, monkeypatch):
    from orchestrator.clusterfiles import validate_file

    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("0" * 64)  # what the launcher files mount (ray get-auth-token)
    monkeypatch.setenv("HOME", str(tmp_path))
    verdict = validate_file(path)
    assert verdict.problems == [] and verdict.summary


KEY = re.compile(r"^(\s*)(?:- )?([A-Za-z_][\w.\-/]*):(\s|$)")


def uncommented_keys(text: str) -> list[str]:
    """Key lines with no comment of their own (same line, or the line above) whose parent key has none either."""
    lines = text.splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, commented) of the enclosing keys
    bare = []
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group(1)) + (2 if line.lstrip().startswith("- ") else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        own = "#" in line or (i > 0 and lines[i - 1].strip().startswith("#"))
        if not own and not (stack and stack[-1][1]):
            bare.append(f"{i + 1}: {line.strip()}")
        stack.append((indent, own))
    return bare


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_shipped_cluster_yaml_comments_every_key(path):
    """Every key says what it does: a comment on it, or on the key it belongs to (Ray's example YAMLs' style)."""
    assert uncommented_keys(path.read_text()) == []
