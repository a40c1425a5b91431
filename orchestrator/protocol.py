"""What each reported number means: the protocol that produced it, and the checks that keep it honest
(docs/protocol.md).

Three protocols, from the space's ``protocol.strategy`` and ``protocol.selection``:

- ``fold-wise-nested`` (fold-wise, ``selection: val``): fold k's study ranks its trials on fold k's inner-val split
  (drawn from fold k's training clips); fold k's test split is evaluated once, with the chosen checkpoint.
- ``cross-fold-nested`` (cross-fold, ``selection: val``): one study trains every trial on every fold; for each fold
  k the config is chosen on the inner-val clips of every fold minus fold k's test clips (leave-fold-out selection),
  and its fold-k model is tested once. DFEW's test splits partition the clips, so another fold's inner-val holds
  about a third of fold k's test clips: they are left out of fold k's choice.
- ``paper-parity`` (``selection: test``, either strategy): the checkpoint is chosen on the test split itself, as
  the reference does: the test figure is optimistic (best on test).

Everything a study or a training run wrote carries a fingerprint (fold(s), selection, config hash, manifest hash);
a resume or a reuse with another fingerprint is refused, naming the difference. Before any test evaluation the
clips that scored the choice are checked against the fold's test clips (``check_leakage``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

PROTOCOLS = {
    "fold-wise-nested": "fold-wise nested: each fold's config and checkpoint chosen on that fold's inner-val split, "
                        "test split evaluated once",
    "cross-fold-nested": "cross-fold nested (leave-fold-out selection): each fold's config chosen on every fold's "
                         "inner-val clips minus that fold's test clips, test split evaluated once",
    "paper-parity": "paper parity (best on test, optimistic): checkpoint chosen on the test split itself",
}
"""protocol key -> the label printed next to every number it produced."""

SLUG = {"fold-wise-nested": "foldwise", "cross-fold-nested": "crossfold", "paper-parity": "parity"}
"""protocol key -> the short form used in registered-model names."""

DEPLOY_LABEL = {
    "val": "deploy choice: the config chosen on every fold's inner-val clips; a choice, not an estimate (no test "
           "split is held out of it)",
    "test": "deploy choice: the config chosen on every fold's test split; a choice, not an estimate (optimistic)",
}
BASE_LABEL = ("base config (the space's `base`, enqueued as every study's first trial): tested once beside the "
              "winner; its test figure plays no part in any choice")


def protocol_key(strategy: str, selection: str) -> str:
    if selection not in ("val", "test"):
        raise ValueError(f"selection: must be 'val' or 'test', got {selection!r}")
    if selection == "test":
        return "paper-parity"
    if strategy not in ("fold-wise", "cross-fold"):
        raise ValueError(f"strategy: must be 'fold-wise' or 'cross-fold', got {strategy!r}")
    return "fold-wise-nested" if strategy == "fold-wise" else "cross-fold-nested"


def label(strategy: str, selection: str) -> str:
    return PROTOCOLS[protocol_key(strategy, selection)]


def is_nested(selection: str) -> bool:
    """Nested exactly when no test clip of a fold scores the choice of what is tested on it."""
    return selection == "val"


def selection_split(selection: str) -> str:
    """The split trials are ranked on: ``inner-val`` (nested) or ``test`` (paper parity)."""
    return "inner-val" if selection == "val" else "test"


def metric_name(name: str, selection: str) -> str:
    """The honest name of a selection-split metric: the worker reports ``val_uar``, ``ckpt_val_war``, … for whatever
    split it selects on; under ``selection: test`` those are test metrics and are logged as ``test_uar``,
    ``ckpt_test_war``, …"""
    if selection != "test":
        return name
    for prefix in ("val_", "ckpt_val_", "selected_val_"):
        if name.startswith(prefix):
            return prefix.replace("val_", "test_") + name[len(prefix):]
    return name


# What a test figure covers ---------------------------------------------------------------------------------

def clip_count(test: dict) -> str:
    """``143 clips`` or, when quarantined clips were never evaluated, ``141 of 143 listed clips``."""
    listed = test.get("listed_clips")
    return f"{test['clips']} clips" if listed in (None, test["clips"]) else f"{test['clips']} of {listed} listed clips"


def test_warnings(test: dict, fold: int, num_classes: int = 7) -> list[str]:
    """What a test figure leaves out: classes absent from the split, quarantined clips, a shortfall against the
    release's official count."""
    out = []
    if test.get("uar_classes") is not None and test["uar_classes"] < num_classes:
        out.append(f"fold {fold} test split holds clips of {test['uar_classes']} of {num_classes} classes: its UAR "
                   f"is the mean recall over those {test['uar_classes']}")
    if test.get("quarantined"):
        out.append(f"fold {fold}: {len(test['quarantined'])} listed test clip(s) are quarantined and not in UAR/WAR "
                   f"({', '.join(test['quarantined'][:5])}{', …' if len(test['quarantined']) > 5 else ''})")
    if test.get("official_clips") is not None and test["clips"] != test["official_clips"]:
        out.append(f"fold {fold}: {test['clips']} test clips evaluated, the official DFEW split has "
                   f"{test['official_clips']}")
    return out


# Fingerprints ---------------------------------------------------------------------------------------------------
UNHASHED = ("data.manifest", "data.root", "data.cache_dir", "data.num_workers", "train.epochs",
            "train.eval_batch_size")
"""Run-config keys left out of the config hash: where the data lives (the manifest hash covers its content), how
fast it loads, and ``train.epochs``, which a resumed ``ifdd train`` may extend (the search's budget is hashed in the
study fingerprint)."""


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_sha256(config: dict[str, Any], extra: Any = None) -> str:
    """sha256 of a run-config dict (``ifdd.config.to_dict``) without the ``UNHASHED`` keys, plus ``extra``."""
    kept = {k: v for k, v in _flat(config).items() if k not in UNHASHED}
    text = json.dumps({"config": kept, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def run_fingerprint(config: dict[str, Any], fold: int, selection: str, manifest_sha256: str) -> dict[str, Any]:
    """What one Train run's checkpoints must agree on to be resumed or tested: fold, selection, config, manifest."""
    return {"fold": int(fold), "selection": selection, "config_sha256": config_sha256(config),
            "manifest_sha256": manifest_sha256}


def _short(v: Any) -> Any:
    return v[:12] + "…" if isinstance(v, str) and len(v) > 16 else v


def fingerprint_diff(saved: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """The differences, as ``key: saved X, now Y`` (hashes shortened); every key when nothing was saved."""
    if not saved:
        return ["no fingerprint saved (written by an older ifdd)"]
    out = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k), current.get(k)
        if a != b:
            out.append(f"{k}: saved {_short(a)}, now {_short(b)}")
    return out


def check_fingerprint(saved: dict[str, Any] | None, current: dict[str, Any], what: str, fix: str) -> None:
    """Raise ``ValueError`` naming every difference between a saved fingerprint and the current one."""
    diff = fingerprint_diff(saved, current)
    if diff:
        raise ValueError(f"{what} was made under another protocol or input ({'; '.join(diff)}); refusing to resume "
                         f"or reuse it: {fix}")


# The leakage check ----------------------------------------------------------------------------------------------
class LeakageError(ValueError):
    """A nested estimate whose choice was scored on clips of the test split it reports."""


def check_leakage(selection_clips: Iterable[str], test_clips: Iterable[str], *, selection: str, fold: int) -> int:
    """Overlap between the clips that scored the choice of what is about to be tested on ``fold`` and the fold's
    listed test clips. Under ``selection: val`` any overlap is an error (the number would be called nested); under
    ``selection: test`` the overlap is the test split itself, and the number is labelled paper parity."""
    overlap = set(selection_clips) & set(test_clips)
    if overlap and is_nested(selection):
        shown = ", ".join(sorted(overlap)[:5])
        raise LeakageError(f"fold {fold}: {len(overlap)} of the clips that chose the checkpoint to test are in fold "
                           f"{fold}'s test split (e.g. {shown}); the test figure would not be a nested estimate, so "
                           "nothing is tested")
    return len(overlap)
