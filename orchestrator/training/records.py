"""What a Train run's checkpoint says about its selection besides the weights: the per-clip predictions of its best
epoch on the selection split (``selection.json``), which the search needs to choose a config on any subset of those
clips (the leave-fold-out choice of a cross-fold study, docs/protocol.md), and the per-rank RNG files.

``selection.json`` (plain JSON, beside ``state.pt``/``best.pt`` in every checkpoint)::

    {"fingerprint": {fold, selection, config_sha256, manifest_sha256}, "split": "val" | "test",
     "epoch": <best epoch>, "clip_id": [...], "pred": [...], "label": [...]}

``pred`` is the arg-max class of each clip's logits, ``label`` its true class, one entry per unique clip, so the
best epoch's UAR/WAR on any subset of the split can be recomputed exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SELECTION_FILE = "selection.json"


def rng_file(rank: int) -> str:
    """Each data-parallel rank keeps its own RNG state in the checkpoint (they share the directory)."""
    return f"rng_rank{rank}.pt"


def records_payload(records: list[tuple[str, list[float], int]]) -> dict[str, list]:
    """``ifdd.engine.evaluate``'s records (clip_id, logits, label), first occurrence of each clip kept (as evaluate
    does), as the columns of ``selection.json``."""
    seen: dict[str, tuple[int, int]] = {}
    for cid, logits, label in records:
        if cid not in seen:
            seen[cid] = (max(range(len(logits)), key=lambda i: (logits[i], -i)), int(label))
    return {"clip_id": list(seen), "pred": [p for p, _ in seen.values()], "label": [y for _, y in seen.values()]}


def write_selection(directory: Path, fingerprint: dict[str, Any], split: str, epoch: int,
                    records: dict[str, list]) -> None:
    (directory / SELECTION_FILE).write_text(json.dumps(
        {"fingerprint": fingerprint, "split": split, "epoch": int(epoch), **records}))


def read_selection(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The ``selection.json`` of a checkpoint directory; ValueError naming the file when missing or malformed."""
    path = Path(checkpoint_dir) / SELECTION_FILE
    if not path.is_file():
        raise ValueError(f"{path}: missing: the checkpoint holds no per-clip selection records (written by an older "
                         "ifdd?); start the study over with --fresh")
    try:
        doc = json.loads(path.read_text())
        n = len(doc["clip_id"])
        if len(doc["pred"]) != n or len(doc["label"]) != n or not isinstance(doc["fingerprint"], dict):
            raise ValueError("columns of different lengths")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a valid selection record ({e})") from None
    return doc
