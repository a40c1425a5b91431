"""Load: 5 fold-wise searches at once (`ifdd search --folds k --share 5`, what `ifdd launch` submits for folds 1-5)
on a local multi-node Ray cluster (a head and two worker nodes, each a real `ray start` process tree), 4 trials per
fold, 20 in all. Every study finishes complete, and afterwards the cluster holds no placement group or actor."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("faults_common", Path(__file__).with_name("faults_common.py"))
fc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fc)
_fx = fc.orchestrator_fixtures()
small_manifest, write_space, ray_head, ifdd_env = _fx.small_manifest, _fx.write_space, _fx.ray_head, _fx.ifdd_env

pytestmark = [pytest.mark.ray, pytest.mark.slow]
FOLDS, TRIALS = 5, 4


@pytest.fixture
def worker_nodes(ray_head, tmp_path, ifdd_env):
    """Two worker nodes (`ray start --address … --block`, 2 CPUs each) joined to the head; stopped by process group."""
    import ray

    address, _ = ray_head
    procs = []
    for i in range(2):  # nodes on one host need their own agent ports (the head already holds the fixed defaults)
        ports = {flag: _fx.free_port() for flag in ("metrics-export-port", "dashboard-agent-listen-port",
                                                     "dashboard-agent-grpc-port", "runtime-env-agent-port")}
        procs.append(subprocess.Popen(
            ["ray", "start", f"--address={address}", "--block", "--num-cpus=2", "--node-ip-address=127.0.0.1",
             "--disable-usage-stats", *(f"--{k}={v}" for k, v in ports.items())],
            env=ifdd_env, stdout=open(tmp_path / f"worker{i}.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True))
    try:
        ray.init(address=address)
        fc.wait_for(lambda: len([n for n in ray.nodes() if n["Alive"]]) == 3, 120, "3 live nodes")
        yield address
    finally:
        ray.shutdown()
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.mark.xfail(reason="unfinished: the 2 `ray start` worker nodes die on a port clash (bind: address in use) "
                          "and never join the head; see docs/reliability-faults.md", strict=False)
def test_five_fold_jobs_at_once_all_finish_and_leak_nothing(small_manifest, tmp_path, ray_head, worker_nodes,
                                                            write_space, ifdd_env):
    from ray.util.state import list_actors, list_placement_groups

    _, dashboard = ray_head
    space = write_space(tmp_path / "ld.yaml", small_manifest,
                        search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
                        base={"train": {"batch_size": 8, "eval_batch_size": 16, "max_steps_per_epoch": 1}},
                        budget={"num_samples": TRIALS, "max_epochs": 1, "scheduler": "none"},
                        protocol={"folds": list(range(1, FOLDS + 1))},
                        resources={"workers_per_trial": 1, "cpus_per_worker": 1.0, "max_concurrent_trials": 1})
    storage = tmp_path / "runs" / "ray"
    t0 = time.perf_counter()
    jobs = [fc.Proc(["search", "--space", str(space), "--folds", str(k), "--share", str(FOLDS), "--address",
                     worker_nodes, "--storage", str(storage), "--resume"], tmp_path, ifdd_env)
            for k in range(1, FOLDS + 1)]
    rcs = [j.wait(1500) for j in jobs]
    elapsed = time.perf_counter() - t0
    assert rcs == [0] * FOLDS, "\n\n".join(j.out[-2500:] for j, rc in zip(jobs, rcs, strict=True) if rc)
    trials = 0
    for k in range(1, FOLDS + 1):
        study = json.loads((tmp_path / "runs" / "search" / "ld" / f"ld-fold{k}.json").read_text())
        assert study["complete"] and study["tests"][str(k)]["clips"] > 0, study
        trials += sum(t["status"] == "complete" for t in study["trials"])
    assert trials == FOLDS * TRIALS

    def leftovers():
        pgs = [pg for pg in list_placement_groups(address=dashboard) if pg.state != "REMOVED"]
        actors = [a for a in list_actors(address=dashboard) if a.state != "DEAD"]
        return pgs, actors

    deadline = time.time() + 60
    while any(leftovers()) and time.time() < deadline:
        time.sleep(2)
    pgs, actors = leftovers()
    assert not pgs, f"leaked placement groups: {pgs}"
    assert not actors, f"leaked actors: {[(a.class_name, a.state) for a in actors]}"
    print(f"\nload: {FOLDS} concurrent fold searches, {trials} trials, 3 nodes, {elapsed:.0f} s")
