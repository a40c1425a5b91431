"""Sizing work to the cluster, so that nothing waits forever for resources (docs/stack.md P3, P4).

Two facts drive every rule here: Tune counts only a trial's driver, not the TorchTrainer workers that driver
starts, so launching more trials than the workers fit deadlocks silently; and on a small box a 1-CPU reservation
per process starves everything, so CPUs are shared in fractions. ``plan_trials`` sizes a search's trials and their
concurrency; ``size_workers`` sizes one ``ifdd train`` run. Both take the same ``Resources`` (the search space's
``resources`` section, or ``ifdd train``'s flags) and raise a ValueError that says what is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

TRIAL_DRIVER_CPU = 0.1
"""Logical CPU held by each trial's driver function (it only waits on its TorchTrainer). Not 0: Tune rejects an
empty resource request; not 1: on a 2-core box that starves the workers."""
_EPS = 1e-9


@dataclass(frozen=True)
class Resources:
    """What each trial (or run) asks for. ``names`` in the error messages: the YAML keys by default."""

    workers_per_trial: int = 1
    """Data-parallel Train workers per trial."""
    cpus_per_worker: float | None = None
    """Logical CPUs per worker; null: the cluster's CPUs shared over the concurrent trials' workers."""
    gpus_per_worker: float = 0.0
    """GPUs per worker (fractions pack several trials on one GPU); 0 trains on CPU."""
    max_concurrent_trials: int | None = None
    """null: as many as the cluster's GPUs (or CPUs) hold at once."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Process-group backend; auto: nccl with GPUs, gloo without."""

    def __post_init__(self) -> None:
        check_values(self.workers_per_trial, self.cpus_per_worker, self.gpus_per_worker)
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(f"max_concurrent_trials: must be >= 1 or null, got {self.max_concurrent_trials}")
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"backend: must be 'auto', 'gloo' or 'nccl', got {self.backend!r}")


YAML_NAMES = {"workers": "workers_per_trial", "cpus": "cpus_per_worker", "gpus": "gpus_per_worker"}
FLAG_NAMES = {"workers": "--workers", "cpus": "--cpus-per-worker", "gpus": "--gpus-per-worker"}


def check_values(workers: int, cpus_per_worker: float | None, gpus_per_worker: float,
                 names: dict[str, str] = YAML_NAMES) -> None:
    """The one check of resource values, wherever they come from (YAML keys or ``ifdd train`` flags)."""
    if workers < 1:
        raise ValueError(f"{names['workers']}: must be >= 1, got {workers}")
    if cpus_per_worker is not None and cpus_per_worker <= 0:
        raise ValueError(f"{names['cpus']}: must be > 0, got {cpus_per_worker}")
    if gpus_per_worker < 0:
        raise ValueError(f"{names['gpus']}: must be >= 0, got {gpus_per_worker}")
    if gpus_per_worker > 1 and not float(gpus_per_worker).is_integer():
        raise ValueError(f"{names['gpus']}: above 1 it must be a whole number, got {gpus_per_worker}")


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


def _worker(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> WorkerResources:
    cpus = math.floor(cpus_per_worker * 1000) / 1000  # Ray resources have 1e-4 precision
    return WorkerResources(workers, cpus, gpus_per_worker, max(1, math.floor(cpus)))


def size_workers(cluster: dict[str, float], workers: int, cpus_per_worker: float | None,
                 gpus_per_worker: float, reserve_cpus: float = 0.0) -> WorkerResources:
    """Per-worker resources of one run (``ifdd train``) that fit the cluster, or a ValueError saying what is missing.

    With no explicit ``cpus_per_worker`` the workers share the free CPUs evenly (fractional when there are more
    workers than CPUs); each worker runs floor(its CPUs) torch threads, at least one.
    """
    check_values(workers, cpus_per_worker, gpus_per_worker, FLAG_NAMES)
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    free = cpus - reserve_cpus
    if cpus_per_worker is None:
        cpus_per_worker = free / workers if free > 0 else 0.0
    if cpus_per_worker <= 0:
        raise ValueError(f"resources: {workers} worker(s) need CPUs but the cluster has {cpus:g} CPU "
                         f"({reserve_cpus:g} reserved for trial drivers)")
    need_cpu, need_gpu = workers * cpus_per_worker + reserve_cpus, workers * gpus_per_worker
    if need_cpu > cpus + _EPS:
        raise ValueError(f"resources: {workers} worker(s) × {cpus_per_worker:g} CPU"
                         f"{f' + {reserve_cpus:g} for drivers' if reserve_cpus else ''} need {need_cpu:g} CPUs; "
                         f"the cluster has {cpus:g}")
    if need_gpu > gpus + _EPS:
        raise ValueError(f"resources: {workers} worker(s) × {gpus_per_worker:g} GPU need {need_gpu:g} GPUs; "
                         f"the cluster has {gpus:g}")
    return WorkerResources(workers, cpus_per_worker, gpus_per_worker, max(1, math.floor(cpus_per_worker)))


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


def plan_trials(cluster: dict[str, float], res: Resources, nodes: list[dict[str, float]] | None = None,
                share: int = 1) -> TrialPlan:
    """How many trials run at once and what each worker holds, so that every started trial can place its workers.

    GPUs decide packing when a trial uses them (``nodes``, each node's resources, sizes the CPUs a GPU worker can
    get on its own node); otherwise the CPUs are shared. ``share``: this study runs beside ``share - 1`` others on
    the same cluster (``ifdd launch`` submits one job per fold), so it plans for 1/share of the CPUs, or of the GPU
    trial slots. Raises ValueError saying what is missing when even one trial cannot fit.
    """
    if share < 1:
        raise ValueError(f"--share: must be >= 1, got {share}")
    if res.gpus_per_worker > 0:
        return _plan_gpu(cluster, res, nodes or [cluster], share)
    return _plan_cpu(cluster.get("CPU", 0.0) / share, res)


def _plan_gpu(cluster: dict[str, float], res: Resources, nodes: list[dict[str, float]], share: int) -> TrialPlan:
    """GPU trials: as many at once as whole trials fit the GPUs (divided by ``share``); a worker's CPUs are what
    the tightest GPU node can give each of its GPU slots after the drivers."""
    workers, gpw = res.workers_per_trial, res.gpus_per_worker
    gpus = cluster.get("GPU", 0.0)
    trial_gpus = workers * gpw
    if trial_gpus > gpus + _EPS:
        raise ValueError(f"resources: a trial needs {trial_gpus:g} GPU ({workers} worker(s) × {gpw:g}) but the cluster "
                         f"has {gpus:g} GPU; lower workers_per_trial or gpus_per_worker, or add GPU nodes")
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) >= gpw - _EPS]
    if not gpu_nodes:
        raise ValueError(f"resources.gpus_per_worker: {gpw:g} GPU per worker, but no node has that many")
    fit = max(1, int(math.floor(gpus / trial_gpus + _EPS)) // share)
    if res.max_concurrent_trials is not None:
        fit = _within(res.max_concurrent_trials, fit, cluster)
    cpus_per_worker = res.cpus_per_worker
    if cpus_per_worker is None:
        per_slot = []
        for n in gpu_nodes:
            slots = math.floor(n["GPU"] / gpw + _EPS)
            per_slot.append((n.get("CPU", 0.0) - TRIAL_DRIVER_CPU * slots) / slots)
        cpus_per_worker = min(per_slot)
        if cpus_per_worker < 0.01:
            raise ValueError("resources: the GPU nodes have no CPU to spare for the workers")
    elif fit * (TRIAL_DRIVER_CPU + workers * cpus_per_worker) > cluster.get("CPU", 0.0) + _EPS:
        raise ValueError(f"resources: {fit} trial(s) × ({workers} worker(s) × {cpus_per_worker:g} CPU + "
                         f"{TRIAL_DRIVER_CPU:g}) exceed the cluster's {cluster.get('CPU', 0.0):g} CPU")
    return TrialPlan(_worker(workers, cpus_per_worker, gpw), fit)


def _plan_cpu(cpus: float, res: Resources) -> TrialPlan:
    """CPU trials on ``cpus`` logical CPUs: with no ``cpus_per_worker``, the CPUs are shared evenly over the
    concurrent trials' workers (one trial per whole CPU and worker unless max_concurrent_trials says otherwise)."""
    workers, cpw = res.workers_per_trial, res.cpus_per_worker
    if cpw is None:
        fit = res.max_concurrent_trials or max(1, int(math.floor(cpus / workers + _EPS)))
        cpw = (cpus - fit * TRIAL_DRIVER_CPU) / (fit * workers)
        if cpw < 0.01:
            raise ValueError(f"resources: {fit} concurrent trial(s) × {workers} worker(s) leave {cpw:.3g} CPU per "
                             f"worker on a {cpus:g}-CPU cluster; set max_concurrent_trials lower")
        return TrialPlan(_worker(workers, cpw, 0.0), fit)
    need = TRIAL_DRIVER_CPU + workers * cpw
    fit = int(math.floor(cpus / need + _EPS))
    if fit < 1:
        raise ValueError(f"resources: a trial needs {need:g} CPU ({workers} worker(s) × {cpw:g} + "
                         f"{TRIAL_DRIVER_CPU:g} for its driver) but the cluster has {cpus:g} CPU")
    if res.max_concurrent_trials is not None:
        fit = _within(res.max_concurrent_trials, fit, {"CPU": cpus})
    return TrialPlan(WorkerResources(workers, cpw, 0.0, max(1, math.floor(cpw))), fit)


def _within(asked: int, fit: int, cluster: dict[str, float]) -> int:
    if asked > fit:
        raise ValueError(f"resources.max_concurrent_trials: {asked} trials do not fit at once (at most {fit} with "
                         f"{cluster.get('CPU', 0.0):g} CPU / {cluster.get('GPU', 0.0):g} GPU); lower it or leave it "
                         "null")
    return asked
