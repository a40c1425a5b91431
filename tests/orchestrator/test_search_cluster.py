"""Search on a real multi-node Ray cluster on one box: trials packed by GPU count over the worker nodes. (`ifdd
launch`'s one Ray Job per fold on a `ray start --head`: tests/reliability/test_rel_ray_auth.py, on a token head; a
driver killed mid-study and resumed to exactly num_samples: tests/reliability/test_faults_search.py; Ctrl-C's partial
study and its resume: tests/orchestrator/test_postgres.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_multi_node_search_packs_trials_by_gpu_count(small_manifest, tmp_path, capsys, write_space,
                                                    token_cluster_env):
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
                          fresh=False, address=cluster.address, register=False)
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
