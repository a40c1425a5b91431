"""Every shipped search-space YAML is a valid search space, its `base` a valid run config that builds its model."""

import re
from pathlib import Path

import pytest

from ifdd.model import build_model
from ifdd.runconfig import load_run_config
from orchestrator.search.space import load_space

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
