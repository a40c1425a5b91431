"""The corpus test: every file of tests/clusterfiles/corpus/expected.yaml gets exactly its written verdict.

Ray's launcher examples (the ``defaults.yaml`` files shipped in the ray wheel and published examples), KubeRay's
sample manifests, and edits of our own files. For every launcher YAML the table also says whether Ray itself accepts
it; that claim is checked against Ray's own prepare_config/validate_config here, and the validator must report an
error from Ray's judgement exactly when Ray refuses. No network: sockets are refused for the whole module.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_cases as cc  # noqa: E402

from orchestrator.clusterfiles import validate_file  # noqa: E402
from orchestrator.clusterfiles.launcher import ray_judgement  # noqa: E402
from orchestrator.clusterfiles.yamlfile import ClusterFileError, read_documents  # noqa: E402

TABLE = cc.table()
CASES = {c["file"]: c for c in TABLE["files"]} | {c["name"]: c for c in TABLE["mutations"]}


@pytest.fixture(autouse=True)
def offline_with_a_token(monkeypatch, tmp_path):
    """No connection may be opened; HOME holds the token the shipped launcher files mount."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during validation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("0" * 64)
    monkeypatch.setenv("HOME", str(home))


def verdict_of(path: Path) -> dict:
    v = validate_file(path)
    strip = lambda line: line.removeprefix(f"{path}: ")  # noqa: E731
    out = {"errors": [strip(p) for p in v.problems]} if v.problems else {"verdict": "ok"}
    if v.notes:
        out["notes"] = [strip(n) for n in v.notes]
    return out


def launcher_doc(path: Path):
    try:
        docs = read_documents(path)
    except ClusterFileError:
        return None
    if len(docs) == 1 and isinstance(docs[0].data, dict) and not ({"apiVersion", "kind"} & set(docs[0].data)):
        return docs[0].data
    return None


def test_the_corpus_covers_the_kinds_of_file():
    files = [c["file"] for c in TABLE["files"]]
    assert sum(f.startswith("ray-wheel/") for f in files) >= 5
    assert sum(f.startswith("ray/") for f in files) >= 5
    assert sum(f.startswith("kuberay/") for f in files) >= 10
    assert len(TABLE["mutations"]) >= 40
    on_disk = {str(p.relative_to(cc.CORPUS)) for p in cc.CORPUS.glob("*/*.yaml")}
    assert on_disk == set(files), "every corpus file has a verdict, and every verdict a file"


@pytest.mark.parametrize("name", CASES, ids=str)
def test_verdict_is_the_written_one(name, tmp_path):
    case = CASES[name]
    path = cc.case_file(case, tmp_path)
    expected = {k: case[k] for k in ("verdict", "errors", "notes") if k in case}
    assert verdict_of(path) == expected


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if "ray" in c], ids=str)
def test_agrees_with_ray(name, tmp_path):
    """The table's ray: column is Ray's own verdict, and the validator's Ray judgement refuses exactly then."""
    case = CASES[name]
    raw = launcher_doc(cc.case_file(case, tmp_path))
    assert raw is not None
    assert cc.ray_says(raw) == case["ray"]
    from orchestrator.clusterfiles.launcher import read_before_prepare

    refused = bool(read_before_prepare(raw)) or bool(ray_judgement(raw)[1])
    assert refused == (case["ray"] == "refuses")


def test_the_alias_bomb_is_refused_well_under_a_second(tmp_path):
    path = cc.case_file(CASES["aws-alias-bomb-under-metadata"], tmp_path)
    start = time.perf_counter()
    v = validate_file(path)
    took = time.perf_counter() - start
    print(f"alias bomb refused in {took * 1000:.1f} ms")
    assert v.problems and "metadata.i: YAML aliases expand to" in v.problems[0]
    assert took < 1.0
