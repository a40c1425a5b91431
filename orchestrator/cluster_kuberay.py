"""Structural and project checks of a KubeRay ``RayCluster`` manifest (no Kubernetes API, no CRD schema needed).

KubeRay reads a RayCluster through its CRD; a typo there is silently pruned by the API server, so the keys the
project relies on are checked here: apiVersion/kind, ``spec.rayVersion`` (the pinned ray), ``headGroupSpec`` with
``rayStartParams`` and a pod template, worker groups whose replica bounds make sense and one of which requests
``nvidia.com/gpu``, pinned images, the telemetry opt-outs on every container, the dashboard on loopback, secrets
from ``secretKeyRef``. The project settings live in ``metadata.annotations`` as ``ifdd.io/storage`` and
``ifdd.io/tracking-uri`` (Kubernetes' place for tool metadata), checked like ``metadata.ifdd`` in launcher YAMLs.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from orchestrator.cluster import credential_scan, storage_checks, tracking_checks

API_VERSION = "ray.io/v1"
ANNOTATIONS = {"ifdd.io/storage": "storage", "ifdd.io/tracking-uri": "tracking_uri",
               "ifdd.io/mlflow-artifacts": "mlflow_artifacts", "ifdd.io/shared-fs": "shared_fs"}
TELEMETRY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
SPEC_KEYS = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec", "workerGroupSpecs",
             "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions", "upgradeStrategy",
             "authOptions"}
HEAD_KEYS = {"rayStartParams", "template", "serviceType", "headService", "enableIngress", "resources", "labels"}
WORKER_KEYS = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams", "template",
               "scaleStrategy", "suspend", "idleTimeoutSeconds", "resources", "labels"}


def validate_raycluster(doc: dict) -> tuple[list[str], str]:
    problems = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: expected {API_VERSION}, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != "RayCluster":
        problems.append(f"kind: expected RayCluster, got {doc.get('kind')!r}")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        problems.append("metadata.name: missing")
        meta = {}
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return problems + ["spec: missing or not a mapping"], ""
    problems += unknown(spec, SPEC_KEYS, "spec")
    problems += ray_version(spec.get("rayVersion"))
    head = spec.get("headGroupSpec")
    if not isinstance(head, dict):
        problems.append("spec.headGroupSpec: missing or not a mapping (the head pod: rayStartParams and template)")
    else:
        problems += unknown(head, HEAD_KEYS, "spec.headGroupSpec")
        problems += group_checks(head, "spec.headGroupSpec", head=True)
    groups = spec.get("workerGroupSpecs", [])
    if not isinstance(groups, list):
        return problems + [f"spec.workerGroupSpecs: expected a list, got {type(groups).__name__}"], ""
    max_workers, gpu_groups = 0, []
    for i, g in enumerate(groups):
        where = f"spec.workerGroupSpecs[{i}]"
        if not isinstance(g, dict):
            problems.append(f"{where}: expected a mapping, got {type(g).__name__}")
            continue
        problems += unknown(g, WORKER_KEYS, where)
        if not isinstance(g.get("groupName"), str):
            problems.append(f"{where}.groupName: missing")
        bounds = {k: g.get(k, 0) for k in ("minReplicas", "replicas", "maxReplicas")}
        bad = [k for k, v in bounds.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
        problems += [f"{where}.{k}: expected an integer >= 0, got {bounds[k]!r}" for k in bad]
        if not bad and not bounds["minReplicas"] <= bounds["replicas"] <= bounds["maxReplicas"]:
            problems.append(f"{where}: need minReplicas <= replicas <= maxReplicas, got {bounds['minReplicas']}, "
                            f"{bounds['replicas']}, {bounds['maxReplicas']}")
        problems += group_checks(g, where, head=False)
        if not bad:
            max_workers += bounds["maxReplicas"]
            if gpus_of(g) >= 1 and bounds["maxReplicas"] >= 1:
                gpu_groups.append(f"{g.get('groupName')} ({bounds['minReplicas']}-{bounds['maxReplicas']} × "
                                  f"{gpus_of(g)} GPU)")
    if not gpu_groups:
        problems.append("spec.workerGroupSpecs: no worker group with maxReplicas >= 1 whose container limits request "
                        "nvidia.com/gpu >= 1")
    problems += annotation_checks(meta.get("annotations"), max_workers > 0)
    problems += credential_scan(doc)
    summary = f"KubeRay RayCluster {meta.get('name')}, ray {spec.get('rayVersion')}, GPU groups {', '.join(gpu_groups)}"
    return problems, summary


def unknown(d: dict, allowed: set[str], where: str) -> list[str]:
    return [f"{where}.{k}: unknown key (allowed: {', '.join(sorted(allowed))})" for k in d if k not in allowed]


def ray_version(v: Any) -> list[str]:
    import ray

    if v != ray.__version__:
        return [f"spec.rayVersion: must be the pinned ray {ray.__version__} (the images' ray), got {v!r}"]
    return []


def containers(group: dict, where: str) -> tuple[list[tuple[str, dict]], list[str]]:
    tpl = group.get("template")
    pod = tpl.get("spec") if isinstance(tpl, dict) else None
    cs = pod.get("containers") if isinstance(pod, dict) else None
    if not isinstance(cs, list) or not cs or not all(isinstance(c, dict) for c in cs):
        return [], [f"{where}.template.spec.containers: missing or empty (the Ray container)"]
    return [(f"{where}.template.spec.containers[{i}]", c) for i, c in enumerate(cs)], []


def gpus_of(group: dict) -> int:
    cs, _ = containers(group, "")
    total = 0
    for _, c in cs:
        limits = (c.get("resources") or {}).get("limits") or {}
        try:
            total += int(limits.get("nvidia.com/gpu", 0))
        except (TypeError, ValueError):
            pass
    return total


def group_checks(group: dict, where: str, head: bool) -> list[str]:
    problems = []
    params = group.get("rayStartParams", {})
    if not isinstance(params, dict):
        problems.append(f"{where}.rayStartParams: expected a mapping of strings")
    else:
        problems += [f"{where}.rayStartParams.{k}: expected a string (KubeRay's CRD), got {type(v).__name__}"
                     for k, v in params.items() if not isinstance(v, str)]
        host = params.get("dashboard-host")
        if head and host not in ("127.0.0.1", "localhost"):
            problems.append(f"{where}.rayStartParams.dashboard-host: {host!r} exposes the Ray dashboard (KubeRay's "
                            "default is 0.0.0.0); set \"127.0.0.1\" and use `kubectl port-forward`")
    cs, found = containers(group, where)
    problems += found
    for cwhere, c in cs:
        image = c.get("image")
        tag = image.rsplit("/", 1)[-1] if isinstance(image, str) else ""
        if not isinstance(image, str) or not ("@sha256:" in image or (":" in tag and not tag.endswith(":latest"))):
            problems.append(f"{cwhere}.image: {image!r} is not pinned (use an explicit version tag or @sha256 digest)")
        argv = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        if "mlflow" in argv and any(a == "--host" and b in ("0.0.0.0", "::") for a, b in pairwise(argv)):
            problems.append(f"{cwhere}.args: mlflow --host 0.0.0.0 serves the MLflow API on every interface; bind "
                            "$(POD_IP) (reached through the head service) and port-forward for the UI")
        env = c.get("env", [])
        if not isinstance(env, list) or not all(isinstance(e, dict) for e in env):
            problems.append(f"{cwhere}.env: expected a list of {{name, value}} mappings")
            continue
        values = {e.get("name"): e.get("value") for e in env}
        missing = [f"{k}={v}" for k, v in TELEMETRY_ENV.items() if values.get(k) != v]
        if missing:
            problems.append(f"{cwhere}.env: telemetry not off (need {', '.join(missing)})")
        for i, e in enumerate(env):
            name = str(e.get("name", ""))
            if any(s in name.upper() for s in ("PASSWORD", "SECRET", "TOKEN")) and "value" in e:
                problems.append(f"{cwhere}.env[{i}].value: literal {name}; use valueFrom.secretKeyRef")
    return problems


def annotation_checks(annotations: Any, multi: bool) -> list[str]:
    where = "metadata.annotations"
    if not isinstance(annotations, dict):
        return [f"{where}: missing (the project's settings: ifdd.io/storage, ifdd.io/tracking-uri)"]
    meta = {ANNOTATIONS[k]: v for k, v in annotations.items() if k in ANNOTATIONS}
    problems = [f"{where}.{k}: unknown ifdd.io annotation (allowed: {', '.join(ANNOTATIONS)})"
                for k in annotations if str(k).startswith("ifdd.io/") and k not in ANNOTATIONS]
    for key in ("ifdd.io/storage", "ifdd.io/tracking-uri"):
        if not isinstance(annotations.get(key), str):
            problems.append(f"{where}.{key}: required (a string)")
    if problems:
        return problems
    names = {v: k for k, v in ANNOTATIONS.items()}
    problems += storage_checks(meta, multi, lambda key: f"{where}.{names[key]}")
    problems += tracking_checks(meta["tracking_uri"], multi, f"{where}.ifdd.io/tracking-uri")
    return problems
