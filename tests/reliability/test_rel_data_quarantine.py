"""Bad data through `ifdd data index`, end to end: split-file contradictions not covered by the reader's tests exit 2
naming the file and row, media linked out of the dataset root is quarantined with its reason; either way the
manifest an earlier index wrote is left byte-identical (or replaced atomically by the new one)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from ifdd.data.manifest import fold_split, load_manifest
from orchestrator.cli import main

from . import inputs_common as common

dfew, manifest = common.dfew, common.manifest  # fixtures


@pytest.fixture
def tree(dfew, tmp_path) -> Path:
    return Path(shutil.copytree(dfew, tmp_path / "DFEW", symlinks=True))


def split(root: Path, side: str, fold: int) -> Path:
    return root / "EmoLabel_DataSplit" / f"{side}(single-labeled)" / f"set_{fold}.csv"


def index(root: Path, out: Path, capsys) -> tuple[int, str, str]:
    rc = main(["data", "index", "--root", str(root), "--out", str(out), "--quiet"])
    o, e = capsys.readouterr()
    return rc, o, e


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def first_row(path: Path) -> tuple[str, str]:
    return tuple(path.read_text().splitlines()[1].split(","))


def test_clip_with_two_labels_keeps_the_earlier_manifest(tree, manifest, tmp_path, capsys):
    out = Path(shutil.copy(manifest, tmp_path / "m.parquet"))
    before = digest(out)
    clip, label = first_row(split(tree, "test", 1))
    other = split(tree, "train", 2)
    rows = other.read_text().splitlines()
    i = next(i for i, r in enumerate(rows) if r.split(",")[0] == clip)
    rows[i] = f"{clip},{int(label) % 7 + 1}"
    other.write_text("\n".join(rows) + "\n")
    rc, _, err = index(tree, out, capsys)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert f"clip {int(clip):05d} has label" in err and "set_" in err and "row " in err
    assert digest(out) == before


def test_clip_in_two_test_folds(tree, tmp_path, capsys):
    clip, label = first_row(split(tree, "test", 1))
    for side in ("train", "test"):  # move it from fold 2's training split to fold 2's test split
        path = split(tree, side, 2)
        rows = [r for r in path.read_text().splitlines() if r.split(",")[0] != clip]
        if side == "test":
            rows.append(f"{clip},{label}")
        path.write_text("\n".join(rows) + "\n")
    rc, _, err = index(tree, tmp_path / "m.parquet", capsys)
    assert rc == 2 and f"clip {int(clip):05d} is in two test folds" in err and err.count("\n") == 1, err
    assert not (tmp_path / "m.parquet").exists()


def test_two_spellings_of_the_split_folder(tree, tmp_path, capsys):
    base = tree / "EmoLabel_DataSplit"
    shutil.copytree(base / "train(single-labeled)", base / "train_single_labeled")
    rc, _, err = index(tree, tmp_path / "m.parquet", capsys)
    assert rc == 2 and "ambiguous train split folders" in err, err


def test_media_linked_out_of_the_root_is_quarantined(tree, tmp_path, capsys):
    """A frame file (not only a frame folder) or an mp4 linked to a file outside the root is never read."""
    frames = tree / "Clip" / "clip_224x224_16f"
    a, b = sorted(p.name for p in frames.iterdir())[:2]
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(frames / a / "1.jpg", outside / "secret.jpg")
    (frames / a / "1.jpg").unlink()
    os.symlink(outside / "secret.jpg", frames / a / "1.jpg")
    rc, out, err = index(tree, tmp_path / "m.parquet", capsys)
    assert rc == 0, err
    df = load_manifest(tmp_path / "m.parquet")
    bad = dict(zip(df.loc[df.status == "quarantined", "clip_id"], df.loc[df.status == "quarantined", "reason"],
                   strict=True))
    assert bad == {a: f"outside root: Clip/clip_224x224_16f/{a}/1.jpg resolves to {outside / 'secret.jpg'}"}
    assert "quarantined: 1 clips" in out and "outside root" in out
    assert all(a not in set(fold_split(df, k, r)["clip_id"]) for k in range(1, 6) for r in ("train", "val", "test"))

    mp4 = tree / "Clip" / "original" / f"{b}.mp4"
    shutil.move(mp4, outside / "clip.mp4")
    os.symlink(outside / "clip.mp4", mp4)
    rc = main(["data", "index", "--root", str(tree), "--out", str(tmp_path / "m2.parquet"), "--quiet",
               "--media", "mp4"])
    assert rc == 0
    df = load_manifest(tmp_path / "m2.parquet")
    row = df[df.clip_id == b].iloc[0]
    assert row.status == "quarantined" and row.reason.startswith(f"outside root: Clip/original/{b}.mp4 resolves to")
