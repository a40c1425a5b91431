"""What each reported number means: the selection rule that produced it (docs/protocol.md).

``selection: val`` is the nested protocol: trials are ranked on an inner-val split drawn from the fold's training
clips, and the fold's test split is evaluated once, with the chosen checkpoint. ``selection: test`` is paper parity:
trials are ranked on the test split itself, which makes the test figure optimistic.
"""

from __future__ import annotations

SELECTION_LABEL = {
    "val": "checkpoint chosen on the inner-val split, test split evaluated once (nested estimate)",
    "test": "checkpoint chosen on the test split itself: paper parity, optimistic (best-on-test)",
}
