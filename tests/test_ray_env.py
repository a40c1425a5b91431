"""Worker sizing: fractional CPUs on small boxes, and a clear error instead of a hang when resources can't fit."""

import pytest

from orchestrator.ray_env import size_workers


def test_two_workers_on_two_cores_get_fractional_cpus():
    res = size_workers({"CPU": 2.0}, 2, None, 0.0, reserve_cpus=1.0)
    assert res.cpus_per_worker == 0.5 and res.threads == 1 and not res.use_gpu


def test_one_worker_gets_every_core_as_threads():
    res = size_workers({"CPU": 2.0}, 1, None, 0.0)
    assert res.cpus_per_worker == 2.0 and res.threads == 2


def test_gpu_workers_share_the_cpus():
    res = size_workers({"CPU": 16.0, "GPU": 4.0}, 4, None, 1.0)
    assert res.cpus_per_worker == 4.0 and res.threads == 4 and res.use_gpu


@pytest.mark.parametrize("cluster,args,needle", [
    ({"CPU": 2.0}, (2, None, 1.0), "need 2 GPUs; the cluster has 0"),
    ({"CPU": 2.0}, (4, 1.0, 0.0), "need 4 CPUs; the cluster has 2"),
    ({"CPU": 2.0}, (0, None, 0.0), "--workers: must be >= 1"),
])
def test_unsatisfiable_resources_say_what_is_missing(cluster, args, needle):
    with pytest.raises(ValueError, match=needle):
        size_workers(cluster, *args)
