"""Starting or joining Ray, and sizing work to the cluster so that nothing waits forever for resources.

Pitfalls this module exists for (stack-notes §8, P2, P3, P11): default 1-CPU reservations deadlock a 2-core box;
a worker group that cannot be placed retries forever unless bounded; token auth writes ``~/.ray`` and breaks local
clients; telemetry must be off.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from orchestrator.env import no_calls_home
from orchestrator.preempt import reinstall as reinstall_sigterm

WORKER_GROUP_START_TIMEOUT_S = "30"


@dataclass(frozen=True)
class WorkerResources:
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    threads: int
    """torch threads per worker (logical CPUs do not limit threads: size them explicitly)."""

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Join ``address`` (``auto``, ``ray://…`` or ``HOST:PORT``) or start a local Ray; returns cluster resources."""
    import ray

    no_calls_home()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", WORKER_GROUP_START_TIMEOUT_S)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    address = address or os.environ.get("RAY_ADDRESS")  # set inside a Ray Job: join that cluster
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            # address="local": always a new local instance, even if a `ray start` cluster (or its stale address
            # file) exists on this machine; joining one is what --address is for.
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), dashboard_host="127.0.0.1",
                     include_dashboard=True, log_to_driver=True)
        reinstall_sigterm()  # ray.init installs its own SIGTERM handler, which aborts instead of saving
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def size_workers(cluster: dict[str, float], workers: int, cpus_per_worker: float | None,
                 gpus_per_worker: float, reserve_cpus: float = 0.0) -> WorkerResources:
    """Per-worker resources that fit the cluster, or a ValueError that says what is missing.

    With no explicit ``cpus_per_worker`` the workers share the free CPUs evenly (fractional when there are more
    workers than CPUs); each worker runs floor(its CPUs) torch threads, at least one.
    """
    if workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {workers}")
    if gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker: must be >= 0, got {gpus_per_worker}")
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    free = cpus - reserve_cpus
    if cpus_per_worker is None:
        cpus_per_worker = free / workers if free > 0 else 0.0
    if cpus_per_worker <= 0:
        raise ValueError(f"resources: {workers} worker(s) need CPUs but the cluster has {cpus:g} CPU "
                         f"({reserve_cpus:g} reserved for trial drivers)")
    need_cpu, need_gpu = workers * cpus_per_worker + reserve_cpus, workers * gpus_per_worker
    if need_cpu > cpus + 1e-9:
        raise ValueError(f"resources: {workers} worker(s) × {cpus_per_worker:g} CPU"
                         f"{f' + {reserve_cpus:g} for drivers' if reserve_cpus else ''} need {need_cpu:g} CPUs; "
                         f"the cluster has {cpus:g}")
    if need_gpu > gpus + 1e-9:
        raise ValueError(f"resources: {workers} worker(s) × {gpus_per_worker:g} GPU need {need_gpu:g} GPUs; "
                         f"the cluster has {gpus:g}")
    threads = max(1, math.floor(cpus_per_worker))
    return WorkerResources(workers, cpus_per_worker, gpus_per_worker, threads)


TRIAL_DRIVER_CPU = 0.1
"""Logical CPU held by each trial's driver function (it only waits on its TorchTrainer). Not 0: Tune rejects an
empty resource request; not 1: on a 2-core box that starves the workers (stack-notes §8)."""


@dataclass(frozen=True)
class TrialPlan:
    worker: WorkerResources
    max_concurrent: int
    driver_cpu: float = TRIAL_DRIVER_CPU

    @property
    def trial_cpus(self) -> float:
        return self.driver_cpu + self.worker.workers * self.worker.cpus_per_worker

    def describe(self) -> str:
        w = self.worker
        gpu = f" × {w.gpus_per_worker:g} GPU" if w.use_gpu else ""
        return (f"{self.max_concurrent} concurrent trial(s), each {w.workers} worker(s) × {w.cpus_per_worker:.3g} CPU"
                f"{gpu} ({w.threads} torch thread(s)) + {self.driver_cpu:g} CPU for its driver")


def plan_trials(cluster: dict[str, float], workers: int, cpus_per_worker: float | None, gpus_per_worker: float,
                max_concurrent: int | None, nodes: list[dict[str, float]] | None = None,
                share: int = 1) -> TrialPlan:
    """How many trials run at once and what each worker holds, so that every started trial can place its workers.

    Tune counts only a trial's driver resources, not its TorchTrainer's workers, so launching more trials than
    the workers fit deadlocks silently (stack-notes §8): concurrency is derived here from the whole trial's needs.
    GPUs decide packing when a trial uses them (``nodes``, each node's resources, sizes the CPUs a GPU worker can
    get on its own node); otherwise the CPUs are shared. Raises ValueError saying what is missing when even one
    trial cannot fit. ``share``: this study runs beside ``share - 1`` others on the same cluster (``ifdd launch``
    submits one job per fold), so it plans for 1/share of the CPUs, or of the GPU trial slots.
    """
    if share < 1:
        raise ValueError(f"--share: must be >= 1, got {share}")
    if workers < 1:
        raise ValueError(f"resources.workers_per_trial: must be >= 1, got {workers}")
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if gpus_per_worker <= 0:
        cpus /= share
    if gpus_per_worker > 0:
        if gpus_per_worker > 1 and float(gpus_per_worker).is_integer() is False:
            raise ValueError(f"resources.gpus_per_worker: above 1 it must be a whole number, got {gpus_per_worker}")
        trial_gpus = workers * gpus_per_worker
        if trial_gpus > gpus + 1e-9:
            raise ValueError(f"resources: a trial needs {trial_gpus:g} GPU ({workers} worker(s) × {gpus_per_worker:g}) "
                             f"but the cluster has {gpus:g} GPU; lower workers_per_trial or gpus_per_worker, or add "
                             "GPU nodes")
        gpu_nodes = [n for n in (nodes or [cluster]) if n.get("GPU", 0) >= gpus_per_worker - 1e-9]
        if not gpu_nodes:
            raise ValueError(f"resources.gpus_per_worker: {gpus_per_worker:g} GPU per worker, but no node has that "
                             "many")
        fit = max(1, int(math.floor(gpus / trial_gpus + 1e-9)) // share)
        if cpus_per_worker is None:  # what a GPU worker can get on the tightest GPU node
            per_node = []
            for n in gpu_nodes:
                slots = math.floor(n["GPU"] / gpus_per_worker + 1e-9)
                per_node.append((n.get("CPU", 0.0) - TRIAL_DRIVER_CPU * slots) / slots)
            cpus_per_worker = math.floor(min(per_node) * 1000) / 1000
            if cpus_per_worker < 0.01:
                raise ValueError("resources: the GPU nodes have no CPU to spare for the workers")
    else:
        fit = max(1, int(math.floor(cpus / workers + 1e-9))) if cpus_per_worker is None else int(
            math.floor(cpus / (TRIAL_DRIVER_CPU + workers * cpus_per_worker) + 1e-9))
    if max_concurrent is not None:
        if cpus_per_worker is None and gpus_per_worker <= 0:
            fit = max_concurrent  # CPUs are shared over however many trials the user asked for
        elif max_concurrent > fit:
            raise ValueError(f"resources.max_concurrent_trials: {max_concurrent} trials do not fit at once (at most "
                             f"{fit} with {cpus:g} CPU / {gpus:g} GPU); lower it or leave it null")
        else:
            fit = max_concurrent
    if fit < 1:
        need = TRIAL_DRIVER_CPU + workers * (cpus_per_worker or 0)
        raise ValueError(f"resources: a trial needs {need:g} CPU ({workers} worker(s) × {cpus_per_worker:g} + "
                         f"{TRIAL_DRIVER_CPU:g} for its driver) but the cluster has {cpus:g} CPU")
    if cpus_per_worker is None:
        cpus_per_worker = (cpus - fit * TRIAL_DRIVER_CPU) / (fit * workers)
        if cpus_per_worker < 0.01:
            raise ValueError(f"resources: {fit} concurrent trial(s) × {workers} worker(s) leave {cpus_per_worker:.3g} "
                             f"CPU per worker on a {cpus:g}-CPU cluster; set max_concurrent_trials lower")
        cpus_per_worker = math.floor(cpus_per_worker * 1000) / 1000  # Ray resources have 1e-4 precision
    elif fit * (TRIAL_DRIVER_CPU + workers * cpus_per_worker) > cpus + 1e-9:
        raise ValueError(f"resources: {fit} trial(s) × ({workers} worker(s) × {cpus_per_worker:g} CPU + "
                         f"{TRIAL_DRIVER_CPU:g}) exceed the cluster's {cpus:g} CPU")
    threads = max(1, math.floor(cpus_per_worker))
    return TrialPlan(WorkerResources(workers, cpus_per_worker, gpus_per_worker, threads), fit)
