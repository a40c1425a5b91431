"""Frame sampling, frame ordering, and decoding of JPEG folders and mp4s."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ifdd.data.synth import render_clip, write_mp4
from ifdd.data.video import MediaError, frame_number, list_frames, load_clip, probe, read_clip, sample_indices


def test_uniform_sampling_takes_every_frame_spreads_or_stretches():
    assert sample_indices(16, 16).tolist() == list(range(16))
    idx = sample_indices(100, 16)
    assert len(idx) == 16 and idx[0] >= 0 and idx[-1] <= 99 and (np.diff(idx) > 0).all()
    assert np.ptp(np.diff(idx)) <= 1  # evenly spaced
    # shorter than T: every frame repeated evenly, in order
    assert sample_indices(8, 16).tolist() == [i // 2 for i in range(16)]
    counts = np.bincount(sample_indices(5, 16), minlength=5)
    assert counts.sum() == 16 and counts.max() - counts.min() <= 1 and (np.diff(sample_indices(5, 16)) >= 0).all()


def test_random_window_is_contiguous_and_inside_the_clip():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(50):
        idx = sample_indices(40, 16, "random", rng)
        assert (np.diff(idx) == 1).all() and idx[0] >= 0 and idx[-1] <= 39
        starts.add(int(idx[0]))
    assert len(starts) > 5
    assert sample_indices(10, 16, "random", rng).tolist() == sample_indices(10, 16).tolist()  # stretched
    with pytest.raises(ValueError, match="sampling"):
        sample_indices(10, 4, "middle")


def test_frames_are_ordered_by_their_trailing_integer(tmp_path):
    assert frame_number("00012_7.jpg") == 7 and frame_number("3.jpg") == 3 and frame_number("a.jpg") is None
    folder = tmp_path / "00012"
    folder.mkdir()
    for n in range(1, 12):  # values encode the frame number; lexical order would put 10, 11 before 2
        Image.fromarray(np.full((8, 8, 3), n * 20, np.uint8)).save(folder / f"00012_{n}.png")
    (folder / "Thumbs.db").write_bytes(b"\0")
    assert [p.name for p in list_frames(folder)][:4] == ["00012_1.png", "00012_2.png", "00012_3.png", "00012_4.png"]
    clip = read_clip(folder, "frames", 11)
    assert clip[:, 0, 0, 0].tolist() == [n * 20 for n in range(1, 12)]
    (folder / "01.png").write_bytes((folder / "00012_1.png").read_bytes())
    with pytest.raises(MediaError, match="two frame files with number 1"):
        list_frames(folder)


def test_mp4_and_jpeg_decode_the_same_clip(tmp_path):
    clip = render_clip(4, 16, 40, np.random.default_rng(0))
    write_mp4(tmp_path / "c.mp4", clip)
    folder = tmp_path / "f"
    folder.mkdir()
    for n, f in enumerate(clip, 1):
        Image.fromarray(f).save(folder / f"{n}.jpg", quality=95)
    video, frames = read_clip(tmp_path / "c.mp4", "video", 16), read_clip(folder, "frames", 16)
    assert video.shape == frames.shape == (16, 40, 40, 3) and video.dtype == np.uint8
    assert np.abs(video.astype(int) - clip).mean() < 10 and np.abs(frames.astype(int) - clip).mean() < 6
    assert probe(tmp_path / "c.mp4", "video", full=True).n_frames == 16
    small = load_clip(tmp_path / "c.mp4", "video", 8, size=24)
    assert small.shape == (8, 24, 24, 3) and small.dtype == np.uint8
    with pytest.raises(MediaError, match="missing video"):
        read_clip(tmp_path / "nope.mp4", "video", 16)
