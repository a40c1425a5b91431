"""The training augmentation's two paths, per clip in the DataLoader (``TrainTransform``) and in batch on the training
device (``BatchTrainAugment`` on uint8 clips), against the implementation before (tests/transforms_reference.py):
the same seed gives the same floats on every path, the parameters keep their distribution, and the loaders wire the
device path (uint8 samples, the batch hook) when asked to."""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from ifdd.data.dataset import ClipDataset
from ifdd.data.transforms import BatchTrainAugment, MixupCutmix, TrainTransform
from ifdd.pipeline import build_split_loaders, resolve_augment_on
from ifdd.runconfig import run_config_from_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from transforms_reference import ReferenceTrainTransform  # noqa: E402


def _clips(n: int, size: int, frames: int = 4, seed: int = 0) -> np.ndarray:
    # Smooth colourful clips (a gradient per channel plus noise), uint8 (n, T, H, W, 3)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([yy, xx, 1 - yy * xx], -1)[None, None]  # (1, 1, H, W, 3)
    noise = rng.random((n, frames, size, size, 3)) * 0.5
    return (np.clip(base * 0.7 + noise, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("source,out", [(24, 32), (48, 32), (32, 32)])  # enlarge, shrink (antialiased), same size
def test_same_seed_same_floats_on_every_path(source, out):
    clips = _clips(6, source)
    ref, new = ReferenceTrainTransform(out), TrainTransform(out)
    for i, clip in enumerate(clips):
        want = ref(clip, np.random.default_rng(i))
        got = new(clip, np.random.default_rng(i))
        assert got.shape == want.shape == (3, 4, out, out)
        torch.testing.assert_close(got, want, rtol=0, atol=2e-5)
    # The batch path: its own RNG draws clip after clip, as one generator feeding the reference clip after clip.
    rng = np.random.default_rng(7)
    want = torch.stack([ref(clip, rng) for clip in clips])
    video = torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 4, 1, 2, 3)))  # (B, 3, T, H, W) uint8
    aug = BatchTrainAugment(TrainTransform(out), seed=7)
    got, labels = aug(video, torch.arange(6))
    assert got.dtype == torch.float32 and torch.equal(labels, torch.arange(6))
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)
    assert len({p.ops for p in aug.last}) > 1  # clips took different jitter orders within the batch


def test_parameters_keep_their_distribution():
    tf, rng, n = TrainTransform(224), np.random.default_rng(0), 4000
    params = [tf.draw(224, 224, rng) for _ in range(n)]
    area = np.array([p.box[2] * p.box[3] / 224**2 for p in params])
    # RandomResizedCrop 0.5–1: a draw whose box leaves the frame (large area, extreme aspect) is drawn again, so the
    # kept areas lean below the uniform mean of 0.75 (measured 0.694 here, as Inception-style crops do).
    assert area.min() >= 0.49 and area.max() <= 1.0 and 0.67 < area.mean() < 0.72
    assert abs(np.mean([p.flip for p in params]) - 0.5) < 0.03
    values = {name: np.array([dict(p.ops)[name] for p in params]) for name in ("brightness", "contrast",
                                                                                "saturation", "hue")}
    for name, lo, hi in (("brightness", 0.6, 1.4), ("contrast", 0.6, 1.4), ("saturation", 0.6, 1.4),
                         ("hue", -0.4, 0.4)):
        v = values[name]
        assert lo <= v.min() and v.max() <= hi and abs(v.mean() - (lo + hi) / 2) < 0.02, name
        assert abs(v.std() - (hi - lo) / 12**0.5) < 0.01, name  # uniform
    orders = Counter(tuple(name for name, _ in p.ops) for p in params)
    assert set(orders) == set(itertools.permutations(("brightness", "contrast", "saturation", "hue")))
    assert max(orders.values()) < 2 * n / 24  # the 24 orders about equally often


def test_output_statistics_match_between_paths():
    # Independent seeds on each path: the per-clip mean and spread of the augmented clips have the same distribution.
    clip = _clips(1, 40)[0]
    ref, aug = ReferenceTrainTransform(32), BatchTrainAugment(TrainTransform(32), seed=123)
    a = torch.stack([ref(clip, np.random.default_rng(1000 + i)) for i in range(96)])
    video = torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)))[None].expand(96, -1, -1, -1, -1)
    b, _ = aug(video.contiguous(), torch.zeros(96, dtype=torch.long))
    for stat in (lambda x: x.mean(dim=(1, 2, 3, 4)), lambda x: x.std(dim=(1, 2, 3, 4)),
                 lambda x: x.mean(dim=(2, 3, 4))[:, 0] - x.mean(dim=(2, 3, 4))[:, 2]):
        sa, sb = stat(a), stat(b)
        assert abs(sa.mean() - sb.mean()) < 0.25 * sa.std() + 1e-3
        assert 0.7 < sb.std() / sa.std() < 1.4


def test_batch_augment_refuses_float_batches_and_mixes_after_augmenting():
    aug = BatchTrainAugment(TrainTransform(16), MixupCutmix(7, seed=0), seed=0)
    with pytest.raises(ValueError, match="augment_on='device'"):
        aug(torch.rand(2, 3, 4, 16, 16), torch.tensor([0, 1]))
    video = torch.from_numpy(np.ascontiguousarray(_clips(2, 20).transpose(0, 4, 1, 2, 3)))
    x, y = aug(video, torch.tensor([0, 3]))
    assert x.shape == (2, 3, 4, 16, 16) and y.shape == (2, 7) and torch.allclose(y.sum(1), torch.ones(2))


def test_device_mode_dataset_returns_the_cache_bytes(manifest_path, tmp_path):
    from ifdd.data.cache import ClipCache, write_cache
    from ifdd.data.manifest import load_manifest

    df = load_manifest(manifest_path)
    cache_dir = tmp_path / "cache"
    write_cache(df, cache_dir, size=24, frames=16, workers=1)
    cached = ClipDataset(df, 1, "train", frames=16, size=32, train=True, cache_dir=cache_dir, augment_on="device")
    media = ClipDataset(df, 1, "train", frames=16, size=24, train=True, augment_on="device")
    s, m = cached[0], media[0]
    assert s["video"].dtype == torch.uint8 and s["video"].shape == (3, 16, 24, 24)  # the cache's size
    want = torch.from_numpy(np.array(ClipCache(cache_dir).get(s["clip_id"]).transpose(3, 0, 1, 2), order="C"))
    assert torch.equal(s["video"], want) and torch.equal(m["video"], want)  # decoded at that size: the same bytes
    with pytest.raises(ValueError, match="augment_on: must be"):
        ClipDataset(df, 1, "train", frames=16, size=32, train=True, augment_on="gpu")


def test_loaders_wire_the_device_path(manifest_path):
    cfg = run_config_from_dict({"model": {"preset": "tiny"}, "data": {"manifest": str(manifest_path)}})
    loaders = build_split_loaders(cfg, 1, batch_size=4, eval_batch_size=4, augment_on="device")
    batch = next(iter(loaders.train))
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (4, 3, 16, 64, 64)
    assert isinstance(loaders.batch_transform, BatchTrainAugment)
    video, target = loaders.batch_transform(batch["video"], batch["label"])
    assert video.shape == (4, 3, 16, 64, 64) and video.dtype == torch.float32 and target.shape == (4, 7)
    assert next(iter(loaders.val))["video"].dtype == torch.float32  # evaluation stays in the loader
    plain = build_split_loaders(cfg, 1, batch_size=4, eval_batch_size=4, device="cpu")
    assert isinstance(plain.batch_transform, MixupCutmix)
    assert next(iter(plain.train))["video"].dtype == torch.float32


def test_auto_puts_augmentation_on_gpus_only():
    assert resolve_augment_on("auto", "cuda:0") == "device"
    assert resolve_augment_on("auto", torch.device("cpu")) == "loader" and resolve_augment_on("auto", None) == "loader"
    assert resolve_augment_on("loader", "cuda") == "loader"
    with pytest.raises(ValueError, match="augment_on: must be auto, loader or device"):
        resolve_augment_on("gpu", "cuda")
