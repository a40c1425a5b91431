"""Search efficiency: Optuna TPE + ASHA (what ``ifdd search`` runs) vs random search without pruning, the same number
of trials each, on the synthetic set with the tiny model fine-tuned from the pretext init, several seeds.

Both arms run in Ray Tune on a local Ray with ``max_concurrent_trials`` trials at a time, each trial one CPU and one
torch thread: a function trainable that trains the run config in-process with ``ifdd.engine`` (``bench/bench_common.py``
``fit``: fold 1, inner-train, ranked on inner-val UAR every epoch) on the decoded 8×32² clips, which Ray hands to
every trial from its object store. The space, base config and budget come from ``bench/search_space.yaml`` read by
``orchestrator/search/space.py`` (the same parser and Optuna distributions ``ifdd search`` uses); its
``train.init_weights: pretext`` is the default pretext init, resolved as ``ifdd search`` does. Both arms start with
the space's base config as their first trial (``ifdd search`` does so too), then:

- TPE+ASHA: ``OptunaSearch`` with ``tuner.tpe_sampler`` (TPE, seeded, the space's explicit
  ``budget.n_startup_trials`` random start-up trials) + ``ASHAScheduler(time_attr="epoch")`` with the space's grace
  period and reduction factor, ``num_samples`` trials of at most ``max_epochs`` epochs
  (``orchestrator/search/tuner.py``'s ``make_tuner`` configuration; only the trainable differs: no Ray Train worker
  group, no checkpoints);
- random: ``OptunaSearch`` with Optuna's ``RandomSampler`` (seeded), FIFO, ``num_samples`` trials × ``max_epochs``.

Every epoch report is timestamped; sorting all of an arm's reports by time gives the curve "best inner-val UAR seen so
far vs epochs consumed so far" (an epoch of a stopped trial counts as consumed). Per seed the JSON records each arm's
curve, final best, total epochs, and ``epochs_to_match``: the epochs TPE+ASHA took to first reach random search's
final best (None if it never did), with ``ratio_vs_random_total`` (that / random's total epochs) and
``ratio_vs_random_reach`` (that / the epochs random took to reach its own best). Each arm's winner (its best
inner-val report) is then trained again in the driver, same config and seed and one torch thread as in its trial (so
it repeats the trial: ``refit_repeats_trial``; a trial ASHA stopped runs on to ``max_epochs`` here), its epoch chosen
on inner-val and tested once on fold 1's test clips: the nested test UAR of what each arm would deliver.

Trials reuse their Ray actor (``reuse_actors``), which ``ifdd search`` does not need (its trial is a Ray Train run):
this saves the benchmark a process start per trial. The figures are epochs, not seconds, so this changes its wall
time only.

    python bench/search.py [--seeds 0,1,2] [--quick] [--out runs/bench/search.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import MemoryData, fit, machine, pretext_init, synthetic_memory, write_json  # noqa: E402

from ifdd.config import to_dict  # noqa: E402
from ifdd.runconfig import PRETEXT_INIT, run_config_from_dict, with_overrides  # noqa: E402
from orchestrator.search.space import SearchSpace, load_space  # noqa: E402
from orchestrator.search.tuner import tpe_sampler  # noqa: E402

SPACE = Path(__file__).resolve().parent / "search_space.yaml"


def trainable(config: dict[str, Any], *, base: dict[str, Any], data: MemoryData, fold: int) -> None:
    import ray.tune
    import torch

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


def arm_base(space: SearchSpace, seed: int, weights: str | None) -> dict[str, Any]:
    """The trials' base run config: the space's, with the seed and a resolved ``init_weights: pretext``."""
    base = with_overrides(space.trial_base(), {"train.seed": seed})
    if base.train.init_weights == PRETEXT_INIT:
        base = with_overrides(base, {"train.init_weights": weights})
    return to_dict(base)


def run_arm(arm: str, space: SearchSpace, data: MemoryData, seed: int, storage: Path, base: dict[str, Any]
            ) -> list[dict[str, Any]]:
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    b = space.budget
    common = {"space": {p.path: p.distribution() for p in space.params}, "metric": "val_uar", "mode": "max",
              "points_to_evaluate": [space.base_point()]}
    if arm == "tpe_asha":
        searcher = OptunaSearch(sampler=tpe_sampler(dataclasses.replace(b, seed=seed)), **common)
        scheduler = ASHAScheduler(time_attr="epoch", max_t=b.max_epochs, grace_period=b.grace_period,
                                  reduction_factor=b.reduction_factor)
    else:
        searcher = OptunaSearch(sampler=optuna.samplers.RandomSampler(seed=seed), **common)
        scheduler = FIFOScheduler()
    fn = ray.tune.with_resources(ray.tune.with_parameters(trainable, base=base, data=data,
                                                          fold=space.protocol.folds[0]), {"cpu": 1})
    tuner = ray.tune.Tuner(fn, tune_config=ray.tune.TuneConfig(
        metric="val_uar", mode="max", search_alg=searcher, scheduler=scheduler, num_samples=b.num_samples,
        max_concurrent_trials=space.resources.max_concurrent_trials, reuse_actors=True),
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
                           "epoch_s": float(row.get("train_s", math.nan)),
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


def winner_test(events: list[dict[str, Any]], base: dict[str, Any], data: MemoryData, fold: int
                ) -> dict[str, Any]:
    """The arm's winner (its best inner-val report, the earliest on ties) trained again here with the same config and
    seed: the epoch chosen on inner-val, tested once (the nested estimate of what the arm delivers)."""
    win = max(events, key=lambda e: (e["val_uar"], -e["time"]))
    cfg = with_overrides(run_config_from_dict(base), win["params"])
    out = fit(cfg, data, fold, test=True)
    return {"trial": win["trial"], "params": win["params"], "trial_val_uar": win["val_uar"],
            "trial_epoch": win["epoch"], "refit_val_uar": out["best"]["val_uar"], "refit_epoch": out["best"]["epoch"],
            "refit_repeats_trial": abs(out["best"]["val_uar"] - win["val_uar"]) < 1e-9,
            "test_uar": out["test"]["uar"], "test_war": out["test"]["war"], "test_clips": out["test"]["clips"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated search (and training) seeds")
    ap.add_argument("--space", default=str(SPACE))
    ap.add_argument("--quick", action="store_true", help="2 trials x 2 epochs per arm, 1 seed, tiny set (a smoke run)")
    ap.add_argument("--workdir", default="runs/bench/work", help="synthetic tree and Ray storage")
    ap.add_argument("--out", default="runs/bench/search.json")
    args = ap.parse_args()
    space = load_space(args.space)
    seeds = [int(s) for s in args.seeds.split(",")]
    cpc = 100
    if args.quick:
        space = dataclasses.replace(space, budget=dataclasses.replace(space.budget, num_samples=2, max_epochs=2,
                                                                      grace_period=1))
        seeds, cpc = seeds[:1], 5
    work = Path(args.workdir).resolve()
    t0 = time.perf_counter()
    weights, record = pretext_init(work, args.quick)
    data = synthetic_memory(work / f"synth{cpc}", clips_per_class=cpc)
    data_s = time.perf_counter() - t0

    import ray
    import torch

    torch.set_num_threads(1)  # the refits: one thread, as in the trials, so that they repeat them exactly
    from orchestrator.ray_session import init_ray

    init_ray(None, num_cpus=os.cpu_count())
    per_seed = []
    try:
        for seed in seeds:
            arms, winners, base = {}, {}, arm_base(space, seed, weights)
            for arm in ("tpe_asha", "random"):
                t1 = time.perf_counter()
                arms[arm] = run_arm(arm, space, data, seed, work / "tune", base)
                print(f"seed {seed} {arm}: {len(arms[arm])} epochs in {time.perf_counter() - t1:.0f} s", flush=True)
            for arm in arms:
                winners[arm] = winner_test(arms[arm], base, data, space.protocol.folds[0])
                print(f"seed {seed} {arm} winner: inner-val UAR {winners[arm]['trial_val_uar']:.3f}, nested test UAR "
                      f"{winners[arm]['test_uar']:.3f}", flush=True)
            per_seed.append({"seed": seed, **compare(arms["tpe_asha"], arms["random"], space.budget.max_epochs),
                             "winners": winners, "events": arms})
    finally:
        ray.shutdown()
    ratios = [r["ratio_vs_random_total"] for r in per_seed]
    b = space.budget
    write_json(Path(args.out), {
        "bench": "search", **machine(), "data": data.description, "data_s": round(data_s, 1),
        "space": str(args.space), "quick": args.quick, "init_weights": weights, "pretext_record": record,
        "budget": {"num_samples": b.num_samples, "random_samples": b.num_samples, "max_epochs": b.max_epochs,
                   "grace_period": b.grace_period, "reduction_factor": b.reduction_factor,
                   "n_startup_trials": b.n_startup_trials,
                   "max_concurrent_trials": space.resources.max_concurrent_trials},
        "measured": "inner-val UAR of fold 1 (selection split), every epoch of every trial; epochs consumed counted "
                    "in report-time order across concurrent trials; each arm's winner re-trained and tested once "
                    "(nested test UAR)",
        "epoch_s_mean": statistics.fmean(e["epoch_s"] for r in per_seed for arm in r["events"].values() for e in arm
                                         if not e["infeasible"]),
        "seeds": per_seed, "wall_s": round(time.perf_counter() - t0, 1),
        "matched_seeds": sum(r is not None for r in ratios),
        "matched_within_third": sum(r is not None and r <= 1 / 3 for r in ratios),
        "ratio_vs_random_total_mean": (sum(r for r in ratios if r is not None) / max(1, sum(r is not None
                                                                                          for r in ratios))),
    })


if __name__ == "__main__":
    main()
