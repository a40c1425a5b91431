"""The cluster-file reader and the credential rules, on inputs made for them (the corpus covers whole files)."""

from __future__ import annotations

import os
import time

import pytest

from orchestrator.clusterfiles import validate_file
from orchestrator.clusterfiles.checks import secret_name, string_findings, unpinned_image
from orchestrator.clusterfiles.yamlfile import MAX_BYTES, MAX_NODES, ClusterFileError, read_documents


def write(tmp_path, text: str | bytes, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_every_document_is_read_with_its_first_line(tmp_path):
    docs = read_documents(write(tmp_path, "a: 1\n---\nkind: Secret\n---\n# only a comment\n"))
    assert [(d.index, d.line, d.data) for d in docs] == [(0, 1, {"a": 1}), (1, 3, {"kind": "Secret"}), (2, 6, None)]


def test_duplicate_keys_are_refused_at_every_depth_with_both_lines(tmp_path):
    path = write(tmp_path, "a: 1\nb:\n  - c: 2\n    c: 3\na: 4\n")
    with pytest.raises(ClusterFileError) as e:
        read_documents(path)
    assert e.value.lines == [
        f"{path}: line 4: duplicate key 'c' (first at line 3); YAML forbids it and Ray would keep only the last one",
        f"{path}: line 5: duplicate key 'a' (first at line 1); YAML forbids it and Ray would keep only the last one"]


def test_a_merge_key_may_be_overridden(tmp_path):
    docs = read_documents(write(tmp_path, "base: &b {x: 1, y: 2}\nnode:\n  <<: *b\n  y: 3\n"))
    assert docs[0].data["node"] == {"x": 1, "y": 3}


def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path):
    levels = ["a: &a [" + ", ".join(["x"] * 10) + "]"]
    for prev, cur in zip("abcdefghijk", "bcdefghijkl", strict=True):
        levels.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    path = write(tmp_path, "cluster_name: x\nmetadata:\n" + "".join(f"  {line}\n" for line in levels))
    start = time.perf_counter()
    verdict = validate_file(path)
    assert time.perf_counter() - start < 1.0  # 10^12 nodes expanded; counted on the shared node graph instead
    assert verdict.problems == [f"{path}: line 14: metadata.l: YAML aliases expand to 1,111,111,111,111 nodes, over "
                                f"the {MAX_NODES:,} a cluster file may have (an alias bomb?); write the values out"]


def test_anchors_within_the_budget_are_fine(tmp_path):
    docs = read_documents(write(tmp_path, "env: &e [{name: A, value: '1'}]\nhead: {env: *e}\nworker: {env: *e}\n"))
    assert docs[0].data["worker"]["env"] == [{"name": "A", "value": "1"}]


def test_a_file_over_the_size_limit_is_not_read(tmp_path):
    path = write(tmp_path, b"# x\n" * (MAX_BYTES // 4 + 1))
    assert validate_file(path).problems == [f"{path}: {MAX_BYTES + 4} bytes, over the {MAX_BYTES} a cluster file "
                                            "may have"]


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    assert validate_file(fifo).problems == [f"{fifo}: cannot read (not a regular file)"]


def test_not_utf8(tmp_path):
    path = write(tmp_path, b"a: \xff\n")
    assert validate_file(path).problems == [f"{path}: cannot read (not UTF-8 text, byte 3)"]


def test_an_empty_file(tmp_path):
    path = write(tmp_path, "# nothing\n")
    assert validate_file(path).problems == [f"{path}: empty (no YAML document)"]


@pytest.mark.parametrize("name", ["PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "RAY_AUTH_TOKEN", "password",
                                  "auth_token", "clientSecret", "MY_SERVICE_API_KEY", "MLFLOW_TRACKING_PASSWORD"])
def test_secret_names(name):
    assert secret_name(name)


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "HF_TOKEN_PATH", "RAY_AUTH_TOKEN_PATH", "MAX_TOKENS",
                                  "ssh_private_key", "KeyName", "secretName", "GOOGLE_APPLICATION_CREDENTIALS",
                                  "~/.ray/auth_token", "PASSWORD_FILE", "tokenizer"])
def test_not_secret_names(name):
    assert not secret_name(name)


@pytest.mark.parametrize("text, found", [
    ("export TOKENIZERS_PARALLELISM=false HF_TOKEN_PATH=/p", []),
    ('export PGPASSWORD="$(cat ~/.ifdd/pg_password)"', []),
    ("RAY_AUTH_TOKEN=${TOKEN} ray start", []),
    ("aws configure set aws_secret_access_key wJalrXUtnFEMI", ["aws configure set aws_secret_access_key …"]),
    ("aws configure set --profile p default.aws_session_token tok", ["aws configure set default.aws_session_token …"]),
    ("aws configure set region us-west-2", []),
    ("mysql --password=hunter2", ["--password …"]),
    ("ray get-auth-token --generate", []),
    ("psql postgresql://u:hunter2@db/x", ["a password in a URI"]),
    ("psql postgresql://u@db/x", []),
    ("echo AKIAABCDEFGHIJKLMNOP", ["an AWS access key id"]),
    ("ALTER ROLE x PASSWORD 'pw'", ["an SQL PASSWORD '…'"]),
    ("printf \"ALTER ROLE mlflow PASSWORD '%s';\" \"$(cat f)\"", []),
])
def test_string_findings(text, found):
    assert string_findings(text) == found


@pytest.mark.parametrize("image, moving", [
    ("rayproject/ray:2.60.0-py312-gpu", False), ("rayproject/ray@sha256:" + "a" * 64, False),
    ("ghcr.io/x/ifdd:v0.1.0", False), ("localhost:5000/ray:2.60.0", False),
    ("rayproject/ray:latest-gpu", True), ("rayproject/ray:latest", True), ("rayproject/ray", True),
    ("rayproject/ray:nightly-gpu", True), ("localhost:5000/ray", True), ("img:gpu", True), ("", True),
])
def test_unpinned_images(image, moving):
    assert unpinned_image(image) is moving
