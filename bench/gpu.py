"""GPU throughput and memory of the IFDD model: training steps (forward+backward+AdamW) and evaluation, bf16 vs fp32.

Prints one JSON object (and writes it with ``--out``). Measured on whatever CUDA device is visible; on a machine with
no GPU it says so and exits 0 with ``"measured": false`` (``make bench`` then falls back to MAC-count estimates).

- ``train``: clips/s of full optimiser steps at ``--batch`` (default 16, the paper's recipe) under
  ``ifdd.engine.autocast`` (bf16) and in fp32, same process, same inputs, so ``bf16_speedup`` is a same-run ratio;
  peak memory is ``torch.cuda.max_memory_allocated`` for that configuration alone.
- ``eval``: clips/s of no-grad forwards at 2× the batch (the recipe's eval batch).
- ``baseline``: the same at bf16 with ISSM and LADM off, so ``ifdd_cost_ratio`` isolates the IFDD modules' cost.
- ``pool_conv: bf16``: bf16 with the attention-pooling convs left in bf16 (``TokenPool.fp32_under_autocast`` off),
  so ``pool_fp32_speedup`` measures that choice in the same run.
- ``ddp``: one DistributedDataParallel training step per rank with NCCL when 2+ GPUs are visible; with one GPU a
  world-size-1 NCCL process group checks the DDP path (gradient hooks, unused parameters, and whether DDP warned
  "Grad strides do not match bucket view strides") and times one step.
- ``kernels``: bf16 training steps and evaluation of every pooling-attention kernel (``attention_impl``) and
  pooling-conv layout (``pool_conv``) against ``before`` (tests/mvit_reference.py: the implementation before they
  were selectable; 55.7 clips/s on an H100 at batch 16 when it was the shipped one), same process, same inputs;
  ``speedup_vs_before`` per row (the compass goal for the defaults: >= 4x in training).
- ``augment``: ``BatchTrainAugment`` (the training augmentation, uint8 batch in, then mixup/cutmix) on the GPU at
  224², ms per batch and clips/s: with ``augment_on: auto`` this is the augmentation's whole cost on a GPU worker.

    python bench/gpu.py [--preset xs] [--batch 16] [--iters 20] [--out runs/bench/gpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from ifdd.backbone import TokenPool
from ifdd.config import LossConfig, model_preset
from ifdd.data.transforms import BatchTrainAugment, MixupCutmix, TrainTransform
from ifdd.engine import autocast
from ifdd.loss import IFDDLoss
from ifdd.model import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mvit_reference import reference_forward  # noqa: E402

# (name, ModelConfig overrides); "before" runs tests/mvit_reference.py's forward in the same modules.
KERNELS = [("before", {}), ("default", {}),
           ("sdpa/channels_last", dict(attention_impl="sdpa", pool_conv="channels_last")),
           ("sdpa/contiguous", dict(attention_impl="sdpa", pool_conv="contiguous")),
           ("sdpa/shifted", dict(attention_impl="sdpa", pool_conv="shifted")),
           ("eager/channels_last", dict(attention_impl="eager", pool_conv="channels_last")),
           ("flex/channels_last", dict(attention_impl="flex", pool_conv="channels_last")),
           ("flex/contiguous", dict(attention_impl="flex", pool_conv="contiguous"))]


def _inputs(cfg, batch: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size, generator=g).to(device)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g).to(device)
    return x, y


def _timed(step, iters: int, device: torch.device) -> float:
    for _ in range(3):  # warm-up: cuDNN/cuBLAS heuristics, allocator growth
        step()
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def measure_train(preset: str, batch: int, amp: str, iters: int, device: torch.device, reference: bool = False,
                  **overrides) -> dict:
    """Full optimiser steps; ``reference`` runs the attention as before (tests/mvit_reference.py)."""
    cfg = model_preset(preset, **overrides)
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loss_fn = IFDDLoss(LossConfig(), cfg.num_classes).to(device)
    x, y = _inputs(cfg, batch, device)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp):
            out = model(x)
        loss, _ = loss_fn(out, y)
        loss.backward()
        opt.step()

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    with reference_forward(reference):
        secs = _timed(step, iters, device)
    row = {"preset": preset, "batch": batch, "amp": amp, "mode": "train_step", **overrides,
           "clips_per_s": round(batch * iters / secs, 2), "ms_per_step": round(1000 * secs / iters, 2),
           "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3)}
    return row


def measure_eval(preset: str, batch: int, amp: str, iters: int, device: torch.device, reference: bool = False,
                 **overrides) -> dict:
    cfg = model_preset(preset, **overrides)
    model = build_model(cfg).to(device).eval()
    x, _ = _inputs(cfg, batch, device)

    def step():
        with torch.no_grad(), autocast(device, amp):
            model(x)

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    with reference_forward(reference):
        secs = _timed(step, iters, device)
    return {"preset": preset, "batch": batch, "amp": amp, "mode": "eval", **overrides,
            "clips_per_s": round(batch * iters / secs, 2),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3)}


def kernel_rows(preset: str, batch: int, iters: int, device: torch.device) -> list[dict]:
    """bf16 training and evaluation per kernel option (see KERNELS); a failing option is reported, not fatal."""
    rows = []
    for name, overrides in KERNELS:
        for mode, fn, b in (("train_step", measure_train, batch), ("eval", measure_eval, 2 * batch)):
            try:
                row = fn(preset, b, "bf16", iters, device, reference=name == "before", **overrides)
            except Exception as e:  # e.g. a kernel this GPU/torch lacks: the other options still measure
                row = {"mode": mode, "batch": b, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
                if name.startswith("flex"):
                    torch._dynamo.reset()  # a failed compiled call can leave later ones on a slow path
            rows.append({"kernel": name, **row})
    base = {r["mode"]: r for r in rows if r["kernel"] == "before" and "clips_per_s" in r}
    for r in rows:
        if "clips_per_s" in r and r["mode"] in base:
            r["speedup_vs_before"] = round(r["clips_per_s"] / base[r["mode"]]["clips_per_s"], 3)
    return rows


def measure_augment(batch: int, iters: int, device: torch.device, size: int = 224, frames: int = 16) -> dict:
    """BatchTrainAugment + mixup/cutmix on a uint8 batch already on the GPU (the loader's copy is uint8)."""
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (batch, 3, frames, size, size), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 7, (batch,), generator=g).to(device)
    aug = BatchTrainAugment(TrainTransform(size), MixupCutmix(7, seed=0), seed=0)
    secs = _timed(lambda: aug(video, labels), iters, device)
    return {"batch": batch, "size": size, "frames": frames, "ms_per_batch": round(1000 * secs / iters, 2),
            "clips_per_s": round(batch * iters / secs, 1)}


def profile_train(preset: str, batch: int, amp: str, device: torch.device, top: int = 12) -> list[dict]:
    """The ``top`` CUDA operators by self device time over 3 training steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = model_preset(preset)
    model = build_model(cfg).to(device).train()
    loss_fn = IFDDLoss(LossConfig(), cfg.num_classes).to(device)
    x, y = _inputs(cfg, batch, device)

    def step():
        with autocast(device, amp):
            out = model(x)
        loss_fn(out, y)[0].backward()

    step()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize(device)
    events = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in events) or 1
    return [{"op": e.key, "calls": e.count, "self_cuda_ms_per_step": round(e.self_device_time_total / 3000, 2),
             "share": round(e.self_device_time_total / total, 3)} for e in events[:top]]


def ddp_check(preset: str, batch: int) -> dict:
    """One DDP step with NCCL (world size 1 on a single GPU): the path Ray Train's prepare_model takes."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    n = torch.cuda.device_count()
    if n >= 2:
        return {"ddp": "not run: 2+ GPUs visible; use `ifdd train --workers 2` for a real multi-GPU step",
                "gpus": n}
    device = torch.device("cuda", 0)
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=device)
    try:
        cfg = model_preset(preset)
        model = DDP(build_model(cfg).to(device), device_ids=[0])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loss_fn = IFDDLoss(LossConfig(), cfg.num_classes).to(device)
        x, y = _inputs(cfg, batch, device)
        times = []
        caught = warnings.catch_warnings(record=True)
        rec = caught.__enter__()
        warnings.simplefilter("always")
        for _ in range(4):
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with autocast(device, "bf16"):
                out = model(x)
            loss, _ = loss_fn(out, y)
            loss.backward()
            opt.step()
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        caught.__exit__(None, None, None)
        unused = [name for name, p in model.module.named_parameters() if p.requires_grad and p.grad is None]
        return {"backend": "nccl", "world_size": 1, "batch_per_rank": batch, "loss_finite": bool(torch.isfinite(loss)),
                "ms_per_step_after_warmup": round(1000 * min(times[1:]), 2), "params_without_grad": len(unused),
                "grad_strides_warning": any("Grad strides" in str(w.message) for w in rec),
                "note": "one GPU lent: checks the NCCL/DDP path, not multi-GPU scaling"}
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="xs")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--profile", action="store_true", help="add the top CUDA operators of a bf16 and an fp32 step")
    args = ap.parse_args()
    payload: dict = {"bench": "gpu", "torch": torch.__version__, "machine": platform.machine(),
                     "measured": torch.cuda.is_available()}
    if not torch.cuda.is_available():
        payload["note"] = "no CUDA device visible; the summary uses MAC-count estimates instead"
    else:
        device = torch.device("cuda", 0)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        props = torch.cuda.get_device_properties(device)
        payload.update(device=props.name, device_mem_gib=round(props.total_memory / 2**30, 1),
                       cuda=torch.version.cuda, tf32=True)
        rows = [measure_train(args.preset, args.batch, "bf16", args.iters, device),
                measure_train(args.preset, args.batch, "off", args.iters, device),
                measure_train(args.preset, args.batch, "bf16", args.iters, device, use_issm=False, use_ladm=False),
                measure_eval(args.preset, 2 * args.batch, "bf16", args.iters, device)]
        TokenPool.fp32_under_autocast = False  # A/B: attention pooling convs in bf16 too
        rows.append({**measure_train(args.preset, args.batch, "bf16", args.iters, device), "pool_conv": "bf16"})
        TokenPool.fp32_under_autocast = True
        payload["results"] = rows
        payload["pool_fp32_speedup"] = round(rows[0]["clips_per_s"] / rows[-1]["clips_per_s"], 3)
        payload["bf16_speedup"] = round(rows[0]["clips_per_s"] / rows[1]["clips_per_s"], 3)
        payload["ifdd_cost_ratio"] = round(rows[2]["clips_per_s"] / rows[0]["clips_per_s"], 3)
        payload["kernels"] = kernel_rows(args.preset, args.batch, args.iters, device)
        payload["augment"] = measure_augment(args.batch, args.iters, device)
        if args.profile:
            payload["profile"] = {amp: profile_train(args.preset, args.batch, amp, device) for amp in ("bf16", "off")}
        try:
            payload["ddp"] = ddp_check(args.preset, args.batch)
        except Exception as e:  # reported, not fatal: the throughput figures above stand on their own
            payload["ddp"] = {"error": f"{type(e).__name__}: {e}"}
    text = json.dumps(payload, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
