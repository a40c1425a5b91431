"""`make bench`: every benchmark in turn, JSON under runs/bench/, then summary.md and the MLflow ``bench`` run.

model.py, data.py and train.py print their JSON (saved as <name>.json); search.py, ablation.py and overhead.py
write theirs. The budget below keeps the whole run near 30 minutes on 2 cores: the search runs 2 seeds and the
ablation 1 seed × 5 folds (main variants) and fold 1 (grid); each script's own defaults are the full protocol
(3 seeds × 5 folds), which takes several hours on 2 cores. Per-script and total wall times go to wall.json. A
failing script is reported and the others still run; the exit status is 1 then.

    python bench/run_all.py [--quick] [--dir runs/bench] [--no-mlflow]
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
    "search": ["--seeds", "0,1"],
    "ablation": ["--seeds", "0", "--folds", "1,2,3,4,5", "--grid-seeds", "0", "--grid-folds", "1", "--epochs", "5"],
    "overhead": [],
}
QUICK = {"model": ["--quick"], "data": ["--clips-per-class", "1", "--seconds", "0.3"],
         "train": ["--epochs", "1", "--clips-per-class", "5"]}


def run_group(group: tuple[str, ...], args, out: Path, env: dict[str, str], seconds: dict[str, float],
              failed: list[str], lock_wait: dict[str, float]) -> None:
    """Run ``group``'s scripts one after another (the Ray ones under ``ray_lock``), recording each one's wall time
    and whether it failed."""
    work = str(out / "work")
    with ray_lock(any(name in RAY_SCRIPTS for name in group)) as waited:
        lock_wait[group[0]] = waited
        for name in group:
            cmd = [sys.executable, str(HERE / f"{name}.py")]
            if name in QUICK:
                cmd += QUICK[name] if args.quick else []
            else:
                cmd += ["--quick"] if args.quick else BUDGET[name]
                cmd += ["--workdir", work, "--out", str(out / f"{name}.json")]
            t1 = time.perf_counter()
            res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE if name in QUICK else None, text=True)
            seconds[name] = round(time.perf_counter() - t1, 1)
            if res.returncode:
                failed.append(name)
                print(f"== bench/{name}.py FAILED (exit {res.returncode}) after {seconds[name]:.0f} s", flush=True)
                continue
            if name in QUICK:  # the JSON object is the output's last block (Ray prints worker logs before it)
                text = res.stdout if res.stdout.startswith("{") else res.stdout[res.stdout.index("\n{") + 1:]
                (out / f"{name}.json").write_text(text)
            print(f"== bench/{name}.py: {seconds[name]:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="every script in its smoke mode (a pipeline check: two groups of scripts run side by side, "
                         "so its timings mean nothing)")
    ap.add_argument("--dir", default="runs/bench")
    ap.add_argument("--runs", default="runs", help="the project's runs folder (MLflow store)")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0"}
    t0, seconds = time.perf_counter(), {}
    load = os.getloadavg()[0]
    failed, lock_wait = [], {}
    groups = (("model", "data", "ablation"), RAY_SCRIPTS)
    if args.quick:  # a smoke run: two groups at once, balanced by their quick-mode times (overhead is the longest)
        groups = (("model", "data", "ablation", "train", "search"), ("overhead",))
        with concurrent.futures.ThreadPoolExecutor(len(groups)) as pool:
            for f in [pool.submit(run_group, g, args, out, env, seconds, failed, lock_wait) for g in groups]:
                f.result()
    else:  # measurements: one script at a time
        for group in groups:
            run_group(group, args, out, env, seconds, failed, lock_wait)
    (out / "wall.json").write_text(json.dumps({
        "wall_s": round(time.perf_counter() - t0 - sum(lock_wait.values()), 1), "per_script_s": seconds,
        "lock_wait_s": {k: round(v, 1) for k, v in lock_wait.items() if v}, "failed": failed, "quick": args.quick,
        "cpus": os.cpu_count(), "load_avg_1min_at_start": round(load, 2),
        "measured": "perf_counter around the whole run minus the time spent waiting for the Ray lock (the summary "
                    "step excluded); per script: perf_counter around its subprocess"}, indent=2))
    cmd = [sys.executable, str(HERE / "summary.py"), "--dir", str(out), "--runs", args.runs]
    subprocess.run(cmd + (["--no-mlflow"] if args.no_mlflow else []), env=env, check=True)
    if failed:
        raise SystemExit(f"error: bench: {', '.join(failed)} failed (see above); the summary covers the others")


if __name__ == "__main__":
    main()
