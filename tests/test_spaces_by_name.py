"""Shipped search spaces by name: resolution (a path wins), the listing, and a real non-editable install used from
another folder, where `--space demo` resolves inside the installed package and `ifdd demo` starts its checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.search.shipped import format_listing, resolve_space, shipped_dir, shipped_spaces

REPO = Path(__file__).resolve().parents[1]


def test_every_yaml_of_search_spaces_ships_with_a_description():
    assert {p.name for p in (REPO / "search_spaces").glob("*.yaml")} == {s.path.name for s in shipped_spaces()}
    assert all(s.description for s in shipped_spaces()), [s.name for s in shipped_spaces() if not s.description]


def test_a_name_resolves_to_the_shipped_file_and_an_existing_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_space("demo") == shipped_dir() / "demo.yaml" == resolve_space("demo.yaml")
    mine = tmp_path / "demo.yaml"
    mine.write_text(yaml.safe_dump({"name": "mine", "base": {}}))
    assert resolve_space("demo.yaml") == Path("demo.yaml")  # the file in this folder, not the shipped one
    assert resolve_space("demo") == shipped_dir() / "demo.yaml"  # no file called `demo` here: the name
    with pytest.raises(FileNotFoundError, match=r"--space: nosuch: no such file and no shipped search space of "
                                                r"that name \(shipped: demo, dfew_ifdd"):
        resolve_space("nosuch")
    assert resolve_space("sub/demo.yaml") == Path("sub/demo.yaml")  # a path is never taken for a name


def test_search_list_prints_every_shipped_space_with_its_description(capsys):
    assert main(["search", "--list"]) == 0
    out = capsys.readouterr().out
    assert out == format_listing() + "\n"
    for s in shipped_spaces():
        assert f"  {s.name}" in out and s.description in out


def test_search_without_space_names_the_fix(capsys):
    assert main(["search"]) == 2
    assert "`ifdd search --list`" in capsys.readouterr().err


def _packages(root: Path) -> set[str]:
    return {".".join(p.parent.relative_to(root).parts) for pkg in ("ifdd", "orchestrator")
            for p in (root / pkg).rglob("__init__.py")}


PROBE = """
import importlib, pkgutil, sys
import ifdd, orchestrator
from orchestrator.search.shipped import resolve_space, shipped_dir
print("orchestrator", orchestrator.__file__)
print("demo", resolve_space("demo"))
for pkg in (ifdd, orchestrator):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(m.name)
print("imported all")
"""


@pytest.mark.slow
def test_a_non_editable_install_runs_the_demo_checks_from_any_folder(tmp_path):
    target, elsewhere, clone = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "clone"
    elsewhere.mkdir()
    # what a fresh clone holds (a checkout's build/ from an earlier install would fill in what the list forgets)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ifdd", "orchestrator", "search_spaces"):
        shutil.copytree(REPO / name, clone / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, clone / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(clone)],
                   check=True, capture_output=True, timeout=600, cwd=tmp_path)
    assert {p.name for p in (target / "orchestrator" / "search_spaces").glob("*.yaml")} == {
        p.name for p in (REPO / "search_spaces").glob("*.yaml")}
    # the shipped pretext init too (checksum file and record beside it)
    assert sorted(p.relative_to(target / "ifdd").as_posix() for p in (target / "ifdd" / "pretrained").rglob("*")
                  if p.is_file()) == sorted(p.relative_to(REPO / "ifdd").as_posix()
                                            for p in (REPO / "ifdd" / "pretrained").rglob("*") if p.is_file())
    # every package of the source tree was installed, and search_spaces/ as orchestrator.search_spaces
    assert _packages(target) == _packages(REPO) | {"orchestrator.search_spaces"}
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy comes before the checkout's editable one
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=elsewhere, env=env, capture_output=True, text=True,
                           timeout=300)
    assert probe.returncode == 0, probe.stderr
    lines = dict(line.split(" ", 1) for line in probe.stdout.splitlines() if " " in line)
    assert lines["orchestrator"].startswith(str(target)) and lines["demo"] == str(
        target / "orchestrator" / "search_spaces" / "demo.yaml")
    assert "imported all" in probe.stdout
    demo = subprocess.run([sys.executable, "-m", "orchestrator.cli", "demo", "--folds", "9", "--runs",
                           str(tmp_path / "runs")], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert demo.returncode == 2 and demo.stderr.strip() == "error: --folds: distinct folds in 1-5, got '9'"
    listing = subprocess.run([sys.executable, "-m", "orchestrator.cli", "search", "--list"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0 and "demo " in listing.stdout and str(target) in listing.stdout
