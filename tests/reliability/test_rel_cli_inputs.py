"""Bad input through the `ifdd` CLI, end to end: each case is one `error: …` line naming the file, flag or field,
exit code 2, no Ray started, and every earlier output in the project folder byte-identical afterwards.

Cases already covered by the readers' own tests (split-file rows, search-space keys, run-config keys) are not
repeated here; these fill the gaps between the readers and the commands.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator.cli import main

from . import inputs_common as common

dfew, manifest, cache, project = common.dfew, common.manifest, common.cache, common.project  # fixtures
snapshot = common.snapshot


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors exit from parse_args
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def config(p: Path, name: str = "bad.yaml", **sections) -> Path:
    """run.yaml with ``sections`` merged into its base."""
    doc = yaml.safe_load((p / "run.yaml").read_text())
    for key, value in sections.items():
        doc["base"][key] = {**doc["base"].get(key, {}), **value}
    path = p / name
    path.write_text(yaml.safe_dump(doc))
    return path


def train(cfg: Path | str, *extra: str) -> list[str]:
    return ["train", "--config", str(cfg), "--fold", "1", *extra]


def write(p: Path, name: str, data: bytes | str) -> Path:
    path = p / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def edited_manifest(p: Path, column: str, value: str) -> Path:
    """A copy of the project's manifest with row 1 of ``column`` set to ``value`` (metadata kept)."""
    table = pq.read_table(p / "manifest.parquet")
    col = table.column(column).to_pylist()
    col[0] = value
    table = table.set_column(table.schema.get_field_index(column), column, [col])
    pq.write_table(table, p / "edited.parquet")
    return p / "edited.parquet"


def cache_copy(p: Path, edit: Callable[[dict], object] | str) -> Path:
    """A copy of the project's cache whose cache.json is edited in place by ``edit``, or replaced by a string."""
    out = p / "cache2"
    shutil.copytree(p / "cache", out)
    if isinstance(edit, str):
        (out / "cache.json").write_text(edit)
        return out
    index = json.loads((out / "cache.json").read_text())
    edit(index)
    (out / "cache.json").write_text(json.dumps(index))
    return out


def dfew_root(p: Path) -> str:
    return json.loads(pq.read_metadata(p / "manifest.parquet").metadata[b"ifdd.manifest"])["root"]


# id -> (setup(project) -> argv, substrings of the one error line)
CASES: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    # the command line
    "unknown command": (lambda p: ["frobnicate"], ("ifdd: argument COMMAND: invalid choice: 'frobnicate'",)),
    "unknown data subcommand": (lambda p: ["data", "frob"], ("ifdd data: argument COMMAND: invalid choice",)),
    "unknown flag": (lambda p: train(p / "run.yaml", "--bogus", "1"), ("unrecognized arguments: --bogus 1",)),
    "missing required flags": (lambda p: ["train"], ("ifdd train: the following arguments are required: --config",)),
    "flag of the wrong type": (lambda p: ["train", "--config", "run.yaml", "--fold", "x"],
                               ("argument --fold: invalid int value: 'x'",)),
    "--workers 0": (lambda p: train(p / "run.yaml", "--workers", "0"), ("--workers: must be >= 1, got 0",)),
    "--cpus-per-worker -1": (lambda p: train(p / "run.yaml", "--cpus-per-worker", "-1"),
                             ("--cpus-per-worker: must be > 0",)),
    "--name escaping runs/": (lambda p: train(p / "run.yaml", "--name", "../../outside"), ("--name: letters",)),
    "--storage is a file": (lambda p: train(p / "run.yaml", "--storage", str(p / "runs" / "mlflow.db")),
                            ("--storage:", "is a file, not a folder")),
    "search --storage is a file": (
        lambda p: ["search", "--space", str(p / "run.yaml"), "--storage", str(p / "runs" / "mlflow.db")],
        ("--storage:", "is a file")),
    "search --num-cpus 0": (lambda p: ["search", "--space", str(p / "run.yaml"), "--num-cpus", "0"],
                            ("--num-cpus: must be >= 1",)),
    "ui --port 0": (lambda p: ["ui", "--port", "0"], ("--port: must be 1-65535",)),
    "report of an unknown search": (lambda p: ["report", "--experiment", "nope"],
                                    ("search/nope/summary.json: no finished search named 'nope'",)),
    # run configs
    "config file missing": (lambda p: train(p / "nowhere.yaml"), ("nowhere.yaml: config file not found",)),
    "config is binary (a checkpoint)": (lambda p: train(write(p, "model.yaml", os.urandom(64) + b"\xff")),
                                        ("model.yaml: not UTF-8 text",)),
    "config is a YAML list": (lambda p: train(write(p, "list.yaml", "- a\n- b\n")),
                              ("list.yaml: expected a mapping at the top level",)),
    "config with a python tag": (
        lambda p: train(write(p, "evil.yaml", "base: !!python/object/apply:os.system ['touch pwned']\n")),
        ("evil.yaml: not valid YAML", "python/object/apply:os.system")),
    "manifest is not Parquet": (
        lambda p: train(config(p, data={"manifest": str(write(p, "junk.parquet", b"PAR1" + os.urandom(100)))})),
        ("data.manifest:", "junk.parquet: not a readable Parquet file")),
    "manifest rows edited after indexing": (
        lambda p: train(config(p, data={"manifest": str(edited_manifest(p, "label_name", "Sad"))})),
        ("data.manifest:", "edited.parquet: row 1: label_name does not match label")),
    "manifest path escaping the root": (
        lambda p: train(config(p, data={"manifest": str(edited_manifest(p, "media_path", "../../etc/passwd"))})),
        ("data.manifest:", "row 1: media_path must be a relative path inside the dataset root")),
    "manifest absolute media path": (
        lambda p: ["data", "cache", "--manifest", str(edited_manifest(p, "media_path", "/etc/passwd")),
                   "--out", str(p / "cache")],
        ("edited.parquet: row 1: media_path must be a relative path inside the dataset root",)),
    "data.root missing": (lambda p: train(config(p, data={"root": str(p / "no-such-root")})),
                          ("data.root: dataset root", "no-such-root not found")),
    "cache.json not JSON": (lambda p: train(config(p, data={"cache_dir": str(cache_copy(p, "{not json"))})),
                            ("data.cache_dir:", "cache.json: not valid JSON")),
    "cache.json missing keys": (
        lambda p: train(config(p, data={"cache_dir": str(cache_copy(p, lambda i: i.pop("shards")))})),
        ("data.cache_dir:", "shards missing")),
    "cache shard path escaping the cache": (
        lambda p: train(config(p, data={"cache_dir": str(cache_copy(
            p, lambda i: i["shards"][0].update(file="../cache/shard-00000.arrow")))})),
        ("data.cache_dir:", "shards: expected entries")),
    "cache built from another manifest": (
        lambda p: train(config(p, data={"cache_dir": str(cache_copy(p, lambda i: i.update(manifest_sha256="0")))})),
        ("data.cache_dir:", "built from another manifest")),
    "cache with another frame count": (
        lambda p: train(config(p, data={"cache_dir": str(cache_copy(p, lambda i: i.update(frames=8)))})),
        ("data.cache_dir:", "holds 8 frames per clip; the model needs 16")),
    "cache of another clip size": (  # the project's cache is 16²; the tiny model takes 64² clips
        lambda p: train(config(p, data={"cache_dir": str(p / "cache")})),
        ("data.cache_dir:", "holds 16² clips; the model needs 64²", "--size 64")),
    "init_weights missing": (lambda p: train(config(p, train={"init_weights": str(p / "k400.pth")})),
                             ("train.init_weights:", "k400.pth not found")),
    # search spaces
    "space file empty": (lambda p: ["search", "--space", str(write(p, "empty.yaml", ""))], ("empty.yaml",)),
    "space is a folder": (lambda p: ["search", "--space", str(p / "runs")], ("runs: search-space file not found",)),
    # data commands
    "index --out is a folder": (lambda p: ["data", "index", "--root", dfew_root(p), "--out", "runs", "--quiet"],
                                ("--out: runs is a folder",)),
    "index --val-fraction 1": (lambda p: ["data", "index", "--root", ".", "--val-fraction", "1"],
                               ("val_fraction: must be in [0, 1), got 1.0",)),
    "cache of a corrupt manifest over an earlier cache": (
        lambda p: ["data", "cache", "--manifest", str(write(p, "bad.parquet", b"not parquet")),
                   "--out", str(p / "cache")],
        ("bad.parquet: not a readable Parquet file",)),
    "cache --out a folder of other files": (
        lambda p: ["data", "cache", "--manifest", str(p / "manifest.parquet"), "--out", str(p / "runs")],
        ("runs: folder is not empty and not an ifdd clip cache",)),
    "cache --size 4": (
        lambda p: ["data", "cache", "--manifest", str(p / "manifest.parquet"), "--out", str(p / "c"), "--size", "4"],
        ("size/frames: need size >= 8",)),
}


@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_bad_input_is_one_error_line_and_keeps_earlier_outputs(case, project, capsys):
    import ray

    setup, needles = CASES[case]
    argv = setup(project)
    before = snapshot(project)
    rc, out, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert snapshot(project) == before, "a failed command changed earlier outputs"
    assert not ray.is_initialized(), "bad input must fail before Ray starts"
    assert not (project / "pwned").exists()
