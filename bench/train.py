"""Training throughput of the tiny IFDD on CPU through Ray Train: 1 worker vs 2 DDP workers on the same cores.

Prints one JSON object. A synthetic DFEW tree (64², 16 frames) is written to a temp folder and indexed; a local
Ray with every core of this machine runs ``ifdd train``'s trainer for ``--epochs`` epochs of fold 1 with 1 and
then 2 workers (the cores shared evenly, so 1 worker runs with all of them as torch threads). Reported per run:
training clips/s and seconds per epoch (train + inner-val) of the last epoch (the first pays start-up costs), and
the 2-worker figures as a ratio to the 1-worker run in the same process.

    python bench/train.py [--epochs 2] [--clips-per-class 20] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from ifdd.data.manifest import build_manifest, write_manifest
from ifdd.data.synth import write_synthetic
from ifdd.runconfig import run_config_from_dict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--clips-per-class", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import ray

    from orchestrator.planner import size_workers
    from orchestrator.ray_session import init_ray
    from orchestrator.training.trainer import run_training

    results = []
    with tempfile.TemporaryDirectory(prefix="ifdd-bench-train-") as tmp:
        root = Path(tmp) / "dfew"
        rec = write_synthetic(root, clips_per_class=args.clips_per_class, size=64, frames=16)
        manifest = write_manifest(build_manifest(root), Path(tmp) / "manifest.parquet")
        cfg = run_config_from_dict({
            "model": {"preset": "tiny"}, "optim": {"lr": 2e-3, "warmup_epochs": 0},
            "data": {"manifest": str(manifest), "mix_prob": 0.0},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "eval_batch_size": 32}})
        cluster = init_ray(None)
        try:
            for workers in (1, 2):
                res = size_workers(cluster, workers, None, 0.0)
                t0 = time.perf_counter()
                out = run_training(cfg, 1, name=f"bench-{workers}w", storage=str(Path(tmp) / "ray"), res=res,
                                   max_failures=0)
                wall = time.perf_counter() - t0
                last = [h for h in out.history if h.get("epoch_s") is not None][-1]
                results.append({"workers": workers, "cpus_per_worker": res.cpus_per_worker,
                                "threads_per_worker": res.threads,
                                "train_clips_per_s": round(last["clips_per_s"], 2),
                                "epoch_s": round(last["epoch_s"], 2), "run_wall_s": round(wall, 1),
                                "val_uar_last_epoch": round(last["val_uar"], 4)})
        finally:
            ray.shutdown()
    one, two = results
    print(json.dumps({
        "bench": "train", "preset": "tiny", "device": "cpu", "cpus": os.cpu_count(),
        "python": platform.python_version(), "machine": platform.machine(),
        "data": f"synthetic, {rec['clips']} clips, 16 x 64², fold 1 inner-train/inner-val",
        "epochs": args.epochs, "global_batch": args.batch_size, "measured": "last epoch", "results": results,
        "two_vs_one_workers": {"clips_per_s": round(two["train_clips_per_s"] / one["train_clips_per_s"], 2),
                               "epoch_s": round(two["epoch_s"] / one["epoch_s"], 2)},
    }, indent=2))


if __name__ == "__main__":
    main()
