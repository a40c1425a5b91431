"""The pretext action generator (ifdd/data/pretext.py): deterministic, balanced, motion-carrying, and apart from the
facial-dynamics set (no shared class, no shared code)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import ifdd.data.pretext as pretext
from ifdd.data.manifest import LABEL_NAMES
from ifdd.data.pretext import PRETEXT_CLASSES, data_hash, make_pretext, render_action
from ifdd.data.synth import CLASS_MOTION


def test_same_seed_same_pixels_and_clip_i_does_not_depend_on_the_others():
    a, la = make_pretext(14, frames=8, size=32, seed=3)
    b, lb = make_pretext(14, frames=8, size=32, seed=3)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and data_hash([a, la]) == data_hash([b, lb])
    c, lc = make_pretext(4, frames=8, size=32, seed=3, start=10)
    assert np.array_equal(c, a[10:]) and np.array_equal(lc, la[10:])
    d, _ = make_pretext(14, frames=8, size=32, seed=4)
    assert not np.array_equal(a, d) and data_hash([a, la]) != data_hash([d, la])
    assert a.dtype == np.uint8 and a.shape == (14, 8, 32, 32, 3)


def test_at_least_ten_balanced_classes_none_of_them_a_dfew_class():
    assert len(PRETEXT_CLASSES) >= 10 and len(set(PRETEXT_CLASSES)) == len(PRETEXT_CLASSES)
    assert not {c.lower() for c in PRETEXT_CLASSES} & {c.lower() for c in LABEL_NAMES}
    assert len(CLASS_MOTION) == len(LABEL_NAMES) != len(PRETEXT_CLASSES)
    _, labels = make_pretext(3 * len(PRETEXT_CLASSES), frames=4, size=16)
    assert np.bincount(labels).tolist() == [3] * len(PRETEXT_CLASSES)


def test_generator_shares_no_code_with_the_facial_generator():
    tree = ast.parse(Path(pretext.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("ifdd")}, imported


@pytest.mark.parametrize("label", range(len(PRETEXT_CLASSES)))
def test_every_class_moves_something(label):
    # the class signal is temporal: some frame differs from the first well beyond the per-frame noise (sd 0.01)
    for seed in range(3):
        clip = render_action(label, 16, 48, np.random.default_rng([seed, label])).astype(np.float64) / 255
        change = np.abs(clip - clip[:1]).mean(axis=-1).max(axis=0)  # (S, S): largest change from frame 0
        assert (change > 0.1).sum() >= 20, f"{PRETEXT_CLASSES[label]}: almost nothing moves (seed {seed})"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="label: must be in"):
        render_action(len(PRETEXT_CLASSES), 8, 32, np.random.default_rng(0))
    with pytest.raises(ValueError, match="clips >= 1"):
        make_pretext(0, frames=8, size=32)
    with pytest.raises(ValueError, match="size >= 16"):
        make_pretext(2, frames=8, size=8)
