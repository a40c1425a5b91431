"""The resource planner: fractional CPUs on small boxes, GPU packing, sharing a cluster between fold jobs, and a
clear error instead of a hang whenever a trial (or a run) could never be placed."""

import pytest

from orchestrator.planner import TRIAL_DRIVER_CPU, Resources, plan_trials, size_workers


def res(**kw) -> Resources:
    return Resources(**kw)


# ifdd train: one run's workers ----------------------------------------------------------------------------------
def test_two_workers_on_two_cores_get_fractional_cpus():
    w = size_workers({"CPU": 2.0}, 2, None, 0.0, reserve_cpus=1.0)
    assert w.cpus_per_worker == 0.5 and w.threads == 1 and not w.use_gpu


def test_one_worker_gets_every_core_as_threads():
    w = size_workers({"CPU": 2.0}, 1, None, 0.0)
    assert w.cpus_per_worker == 2.0 and w.threads == 2


def test_gpu_workers_share_the_cpus():
    w = size_workers({"CPU": 16.0, "GPU": 4.0}, 4, None, 1.0)
    assert w.cpus_per_worker == 4.0 and w.threads == 4 and w.use_gpu


@pytest.mark.parametrize("cluster,args,needle", [
    ({"CPU": 2.0}, (2, None, 1.0), "need 2 GPUs; the cluster has 0"),
    ({"CPU": 2.0}, (4, 1.0, 0.0), "need 4 CPUs; the cluster has 2"),
    ({"CPU": 2.0}, (0, None, 0.0), "--workers: must be >= 1"),
    ({"CPU": 2.0}, (1, -1.0, 0.0), "--cpus-per-worker: must be > 0"),
    ({"CPU": 2.0}, (1, None, -1.0), "--gpus-per-worker: must be >= 0"),
    ({"CPU": 2.0, "GPU": 4.0}, (1, None, 1.5), "--gpus-per-worker: above 1 it must be a whole number"),
])
def test_unsatisfiable_run_says_what_is_missing(cluster, args, needle):
    with pytest.raises(ValueError, match=needle):
        size_workers(cluster, *args)


# ifdd search: trials and their concurrency ----------------------------------------------------------------------
def test_plan_shares_cpus_over_concurrent_trials():
    plan = plan_trials({"CPU": 2.0}, res(workers_per_trial=1))
    assert plan.max_concurrent == 2
    assert plan.max_concurrent * plan.trial_cpus <= 2.0 + 1e-9
    plan = plan_trials({"CPU": 2.0}, res(workers_per_trial=2))
    assert plan.max_concurrent == 1 and plan.trial_cpus <= 2.0


def test_plan_with_explicit_cpus_fits_whole_trials_only():
    plan = plan_trials({"CPU": 8.0}, res(workers_per_trial=2, cpus_per_worker=1.5))
    assert plan.max_concurrent == 2 and plan.worker.threads == 1  # 2 × (0.1 + 3) = 6.2 <= 8 < 9.3


def test_plan_packs_by_gpu_count():
    nodes = [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 2.0}, {"CPU": 4.0, "GPU": 2.0}]
    plan = plan_trials({"CPU": 10.0, "GPU": 4.0}, res(gpus_per_worker=1.0), nodes=nodes)
    assert plan.max_concurrent == 4 and plan.worker.cpus_per_worker == pytest.approx(2.0 - TRIAL_DRIVER_CPU)
    half = plan_trials({"CPU": 10.0, "GPU": 4.0}, res(gpus_per_worker=0.5), nodes=nodes)
    assert half.max_concurrent == 8 and half.worker.cpus_per_worker == pytest.approx(1.0 - TRIAL_DRIVER_CPU)


# --share: N fold jobs of one `ifdd launch` on one cluster -----------------------------------------------------
def test_share_divides_the_cpus_between_fold_jobs():
    alone = plan_trials({"CPU": 10.0}, res(workers_per_trial=1))
    shared = plan_trials({"CPU": 10.0}, res(workers_per_trial=1), share=5)
    assert alone.max_concurrent == 10 and shared.max_concurrent == 2
    assert 5 * shared.max_concurrent * shared.trial_cpus <= 10.0 + 1e-9


def test_share_divides_the_gpu_trial_slots_but_never_below_one():
    nodes = [{"CPU": 8.0, "GPU": 4.0}, {"CPU": 8.0, "GPU": 4.0}]
    plan = plan_trials({"CPU": 16.0, "GPU": 8.0}, res(gpus_per_worker=1.0), nodes=nodes, share=2)
    assert plan.max_concurrent == 4
    tight = plan_trials({"CPU": 16.0, "GPU": 8.0}, res(gpus_per_worker=1.0), nodes=nodes, share=16)
    assert tight.max_concurrent == 1


def test_share_below_one_is_refused():
    with pytest.raises(ValueError, match="--share: must be >= 1"):
        plan_trials({"CPU": 2.0}, res(), share=0)


@pytest.mark.parametrize("cluster,kw,needle", [
    ({"CPU": 2.0}, dict(gpus_per_worker=1.0), "needs 1 GPU"),
    ({"CPU": 2.0}, dict(workers_per_trial=3, cpus_per_worker=1.0), "needs 3.1 CPU"),
    ({"CPU": 8.0, "GPU": 2.0}, dict(gpus_per_worker=1.0, max_concurrent_trials=3),
     "max_concurrent_trials: 3 trials do not fit"),
    ({"CPU": 2.0}, dict(max_concurrent_trials=50), "set max_concurrent_trials lower"),
    ({"CPU": 2.0, "GPU": 2.0}, dict(gpus_per_worker=1.0, cpus_per_worker=4.0), "exceed the cluster's 2 CPU"),
])
def test_plan_refuses_what_can_never_run(cluster, kw, needle):
    with pytest.raises(ValueError, match=needle):
        plan_trials(cluster, res(**kw))


@pytest.mark.parametrize("kw,needle", [
    (dict(workers_per_trial=0), "workers_per_trial: must be >= 1"),
    (dict(cpus_per_worker=0.0), "cpus_per_worker: must be > 0"),
    (dict(gpus_per_worker=2.5), "gpus_per_worker: above 1 it must be a whole number"),
    (dict(max_concurrent_trials=0), "max_concurrent_trials: must be >= 1"),
    (dict(backend="mpi"), "backend: must be"),
])
def test_resources_section_values_are_checked_once(kw, needle):
    with pytest.raises(ValueError, match=needle):
        Resources(**kw)
