"""Search on real multi-process Ray clusters on one box: multi-node GPU packing, driver kill + resume, Ray Jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _ifdd(*args: str, cwd: Path, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "ifdd"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, **kw)


def test_multi_node_search_packs_trials_by_gpu_count(small_manifest, tmp_path, capsys, write_space):
    """Head (no GPU) + 2 worker nodes with 2 logical GPUs each: 4 one-GPU trials at once, on both workers."""
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.outputs import Outputs
    from orchestrator.search.runner import run_search
    from orchestrator.search.space import load_space

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": 0})
    workers = [cluster.add_node(num_cpus=2, num_gpus=2) for _ in range(2)]
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        space_path = write_space(tmp_path / "mn.yaml", small_manifest, budget={"num_samples": 4, "max_epochs": 1},
                                 protocol={"folds": [1]},
                                 resources={"workers_per_trial": 1, "gpus_per_worker": 1, "backend": "gloo"})
        space = load_space(space_path)
        out = Outputs.resolve(str(tmp_path / "runs"))
        assert run_search(space, out=out, uri=out.default_tracking_uri, optuna=out.default_optuna, resume=False,
                          fresh=False, address=cluster.address)
        out = capsys.readouterr().out
        assert "4 concurrent trial(s), each 1 worker(s)" in out and "× 1 GPU" in out
        study = json.loads((tmp_path / "runs" / "search" / "mn" / "mn-fold1.json").read_text())
        feasible = [t for t in study["trials"] if t["status"] != "infeasible"]
        nodes = set()
        for t in feasible:
            from ifdd.checkpoint import load_checkpoint

            history = load_checkpoint(Path(t["checkpoint"]) / "state.pt")["history"]
            nodes.add(history[-1]["node_id"])
        worker_ids = {n.node_id for n in workers}
        assert nodes <= worker_ids, "a GPU trial ran on the GPU-less head"
        if len(feasible) >= 2:
            assert nodes == worker_ids, f"trials packed on one node only: {nodes}"
        # nothing left reserved: every trial's placement groups were removed
        deadline = time.time() + 60
        while time.time() < deadline:
            from ray.util.state import list_placement_groups

            live = [pg for pg in list_placement_groups() if pg.state == "CREATED"]
            if not live:
                break
            time.sleep(2)
        assert not live, f"leaked placement groups: {live}"
    finally:
        ray.shutdown()
        cluster.shutdown()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def _trainer_checkpoints(storage: Path) -> list[Path]:
    return sorted(storage.glob("search/*/trials/*/checkpoint_*"))


def test_driver_killed_mid_study_resumes_to_exactly_num_samples(small_manifest, tmp_path, ray_head, write_space,
                                                                ifdd_env):
    address, _ = ray_head
    space = write_space(tmp_path / "rs.yaml", small_manifest,
                        search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
                        budget={"num_samples": 4, "max_epochs": 3, "scheduler": "none"}, protocol={"folds": [1]},
                        resources={"workers_per_trial": 1, "max_concurrent_trials": 1})
    storage = tmp_path / "runs" / "ray"
    argv = ["search", "--space", str(space), "--runs", str(storage.parent), "--address", address]

    # 1) Ctrl-C: Tune stops and returns a partial result: reported as partial, nothing selected (exit 1).
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ifdd"), *argv], cwd=tmp_path, env=ifdd_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_trainer_checkpoints(storage)) >= 2, 240, "two checkpoints")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    assert "is partial" in err and "--resume" in err
    partial = json.loads((tmp_path / "runs" / "search" / "rs" / "rs-fold1.json").read_text())
    assert not partial["complete"] and partial["best"] is None and not partial["tests"]

    # 2) --resume, then the driver is killed by pid (SIGKILL) mid-study.
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ifdd"), *argv, "--resume"], cwd=tmp_path,
                            env=ifdd_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = len(_trainer_checkpoints(storage))
    _wait_for(lambda: len(_trainer_checkpoints(storage)) >= before + 2, 240, "progress after resume")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)

    # 3) --resume again: finishes with exactly num_samples trials, each trained to max_epochs, none duplicated.
    done = _ifdd(*argv, "--resume", cwd=tmp_path, env=ifdd_env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = json.loads((tmp_path / "runs" / "search" / "rs" / "rs-fold1.json").read_text())
    assert study["complete"] and len(study["trials"]) == 4
    assert len({t["trial_id"] for t in study["trials"]}) == 4
    assert all(t["status"] == "complete" and t["epochs"] == 3 for t in study["trials"]), study["trials"]
    assert len(list((storage / "search" / "rs" / "trials").iterdir())) == 4  # one Train run per trial
    assert study["tests"]["1"]["clips"] > 0


def test_launch_submits_one_job_per_fold_and_they_succeed(small_manifest, tmp_path, ray_head, write_space,
                                                          ifdd_env):
    _, dashboard = ray_head
    space = write_space(tmp_path / "lj.yaml", small_manifest, budget={"num_samples": 2, "max_epochs": 1},
                        search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}})
    storage = tmp_path / "shared" / "ray"
    run = _ifdd("launch", "--space", str(space), "--folds", "1-2", "--address", dashboard, "--working-dir", "none",
                "--runs", str(storage.parent), "--wait", cwd=tmp_path, env=ifdd_env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("submitted ifdd-lj-fold") == 2
    status = _ifdd("launch", "--status", "--address", dashboard, cwd=tmp_path, env=ifdd_env, timeout=60)
    assert status.returncode == 0 and status.stdout.count("SUCCEEDED") == 2, status.stdout
    for fold in (1, 2):
        study = json.loads((storage.parent / "search" / "lj" / f"lj-fold{fold}.json").read_text())
        assert study["complete"] and study["tests"][str(fold)]["clips"] > 0
