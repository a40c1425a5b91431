"""Search on real multi-process Ray clusters on one box: multi-node GPU packing, driver kill + resume, Ray Jobs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ifdd_testkit.fixtures import split_size
from ifdd_testkit.procio import Proc, wait_for

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
        # only feasible points: every one of the 4 trials trains, so all 4 one-GPU trials must be placed
        space_path = write_space(tmp_path / "mn.yaml", small_manifest, budget={"num_samples": 4, "max_epochs": 1},
                                 search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
                                 protocol={"folds": [1]},
                                 resources={"workers_per_trial": 1, "gpus_per_worker": 1, "backend": "gloo"})
        space = load_space(space_path)
        out = Outputs.resolve(str(tmp_path / "runs"))
        assert run_search(space, out=out, uri=out.default_tracking_uri, optuna=out.default_optuna, resume=False,
                          fresh=False, address=cluster.address)
        out = capsys.readouterr().out
        assert "4 concurrent trial(s), each 1 worker(s)" in out and "× 1 GPU" in out
        study = json.loads((tmp_path / "runs" / "search" / "mn" / "mn-fold1.json").read_text())
        assert len(study["trials"]) == 4 and all(t["status"] == "complete" for t in study["trials"]), study
        from ifdd.checkpoint import load_checkpoint

        nodes = [load_checkpoint(Path(t["checkpoint"]) / "state.pt")["history"][-1]["node_id"]
                 for t in study["trials"]]
        worker_ids = {n.node_id for n in workers}
        assert set(nodes) <= worker_ids, "a GPU trial ran on the GPU-less head"
        # 4 one-GPU trials planned concurrently on two 2-GPU nodes: both nodes used
        assert set(nodes) == worker_ids, f"trials packed on one node only: {nodes}"
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
    proc = Proc(argv, tmp_path, ifdd_env)  # output read while it runs: a full pipe never blocks it
    wait_for(lambda: len(_trainer_checkpoints(storage)) >= 2, 240, "two checkpoints", proc)
    proc.signal(signal.SIGINT)
    assert proc.wait(120) == 1, proc.out[-4000:]
    assert "is partial" in proc.out and "--resume" in proc.out
    partial = json.loads((tmp_path / "runs" / "search" / "rs" / "rs-fold1.json").read_text())
    assert not partial["complete"] and partial["best"] is None and not partial["tests"]

    # 2) --resume, then the driver is killed by pid (SIGKILL) mid-study.
    proc = Proc([*argv, "--resume"], tmp_path, ifdd_env)
    before = len(_trainer_checkpoints(storage))
    wait_for(lambda: len(_trainer_checkpoints(storage)) >= before + 2, 240, "progress after resume", proc)
    proc.signal(signal.SIGKILL)
    proc.wait(60)

    # 3) --resume again: finishes with exactly num_samples trials, each trained to max_epochs, none duplicated.
    done = _ifdd(*argv, "--resume", cwd=tmp_path, env=ifdd_env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = json.loads((tmp_path / "runs" / "search" / "rs" / "rs-fold1.json").read_text())
    assert study["complete"] and len(study["trials"]) == 4
    assert len({t["trial_id"] for t in study["trials"]}) == 4
    assert all(t["status"] == "complete" and t["epochs"] == 3 for t in study["trials"]), study["trials"]
    assert len(list((storage / "search" / "rs" / "trials").iterdir())) == 4  # one Train run per trial
    assert study["tests"]["1"]["clips"] == split_size(small_manifest, 1, "test")


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
    status = _ifdd("launch", "--status", "--address", dashboard, "--runs", str(storage.parent), cwd=tmp_path,
                   env=ifdd_env, timeout=60)
    assert status.returncode == 0 and status.stdout.count("SUCCEEDED") == 2, status.stdout
    for fold in (1, 2):
        study = json.loads((storage.parent / "search" / "lj" / f"lj-fold{fold}.json").read_text())
        assert study["complete"] and study["tests"][str(fold)]["clips"] == split_size(small_manifest, fold, "test")
