"""The synthetic classes live in time: a small 3D CNN learns them from clips, the same CNN on one frame cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ifdd.data.synth import render_clip

pytestmark = pytest.mark.slow


def _clips(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    labels = np.arange(n) % 7
    x = np.stack([render_clip(int(c), 16, size, np.random.default_rng([seed, i])) for i, c in enumerate(labels)])
    x = torch.from_numpy(x).permute(0, 4, 1, 2, 3).float().div(255).sub(0.45).div(0.225)  # (N, 3, T, S, S)
    return x, torch.from_numpy(labels)


def _uar(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(np.mean([(pred[y == c] == c).float().mean().item() for c in range(7)]))


def _train_and_test(x, y, xt, yt, steps: int = 300) -> float:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
                        nn.Conv3d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
                        nn.Conv3d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                        nn.Linear(32, 7))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=g)
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return _uar(net(xt).argmax(1), yt)


def test_a_dynamic_model_learns_the_classes_and_a_static_one_scores_chance():
    torch.set_num_threads(2)
    x, y = _clips(560, seed=1)
    xt, yt = _clips(140, seed=2)
    dynamic = _train_and_test(x, y, xt, yt)
    # The same network on one random frame repeated 16 times: appearance only, no motion.
    g = torch.Generator().manual_seed(1)
    pick = lambda v: v[torch.arange(len(v)), :, torch.randint(0, 16, (len(v),), generator=g)][:, :, None].expand_as(v)
    static = _train_and_test(pick(x), y, pick(xt), yt)
    assert dynamic > 0.5, f"clips: test UAR {dynamic:.3f}"
    assert static < 0.3, f"single frames: test UAR {static:.3f} (chance 0.143)"
