"""Spawned rank for tests/test_model_graph.py: two DDP training steps of an ablated tiny IFDD on gloo."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ifdd.config import LossConfig, model_preset
from ifdd.loss import IFDDLoss
from ifdd.model import build_model


def run_rank(rank: int, world: int, init_file: str, overrides: dict, out: str) -> None:
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
