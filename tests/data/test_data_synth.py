"""`ifdd data synth`: DFEW layout, imbalance, disjoint folds, determinism, and a purely temporal class signal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ifdd.data.synth import DFEW_SHARES, class_sizes, render_clip, write_synthetic
from orchestrator.cli import main


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_class_imbalance(synth_tree):
    assert (synth_tree / "Clip" / "original").is_dir() and (synth_tree / "Annotation" / "annotation.csv").is_file()
    frames = sorted((synth_tree / "Clip" / "clip_224x224_16f").iterdir())
    assert len(frames) == 37 and all(len(p.name) == 5 for p in frames)
    assert sorted(p.name for p in frames[0].iterdir()) == sorted(f"{n}.jpg" for n in range(1, 17))
    for side in ("train", "test"):
        for k in range(1, 6):
            text = (synth_tree / "EmoLabel_DataSplit" / f"{side}(single-labeled)" / f"set_{k}.csv").read_text()
            assert text.startswith("video_name,label\n")
    sizes = class_sizes(60)
    assert sizes.index(min(sizes)) == 5 and min(sizes) == 25  # Disgust rarest, floored at 5 per test fold
    assert abs(sum(sizes) - 440) < 5 and sizes[2] > sizes[0] > sizes[3] > sizes[1] > sizes[4] > sizes[6]
    assert class_sizes(1000, 25) == [round(s * 7000) for s in DFEW_SHARES]


def test_same_seed_same_bytes(tmp_path, capsys):
    argv = ["--clips-per-class", "1", "--min-per-class", "5", "--frames", "4", "--size", "32", "--format", "both",
            "--quiet"]
    assert main(["data", "synth", "--out", str(tmp_path / "a"), "--seed", "4", *argv]) == 0
    assert "wrote 35 synthetic clips" in capsys.readouterr().out
    assert main(["data", "synth", "--out", str(tmp_path / "b"), "--seed", "4", *argv]) == 0
    assert main(["data", "synth", "--out", str(tmp_path / "c"), "--seed", "5", *argv]) == 0
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 35 * (4 + 1) + 10 + 2
    assert a != c
    assert main(["data", "synth", "--out", str(tmp_path / "a"), "--seed", "4", *argv]) == 0  # rewrite in place
    assert tree_digest(tmp_path / "a") == a
    capsys.readouterr()
    assert main(["data", "synth", "--out", str(tmp_path / "a" / "Clip"), *argv]) == 2
    assert "holds no SYNTHETIC.json" in capsys.readouterr().err


def test_single_frames_carry_no_class_information_but_motion_does():
    """Per class, the distribution of one frame's pixels is the same; frame-to-frame change is not."""
    rng = np.random.default_rng(0)
    stats = {}
    for label in range(7):
        clips = np.stack([render_clip(label, 16, 32, np.random.default_rng([11, label, i])) for i in range(60)])
        x = clips.astype(np.float32) / 255.0  # (N, T, H, W, 3)
        one = x[np.arange(60), rng.integers(0, 16, 60)]  # one random frame per clip
        motion = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3, 4))  # (N,)
        stats[label] = (one.mean(), one.std(), motion.mean())
    means = np.array([s[0] for s in stats.values()])
    assert np.ptp(means) < 0.05  # appearance is random and the same across classes
    moving = [stats[c][2] for c in (0, 1, 3, 4, 5, 6)]
    assert min(moving) > 1.15 * stats[2][2]  # Neutral is the only still class
    assert stats[5][2] > stats[0][2]  # the head shake moves more pixels than the mouth


@pytest.mark.parametrize("argv,needle", [
    (["--format", "gif"], "invalid choice"),
    (["--size", "31"], "size: must be even and >= 16"),
    (["--min-per-class", "2"], "min_per_class >= 5"),
])
def test_synth_argument_errors(tmp_path, capsys, argv, needle):
    try:
        rc = main(["data", "synth", "--out", str(tmp_path / "x"), "--quiet", *argv])
    except SystemExit as e:  # argparse choices
        rc = e.code
    assert rc == 2 and needle in capsys.readouterr().err


def test_write_synthetic_rejects_a_frame_count_without_motion(tmp_path):
    with pytest.raises(ValueError, match="frames: must be >= 2"):
        write_synthetic(tmp_path / "x", frames=1)
