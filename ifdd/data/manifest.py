"""The DFEW release as shipped -> a validated Parquet clip manifest with per-fold roles (``ifdd data index``).

Reading the release (docs/model.md §11):
- split folders under ``EmoLabel_DataSplit/``: ``train(single-labeled)``, ``train(single_labeled)`` or the renamed
  ``train_single-labeled`` / ``train_single_labeled``; the test side as ``test…`` or the reference repo's ``val…``.
  Each holds ``set_1.csv`` … ``set_5.csv`` with the header ``video_name,label`` (a UTF-8 BOM is accepted);
  ``video_name`` is the integer clip id (zero-padded to 5 here), ``label`` 1–7 becomes 0–6.
- media, one source for the whole dataset (``media="auto"`` takes the first folder present):
  ``frames16`` = ``Clip/clip_224x224_16f/<id>/`` (the 16-frame TIM clips), ``frames`` = ``Clip/clip_224x224/<id>/``,
  ``mp4`` = ``Clip/original/<id>.mp4``. Frames are ordered by the trailing integer of their file names.

Structural problems (a missing split folder or file; a CSV with a wrong header, a wrong column count, a label
outside 1–7, a non-integer id, a duplicate id, a clip in both train and test of a fold or in two test folds, a clip
with two labels) raise ``ValueError``/``FileNotFoundError`` naming the file, the 1-based CSV line and what is wrong.
Per-clip problems (media missing, undecodable, truncated, an empty frame folder, fewer than ``min_frames`` frames,
a path resolving outside the root) make the clip's row ``quarantined`` with its reason: it stays in the manifest
and the summary, and ``fold_split`` never returns it.

Inner validation: for each fold k, the fold's usable training clips are split into inner-train and inner-val,
stratified by label: class c gets floor(f * n_c) val clips plus one more for the classes with the largest
remainders until the total is round(f * N), so every class is within one clip of its share. Which clips is drawn
with ``numpy.random.default_rng([seed, k, c])`` over the sorted ids: identical for the same seed, whatever the
row order.

Manifest schema (one row per clip listed in the split files, sorted by clip_id):

    clip_id      string  5-digit id, e.g. "00042"
    label        int8    0 Happy, 1 Sad, 2 Neutral, 3 Angry, 4 Surprise, 5 Disgust, 6 Fear
    label_name   string  the name of ``label``
    media_path   string  POSIX path relative to the dataset root (never absolute, never "..")
    media_kind   string  "frames" (a frame folder) or "video"
    n_frames     int32   frames in the media (0 when it could not be read)
    height       int32   frame height in pixels (0 when unknown)
    width        int32   frame width in pixels (0 when unknown)
    status       string  "ok" or "quarantined"
    reason       string  "" when ok, else "<category>: <detail>"
    fold1..fold5 string  role in that fold: "train" (inner-train), "val" (inner-val), "test", or "none"

Parquet key-value metadata ``ifdd.manifest`` (JSON): format, version, root (absolute), media source, val_fraction,
seed, min_frames, verify, synthetic, and ``content_sha256`` of the rows; ``load_manifest`` checks all of it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ifdd.data.video import MediaError, probe

__all__ = ["LABEL_NAMES", "NUM_FOLDS", "ROLES", "FOLD_COLUMNS", "SCHEMA", "EXPECTED_DFEW", "MEDIA_SOURCES",
           "SYNTH_MARKER", "build_manifest", "write_manifest", "load_manifest", "fold_split", "class_counts",
           "content_hash", "inner_val_ids", "read_split_csv", "find_split_dirs", "media_root", "listed_ids",
           "split_coverage"]

LABEL_NAMES = ("Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear")
NUM_FOLDS = 5
ROLES = ("train", "val", "test", "none")
FOLD_COLUMNS = tuple(f"fold{k}" for k in range(1, NUM_FOLDS + 1))
SCHEMA = pa.schema(
    [("clip_id", pa.string()), ("label", pa.int8()), ("label_name", pa.string()), ("media_path", pa.string()),
     ("media_kind", pa.string()), ("n_frames", pa.int32()), ("height", pa.int32()), ("width", pa.int32()),
     ("status", pa.string()), ("reason", pa.string())] + [(c, pa.string()) for c in FOLD_COLUMNS])
META_KEY = b"ifdd.manifest"
FORMAT = "ifdd-dfew-manifest"
VERSION = 1
SYNTH_MARKER = "SYNTHETIC.json"
"""Written by ``ifdd data synth`` at the root of a synthetic tree."""

# The real release: 11,697 single-labeled clips in the splits; (train, test) per fold (docs/model.md §11.5).
EXPECTED_DFEW = {1: (9356, 2341), 2: (9356, 2341), 3: (9357, 2340), 4: (9358, 2339), 5: (9361, 2336)}
EXPECTED_DFEW_TOTAL = 11697

SPLIT_DIR = "EmoLabel_DataSplit"
_SPELLINGS = ("{}(single-labeled)", "{}(single_labeled)", "{}_single-labeled", "{}_single_labeled")
TRAIN_DIRS = tuple(s.format("train") for s in _SPELLINGS)
TEST_DIRS = tuple(s.format(p) for p in ("test", "val") for s in _SPELLINGS)
# name -> (folder under the root, media kind, per-clip name pattern)
MEDIA_SOURCES = {
    "frames16": ("Clip/clip_224x224_16f", "frames", "{id}"),
    "frames": ("Clip/clip_224x224", "frames", "{id}"),
    "mp4": ("Clip/original", "video", "{id}.mp4"),
}
HEADER = ("video_name", "label")
_ID = re.compile(r"[0-9]{1,5}")


# Split CSVs ---------------------------------------------------------------------------------------------------
def find_split_dirs(root: Path) -> tuple[Path, Path]:
    """The train and test split folders of a release, in any accepted spelling."""
    base = root / SPLIT_DIR
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: split folder missing (expected {SPLIT_DIR}/ under the dataset root)")
    found = []
    for names, side in ((TRAIN_DIRS, "train"), (TEST_DIRS, "test")):
        hits = [base / n for n in names if (base / n).is_dir()]
        if not hits:
            raise FileNotFoundError(f"{base}: no {side} split folder (expected one of {', '.join(names[:4])}"
                                    f"{', or val…' if side == 'test' else ''})")
        if len(hits) > 1:
            raise ValueError(f"{base}: ambiguous {side} split folders: {', '.join(h.name for h in hits)}")
        found.append(hits[0])
    return found[0], found[1]


def read_split_csv(path: Path) -> list[tuple[str, int, int]]:
    """Rows of one split file as ``(clip_id "00042", label 0–6, line)``; raises on any structural problem."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file missing (expected set_1.csv … set_{NUM_FOLDS}.csv)")
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{path}: UTF-16 text; save the split file as UTF-8")
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM spreadsheet exports add
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, seen = [], {}
    header_done = False
    for cells in reader:
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells) and len(cells) == 1:
            continue  # blank line
        cells = [c.strip() for c in cells]
        if not header_done:
            if tuple(c.lower() for c in cells) != HEADER:
                raise ValueError(f"{path}: row {line}: expected the header 'video_name,label', got '{','.join(cells)}'")
            header_done = True
            continue
        if len(cells) != 2:
            raise ValueError(f"{path}: row {line}: expected 2 columns (video_name,label), got {len(cells)}: "
                             f"'{','.join(cells)}'")
        name, label = cells
        if any(s in name for s in ("/", "\\", "..")):
            raise ValueError(f"{path}: row {line}: video_name '{name}' is a path; expected an integer clip id")
        if not _ID.fullmatch(name) or int(name) == 0:
            raise ValueError(f"{path}: row {line}: video_name '{name}' is not an integer clip id in 1..99999")
        if not re.fullmatch(r"[0-9]+", label) or not 1 <= int(label) <= 7:
            raise ValueError(f"{path}: row {line}: label '{label}' is not an integer in 1..7"
                             + (" (0 marks a clip that is not single-labeled)" if label == "0" else ""))
        clip_id = f"{int(name):05d}"
        if clip_id in seen:
            raise ValueError(f"{path}: row {line}: duplicate clip {clip_id} (also on row {seen[clip_id]})")
        seen[clip_id] = line
        rows.append((clip_id, int(label) - 1, line))
    if not header_done:
        raise ValueError(f"{path}: row 1: empty file; expected the header 'video_name,label'")
    if not rows:
        raise ValueError(f"{path}: no clips listed")
    return rows


def read_splits(root: Path) -> tuple[dict[str, int], dict[str, list[str]]]:
    """All ten split files -> (label per clip, official role per fold: "train" / "test" / "none")."""
    train_dir, test_dir = find_split_dirs(root)
    labels: dict[str, tuple[int, str]] = {}
    roles: dict[str, list[str]] = {}
    test_where: dict[str, str] = {}
    for k in range(1, NUM_FOLDS + 1):
        in_fold: dict[str, str] = {}
        for side, folder in (("train", train_dir), ("test", test_dir)):
            path = folder / f"set_{k}.csv"
            for clip_id, label, line in read_split_csv(path):
                where = f"{path}: row {line}"
                if clip_id in labels and labels[clip_id][0] != label:
                    prev = labels[clip_id]
                    raise ValueError(f"{where}: clip {clip_id} has label {label + 1} here but {prev[0] + 1} "
                                     f"at {prev[1]}")
                labels.setdefault(clip_id, (label, where))
                if clip_id in in_fold:
                    raise ValueError(f"{where}: clip {clip_id} is in both train and test of fold {k} "
                                     f"(also at {in_fold[clip_id]})")
                in_fold[clip_id] = where
                if side == "test":
                    if clip_id in test_where:
                        raise ValueError(f"{where}: clip {clip_id} is in two test folds (also at "
                                         f"{test_where[clip_id]})")
                    test_where[clip_id] = where
                roles.setdefault(clip_id, ["none"] * NUM_FOLDS)[k - 1] = side
    return {c: lab for c, (lab, _) in labels.items()}, roles


# Media --------------------------------------------------------------------------------------------------------
def media_root(root: Path, media: str) -> tuple[str, str, str]:
    """(source name, folder relative to root, kind) for ``media`` in auto|frames16|frames|mp4."""
    if media == "auto":
        for name, (folder, kind, _) in MEDIA_SOURCES.items():
            if (root / folder).is_dir():
                return name, folder, kind
        expected = ", ".join(f"{f}/" for f, _, _ in MEDIA_SOURCES.values())
        raise FileNotFoundError(f"{root}: no clip media found (expected one of {expected})")
    if media not in MEDIA_SOURCES:
        raise ValueError(f"media: must be auto or one of {', '.join(MEDIA_SOURCES)}, got {media!r}")
    folder, kind, _ = MEDIA_SOURCES[media]
    if not (root / folder).is_dir():
        raise FileNotFoundError(f"{root / folder}: media folder missing (--media {media})")
    return media, folder, kind


def _probe_row(root: Path, real_root: Path, rel: str, kind: str, min_frames: int, full: bool) -> dict[str, Any]:
    path = root / rel
    out = {"n_frames": 0, "height": 0, "width": 0, "status": "quarantined", "reason": ""}
    if not (path.is_dir() if kind == "frames" else path.is_file()):
        out["reason"] = f"missing media: {rel}"
        return out
    if not path.resolve().is_relative_to(real_root):
        out["reason"] = f"outside root: {rel} resolves to {path.resolve()}"
        return out
    if kind == "frames":  # a frame file linked out of the root is as foreign as a linked folder
        for f in sorted(path.iterdir()):
            if not f.resolve().is_relative_to(real_root):
                out["reason"] = f"outside root: {rel}/{f.name} resolves to {f.resolve()}"
                return out
    try:
        info = probe(path, kind, full=full)
    except MediaError as e:
        out["reason"] = f"{e.category}: {str(e).replace(str(root) + os.sep, '')}"
        return out
    out.update(n_frames=info.n_frames, height=info.height, width=info.width)
    if info.n_frames < min_frames:
        out["reason"] = f"too few frames: {rel} has {info.n_frames}, fewer than the {min_frames} requested"
        return out
    out["status"] = "ok"
    return out


# Inner validation split ---------------------------------------------------------------------------------------
def inner_val_ids(ids_by_label: dict[int, list[str]], fraction: float, seed: int, fold: int) -> set[str]:
    """Stratified, seeded inner-val clip ids of one fold (rule in the module docstring)."""
    shares = {c: fraction * len(ids) for c, ids in ids_by_label.items()}
    total = math.floor(sum(shares.values()) + 0.5)
    n_val = {c: math.floor(s) for c, s in shares.items()}
    by_remainder = sorted(shares, key=lambda c: (-(shares[c] - n_val[c]), c))
    for c in by_remainder[: max(0, total - sum(n_val.values()))]:
        n_val[c] += 1
    out: set[str] = set()
    for c, ids in ids_by_label.items():
        order = np.random.default_rng([seed, fold, c]).permutation(len(ids))
        ordered = sorted(ids)
        out.update(ordered[i] for i in order[: n_val[c]])
    return out


# Build / write / load -----------------------------------------------------------------------------------------
def build_manifest(root: str | Path, *, media: str = "auto", val_fraction: float = 0.1, seed: int = 0,
                   min_frames: int = 16, verify: str = "quick", workers: int | None = None,
                   progress: Callable | None = None) -> pd.DataFrame:
    """Read and check a DFEW tree; returns the manifest DataFrame (its metadata in ``df.attrs["ifdd"]``).

    Args:
        progress: wraps the per-clip iterator, e.g. ``lambda it, total: tqdm(it, total=total)``.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: must be in [0, 1), got {val_fraction}")
    if min_frames < 1:
        raise ValueError(f"min_frames: must be >= 1, got {min_frames}")
    if verify not in ("quick", "full"):
        raise ValueError(f"verify: must be quick or full, got {verify!r}")
    labels, roles = read_splits(root)
    source, folder, kind = media_root(root, media)
    pattern = MEDIA_SOURCES[source][2]
    ids = sorted(labels)
    rels = [f"{folder}/{pattern.format(id=c)}" for c in ids]
    real_root = root.resolve()

    def one(rel: str) -> dict[str, Any]:
        return _probe_row(root, real_root, rel, kind, min_frames, verify == "full")

    n_workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:  # decord and PIL decode without the GIL
        results = pool.map(one, rels)
        probed = list(progress(results, len(rels)) if progress else results)

    df = pd.DataFrame({
        "clip_id": ids,
        "label": np.array([labels[c] for c in ids], dtype=np.int8),
        "label_name": [LABEL_NAMES[labels[c]] for c in ids],
        "media_path": rels,
        "media_kind": kind,
        "n_frames": np.array([p["n_frames"] for p in probed], dtype=np.int32),
        "height": np.array([p["height"] for p in probed], dtype=np.int32),
        "width": np.array([p["width"] for p in probed], dtype=np.int32),
        "status": [p["status"] for p in probed],
        "reason": [p["reason"] for p in probed],
    })
    ok = dict(zip(ids, df["status"].eq("ok"), strict=True))
    for k in range(1, NUM_FOLDS + 1):
        role = [roles[c][k - 1] for c in ids]
        by_label: dict[int, list[str]] = {}
        for c, r in zip(ids, role, strict=True):
            if r == "train" and ok[c]:
                by_label.setdefault(labels[c], []).append(c)
        val = inner_val_ids(by_label, val_fraction, seed, k)
        df[f"fold{k}"] = ["val" if c in val else r for c, r in zip(ids, role, strict=True)]
    df.attrs["ifdd"] = {
        "format": FORMAT, "version": VERSION, "root": str(root), "media": source, "val_fraction": val_fraction,
        "seed": seed, "min_frames": min_frames, "verify": verify, "synthetic": (root / SYNTH_MARKER).is_file(),
        "content_sha256": content_hash(df),
    }
    return df


def content_hash(df: pd.DataFrame) -> str:
    """sha256 of the rows in schema order (CSV text), so any edit after indexing is detected."""
    text = df[SCHEMA.names].to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the manifest atomically (temp file + rename) with its metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(df.attrs["ifdd"], content_sha256=content_hash(df))
    table = pa.Table.from_pandas(df[SCHEMA.names], schema=SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give the manifest's file name")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest; ``df.attrs["ifdd"]`` holds its metadata, ``df.attrs["path"]`` the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a manifest, a column or row that breaks the schema (the message names the data row,
            1-based), or rows that no longer match the content hash written by the index.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (write one with `ifdd data index`)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())[:120]})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{path}: no ifdd.manifest metadata; not written by `ifdd data index`")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported manifest format {meta.get('format')!r} v{meta.get('version')}")
    for field in SCHEMA:
        if field.name not in table.column_names:
            raise ValueError(f"{path}: column {field.name} missing")
        if table.schema.field(field.name).type != field.type:
            raise ValueError(f"{path}: column {field.name}: expected {field.type}, got "
                             f"{table.schema.field(field.name).type}")
    df = table.select(SCHEMA.names).to_pandas()
    _check_rows(df, path)
    if content_hash(df) != meta.get("content_sha256"):
        raise ValueError(f"{path}: content hash mismatch; the rows were changed after `ifdd data index` wrote them")
    df.attrs["ifdd"] = meta
    df.attrs["path"] = str(path)
    return df


def _check_rows(df: pd.DataFrame, path: Path) -> None:
    def fail(mask: pd.Series, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask.to_numpy())[0])
            raise ValueError(f"{path}: row {i + 1}: {what} (clip_id {df['clip_id'].iloc[i]!r})")

    fail(~df["clip_id"].str.fullmatch(r"[0-9]{5}"), "clip_id is not a 5-digit id")
    fail(df["clip_id"].duplicated(), "duplicate clip_id")
    fail(~df["label"].between(0, len(LABEL_NAMES) - 1), "label outside 0..6")
    names = df["label"].clip(0, len(LABEL_NAMES) - 1).map(dict(enumerate(LABEL_NAMES)))
    fail(df["label_name"] != names, "label_name does not match label")
    mp = df["media_path"]
    fail(mp.str.startswith("/") | mp.str.contains("\\", regex=False) | mp.str.contains(r"(?:^|/)\.\.(?:/|$)")
         | mp.eq(""), "media_path must be a relative path inside the dataset root (no '..', not absolute)")
    fail(~df["media_kind"].isin(["frames", "video"]), "media_kind must be frames or video")
    fail(~df["status"].isin(["ok", "quarantined"]), "status must be ok or quarantined")
    fail(df["status"].eq("ok") != df["reason"].eq(""), "reason must be empty exactly when status is ok")
    for col in FOLD_COLUMNS:
        fail(~df[col].isin(ROLES), f"{col} must be one of {', '.join(ROLES)}")


def fold_split(df: pd.DataFrame, fold: int, role: str) -> pd.DataFrame:
    """Usable (status ok) clips of ``role`` in ``fold``: train (inner-train), val (inner-val), test, or trainval
    (the official training split = train ∪ val, for best-on-test paper parity)."""
    if not 1 <= fold <= NUM_FOLDS:
        raise ValueError(f"fold: must be 1..{NUM_FOLDS}, got {fold}")
    roles = {"train": ["train"], "val": ["val"], "test": ["test"], "trainval": ["train", "val"]}
    if role not in roles:
        raise ValueError(f"role: must be one of {', '.join(roles)}, got {role!r}")
    out = df[df["status"].eq("ok") & df[f"fold{fold}"].isin(roles[role])].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out


def class_counts(df: pd.DataFrame, num_classes: int = len(LABEL_NAMES)) -> list[int]:
    """Clips per label 0..K-1 (e.g. of a training split, for class-balanced losses)."""
    counts = np.bincount(df["label"].to_numpy(dtype=np.int64), minlength=num_classes)
    return [int(c) for c in counts[:num_classes]]


def listed_ids(df: pd.DataFrame, fold: int, role: str) -> set[str]:
    """Every clip the split files list in ``role`` of ``fold``, quarantined ones included (``fold_split`` returns
    only the usable ones): what a leakage check must compare against."""
    if role not in ("train", "val", "test"):
        raise ValueError(f"role: must be train, val or test, got {role!r}")
    return set(df.loc[df[f"fold{fold}"].eq(role), "clip_id"])


def split_coverage(df: pd.DataFrame, fold: int, role: str) -> dict[str, Any]:
    """How many clips of a split an evaluation covers: ``listed`` (in the split files), ``usable`` (evaluated),
    ``quarantined`` (their ids: never evaluated, so not in UAR/WAR) and, on the real release's test splits,
    ``official`` (the release's own count, ``EXPECTED_DFEW``); ``gap`` is True when the evaluated clips fall short
    of the listed or the official count."""
    rows = df[df[f"fold{fold}"].isin(["train", "val"] if role == "trainval" else [role])]
    quarantined = sorted(rows.loc[rows["status"].ne("ok"), "clip_id"])
    official = None
    if role == "test" and not df.attrs.get("ifdd", {}).get("synthetic"):
        official = EXPECTED_DFEW[fold][1]
    usable = len(rows) - len(quarantined)
    return {"listed": len(rows), "usable": usable, "quarantined": quarantined, "official": official,
            "gap": usable < len(rows) or (official is not None and usable != official)}
