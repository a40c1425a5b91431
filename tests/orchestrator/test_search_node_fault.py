"""A worker node killed mid-study on a real multi-node Ray cluster (head + 3 worker nodes, one logical GPU each).

The search runs through the CLI (`ifdd search --address …`) as its own driver. Once a trial has written a
checkpoint, the node its Train worker runs on is killed (raylet and workers SIGKILLed, `Cluster.remove_node(...,
allow_graceful=False)`). The study must still finish: the hit trial resumes from its checkpoint on another node
(Train/Tune FailureConfig), every trial ends TERMINATED, each fold's winner is tested, and nothing stays reserved.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ifdd_testkit.fixtures import split_size

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MAX_EPOCHS = 5


def _first_checkpointed_trial(trials: Path) -> tuple[Path, dict] | None:
    """A trial whose Train run has *registered* a checkpoint (in its checkpoint manager snapshot) but not its last
    epoch, and that checkpoint's metrics. A checkpoint dir already on storage but not yet registered by the
    controller is not restored after a failure, so it does not count."""
    for snap in sorted(trials.glob("*/checkpoint_manager_snapshot.json")):
        try:
            results = json.loads(snap.read_text())["checkpoint_results"]
        except (ValueError, KeyError, OSError):  # being written
            continue
        if results:
            last = max((r["metrics"] for r in results), key=lambda m: m["epoch"])
            if last["epoch"] < MAX_EPOCHS - 1:
                return snap.parent, last
    return None


def _alive_train_workers(address: str, node_id: str) -> list:
    from ray.util.state import list_actors

    return [a for a in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
            if "TrainWorker" in a.class_name and a.node_id == node_id]


def test_worker_node_killed_mid_study_trials_resume_from_checkpoints(small_manifest, tmp_path, write_space,
                                                                    token_cluster_env,
                                                                    ifdd_env):
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors, list_placement_groups

    from ifdd.checkpoint import load_checkpoint

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": 0})
    workers = {n.node_id: n for n in (cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(3))}
    proc = None
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        # 2 concurrent one-GPU trials on 3 GPU nodes: after losing one node the 2 trials still fit
        space = write_space(tmp_path / "nf.yaml", small_manifest,
                            search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
                            budget={"num_samples": 2, "max_epochs": MAX_EPOCHS, "scheduler": "none"},
                            resources={"workers_per_trial": 1, "gpus_per_worker": 1, "backend": "gloo",
                                       "max_concurrent_trials": 2})
        storage = tmp_path / "runs" / "ray"
        log = open(tmp_path / "search.log", "w")
        proc = subprocess.Popen([str(Path(sys.executable).parent / "ifdd"), "search", "--space", str(space),
                                 "--runs", str(storage.parent), "--address", cluster.address, "--no-register"],
                                cwd=tmp_path,
                                env=ifdd_env, stdout=log, stderr=subprocess.STDOUT, text=True)
        trials = storage / "search" / "nf" / "trials"
        victim, deadline = None, time.time() + 400
        while victim is None:
            assert proc.poll() is None, (tmp_path / "search.log").read_text()[-3000:]
            assert time.time() < deadline, "no trial checkpointed in time"
            found = _first_checkpointed_trial(trials) if trials.is_dir() else None
            if found and found[1]["node_id"] in workers and _alive_train_workers(cluster.address, found[1]["node_id"]):
                victim = found
            else:
                time.sleep(0.5)
        trial_dir, last = victim
        killed = last["node_id"]
        assert trial_dir.name.startswith("nf-fold1-"), trial_dir
        cluster.remove_node(workers[killed], allow_graceful=False)  # SIGKILL the node's raylet and its workers
        killed_at_epoch = last["epoch"]

        assert proc.wait(timeout=900) == 0, (tmp_path / "search.log").read_text()[-4000:]
        for fold in (1, 2):
            study = json.loads((tmp_path / "runs" / "search" / "nf" / f"nf-fold{fold}.json").read_text())
            # every trial TERMINATED (complete = num_samples terminated, no errors), each trained to max_epochs
            assert study["complete"] and len(study["trials"]) == 2, study
            assert all(t["status"] == "complete" and t["epochs"] == MAX_EPOCHS for t in study["trials"]), study
            assert study["best"] is not None
            assert study["tests"][str(fold)]["clips"] == split_size(small_manifest, fold, "test")
        # the killed trial went on from a checkpoint on another node, not from scratch: its final history keeps
        # the epochs run on the dead node, and the later ones started after (at least) the checkpoint registered
        # before the kill
        fold1 = json.loads((tmp_path / "runs" / "search" / "nf" / "nf-fold1.json").read_text())
        row = next(t for t in fold1["trials"] if trial_dir.name == f"nf-fold1-{t['trial_id']}")
        history = load_checkpoint(Path(row["checkpoint"]) / "state.pt")["history"]
        trace = [(h["epoch"], h["node_id"][:8], h["start_epoch"]) for h in history]
        assert [h["epoch"] for h in history] == list(range(1, MAX_EPOCHS + 1)), trace
        first = [h for h in history if h["start_epoch"] == 1]
        resumed = [h for h in history if h["start_epoch"] > 1]
        assert first and all(h["node_id"] == killed for h in first), (killed[:8], trace)
        assert resumed and all(h["node_id"] != killed and h["node_id"] in workers for h in resumed), (killed[:8], trace)
        assert {h["start_epoch"] for h in resumed} == {len(first) + 1} and len(first) >= killed_at_epoch, trace
        print(f"\nkilled node {killed[:8]} after epoch {killed_at_epoch} of {trial_dir.name}; its history "
              f"(epoch, node, start_epoch): {trace}")
        # nothing left reserved or running once the search driver exited
        deadline = time.time() + 60
        while True:
            pgs = [pg for pg in list_placement_groups(address=cluster.address, limit=1000)
                   if pg.state in ("CREATED", "PENDING", "RESCHEDULING")]
            # Ray's own detached singleton (started by Ray Train), not the study's
            actors = [a for a in list_actors(address=cluster.address, filters=[("state", "=", "ALIVE")], limit=1000)
                      if a.class_name != "_AutoscalingCoordinatorActor"]
            if not pgs and not actors or time.time() > deadline:
                break
            time.sleep(2)
        assert not pgs, f"leaked placement groups: {pgs}"
        assert not actors, f"stray actors: {[(a.class_name, a.node_id) for a in actors]}"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        ray.shutdown()
        cluster.shutdown()
