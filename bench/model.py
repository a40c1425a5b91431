"""Model throughput on CPU: IFDD vs its no-ISSM/no-LADM baseline, and every pooling-attention kernel and pooling-conv
layout A/B against the implementation before they were selectable, all in one process.

Prints one JSON object (and writes it with ``--out``):

- ``results``: clips/s for forward and forward+backward, IFDD (the shipped defaults) vs the baseline (backbone +
  pyramid fusion + mean pooling + head) on the same inputs, so ``ifdd_cost_ratio`` = baseline / IFDD clips/s.
- ``kernels``: ``xs`` at ``--batch`` (default 2): per option (``before`` = tests/mvit_reference.py, the
  implementation before; then each ``attention_impl`` × ``pool_conv``) the inference clips/s (``torch.no_grad``
  forward) and the training clips/s (forward + loss + backward), each with the peak RSS above the process's RSS
  before the call (sampled every 2 ms from /proc in a separate, untimed call: the profiler under-counts compiled
  code's memory; freed heap memory is handed back first), and the ratios to ``before``. Timing is round-robin over the
  options, ``--rounds`` times, keeping each option's best round (robust to load from other processes). ``flex`` has
  no CPU backward (PyTorch), so it has inference rows only; its first call compiles (timed apart as ``compile_s``).
- ``blocks_0_7``: forward of the stem and blocks 0–7 (what matches torchvision's mvit_v2_s block for block),
  ``before`` vs the defaults, and the ratio.
- ``pool_conv_layouts``: one pooling conv (xs stage 0, q stride 1 and k/v stride 8) per ``pool_conv`` layout, fp32
  and bf16, forward and forward+backward (``--conv-only``: this section alone).

    python bench/model.py [--threads N] [--quick] [--batch 2] [--conv-only | --no-kernels] [--out runs/bench/model.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from ifdd.config import LossConfig, model_preset
from ifdd.loss import IFDDLoss
from ifdd.model import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mvit_reference import reference_forward  # noqa: E402

# (name, ModelConfig overrides); "before" runs tests/mvit_reference.py's forward in the same modules.
KERNELS = [("before", None), ("eager/channels_last", dict(attention_impl="eager", pool_conv="channels_last")),
           ("sdpa/channels_last", dict(attention_impl="sdpa", pool_conv="channels_last")),
           ("sdpa/contiguous", dict(attention_impl="sdpa", pool_conv="contiguous")),
           ("sdpa/shifted", dict(attention_impl="sdpa", pool_conv="shifted")),
           ("flex/channels_last", dict(attention_impl="flex", pool_conv="channels_last"))]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@contextmanager
def peak_rss():
    """Yields a dict whose ``mib`` is the peak RSS above the starting RSS while the block ran (2 ms sampling)."""
    out, stop, base = {"mib": 0.0}, threading.Event(), _rss()
    peak = [base]

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        yield out
    finally:
        stop.set()
        th.join()
        out["mib"] = round((max(peak[0], _rss()) - base) / 2**20, 1)


def _step(model, x, y, backward: bool):
    loss_fn = IFDDLoss(LossConfig(), 7)

    def step():
        if backward:
            model.zero_grad(set_to_none=True)
            loss, _ = loss_fn(model(x), y)
            loss.backward()
        else:
            with torch.no_grad():
                model(x)
    return step


def clips_per_s(model, batch: int, frames: int, size: int, backward: bool, iters: int) -> float:
    x = torch.rand(batch, 3, frames, size, size)
    y = torch.randint(0, 7, (batch,))
    model.train(backward)
    step = _step(model, x, y, backward)
    step()  # warm-up (allocator, first-call overheads)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return batch * iters / (time.perf_counter() - t0)


def ifdd_vs_baseline(quick: bool) -> list[dict]:
    plan = [("tiny", [1, 8], 5)] + ([] if quick else [("xs", [1, 2], 2)])
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
    return rows


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc), so that the next call's RSS growth is its own working set."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _timed(step, iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t0) / iters


def kernel_rows(preset: str, batch: int, iters: int, rounds: int, kernels=KERNELS) -> list[dict]:
    """Every option of ``kernels``, both modes. Timing goes round-robin over the options ``rounds`` times and keeps
    each one's best round, so a load spike from another process on a shared box hits one round of one option, not
    its figure."""
    torch.manual_seed(0)
    state = build_model(model_preset(preset)).state_dict()  # the same weights for every option
    cfg0 = model_preset(preset)
    x = torch.rand(batch, 3, cfg0.num_frames, cfg0.image_size, cfg0.image_size)
    y = torch.randint(0, 7, (batch,))
    cases = []
    for name, overrides in kernels:
        model = build_model(model_preset(preset, **(overrides or {})))
        model.load_state_dict(state)
        for mode in ("inference", "training"):
            if name.startswith("flex") and mode == "training":
                continue  # FlexAttention has no CPU backward (NotImplementedError in PyTorch)
            cases.append(({"kernel": name, "mode": mode, "preset": preset, "batch": batch}, model))
    for row, model in cases:  # warm-up (for flex also the compilation), then the memory of one call
        backward = row["mode"] == "training"
        model.train(backward)
        step = _step(model, x, y, backward)
        with reference_forward(row["kernel"] == "before"):
            t0 = time.perf_counter()
            step()
            if row["kernel"].startswith("flex"):
                row["compile_s"] = round(time.perf_counter() - t0, 1)
            _trim()
            with peak_rss() as mem:
                step()
        row["peak_rss_mib"] = mem["mib"]
    best: dict[int, float] = {}
    for _ in range(rounds):
        for i, (row, model) in enumerate(cases):
            backward = row["mode"] == "training"
            model.train(backward)
            with reference_forward(row["kernel"] == "before"):
                secs = _timed(_step(model, x, y, backward), iters)
            best[i] = min(best.get(i, float("inf")), secs)
    rows = []
    for i, (row, _) in enumerate(cases):
        row["clips_per_s"] = round(batch / best[i], 3)
        rows.append(row)
    base = {r["mode"]: r for r in rows if r["kernel"] == "before"}
    for r in rows:
        r["speed_vs_before"] = round(r["clips_per_s"] / base[r["mode"]]["clips_per_s"], 3)
        r["memory_vs_before"] = round(r["peak_rss_mib"] / max(base[r["mode"]]["peak_rss_mib"], 1e-9), 3)
    return rows


def conv_layouts(batch: int, iters: int, rounds: int) -> list[dict]:
    """The pooling conv alone (``TokenPool``, xs stage 0: 8×56² tokens of width 96; q stride 1, k/v stride 8), per
    layout, fp32 and bf16, forward and forward+backward, ms per call (best round)."""
    from ifdd.backbone import TokenPool

    rows, thw, d = [], (8, 56, 56), 96
    for dtype in (torch.float32, torch.bfloat16):
        tok = torch.randn(batch, 1, 1 + 8 * 56 * 56, d, dtype=dtype)
        for stride in ((1, 1, 1), (1, 8, 8)):
            for layout in ("channels_last", "contiguous", "shifted"):
                torch.manual_seed(0)
                pool = TokenPool(d, 3, stride, layout).to(dtype)
                x = tok.clone().requires_grad_()
                fwd = lambda p=pool, t=tok: p(t, thw)  # noqa: E731
                fb = lambda p=pool, x=x: p(x, thw)[0].sum().backward()  # noqa: E731
                row = {"dtype": str(dtype).removeprefix("torch."), "stride": list(stride), "layout": layout}
                for name, fn in (("forward_ms", fwd), ("forward_backward_ms", fb)):
                    with torch.no_grad() if name == "forward_ms" else nullcontext():
                        fn()
                        row[name] = round(1000 * min(_timed(fn, iters) for _ in range(rounds)), 2)
                rows.append(row)
    return rows


def blocks_0_7(preset: str, batch: int, iters: int, rounds: int) -> dict:
    """Forward (no grad) of the stem and blocks 0–7 only, before vs the shipped defaults, same weights and input."""
    torch.manual_seed(0)
    cfg = model_preset(preset)
    bb = build_model(cfg).backbone.eval()
    x = torch.rand(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size)

    def run():
        with torch.no_grad():
            t = bb.stem(x)
            thw = tuple(t.shape[2:])
            t = torch.cat([bb.cls_token.expand(batch, -1, -1), t.flatten(2).transpose(1, 2)], dim=1)
            for block in bb.blocks[:8]:
                t, thw = block(t, thw)

    out = {"preset": preset, "batch": batch}
    for _ in range(rounds):  # round-robin, best round of each (see kernel_rows)
        for name in ("before", "default"):
            with reference_forward(name == "before"):
                run()
                secs = _timed(run, iters)
            out[f"{name}_s"] = round(min(out.get(f"{name}_s", float("inf")), secs), 3)
    out["speedup"] = round(out["before_s"] / out["default_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="tiny only, fewer iterations, no flex (a smoke run)")
    ap.add_argument("--batch", type=int, default=2, help="batch of the kernel A/B")
    ap.add_argument("--rounds", type=int, default=3, help="round-robin timing rounds (best kept)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--conv-only", action="store_true", help="only the pooling-conv layout section")
    ap.add_argument("--no-kernels", action="store_true",
                    help="leave out the xs kernel A/B and blocks 0-7 (most of the run: ~10 min on 2 cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset, iters = ("tiny", 3) if args.quick else ("xs", 2)
    rounds = 2 if args.quick else args.rounds
    payload = {"bench": "model", "device": "cpu", "threads": args.threads, "torch": torch.__version__,
               "machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if not args.conv_only:
        # --quick leaves flex out: its first call compiles, 72 of the 107 s a cold --quick run took on 2 cores;
        # tests/test_attention_impl.py compiles it and checks it against the reference
        kernels = [k for k in KERNELS if not k[0].startswith("flex")] if args.quick else KERNELS
        payload.update(results=ifdd_vs_baseline(args.quick))
        if not args.no_kernels:
            payload.update(kernels=kernel_rows(preset, args.batch, iters, rounds, kernels),
                           blocks_0_7=blocks_0_7(preset, args.batch, iters, rounds))
    payload["pool_conv_layouts"] = conv_layouts(1 if args.quick else args.batch, 1 if args.quick else 2, rounds)
    text = json.dumps(payload, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
