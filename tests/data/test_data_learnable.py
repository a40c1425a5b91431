"""The synthetic classes are learnable from motion: a small 3D CNN learns them from 16 frames of 32x32 in under a
CPU minute (the classes are motion patterns, so the small frames keep them).

(That a single frame carries no class information is tested statistically in ``test_data_synth.py``.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ifdd.data.synth import render_clip

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)  # ~40 s on 2 quiet cores
def test_a_small_3d_cnn_learns_the_synthetic_classes():
    torch.set_num_threads(2)  # put back after the test by tests/conftest.py, as is the RNG state
    torch.manual_seed(0)
    n, n_train = 420, 350  # 50 training and 10 held-out clips per class
    labels = np.arange(n) % 7
    x = np.stack([render_clip(int(c), 16, 32, np.random.default_rng([7, i])) for i, c in enumerate(labels)])
    x = torch.from_numpy(x).permute(0, 4, 1, 2, 3).contiguous()  # (N, 3, T, S, S) uint8
    y = torch.from_numpy(labels)
    net = nn.Sequential(nn.Conv3d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
                        nn.Conv3d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
                        nn.Conv3d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                        nn.Linear(64, 7))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)

    def prep(v: torch.Tensor) -> torch.Tensor:
        return (v.float() / 255 - 0.45) / 0.225

    for _ in range(300):
        idx = torch.randint(0, n_train, (16,))
        loss = nn.functional.cross_entropy(net(prep(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = torch.cat([net(prep(x[b:b + 35])).argmax(1) for b in range(n_train, n, 35)])
    yt = y[n_train:]
    uar = float(np.mean([(pred[yt == c] == c).float().mean().item() for c in range(7)]))
    assert uar > 0.4, f"test UAR {uar:.3f} after 300 steps (chance 0.143)"
