"""Terminal tables for run outcomes. Every number says how it was selected."""

from __future__ import annotations

from typing import Any

SELECTION_LABEL = {
    "val": "checkpoint chosen on the inner-val split, test split evaluated once (nested estimate)",
    "test": "checkpoint chosen on the test split itself: paper parity, optimistic (best-on-test)",
}


def _f(v: Any, fmt: str = ".4f") -> str:
    return "-" if v is None else format(v, fmt)


def print_train_outcome(outcome, test: dict[str, Any] | None, *, fold: int, selection: str) -> None:
    print(f"\n{'epoch':>5} {'train_loss':>10} {'val_uar':>8} {'val_war':>8} {'lr':>9} {'clips/s':>8}")
    for row in outcome.history:
        if row.get("val_uar") is None:
            continue
        print(f"{int(row['epoch']):>5} {_f(row.get('train_loss')):>10} {_f(row.get('val_uar')):>8} "
              f"{_f(row.get('val_war')):>8} {_f(row.get('lr'), '.2e'):>9} {_f(row.get('clips_per_s'), '.1f'):>8}")
    if outcome.status != "finished":
        print(f"\nrun {outcome.name} stopped: {outcome.reason}")
        return
    split = "test" if selection == "test" else "inner-val"
    print(f"\nbest epoch {outcome.best_epoch} on {split}: UAR {_f(outcome.best_val.get('val_uar'))} "
          f"WAR {_f(outcome.best_val.get('val_war'))}")
    if test is not None:
        print(f"fold {fold} test: UAR {test['uar']:.4f}  WAR {test['war']:.4f}  ({test['clips']} clips; "
              f"{SELECTION_LABEL[selection]})")
