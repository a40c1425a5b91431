"""Bad inputs, one test each: structural problems exit 2 with `error: <file>: row <n>: …`; per-clip problems become
quarantined rows with their reason, counted in the summary, and never reach a dataset split."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ifdd.data.dataset import ClipDataset
from ifdd.data.manifest import fold_split, load_manifest
from orchestrator.cli import main


def csv_path(root: Path, side: str = "train", fold: int = 1) -> Path:
    return root / "EmoLabel_DataSplit" / f"{side}(single-labeled)" / f"set_{fold}.csv"


def edit_csv(path: Path, line: int, text: str | None) -> None:
    """Replace 1-based ``line`` with ``text`` (None deletes it)."""
    lines = path.read_text().splitlines()
    if text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


def index(root: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    rc = main(["data", "index", "--root", str(root), "--out", str(tmp_path / "m.parquet"), "--quiet", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def expect_error(root: Path, tmp_path: Path, capsys, *needles: str) -> str:
    rc, _, err = index(root, tmp_path, capsys)
    assert rc == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: "), err
    for n in needles:
        assert n in line, line
    assert not (tmp_path / "m.parquet").exists()
    return line


# Structural problems -> exit 2 ---------------------------------------------------------------------------------
def test_missing_split_folder(tree, tmp_path, capsys):
    shutil.rmtree(tree / "EmoLabel_DataSplit" / "test(single-labeled)")
    expect_error(tree, tmp_path, capsys, "EmoLabel_DataSplit", "no test split folder")


def test_missing_split_file(tree, tmp_path, capsys):
    csv_path(tree, "train", 4).unlink()
    expect_error(tree, tmp_path, capsys, "set_4.csv", "split file missing")


def test_wrong_header(tree, tmp_path, capsys):
    edit_csv(csv_path(tree), 1, "id,label")
    expect_error(tree, tmp_path, capsys, "set_1.csv: row 1:", "expected the header 'video_name,label'", "'id,label'")


def test_extra_columns(tree, tmp_path, capsys):
    path = csv_path(tree, "test", 2)
    first = path.read_text().splitlines()[2]
    edit_csv(path, 3, first + ",extra")
    expect_error(tree, tmp_path, capsys, "test(single-labeled)/set_2.csv: row 3:", "expected 2 columns", "got 3")


def test_bom_is_accepted_and_utf16_is_not(tree, tmp_path, capsys):
    rc, _, _ = index(tree, tmp_path, capsys)
    before = load_manifest(tmp_path / "m.parquet")
    path = csv_path(tree, "train", 3)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # spreadsheet exports add a UTF-8 BOM
    rc, out, err = index(tree, tmp_path, capsys)
    assert rc == 0, err
    assert load_manifest(tmp_path / "m.parquet").equals(before)
    path.write_bytes(path.read_bytes()[3:].decode().encode("utf-16"))
    (tmp_path / "m.parquet").unlink()
    expect_error(tree, tmp_path, capsys, "set_3.csv", "UTF-16")


@pytest.mark.parametrize("label", ["0", "8"])
def test_label_out_of_range(tree, tmp_path, capsys, label):
    path = csv_path(tree, "test", 5)
    vid = path.read_text().splitlines()[4].split(",")[0]
    edit_csv(path, 5, f"{vid},{label}")
    line = expect_error(tree, tmp_path, capsys, "set_5.csv: row 5:", f"label '{label}' is not an integer in 1..7")
    assert ("not single-labeled" in line) == (label == "0")


def test_non_integer_id(tree, tmp_path, capsys):
    edit_csv(csv_path(tree), 2, "clip_7,3")
    expect_error(tree, tmp_path, capsys, "set_1.csv: row 2:", "video_name 'clip_7' is not an integer clip id")


def test_duplicate_id(tree, tmp_path, capsys):
    path = csv_path(tree, "train", 2)
    lines = path.read_text().splitlines()
    edit_csv(path, 6, lines[1])
    vid = int(lines[1].split(",")[0])
    expect_error(tree, tmp_path, capsys, "set_2.csv: row 6:", f"duplicate clip {vid:05d}", "also on row 2")


def test_clip_in_train_and_test_of_one_fold(tree, tmp_path, capsys):
    test_line = csv_path(tree, "test", 1).read_text().splitlines()[1]
    with csv_path(tree, "train", 1).open("a") as f:
        f.write(test_line + "\n")
    vid = int(test_line.split(",")[0])
    expect_error(tree, tmp_path, capsys, "test(single-labeled)/set_1.csv: row 2:",
                 f"clip {vid:05d} is in both train and test of fold 1")


def test_name_with_dotdot_is_rejected(tree, tmp_path, capsys):
    edit_csv(csv_path(tree, "test", 3), 2, "../00001,1")
    expect_error(tree, tmp_path, capsys, "set_3.csv: row 2:", "video_name '../00001' is a path")


# Per-clip problems -> quarantined rows -------------------------------------------------------------------------
def quarantine(tree: Path, tmp_path: Path, capsys, *extra: str) -> tuple[str, dict[str, str]]:
    rc, out, err = index(tree, tmp_path, capsys, *extra)
    assert rc == 0, err
    df = load_manifest(tmp_path / "m.parquet")
    bad = df[df["status"] == "quarantined"]
    for k in range(1, 6):  # never in a usable split, but still in the manifest
        for role in ("train", "val", "test"):
            assert not set(bad["clip_id"]) & set(fold_split(df, k, role)["clip_id"])
    ds = ClipDataset(df, 1, "trainval")
    assert not set(bad["clip_id"]) & set(ds.clip_ids)
    return out, dict(zip(bad["clip_id"], bad["reason"], strict=True))


def some_ids(tree: Path, n: int = 1) -> list[str]:
    return sorted(p.stem for p in (tree / "Clip" / "original").glob("*.mp4"))[:n]


def test_missing_media(tree, tmp_path, capsys):
    cid = some_ids(tree)[0]
    shutil.rmtree(tree / "Clip" / "clip_224x224_16f" / cid)
    out, bad = quarantine(tree, tmp_path, capsys)
    assert bad == {cid: f"missing media: Clip/clip_224x224_16f/{cid}"}
    assert "quarantined: 1 clips" in out and "missing media" in out and cid in out


def test_truncated_mp4(tree, tmp_path, capsys):
    cid = some_ids(tree)[0]
    path = tree / "Clip" / "original" / f"{cid}.mp4"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out, bad = quarantine(tree, tmp_path, capsys, "--media", "mp4")
    assert list(bad) == [cid] and bad[cid].startswith("undecodable media: cannot ")
    assert "undecodable media" in out


def test_text_file_named_mp4(tree, tmp_path, capsys):
    cid = some_ids(tree)[0]
    (tree / "Clip" / "original" / f"{cid}.mp4").write_text("this is not a video\n")
    _, bad = quarantine(tree, tmp_path, capsys, "--media", "mp4")
    assert list(bad) == [cid] and "cannot open video Clip/original/" in bad[cid]


def test_empty_frame_folder(tree, tmp_path, capsys):
    cid = some_ids(tree)[0]
    folder = tree / "Clip" / "clip_224x224_16f" / cid
    for f in folder.iterdir():
        f.unlink()
    out, bad = quarantine(tree, tmp_path, capsys)
    assert bad == {cid: f"empty frame folder: empty frame folder Clip/clip_224x224_16f/{cid}"}
    assert "empty frame folder" in out


def test_fewer_frames_than_requested(tree, tmp_path, capsys):
    cid = some_ids(tree)[0]
    for n in range(10, 17):
        (tree / "Clip" / "clip_224x224_16f" / cid / f"{n}.jpg").unlink()
    _, bad = quarantine(tree, tmp_path, capsys)
    assert bad == {cid: f"too few frames: Clip/clip_224x224_16f/{cid} has 9, fewer than the 16 requested"}
    _, bad = quarantine(tree, tmp_path, capsys, "--min-frames", "8")
    assert bad == {}


def test_jpeg_that_is_not_an_image_and_a_link_out_of_the_root(tree, tmp_path, capsys):
    a, b = some_ids(tree, 2)
    (tree / "Clip" / "clip_224x224_16f" / a / "7.jpg").write_text("not a jpeg")
    outside = tmp_path / "outside"
    shutil.move(tree / "Clip" / "clip_224x224_16f" / b, outside)
    os.symlink(outside, tree / "Clip" / "clip_224x224_16f" / b)
    _, bad = quarantine(tree, tmp_path, capsys)
    assert bad[a].startswith("undecodable media: not a readable image: Clip/clip_224x224_16f/")
    assert bad[b].startswith(f"outside root: Clip/clip_224x224_16f/{b} resolves to")
