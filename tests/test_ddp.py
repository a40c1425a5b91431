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
    # DDP's contract: the averaged gradient of the two half batches is the full batch's gradient, to float32
    # rounding (the largest gradient element is ~1; measured worst difference 7e-7).
    assert single["grad"].keys() == ddp["grad"].keys() and len(single["grad"]) > 10
    for k, g in single["grad"].items():
        torch.testing.assert_close(ddp["grad"][k], g, rtol=1e-4, atol=2e-6, msg=lambda m, k=k: f"grad {k}: {m}")
    # The same AdamW step on that gradient. Adam's first update is lr·g/(|g|+eps), so where |g| is near eps (1e-8)
    # the weight moves by a rounding-dependent fraction of lr. Some gradients are exactly zero in exact arithmetic
    # and float32 noise (~1e-9) in practice: a pooled key norm's bias shifts every key's score by the same amount,
    # which the softmax ignores. Weights are compared where |g| > 1e-6 (100 eps); there they agree to ~1e-7.
    assert single["state"].keys() == ddp["state"].keys()
    for k, w in single["state"].items():
        g = single["grad"].get(k)
        where = torch.ones_like(w, dtype=torch.bool) if g is None else g.abs() > 1e-6
        torch.testing.assert_close(ddp["state"][k][where], w[where], rtol=1e-4, atol=1e-6,
                                   msg=lambda m, k=k: f"{k}: {m}")
    assert sum(not torch.equal(single["state"][k], initial[k]) for k in initial) > 10  # the step moved the weights
