"""Ablation on the synthetic set: full IFDD vs no-ISSM vs no-LADM vs the baseline (both off), and a small
split_ratio × lifting_depth grid, nested protocol, mean ± std test UAR/WAR per variant.

Each run fine-tunes the tiny model in-process (``bench/bench_common.py`` ``fit``: ``ifdd.engine``, 8×32² decoded
clips) from the default pretext init (``--init scratch``: from the preset's own init) on a fold's inner-train split,
keeps the epoch with the best inner-val UAR, and evaluates that checkpoint once on the fold's test split: the reported
test UAR/WAR are nested estimates, never best-on-test. The pretext init holds backbone weights only (it is
pretrained without ISSM and LADM, as Kinetics-400 weights are), so every variant starts from the same backbone and
the IFDD modules start from their own init, as in the real study. Runs go to a pool of
``--procs`` spawned processes with one torch thread each. The switches are ``ModelConfig.use_issm`` / ``use_ladm``;
a grid point the model cannot build (a lifting branch left with no temporal slot) is listed as infeasible, untrained.
Each comparison of ``full`` with a variant is paired on (seed, fold), and again on folds (seed-averaged): the mean and
spread of the differences, how many pairs ``full`` won, a two-sided exact sign test (``ifdd search``'s own) and a
two-sided Wilcoxon signed-rank test (scipy).

    python bench/ablation.py [--seeds 0,1,2] [--folds 1,2,3,4,5] [--grid-seeds 0] [--grid-folds 1,2,3] [--epochs 3]
                             [--init pretext|scratch]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (  # noqa: E402
    BENCH_MODEL,
    fit,
    machine,
    map_in_pool,
    pool_data,
    pretext_init,
    synthetic_memory,
    write_json,
)

from ifdd.runconfig import run_config_from_dict  # noqa: E402

MAIN = {"full": {}, "no_issm": {"use_issm": False}, "no_ladm": {"use_ladm": False},
        "baseline": {"use_issm": False, "use_ladm": False}}
GRID = [(r, d) for d in (1, 2) for r in (0.25, 0.5, 0.75) if (r, d) != (0.5, 1)]
"""split_ratio × lifting_depth; (0.5, 1) is the paper's setting, i.e. ``full``, so its runs are not repeated."""
BASE = {"loss": {"lambda_gc": 0.1}, "optim": {"lr": 6.0e-4, "weight_decay": 0.05, "warmup_epochs": 1,
                                               "min_lr_ratio": 0.1},
        "data": {"augment": False, "mix_prob": 0.0}, "train": {"batch_size": 16, "eval_batch_size": 64}}

def _run(job: dict[str, Any]) -> dict[str, Any]:
    cfg = run_config_from_dict({**BASE, "model": {**BENCH_MODEL, **job["model"]},
                                "train": {**BASE["train"], "epochs": job["epochs"], "seed": job["seed"],
                                          "init_weights": job["init_weights"]}})
    t0 = time.perf_counter()
    out = fit(cfg, pool_data(), job["fold"], selection="val")
    return {**job, "test_uar": out["test"]["uar"], "test_war": out["test"]["war"], "test_clips": out["test"]["clips"],
            "best_epoch": out["best"]["epoch"], "val_uar": out["best"]["val_uar"],
            "val_uar_curve": [h["val_uar"] for h in out["history"]], "loaded": out["init"],
            "run_s": time.perf_counter() - t0}


def _stats(vals: list[float]) -> tuple[float, float]:
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == name]
        if rows[0].get("infeasible"):
            table.append({"variant": name, "group": rows[0]["group"], "infeasible": rows[0]["infeasible"]})
            continue
        uar, war, val = (_stats([r[k] for r in rows]) for k in ("test_uar", "test_war", "val_uar"))
        table.append({"variant": name, "group": rows[0]["group"], "runs": len(rows),
                      "seeds": sorted({r["seed"] for r in rows}), "folds": sorted({r["fold"] for r in rows}),
                      "test_uar_mean": uar[0], "test_uar_std": uar[1], "test_war_mean": war[0],
                      "test_war_std": war[1], "inner_val_uar_mean": val[0],
                      "best_epoch_mean": statistics.fmean(r["best_epoch"] for r in rows)})
    return table


def _tests(d: list[float]) -> dict[str, Any]:
    """Mean and spread of paired differences, wins and losses, and two-sided p-values of the exact sign test (ties
    dropped; ``ifdd search``'s winner-vs-base test) and the Wilcoxon signed-rank test (zero differences dropped)."""
    from scipy.stats import wilcoxon

    from orchestrator.search.results import sign_test

    m, s = _stats(d)
    sign = sign_test(d)
    return {"pairs": len(d), "mean_diff": m, "std_diff": s, "a_wins": sign["wins"], "a_losses": sign["losses"],
            "sign_test_p": sign["p"], "wilcoxon_p": float(wilcoxon(d).pvalue) if any(d) else 1.0}


def paired(runs: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """Test-UAR difference a - b over the (seed, fold) pairs both ran, and over the folds (each fold's difference
    averaged over its seeds): the seeds of a fold share its test clips, so the (seed, fold) pairs are not independent
    and their p-values are optimistic; the fold-level ones are the conservative reading."""
    ra = {(r["seed"], r["fold"]): r["test_uar"] for r in runs if r["variant"] == a and "test_uar" in r}
    rb = {(r["seed"], r["fold"]): r["test_uar"] for r in runs if r["variant"] == b and "test_uar" in r}
    keys = sorted(ra.keys() & rb.keys())
    if not keys:
        return {}
    folds = sorted({f for _, f in keys})
    by_fold = [statistics.fmean(ra[k] - rb[k] for k in keys if k[1] == f) for f in folds]
    return {"a": a, "b": b, **_tests([ra[k] - rb[k] for k in keys]),
            "folds": {"folds": folds, **_tests(by_fold)}}


def jobs(seeds: list[int], folds: list[int], grid_seeds: list[int], grid_folds: list[int], epochs: int,
         init_weights: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    todo, infeasible = [], []
    run = {"epochs": epochs, "init_weights": init_weights}
    for name, model in MAIN.items():
        todo += [{"variant": name, "group": "main", "model": model, "seed": s, "fold": f, **run}
                 for s in seeds for f in folds]
    for ratio, depth in GRID:
        name, model = f"ratio{ratio}_depth{depth}", {"split_ratio": ratio, "lifting_depth": depth}
        try:
            run_config_from_dict({"model": {**BENCH_MODEL, **model}})
        except ValueError as e:
            infeasible.append({"variant": name, "group": "grid", "model": model, "infeasible": str(e)})
            continue
        todo += [{"variant": name, "group": "grid", "model": model, "seed": s, "fold": f, **run}
                 for s in grid_seeds for f in grid_folds]
    return todo, infeasible


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--folds", default="1,2,3,4,5")
    ap.add_argument("--grid-seeds", default="0,1,2")
    ap.add_argument("--grid-folds", default="1,2,3,4,5")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--init", choices=("pretext", "scratch"), default="pretext",
                    help="the default pretext init (as ifdd search) or each preset's own init")
    ap.add_argument("--procs", type=int, default=2, help="parallel training processes (1 torch thread each)")
    ap.add_argument("--quick", action="store_true", help="1 seed, fold 1, 2 epochs, small set (a smoke run)")
    ap.add_argument("--workdir", default="runs/bench/work")
    ap.add_argument("--out", default="runs/bench/ablation.json")
    args = ap.parse_args()
    cpc = 100
    if args.quick:
        args.seeds = args.grid_seeds = "0"
        args.folds = args.grid_folds = "1"
        args.epochs, cpc = 2, 5
    t0 = time.perf_counter()
    weights, record = pretext_init(Path(args.workdir).resolve(), args.quick) if args.init == "pretext" else (None, None)
    todo, infeasible = jobs(ints(args.seeds), ints(args.folds), ints(args.grid_seeds), ints(args.grid_folds),
                            args.epochs, weights)
    workdir = Path(args.workdir).resolve() / f"synth{cpc}"
    data = synthetic_memory(workdir, clips_per_class=cpc)  # writes the tree once, before the pool reads it
    runs = []
    for r in map_in_pool(_run, todo, workdir, cpc, args.procs):
        runs.append(r)
        print(f"{r['variant']:<18} seed {r['seed']} fold {r['fold']}: test UAR {r['test_uar']:.3f} "
              f"(epoch {r['best_epoch']} on inner-val) {r['run_s']:.0f} s", flush=True)
    runs += infeasible
    write_json(Path(args.out), {
        "bench": "ablation", **machine(), "data": data.description, "quick": args.quick,
        "protocol": {"selection": "val (nested: checkpoint chosen on inner-val, test fold evaluated once)",
                     "main_seeds": ints(args.seeds), "main_folds": ints(args.folds),
                     "grid_seeds": ints(args.grid_seeds), "grid_folds": ints(args.grid_folds),
                     "epochs": args.epochs, "base": BASE, "model": BENCH_MODEL, "init": args.init,
                     "init_weights": weights, "pretext_record": record},
        "table": summarise(runs),
        "paired": [p for p in (paired(runs, "full", v) for v in ("no_issm", "no_ladm", "baseline")) if p],
        "runs": runs, "wall_s": round(time.perf_counter() - t0, 1),
    })


if __name__ == "__main__":
    main()
