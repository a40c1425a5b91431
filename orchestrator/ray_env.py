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
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), dashboard_host="127.0.0.1", include_dashboard=True,
                     log_to_driver=True)
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
