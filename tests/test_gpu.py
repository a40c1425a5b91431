"""Mixed precision on a CUDA device: autocast, the fp16 GradScaler and a training step of the real model.

Runs where a GPU exists (``pytest -m gpu``). Elsewhere it skips with the reason ``no CUDA device``, on purpose not
the ``system package missing:`` prefix: CI has no GPU and runs with IFDD_REQUIRE_SYSTEM_DEPS=1, which fails only
skips with that prefix.
"""

from __future__ import annotations

import math

import pytest
import torch

from ifdd.config import LossConfig, OptimConfig, model_preset
from ifdd.engine import autocast, build_optimizer, evaluate, make_grad_scaler, train_one_epoch
from ifdd.loss import IFDDLoss
from ifdd.model import build_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (run where one is: -m gpu)")]


def _batches(n: int, device) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"video": torch.rand(4, 3, 16, 64, 64, generator=g).to(device), "label": torch.tensor([0, 2, 4, 6]),
             "clip_id": [f"{i}-{j}" for j in range(4)]} for i in range(n)]


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_training_steps_on_the_gpu(amp, dtype):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(model_preset("tiny", head_dropout=0.0)).to(device)
    scaler = make_grad_scaler(device, amp)
    assert (scaler is not None) == (amp == "fp16")  # fp16 needs loss scaling, bf16 does not
    with torch.no_grad(), autocast(device, amp):
        assert model(_batches(1, device)[0]["video"])["logits"].dtype == dtype  # autocast is on
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model, OptimConfig(lr=1e-3, warmup_epochs=0), 4)
    # a few steps: fp16's first steps may be skipped while the scaler backs off from its initial scale
    stats = train_one_epoch(model, _batches(6, device), IFDDLoss(LossConfig(), 7).to(device), opt, None,
                            device=device, amp=amp, scaler=scaler, grad_clip=1.0)
    assert math.isfinite(stats["loss"]) and stats["steps"] == 6
    moved = sum(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert moved > 10, f"only {moved} tensors changed after 6 {amp} steps"
    if scaler is not None:
        assert 0 < scaler.get_scale() <= 2.0 ** 16
    with pytest.raises(ValueError, match="needs a GradScaler"):
        train_one_epoch(model, _batches(1, device), IFDDLoss(LossConfig(), 7).to(device), opt, None, device=device,
                        amp="fp16", scaler=None)
    metrics = evaluate(model, _batches(2, device), device=device, num_classes=7, amp=amp)
    assert metrics["clips"] == 8 and math.isfinite(metrics["loss"])
