"""DDP equivalence: 2 gloo workers with global batch B take the same step as 1 worker with batch B."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp
from ifdd_testkit import ddp_workers as ddp_worker

from ifdd.model import build_model


def test_two_workers_equal_one_worker_after_one_step(tmp_path):
    torch.manual_seed(0)
    initial = build_model(ddp_worker.CFG).state_dict()
    torch.manual_seed(0)
    single = ddp_worker._one_step(build_model(ddp_worker.CFG), ddp_worker._batch(), 1)
    out = tmp_path / "ddp.pt"
    mp.spawn(ddp_worker.run_rank, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    assert single.keys() == ddp.keys()
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    assert sum(not torch.equal(single[k], initial[k]) for k in single) > 10  # the step really moved the weights
