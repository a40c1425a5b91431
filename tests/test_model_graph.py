"""Every parameter an ablation builds takes part in the loss, so DDP (which needs that) trains every variant."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from ifdd_testkit.ddp_workers import ablation_rank

from ifdd.config import LossConfig, model_preset
from ifdd.loss import IFDDLoss
from ifdd.model import build_model

VARIANTS = [(issm, ladm, depth) for issm in (True, False) for ladm in (True, False) for depth in (1, 2)
            if issm or ladm]


@pytest.mark.parametrize("use_issm,use_ladm,depth", VARIANTS)
def test_every_parameter_gets_a_gradient(use_issm, use_ladm, depth):
    torch.manual_seed(0)
    model = build_model(model_preset("tiny", use_issm=use_issm, use_ladm=use_ladm, lifting_depth=depth,
                                     drop_path=0.0, ladm_drop_path=0.0)).train()
    loss, _ = IFDDLoss(LossConfig(), 7)(model(torch.rand(2, 3, 16, 64, 64)), torch.tensor([1, 4]))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert not dead, f"parameters outside the loss's graph: {dead}"


def test_no_ladm_keeps_learned_static_offsets_only_where_they_feed_a_level():
    one = build_model(model_preset("tiny", use_ladm=False)).lifting.levels
    two = build_model(model_preset("tiny", use_ladm=False, lifting_depth=2)).lifting.levels
    assert not hasattr(one[0].issm, "offset_static") and hasattr(one[0].issm, "offset_dynamic")
    assert hasattr(two[0].issm, "offset_static") and not hasattr(two[1].issm, "offset_static")
    assert one[0].norm_static is None


@pytest.mark.parametrize("overrides", [{"use_ladm": False}, {"use_ladm": False, "lifting_depth": 2}])
def test_two_ddp_workers_train_the_no_ladm_ablation(tmp_path, overrides):
    out = tmp_path / "loss.pt"
    mp.spawn(ablation_rank, args=(2, str(tmp_path / "init"), overrides, str(out)), nprocs=2,
             join=True)
    assert torch.isfinite(torch.load(out, weights_only=True)["loss"])
