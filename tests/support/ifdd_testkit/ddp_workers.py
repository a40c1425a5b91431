"""Rank functions that tests start with ``torch.multiprocessing.spawn``: spawn re-imports a rank function by module
name in each child, so they live in this importable module, not in a test file (tests/test_ddp.py,
tests/test_engine.py, tests/test_model_graph.py)."""

from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ifdd.config import LossConfig, OptimConfig, model_preset
from ifdd.engine import LRSchedule, build_optimizer, evaluate, torch_distributed_gather, train_one_epoch
from ifdd.loss import IFDDLoss
from ifdd.model import build_model

B = 4
CFG = model_preset("tiny", head_dropout=0.0, drop_path=0.0, ladm_drop_path=0.0, linear_init="mvit")
OPTIM = OptimConfig(lr=1e-3, warmup_epochs=0)


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"video": torch.rand(B, 3, 16, 64, 64, generator=g), "label": torch.tensor([0, 3, 5, 6]),
            "clip_id": [f"{i:05d}" for i in range(B)]}


def _one_step(model, batch, world):
    """One product training step; returns the weights after it and the gradient it stepped on, by name."""
    opt = build_optimizer(model, OPTIM, B)
    sched = LRSchedule.from_config(opt, OPTIM, global_batch=B, epochs=1, steps_per_epoch=1)
    train_one_epoch(model, [batch], IFDDLoss(LossConfig(), 7), opt, sched, device="cpu")
    net = model.module if world > 1 else model
    return {"state": {k: v.detach().clone() for k, v in net.state_dict().items()},
            "grad": {k: p.grad.detach().clone() for k, p in net.named_parameters() if p.grad is not None}}


def run_rank(rank, world, init_file, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = DistributedDataParallel(build_model(CFG))
    full = _batch()
    half = {k: v[rank * B // world:(rank + 1) * B // world] for k, v in full.items()}
    state = _one_step(model, half, world)
    if rank == 0:
        torch.save(state, out)
    dist.destroy_process_group()


class LogitsInVideo(nn.Module):
    """Eval stand-in: a clip's logits are stored in its first voxels, so predictions are chosen by the test."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, video: torch.Tensor) -> dict:
        return {"logits": video[:, 0, 0, 0, :self.num_classes]}


def evaluate_rank(rank: int, world: int, init_file: str, out_dir: str, shards: list[list[dict]],
                  num_classes: int) -> None:
    """``evaluate`` of rank ``rank``'s batches with the gather across ranks; the metrics to ``rank<k>.json``."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        m = evaluate(LogitsInVideo(num_classes), shards[rank], device="cpu", num_classes=num_classes,
                     gather=torch_distributed_gather)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(m, f)
    finally:
        dist.destroy_process_group()


# tests/test_model_graph.py: two DDP training steps of an ablated tiny IFDD on gloo
def ablation_rank(rank: int, world: int, init_file: str, overrides: dict, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = DistributedDataParallel(build_model(model_preset("tiny", drop_path=0.0, ladm_drop_path=0.0, **overrides)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = IFDDLoss(LossConfig(), 7)
    g = torch.Generator().manual_seed(rank)
    # DDP's "Expected to have finished reduction in the prior iteration" comes at the second step when a
    # parameter took no part in the first one's loss.
    for _ in range(2):
        loss, _ = loss_fn(model(torch.rand(2, 3, 16, 64, 64, generator=g)), torch.tensor([rank, 6 - rank]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if rank == 0:
        torch.save({"loss": loss.detach()}, out)
    dist.destroy_process_group()
