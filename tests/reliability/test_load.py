"""Load: 3 fold-wise searches at once (`ifdd search --folds k --share 3`, what `ifdd launch` submits for folds 1-3)
on a local multi-node Ray cluster (a head and two worker nodes, each a real raylet process tree started by
`ray.cluster_utils.Cluster`), 2 trials per fold, 6 in all: more searches than nodes, so searches share nodes and
trials queue, which is what the test is about (at 5 x 4 it took 6 min and proved nothing more). Every study
finishes complete, and afterwards the cluster holds no placement group or actor of the studies."""

from __future__ import annotations

import json
import time

import pytest
from ifdd_testkit.fixtures import split_size

from . import faults_common as fc

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.load]
FOLDS, TRIALS = 3, 2


@pytest.fixture
def cluster(token_cluster_env):
    """A head (2 CPUs, dashboard on loopback) and two worker nodes (2 CPUs each) as real Ray node processes."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": True,
                                                      "dashboard_host": "127.0.0.1", "dashboard_port": 0})
    try:
        for _ in range(2):
            c.add_node(num_cpus=2)
        c.wait_for_nodes()
        ray.init(address=c.address)
        yield c.address
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.mark.timeout(1800)  # ~3 min on 2 quiet cores; CI machines are noisy
def test_concurrent_fold_jobs_on_a_multi_node_cluster_all_finish_and_leak_nothing(small_manifest, tmp_path, cluster,
                                                                                   write_space, ifdd_env):
    import ray
    from ray.util.state import list_actors, list_placement_groups

    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    space = write_space(tmp_path / "ld.yaml", small_manifest,
                        search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
                        base={"train": {"batch_size": 8, "eval_batch_size": 16, "max_steps_per_epoch": 1}},
                        budget={"num_samples": TRIALS, "max_epochs": 1, "scheduler": "none"},
                        protocol={"folds": list(range(1, FOLDS + 1))},
                        resources={"workers_per_trial": 1, "cpus_per_worker": 1.0, "max_concurrent_trials": 1})
    storage = tmp_path / "runs" / "ray"
    t0 = time.perf_counter()
    jobs = [fc.Proc(["search", "--space", str(space), "--folds", str(k), "--share", str(FOLDS), "--address",
                     cluster, "--runs", str(storage.parent), "--resume"], tmp_path, ifdd_env)
            for k in range(1, FOLDS + 1)]
    rcs = [j.wait(1500) for j in jobs]
    elapsed = time.perf_counter() - t0
    assert rcs == [0] * FOLDS, "\n\n".join(j.out[-2500:] for j, rc in zip(jobs, rcs, strict=True) if rc)
    trials = 0
    for k in range(1, FOLDS + 1):
        study = json.loads((tmp_path / "runs" / "search" / "ld" / f"ld-fold{k}.json").read_text())
        assert study["complete"] and study["tests"][str(k)]["clips"] == split_size(small_manifest, k, "test"), study
        trials += sum(t["status"] == "complete" for t in study["trials"])
    assert trials == FOLDS * TRIALS

    def leftovers():
        pgs = [pg for pg in list_placement_groups(address=cluster, limit=1000) if pg.state != "REMOVED"]
        # Ray Train's own detached singleton is the cluster's, not a study's
        actors = [a for a in list_actors(address=cluster, limit=1000)
                  if a.state != "DEAD" and a.class_name != "_AutoscalingCoordinatorActor"]
        return pgs, actors

    deadline = time.time() + 60
    while any(leftovers()) and time.time() < deadline:
        time.sleep(2)
    pgs, actors = leftovers()
    assert not pgs, f"leaked placement groups: {pgs}"
    assert not actors, f"leaked actors: {[(a.class_name, a.state) for a in actors]}"
    print(f"\nload: {FOLDS} concurrent fold searches, {trials} trials, 3 nodes, {elapsed:.0f} s")
