"""Per-clip augmentation (shared by all frames), the HSV hue shift, and mixup/cutmix with label smoothing."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from ifdd.data.transforms import (
    EvalTransform,
    MixupCutmix,
    TrainTransform,
    _shift_hue,
    random_resized_crop_box,
    to_float_video,
)


def test_to_float_video_layout_and_range():
    clip = np.random.default_rng(0).integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    x = to_float_video(clip)
    assert x.shape == (3, 4, 6, 5) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.allclose(x, torch.from_numpy(clip).permute(3, 0, 1, 2).float() / 255)
    flipped = to_float_video(clip[:, :, ::-1])  # strided views work too
    assert torch.equal(flipped, x.flip(-1))


def test_hue_shift_matches_colorsys():
    rng = np.random.default_rng(0)
    px = rng.random((3, 1, 5, 7)).astype(np.float32)
    px[:, 0, 0, :3] = 0.5  # greys stay grey
    for shift in (0.0, 0.13, -0.4, 0.5):
        got = _shift_hue(torch.from_numpy(px), shift).numpy()
        for i in range(5):
            for j in range(7):
                h, s, v = colorsys.rgb_to_hsv(*px[:, 0, i, j])
                want = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
                assert np.allclose(got[:, 0, i, j], want, atol=1e-5), (shift, i, j)


def test_random_resized_crop_box_bounds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(224, 224, (0.5, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top and top + h <= 224 and 0 <= left and left + w <= 224
        assert 0.5 * 224 * 224 * 0.95 <= h * w <= 224 * 224 and 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02


def test_train_transform_draws_one_set_of_parameters_per_clip():
    frame = np.random.default_rng(1).integers(0, 256, (1, 40, 40, 3), dtype=np.uint8)
    clip = np.repeat(frame, 8, axis=0)  # 8 identical frames
    tf = TrainTransform(32)
    outs = [tf(clip, np.random.default_rng(s)) for s in range(4)]
    for x in outs:
        assert x.shape == (3, 8, 32, 32) and 0 <= x.min() and x.max() <= 1
        assert torch.equal(x[:, :1].expand_as(x), x)  # the same flip/crop/jitter on every frame
    assert not torch.allclose(outs[0], outs[1])  # but different per clip
    assert torch.equal(tf(clip, np.random.default_rng(7)), tf(clip, np.random.default_rng(7)))
    ev = EvalTransform(20)(clip)
    assert ev.shape == (3, 8, 20, 20) and torch.equal(EvalTransform(40)(clip), to_float_video(clip))


def test_mixup_and_cutmix_targets():
    torch.manual_seed(0)
    video = torch.rand(4, 3, 5, 16, 16)
    labels = torch.tensor([0, 1, 2, 6])
    plain = MixupCutmix(7, prob=0.0, label_smoothing=0.1, seed=0)
    v, y = plain(video, labels)
    assert torch.equal(v, video) and torch.allclose(y.sum(1), torch.ones(4))
    assert torch.allclose(y[0, 0], torch.tensor(0.9 + 0.1 / 7)) and torch.allclose(y[0, 1], torch.tensor(0.1 / 7))

    mix = MixupCutmix(7, mixup_alpha=0.8, cutmix_alpha=0.0, seed=1)
    v, y = mix(video, labels)
    lam = mix.last["lam"]
    assert mix.last["kind"] == "mixup" and torch.allclose(v, lam * video + (1 - lam) * video.flip(0))
    assert torch.allclose(y[0, 0], torch.tensor(lam * (0.9 + 0.1 / 7) + (1 - lam) * 0.1 / 7))
    assert torch.allclose(y[0, 6], torch.tensor((1 - lam) * (0.9 + 0.1 / 7) + lam * 0.1 / 7))

    cut = MixupCutmix(7, mixup_alpha=0.0, cutmix_alpha=1.0, seed=2)
    for _ in range(5):
        v, y = cut(video, labels)
        changed = (v != video).any(dim=(0, 1))  # (T, H, W)
        assert torch.equal(changed, changed[:1].expand_as(changed))  # the box spans all frames
        kept = 1 - changed[0].float().mean().item()
        assert cut.last["kind"] == "cutmix" and abs(cut.last["lam"] - kept) < 1e-6  # lambda = kept area
        assert torch.allclose(y.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="expected video"):
        cut(video[0], labels)


def test_switch_prob_picks_both_kinds():
    m = MixupCutmix(7, seed=0)
    kinds = set()
    for _ in range(30):
        m(torch.rand(2, 3, 2, 8, 8), torch.tensor([0, 1]))
        kinds.add(m.last["kind"])
    assert kinds == {"mixup", "cutmix"}
