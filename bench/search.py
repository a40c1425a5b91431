"""Search efficiency: Optuna TPE + ASHA (what ``ifdd search`` runs) vs random search without pruning at twice the
trial budget, on the synthetic set with the tiny model, several seeds.

Both arms run in Ray Tune on a local Ray with ``max_concurrent_trials`` trials at a time, each trial one CPU and one
torch thread: a function trainable that trains the run config in-process with ``ifdd.engine`` (``bench/bench_common.py``
``fit``: fold 1, inner-train, ranked on inner-val UAR every epoch) on the decoded 8×64² clips, which Ray hands to
every trial from its object store. The space, base config and budget come from ``bench/search_space.yaml`` read by
``orchestrator/space.py`` (the same parser and Optuna distributions ``ifdd search`` uses):

- TPE+ASHA: ``OptunaSearch`` with ``tuner.tpe_sampler`` (TPE, seeded, the space's ``budget.n_startup_trials``) +
  ``ASHAScheduler(time_attr="epoch")`` with the space's grace period and reduction factor, ``num_samples`` trials, at
  most ``max_epochs`` epochs each (``orchestrator/search/tuner.py``'s ``make_tuner`` configuration; only the trainable
  differs: no Ray Train worker group, no checkpoints);
- random: ``OptunaSearch`` with Optuna's ``RandomSampler`` (seeded), FIFO, 2 × ``num_samples`` trials × ``max_epochs``.

Every epoch report is timestamped; sorting all of an arm's reports by time gives the curve "best inner-val UAR seen so
far vs epochs consumed so far" (an epoch of a stopped trial counts as consumed). Per seed the JSON records each arm's
curve, final best, total epochs, and ``epochs_to_match``: the epochs TPE+ASHA took to first reach random search's
final best (None if it never did), with ``ratio_vs_random_total`` (that / random's total epochs) and
``ratio_vs_random_reach`` (that / the epochs random took to reach its own best).

    python bench/search.py [--seeds 0,1,2] [--quick] [--out runs/bench/search.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import MemoryData, fit, machine, synthetic_memory, write_json  # noqa: E402

from ifdd.runconfig import with_overrides  # noqa: E402
from orchestrator.search.space import SearchSpace, load_space  # noqa: E402
from orchestrator.search.tuner import tpe_sampler  # noqa: E402

SPACE = Path(__file__).resolve().parent / "search_space.yaml"


def trainable(config: dict[str, Any], *, base: dict[str, Any], data: MemoryData, fold: int) -> None:
    import ray.tune
    import torch

    from ifdd.runconfig import run_config_from_dict

    torch.set_num_threads(1)
    try:
        cfg = with_overrides(run_config_from_dict(base), dict(config))
    except ValueError as e:  # as orchestrator/trial.py: an unbuildable combination is reported once, worst score
        ray.tune.report({"epoch": 1, "val_uar": 0.0, "infeasible": 1, "time": time.time(), "reason": str(e)})
        return

    def report(row: dict[str, Any]) -> None:
        ray.tune.report({"epoch": row["epoch"], "val_uar": row["val_uar"], "val_war": row["val_war"],
                         "train_s": row["epoch_s"], "time": row["time"], "infeasible": 0})

    fit(cfg, data, fold, test=False, on_epoch=report)


def run_arm(arm: str, space: SearchSpace, data: MemoryData, seed: int, storage: Path) -> list[dict[str, Any]]:
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {p.path: p.distribution() for p in space.params}
    b = space.budget
    base = with_overrides(space.trial_base(), {"train.seed": seed})
    from ifdd.config import to_dict

    if arm == "tpe_asha":
        searcher = OptunaSearch(space=dists, metric="val_uar", mode="max",
                                sampler=tpe_sampler(dataclasses.replace(b, seed=seed)))
        scheduler = ASHAScheduler(time_attr="epoch", max_t=b.max_epochs, grace_period=b.grace_period,
                                  reduction_factor=b.reduction_factor)
        samples = b.num_samples
    else:
        searcher = OptunaSearch(space=dists, metric="val_uar", mode="max",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
        scheduler, samples = FIFOScheduler(), 2 * b.num_samples
    fn = ray.tune.with_resources(ray.tune.with_parameters(trainable, base=to_dict(base), data=data,
                                                          fold=space.protocol.folds[0]), {"cpu": 1})
    tuner = ray.tune.Tuner(fn, tune_config=ray.tune.TuneConfig(
        metric="val_uar", mode="max", search_alg=searcher, scheduler=scheduler, num_samples=samples,
        max_concurrent_trials=space.resources.max_concurrent_trials),
        run_config=ray.tune.RunConfig(name=f"{arm}-seed{seed}", storage_path=str(storage), verbose=0))
    grid = tuner.fit()
    events = []
    for r in grid:
        if r.error:
            raise RuntimeError(f"{arm} seed {seed}: trial failed: {r.error}")
        df = r.metrics_dataframe
        for _, row in df.iterrows():
            events.append({"trial": r.metrics["trial_id"], "epoch": int(row["epoch"]), "val_uar": float(row["val_uar"]),
                           "time": float(row["time"]), "infeasible": int(row.get("infeasible", 0)),
                           "params": {k.removeprefix("config/"): v for k, v in r.config.items()}})
    return sorted(events, key=lambda e: e["time"])


def curve(events: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(epochs consumed, best inner-val UAR so far) after each report, in time order."""
    best, out = 0.0, []
    for n, e in enumerate(events, 1):
        best = max(best, e["val_uar"])
        out.append((n, best))
    return out


def first_reach(c: list[tuple[int, float]], target: float) -> int | None:
    return next((n for n, v in c if v >= target - 1e-12), None)


def compare(tpe: list[dict[str, Any]], rnd: list[dict[str, Any]], max_epochs: int) -> dict[str, Any]:
    ct, cr = curve(tpe), curve(rnd)
    target = cr[-1][1]
    reach_t, reach_r = first_reach(ct, target), first_reach(cr, target)
    return {
        "random_best": target, "random_epochs": len(rnd), "random_epochs_to_best": reach_r,
        "tpe_asha_best": ct[-1][1], "tpe_asha_epochs": len(tpe), "epochs_to_match": reach_t,
        "ratio_vs_random_total": None if reach_t is None else reach_t / len(rnd),
        "ratio_vs_random_reach": None if reach_t is None else reach_t / reach_r,
        "tpe_asha_trials": len({e["trial"] for e in tpe}), "random_trials": len({e["trial"] for e in rnd}),
        "tpe_asha_stopped_early": sum(1 for t in {e["trial"] for e in tpe}
                                      if max(e["epoch"] for e in tpe if e["trial"] == t) < max_epochs),
        "curves": {"tpe_asha": ct, "random": cr},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated search (and training) seeds")
    ap.add_argument("--space", default=str(SPACE))
    ap.add_argument("--quick", action="store_true", help="2 TPE trials x 2 epochs, 1 seed, tiny set (a smoke run)")
    ap.add_argument("--workdir", default="runs/bench/work", help="synthetic tree and Ray storage")
    ap.add_argument("--out", default="runs/bench/search.json")
    args = ap.parse_args()
    space = load_space(args.space)
    seeds = [int(s) for s in args.seeds.split(",")]
    cpc = 100
    if args.quick:
        import dataclasses

        space = dataclasses.replace(space, budget=dataclasses.replace(space.budget, num_samples=2, max_epochs=2,
                                                                      grace_period=1))
        seeds, cpc = seeds[:1], 5
    work = Path(args.workdir).resolve()
    t0 = time.perf_counter()
    data = synthetic_memory(work / f"synth{cpc}", clips_per_class=cpc)
    data_s = time.perf_counter() - t0

    import ray

    from orchestrator.ray_session import init_ray

    init_ray(None, num_cpus=os.cpu_count())
    per_seed = []
    try:
        for seed in seeds:
            arms = {}
            for arm in ("tpe_asha", "random"):
                t1 = time.perf_counter()
                arms[arm] = run_arm(arm, space, data, seed, work / "tune")
                print(f"seed {seed} {arm}: {len(arms[arm])} epochs in {time.perf_counter() - t1:.0f} s", flush=True)
            row = {"seed": seed, **compare(arms["tpe_asha"], arms["random"], space.budget.max_epochs), "events": arms}
            per_seed.append(row)
    finally:
        ray.shutdown()
    ratios = [r["ratio_vs_random_total"] for r in per_seed]
    write_json(Path(args.out), {
        "bench": "search", **machine(), "data": data.description, "data_s": round(data_s, 1),
        "space": str(args.space), "quick": args.quick,
        "budget": {"num_samples": space.budget.num_samples, "max_epochs": space.budget.max_epochs,
                   "grace_period": space.budget.grace_period, "reduction_factor": space.budget.reduction_factor,
                   "random_samples": 2 * space.budget.num_samples,
                   "max_concurrent_trials": space.resources.max_concurrent_trials},
        "measured": "inner-val UAR of fold 1 (selection split), every epoch of every trial; epochs consumed counted "
                    "in report-time order across concurrent trials",
        "seeds": per_seed, "wall_s": round(time.perf_counter() - t0, 1),
        "matched_seeds": sum(r is not None for r in ratios),
        "ratio_vs_random_total_mean": (sum(r for r in ratios if r is not None) / max(1, sum(r is not None
                                                                                          for r in ratios))),
    })


if __name__ == "__main__":
    main()
