"""Starting or joining Ray for one `ifdd` command (docs/stack.md P2, P4, P7, P8, P9).

A local Ray is always a fresh instance of its own (``address="local"``), even when a `ray start` cluster or its
stale address file exists on this machine: joining one is what ``--address`` is for. The worker-group start timeout
is bounded, so a worker group that can never be placed becomes an error instead of an endless retry; telemetry is
off; and SIGTERM is taken back from Ray after ``ray.init`` (its handler aborts instead of saving).
"""

from __future__ import annotations

import os

from orchestrator.env import no_calls_home
from orchestrator.preempt import reinstall as reinstall_sigterm

WORKER_GROUP_START_TIMEOUT_S = "30"


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
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), dashboard_host="127.0.0.1",
                     include_dashboard=True, log_to_driver=True)
        reinstall_sigterm()
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def live_nodes() -> list[dict[str, float]]:
    """Each alive node's resources (the planner sizes GPU workers to their own node)."""
    import ray

    return [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]
