"""synth -> index round trip, the DFEW reader's accepted spellings, inner-val stratification, the manifest API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ifdd.data.manifest import (
    EXPECTED_DFEW,
    FOLD_COLUMNS,
    LABEL_NAMES,
    build_manifest,
    class_counts,
    fold_split,
    load_manifest,
    write_manifest,
)
from orchestrator.cli import main
from orchestrator.commands.data import format_summary


def read_csv_ids(path: Path) -> dict[str, int]:
    df = pd.read_csv(path, dtype=str)
    return {f"{int(v):05d}": int(lab) - 1 for v, lab in zip(df["video_name"], df["label"], strict=True)}


def test_round_trip_counts_folds_and_inner_val(synth_tree, tmp_path, capsys):
    out = tmp_path / "m.parquet"
    assert main(["data", "index", "--root", str(synth_tree), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "quarantined: none" in printed and "fold role" in printed
    df = load_manifest(out)
    rec = json.loads((synth_tree / "SYNTHETIC.json").read_text())
    assert len(df) == rec["clips"] and (df["status"] == "ok").all()
    assert df["label_name"].value_counts().to_dict() == rec["class_sizes"]
    assert df["clip_id"].str.fullmatch(r"\d{5}").all()
    assert df.attrs["ifdd"]["media"] == "frames16"  # 16f folders preferred when present
    assert (df["n_frames"] == 16).all() and (df["height"] == 32).all()

    all_ids = set(df["clip_id"])
    tests = []
    for k in range(1, 6):
        test = set(fold_split(df, k, "test")["clip_id"])
        train, val = set(fold_split(df, k, "train")["clip_id"]), set(fold_split(df, k, "val")["clip_id"])
        # exactly what synth wrote, and disjoint from the fold's training side
        split = synth_tree / "EmoLabel_DataSplit"
        assert test == set(read_csv_ids(split / "test(single-labeled)" / f"set_{k}.csv"))
        assert train | val == set(read_csv_ids(split / "train(single-labeled)" / f"set_{k}.csv"))
        assert not test & (train | val) and not train & val
        assert fold_split(df, k, "trainval")["clip_id"].tolist() == sorted(train | val)
        # stratified: every class within one clip of its share of the fold's training clips
        tv = fold_split(df, k, "trainval")
        for c in range(len(LABEL_NAMES)):
            n_c = int((tv["label"] == c).sum())
            v_c = int((fold_split(df, k, "val")["label"] == c).sum())
            assert abs(v_c - 0.1 * n_c) <= 1, (k, c, n_c, v_c)
        assert len(val) == round(0.1 * len(tv))
        tests.append(test)
    assert sum(len(t) for t in tests) == len(all_ids) and set().union(*tests) == all_ids  # each clip tested once


def test_inner_val_is_seeded(synth_tree):
    a, b = build_manifest(synth_tree, seed=1), build_manifest(synth_tree, seed=1)
    c = build_manifest(synth_tree, seed=2, val_fraction=0.3)
    assert a[list(FOLD_COLUMNS)].equals(b[list(FOLD_COLUMNS)])
    assert a.attrs["ifdd"]["content_sha256"] == b.attrs["ifdd"]["content_sha256"]
    assert not a[list(FOLD_COLUMNS)].equals(c[list(FOLD_COLUMNS)])
    assert (c["fold1"] == "val").sum() == round(0.3 * (c["fold1"] != "test").sum())


@pytest.mark.parametrize("train_name,test_name", [
    ("train_single-labeled", "val_single-labeled"),        # the reference repo's renamed folders
    ("train(single_labeled)", "test(single_labeled)"),     # the README's spelling
])
def test_accepted_split_folder_spellings(tree, train_name, test_name):
    before = build_manifest(tree)
    split = tree / "EmoLabel_DataSplit"
    (split / "train(single-labeled)").rename(split / train_name)
    (split / "test(single-labeled)").rename(split / test_name)
    after = build_manifest(tree)
    assert after.drop(columns=[]).equals(before)


def test_unpadded_and_padded_ids_and_media_choice(tree):
    path = tree / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv"
    lines = path.read_text().splitlines()
    vid, lab = lines[1].split(",")
    lines[1] = f"{int(vid):05d},{lab}"  # zero-padded form is read as the same clip
    path.write_text("\n".join(lines) + "\n")
    df = build_manifest(tree)
    assert f"{int(vid):05d}" in set(fold_split(df, 1, "test")["clip_id"])
    mp4 = build_manifest(tree, media="mp4")
    assert (mp4["media_kind"] == "video").all() and mp4["media_path"].str.match(r"Clip/original/\d{5}\.mp4").all()
    assert (mp4["status"] == "ok").all() and (mp4["n_frames"] == 16).all()
    shutil.rmtree(tree / "Clip" / "clip_224x224_16f")
    assert build_manifest(tree).attrs["ifdd"]["media"] == "mp4"  # auto falls back to the next source


def test_manifest_schema_metadata_and_class_counts(manifest_path):
    table = pq.read_table(manifest_path)
    meta = json.loads(table.schema.metadata[b"ifdd.manifest"])
    assert meta["format"] == "ifdd-dfew-manifest" and meta["synthetic"] is True and meta["val_fraction"] == 0.1
    assert str(table.schema.field("label").type) == "int8"
    df = load_manifest(manifest_path)
    assert df.attrs["ifdd"]["root"] == meta["root"]
    assert sum(class_counts(fold_split(df, 2, "train"))) == len(fold_split(df, 2, "train"))
    with pytest.raises(ValueError, match="fold: must be 1..5"):
        fold_split(df, 6, "train")
    with pytest.raises(ValueError, match="role: must be one of"):
        fold_split(df, 1, "dev")


def test_load_manifest_rejects_edits_and_escaping_paths(manifest_path, tmp_path):
    df = load_manifest(manifest_path)
    edited = df.copy()
    edited.loc[3, "label"] = (int(edited.loc[3, "label"]) + 1) % 7
    edited.loc[3, "label_name"] = LABEL_NAMES[int(edited.loc[3, "label"])]
    bad = tmp_path / "edited.parquet"
    pq.write_table(pq.read_table(manifest_path).from_pandas(edited, schema=pq.read_table(manifest_path).schema,
                                                            preserve_index=False), bad)
    with pytest.raises(ValueError, match="content hash mismatch"):
        load_manifest(bad)
    escaping = df.copy()
    escaping.loc[4, "media_path"] = "../../etc/passwd"
    escaping.attrs = df.attrs
    path = write_manifest(escaping, tmp_path / "escaping.parquet")  # rehashes: only the path check can catch it
    with pytest.raises(ValueError, match=r"row 5: media_path must be a relative path inside the dataset root"):
        load_manifest(path)
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        load_manifest(tmp_path / "nope.parquet")
    (tmp_path / "text.parquet").write_text("hello")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        load_manifest(tmp_path / "text.parquet")
    assert main(["data", "cache", "--manifest", str(path), "--out", str(tmp_path / "c")]) == 2


def test_summary_compares_with_the_real_release_counts():
    rows = []
    cid = 1
    for k, (_, n_test) in EXPECTED_DFEW.items():
        for _ in range(n_test):
            roles = ["train"] * 5
            roles[k - 1] = "test"
            rows.append({"clip_id": f"{cid:05d}", "label": cid % 7, "status": "ok", "reason": "",
                         **{f"fold{j + 1}": r for j, r in enumerate(roles)}})
            cid += 1
    df = pd.DataFrame(rows)
    df.attrs["ifdd"] = {"root": "/data/DFEW", "media": "frames16", "verify": "quick", "val_fraction": 0.1,
                        "seed": 0, "synthetic": False}
    text = format_summary(df)
    assert "fold 1: expected 9,356/2,341  found 9,356/2,341  ok" in text
    assert "fold 5: expected 9,361/2,336  found 9,361/2,336  ok" in text
    assert "total:  expected 11,697  found 11,697  ok" in text
    df.loc[0, "fold1"] = "none"
    assert "fold 1: expected 9,356/2,341  found 9,356/2,340  DIFFERS" in format_summary(df)
