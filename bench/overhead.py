"""Orchestration overhead: a fold-wise ``ifdd search`` study with 1 and 2 concurrent trials vs the same trials run one
after another by ``ifdd train``'s trainer in one process.

Setup: the synthetic tree of ``bench/bench_common.py`` (718 clips) indexed and cached at 8×32² (Arrow cache, as ``ifdd
data cache``), the tiny model at that shape, ``--trials`` trials of ``--epochs`` epochs of ``--steps`` optimizer steps
(batch 16) on fold 1, one Ray Train worker (0.9 logical CPU, one torch thread) per trial, no pruning. The study
runs through ``orchestrator.search.runner.run_search`` (Tune + Optuna + Ray Train + MLflow tracking + the selected
trial's single test evaluation: everything ``ifdd search`` does); then each trial's config runs through
``orchestrator.training.trainer.run_training`` (``ifdd train``'s trainer) sequentially on the same local Ray. Ray is
started once; its start time is reported apart.

Measured, per mode: wall time; Σ epoch time (train + inner-val, the workers' own ``epoch_s``) and Σ train-step time
(clips / the workers' clips/s) over all trials, as fractions of wall × concurrency; per-trial start latency = Tune's
``time_total_s`` at the first report minus that epoch's ``epoch_s`` (trial function start → first epoch start: Ray Train
controller, worker group, process group, data and model set-up).

    python bench/overhead.py [--trials 2] [--epochs 3] [--steps 12] [--out runs/bench/overhead.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import BENCH_MODEL, FRAMES, SIZE, machine, synthetic_memory, write_json  # noqa: E402

BATCH = 16
WORKER_CPUS = 0.9
"""Logical CPUs per trial's worker (1 torch thread): 2 trials × (0.9 + 0.1 for the trial driver) fit on 2 CPUs."""


def prepare(work: Path, cpc: int) -> tuple[Path, Path]:
    from ifdd.data.cache import write_cache
    from ifdd.data.manifest import load_manifest

    synth = work / f"synth{cpc}"
    synthetic_memory(synth, clips_per_class=cpc)
    cache = synth / f"cache{FRAMES}x{SIZE}"
    if not (cache / "cache.json").is_file():
        write_cache(load_manifest(synth / "manifest.parquet"), cache, size=SIZE, frames=FRAMES, workers=2)
    return synth / "manifest.parquet", cache


def space_doc(manifest: Path, cache: Path, trials: int, epochs: int, steps: int, concurrent: int) -> dict[str, Any]:
    return {
        "name": f"bench-overhead-c{concurrent}",
        "base": {"model": BENCH_MODEL, "optim": {"lr": 6e-4, "weight_decay": 0.05, "warmup_epochs": 0},
                 "data": {"manifest": str(manifest), "cache_dir": str(cache), "augment": False, "mix_prob": 0.0},
                 "train": {"epochs": epochs, "batch_size": BATCH, "eval_batch_size": 64,
                           "max_steps_per_epoch": steps}},
        "search": {"optim.lr": {"type": "float", "low": 3e-4, "high": 1.2e-3, "log": True}},
        "objective": {"metric": "val_uar", "mode": "max"},
        "budget": {"num_samples": trials, "max_epochs": epochs, "scheduler": "none", "seed": 0},
        "protocol": {"selection": "val", "strategy": "fold-wise", "folds": [1]},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": WORKER_CPUS, "gpus_per_worker": 0,
                      "max_concurrent_trials": concurrent},
    }


def _fractions(wall: float, epoch_s: float, train_s: float, concurrent: int) -> dict[str, float]:
    return {"wall_s": wall, "sum_epoch_s": epoch_s, "sum_train_step_s": train_s,
            "epoch_time_fraction": epoch_s / (wall * concurrent), "train_step_fraction": train_s / (wall * concurrent)}


def run_study_mode(doc: dict[str, Any], work: Path, concurrent: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import ray.tune

    from orchestrator.outputs import Outputs
    from orchestrator.search.results import Paths, study_names
    from orchestrator.search.runner import run_search
    from orchestrator.search.space import parse_space

    space = parse_space(doc, default_name=doc["name"])
    runs = work / f"runs-c{concurrent}"
    shutil.rmtree(runs, ignore_errors=True)
    storage = str(work / f"ray-c{concurrent}")
    shutil.rmtree(storage, ignore_errors=True)
    t0 = time.perf_counter()
    out = Outputs.resolve(str(runs), storage)
    ok = run_search(space, out=out, uri=out.default_tracking_uri, optuna=out.default_optuna, resume=False, fresh=True)
    wall = time.perf_counter() - t0
    if not ok:
        raise RuntimeError(f"study {space.name} did not finish")
    paths = Paths(out, space.name, out.default_optuna)
    study, _ = study_names(space)[0]
    analysis = ray.tune.ExperimentAnalysis(f"{paths.tune}/{study}")
    trials, epoch_s, train_s, latency = [], 0.0, 0.0, []
    for path, df in analysis.trial_dataframes.items():
        df = df.sort_values("epoch")
        e = df["epoch_s"].astype(float)
        tr = (BATCH * doc["base"]["train"]["max_steps_per_epoch"] / df["clips_per_s"].astype(float))
        first = float(df["time_total_s"].iloc[0]) - float(e.iloc[0])
        latency.append(first)
        epoch_s, train_s = epoch_s + float(e.sum()), train_s + float(tr.sum())
        trials.append({"config": analysis.get_all_configs()[path], "start_latency_s": first,
                       "epoch_s": [float(x) for x in e], "trial_total_s": float(df["time_total_s"].iloc[-1])})
    out = {"mode": f"ifdd search, {concurrent} concurrent", "concurrent": concurrent, "trials": trials,
           "start_latency_s_mean": statistics.fmean(latency), **_fractions(wall, epoch_s, train_s, concurrent)}
    return out, [t["config"] for t in trials]


def run_train_mode(doc: dict[str, Any], work: Path, configs: list[dict[str, Any]]) -> dict[str, Any]:
    import ray

    from ifdd.runconfig import with_overrides
    from orchestrator.planner import size_workers
    from orchestrator.search.space import parse_space
    from orchestrator.training.trainer import run_training

    space = parse_space(doc, default_name=doc["name"])
    res = size_workers({k: float(v) for k, v in ray.cluster_resources().items()}, 1, WORKER_CPUS, 0.0)
    storage = work / "ray-train"
    shutil.rmtree(storage, ignore_errors=True)
    t0 = time.perf_counter()
    runs, epoch_s, train_s = [], 0.0, 0.0
    for i, params in enumerate(configs):
        t1 = time.perf_counter()
        out = run_training(with_overrides(space.trial_base(), params), 1, name=f"overhead-{i}", storage=str(storage),
                           res=res, max_failures=0)
        wall = time.perf_counter() - t1
        e = [float(h["epoch_s"]) for h in out.history]
        tr = [BATCH * doc["base"]["train"]["max_steps_per_epoch"] / float(h["clips_per_s"]) for h in out.history]
        epoch_s, train_s = epoch_s + sum(e), train_s + sum(tr)
        runs.append({"config": params, "wall_s": wall, "epoch_s": e, "start_latency_s": wall - sum(e)})
    return {"mode": "ifdd train (run_training), sequential, one process", "concurrent": 1, "trials": runs,
            "start_latency_s_mean": statistics.fmean(r["start_latency_s"] for r in runs),
            **_fractions(time.perf_counter() - t0, epoch_s, train_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per epoch (batch 16)")
    ap.add_argument("--quick", action="store_true",
                    help="1 trial x 1 epoch x 3 steps on a small set, 1 trial at a time only (a smoke run)")
    ap.add_argument("--workdir", default="runs/bench/work")
    ap.add_argument("--out", default="runs/bench/overhead.json")
    args = ap.parse_args()
    cpc = 100
    if args.quick:
        args.trials, args.epochs, args.steps, cpc = 1, 1, 3, 5
    work = Path(args.workdir).resolve()
    manifest, cache = prepare(work, cpc)

    import ray

    from orchestrator.ray_session import init_ray

    t0 = time.perf_counter()
    init_ray(None, num_cpus=os.cpu_count())
    ray_start = time.perf_counter() - t0
    modes = []
    try:
        configs = None
        for concurrent in (1,) if args.quick else (1, 2):
            out, cfgs = run_study_mode(space_doc(manifest, cache, args.trials, args.epochs, args.steps, concurrent),
                                       work, concurrent)
            modes.append(out)
            configs = configs or cfgs
        modes.append(run_train_mode(space_doc(manifest, cache, args.trials, args.epochs, args.steps, 1), work,
                                    configs))
    finally:
        ray.shutdown()
    write_json(Path(args.out), {
        "bench": "overhead", **machine(), "quick": args.quick, "ray_start_s": ray_start,
        "setup": {"trials": args.trials, "epochs": args.epochs, "steps_per_epoch": args.steps, "batch": BATCH,
                  "clip": f"{FRAMES}x{SIZE}²", "fold": 1,
                  "worker": f"1 Ray Train worker x {WORKER_CPUS} CPU (1 torch thread) per trial"},
        "measured": "wall: perf_counter around run_search / run_training; epoch and train-step time from the "
                    "workers' own per-epoch reports; fractions = sum over trials / (wall x concurrent trials)",
        "modes": modes,
    })


if __name__ == "__main__":
    main()
