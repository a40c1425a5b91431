"""Model throughput on CPU: clips/s for forward and forward+backward, IFDD vs its no-ISSM/no-LADM baseline.

Prints one JSON object. The baseline (backbone + pyramid fusion + mean pooling + head) runs in the same process with
the same inputs, so ``ifdd_cost_ratio`` = baseline clips/s / IFDD clips/s isolates the cost of the IFDD modules.

    python bench/model.py [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from ifdd.config import LossConfig, model_preset
from ifdd.loss import IFDDLoss
from ifdd.model import build_model


def clips_per_s(model, batch: int, frames: int, size: int, backward: bool, iters: int) -> float:
    x = torch.rand(batch, 3, frames, size, size)
    y = torch.randint(0, 7, (batch,))
    loss_fn = IFDDLoss(LossConfig(), 7)
    model.train(backward)

    def step():
        if backward:
            model.zero_grad(set_to_none=True)
            loss, _ = loss_fn(model(x), y)
            loss.backward()
        else:
            with torch.no_grad():
                model(x)

    step()  # warm-up (allocator, first-call overheads)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return batch * iters / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="tiny only, fewer iterations")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    plan = [("tiny", [1, 8], 5)] + ([] if args.quick else [("xs", [1, 2], 2)])
    rows = []
    for preset, batches, iters in plan:
        for batch in batches:
            for mode in ("forward", "forward_backward"):
                row = {"preset": preset, "batch": batch, "mode": mode}
                for variant, overrides in (("ifdd", {}), ("baseline", {"use_issm": False, "use_ladm": False})):
                    cfg = model_preset(preset, **overrides)
                    model = build_model(cfg)
                    row[f"{variant}_clips_per_s"] = round(
                        clips_per_s(model, batch, cfg.num_frames, cfg.image_size, mode != "forward", iters), 3)
                row["ifdd_cost_ratio"] = round(row["baseline_clips_per_s"] / row["ifdd_clips_per_s"], 3)
                rows.append(row)
    print(json.dumps({"bench": "model", "device": "cpu", "threads": args.threads, "torch": torch.__version__,
                      "machine": platform.machine(), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
