"""`make bench`: every benchmark in turn, JSON under runs/bench/, then summary.md and the MLflow ``bench`` run.

model.py, data.py and train.py print their JSON (saved as <name>.json); proxy.py, search.py, ablation.py and
overhead.py write theirs. The budget below keeps the whole run under 30 minutes on 2 cores: the proxy's pretext vs
scratch curves at 5 seeds, the search at 3 seeds × 20 trials per arm, the ablation's main variants at 3 seeds × 5
folds and its split-ratio × lifting-depth grid at 1 seed × 3 folds, every run fine-tuned from the pretext init
(the ablation's own defaults run the grid on all 5 folds and 3 seeds). Per-script and total wall times go to
wall.json. A failing script is reported and the others still run; the exit status is 1 then.

``--full`` (``make bench-full``, hours on 2 cores: for a bigger machine) runs every script on its own defaults
instead: model.py's kernel A/B on xs, the ablation's grid at 3 seeds × 5 folds.

    python bench/run_all.py [--quick | --full] [--dir runs/bench] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RAY_SCRIPTS = ("train", "search", "overhead")


@contextlib.contextmanager
def ray_lock(needed: bool):
    """On a shared box, ``IFDD_BENCH_RAY_LOCK=<file>`` serialises the Ray-starting scripts with other Ray users
    (an exclusive flock held while they run, one after another); yields the seconds spent waiting for it."""
    path = os.environ.get("IFDD_BENCH_RAY_LOCK")
    if not (needed and path):
        yield 0.0
        return
    with open(path, "a") as f:
        t0 = time.perf_counter()
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - t0
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

BUDGET = {
    "model": ["--no-kernels"],
    "proxy": ["--inits", "pretext,scratch"],
    "search": [],
    "ablation": ["--seeds", "0,1,2", "--folds", "1,2,3,4,5", "--grid-seeds", "0", "--grid-folds", "1,2,3"],
    "overhead": [],
}
QUICK = {"model": ["--quick"], "data": ["--clips-per-class", "1", "--seconds", "0.3"],
         "train": ["--epochs", "1", "--clips-per-class", "5"]}
"""The --quick arguments of the scripts that do not take --quick alone."""
PRINTS = ("model", "data", "train")
"""Scripts that print their JSON (the others take --workdir and --out)."""


def script_args(name: str, args, out: Path) -> list[str]:
    mode = QUICK.get(name, ["--quick"]) if args.quick else [] if args.full else BUDGET.get(name, [])
    return mode if name in PRINTS else mode + ["--workdir", str(out / "work"), "--out", str(out / f"{name}.json")]


def run_group(group: tuple[str, ...], args, out: Path, env: dict[str, str], seconds: dict[str, float],
              failed: list[str], lock_wait: dict[str, float]) -> None:
    """Run ``group``'s scripts one after another (the Ray ones under ``ray_lock``), recording each one's wall time
    and whether it failed."""
    with ray_lock(any(name in RAY_SCRIPTS for name in group)) as waited:
        lock_wait[group[0]] = waited
        for name in group:
            cmd = [sys.executable, str(HERE / f"{name}.py"), *script_args(name, args, out)]
            t1 = time.perf_counter()
            res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE if name in PRINTS else None, text=True)
            seconds[name] = round(time.perf_counter() - t1, 1)
            if res.returncode:
                failed.append(name)
                print(f"== bench/{name}.py FAILED (exit {res.returncode}) after {seconds[name]:.0f} s", flush=True)
                continue
            if name in PRINTS:  # the JSON object is the output's last block (Ray prints worker logs before it)
                text = res.stdout if res.stdout.startswith("{") else res.stdout[res.stdout.index("\n{") + 1:]
                (out / f"{name}.json").write_text(text)
            print(f"== bench/{name}.py: {seconds[name]:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="every script in its smoke mode (a pipeline check: two groups of scripts run side by side, "
                         "so its timings mean nothing)")
    ap.add_argument("--full", action="store_true", help="every script on its own defaults (hours on 2 cores)")
    ap.add_argument("--dir", default="runs/bench")
    ap.add_argument("--runs", default="runs", help="the project's runs folder (MLflow store)")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()
    if args.quick and args.full:
        raise SystemExit("error: --quick and --full: choose one")
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0"}
    t0, seconds = time.perf_counter(), {}
    load = os.getloadavg()[0]
    failed, lock_wait = [], {}
    groups = (("model", "data", "proxy", "ablation"), RAY_SCRIPTS)
    if args.quick:  # a smoke run: two groups at once, balanced by their quick-mode times (overhead is the longest)
        groups = (("model", "data", "proxy", "ablation", "train", "search"), ("overhead",))
        with concurrent.futures.ThreadPoolExecutor(len(groups)) as pool:
            for f in [pool.submit(run_group, g, args, out, env, seconds, failed, lock_wait) for g in groups]:
                f.result()
    else:  # measurements: one script at a time
        for group in groups:
            run_group(group, args, out, env, seconds, failed, lock_wait)
    (out / "wall.json").write_text(json.dumps({
        "wall_s": round(time.perf_counter() - t0 - sum(lock_wait.values()), 1), "per_script_s": seconds,
        "lock_wait_s": {k: round(v, 1) for k, v in lock_wait.items() if v}, "failed": failed,
        "quick": args.quick, "full": args.full,
        "cpus": os.cpu_count(), "load_avg_1min_at_start": round(load, 2),
        "measured": "perf_counter around the whole run minus the time spent waiting for the Ray lock (the summary "
                    "step excluded); per script: perf_counter around its subprocess"}, indent=2))
    cmd = [sys.executable, str(HERE / "summary.py"), "--dir", str(out), "--runs", args.runs]
    subprocess.run(cmd + (["--no-mlflow"] if args.no_mlflow else []), env=env, check=True)
    if failed:
        raise SystemExit(f"error: bench: {', '.join(failed)} failed (see above); the summary covers the others")


if __name__ == "__main__":
    main()
