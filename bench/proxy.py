"""The small-scale proxy's learning curve: the tiny model fine-tuned from the default pretext init vs trained from
scratch (docs/proxy.md).

The default pretext init of the benchmark model (``train.init_weights: pretext``: ``ifdd pretrain``'s default
recipe) is made, or reused, under ``<workdir>/runs/pretrain/`` by ``orchestrator.inputs.ensure_default_pretext``, the
function ``ifdd search`` calls. Then each init runs once per seed through ``bench_common.fit`` (``ifdd.engine.fit``),
two runs at a time in spawned processes of one torch thread each. It trains on fold 1 of the decoded synthetic set
(8×32²), uses the ablation's recipe, and picks the epoch on inner-val UAR, whose weights are tested once. The inits:

- ``pretext``: the full tiny IFDD from the pretext init;
- ``scratch``: the same, from the tiny preset's own init (``linear_init: torch``);
- ``scratch_mvit``: the same, from MViT's trunc-normal(0.02) init (``linear_init: mvit``).

Per run the JSON records the inner-val UAR per epoch, the first epoch above 0.30 and the test UAR of the selected
epoch; per init, how many seeds passed 0.30 by epoch 2.

    python bench/proxy.py [--seeds 0,1,2,3,4] [--epochs 5] [--quick] [--out runs/bench/proxy.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ablation import BASE  # noqa: E402
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

INITS = {"pretext": {}, "scratch": {"init_weights": None},
         "scratch_mvit": {"init_weights": None, "linear_init": "mvit"}}
THRESHOLD = 0.30
"""Inner-val UAR counted as past chance (7 classes: chance 1/7 = 0.143)."""


def run(job: dict[str, Any]) -> dict[str, Any]:
    """One fine-tune of ``job`` (init, seed, epochs, weights) in a ``map_in_pool`` process."""
    from ifdd.runconfig import run_config_from_dict

    init, seed, epochs, weights = job["init"], job["seed"], job["epochs"], job["weights"]
    change = {k: v for k, v in INITS[init].items() if k != "init_weights"}
    train = {**BASE["train"], "epochs": epochs, "seed": seed,
             "init_weights": INITS[init].get("init_weights", weights)}
    optim = {**BASE["optim"], "warmup_epochs": min(BASE["optim"]["warmup_epochs"], epochs - 1)}  # --quick: 1 epoch
    cfg = run_config_from_dict({**BASE, "optim": optim, "model": {**BENCH_MODEL, **change}, "train": train})
    t0 = time.perf_counter()
    out = fit(cfg, pool_data(), 1, selection="val")
    curve = [h["val_uar"] for h in out["history"]]
    passed = next((i + 1 for i, v in enumerate(curve) if v > THRESHOLD), None)
    return {"init": init, "seed": seed, "val_uar": curve, "first_epoch_above": passed,
            "test_uar": out["test"]["uar"], "best_epoch": out["best"]["epoch"], "loaded": out["init"],
            "run_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--inits", default=",".join(INITS), help=f"comma-separated, of {', '.join(INITS)}")
    ap.add_argument("--quick", action="store_true", help="a 64-clip pretext, 1 seed, 1 epoch (a smoke run)")
    ap.add_argument("--procs", type=int, default=2, help="parallel training processes (1 torch thread each)")
    ap.add_argument("--workdir", default="runs/bench/work")
    ap.add_argument("--out", default="runs/bench/proxy.json")
    args = ap.parse_args()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    epochs = 1 if args.quick else args.epochs
    inits = args.inits.split(",")
    if unknown := set(inits) - set(INITS):
        raise SystemExit(f"error: --inits: unknown {sorted(unknown)}; choose from {', '.join(INITS)}")
    work = Path(args.workdir).resolve()
    t0 = time.perf_counter()
    weights, record = pretext_init(work, args.quick)
    pretext_s = time.perf_counter() - t0
    cpc = 5 if args.quick else 100
    data = synthetic_memory(work / f"synth{cpc}", clips_per_class=cpc)  # the tree, written before the pool reads it
    runs = []
    jobs = [{"init": init, "seed": seed, "epochs": epochs, "weights": weights} for init in inits for seed in seeds]
    for r in map_in_pool(run, jobs, work / f"synth{cpc}", cpc, args.procs):
        runs.append(r)
        print(f"{r['init']:13s} seed {r['seed']}: inner-val UAR {' '.join(f'{v:.3f}' for v in r['val_uar'])}, test UAR "
              f"{r['test_uar']:.3f} ({r['run_s']:.0f} s)", flush=True)
    summary = {init: {"seeds": len(seeds), "passed_by_epoch_2": sum(
        1 for r in runs if r["init"] == init and r["first_epoch_above"] is not None and r["first_epoch_above"] <= 2)}
        for init in inits}
    write_json(Path(args.out), {
        "bench": "proxy", **machine(), "quick": args.quick, "data": data.description, "fold": 1, "epochs": epochs,
        "threshold": THRESHOLD, "pretext": {"checkpoint": weights, "record": record, "wall_s": pretext_s},
        "measured": "inner-val UAR per epoch of bench_common.fit (ifdd.engine.fit), fold 1; test UAR of the epoch "
                    "chosen on inner-val, evaluated once", "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
