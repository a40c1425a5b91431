"""A KubeRay ``RayCluster`` checked as KubeRay reads it (no Kubernetes API needed), then the project's checks.

The keys, types and defaults are those of KubeRay v1.7.0's RayCluster CRD (``ray.io/v1``, the KubeRay of the ray 2.60
era): the API server fills a missing ``replicas``/``minReplicas`` with 0, ``maxReplicas`` with 2147483647 and
``numOfHosts`` with 1, and prunes unknown keys without a word, so a typo is reported here. The operator then starts
``clamp(replicas, minReplicas, maxReplicas) × numOfHosts`` pods per group, refuses ``minReplicas > maxReplicas``,
and with ``spec.authOptions: {mode: token}`` (KubeRay >= 1.5.1) creates a Secret ``<name>`` holding ``auth_token``
and sets ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN`` in every container that does not set them itself.

The project's settings live in ``metadata.annotations`` as ``ifdd.io/*`` keys, checked like ``metadata.ifdd`` in
launcher YAMLs (checks.py).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from orchestrator.clusterfiles import checks
from orchestrator.clusterfiles.checks import NodeGroup
from orchestrator.env import NO_TELEMETRY

API_VERSION = "ray.io/v1"
ANNOTATIONS = {"ifdd.io/storage": "storage", "ifdd.io/tracking-uri": "tracking_uri",
               "ifdd.io/mlflow-artifacts": "mlflow_artifacts", "ifdd.io/shared-fs": "shared_fs"}
SPEC_KEYS = {"authOptions", "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
             "headGroupSpec", "headServiceAnnotations", "historyServerOptions", "managedBy", "networkPolicy",
             "rayVersion", "suspend", "tlsOptions", "upgradeStrategy", "workerGroupSpecs"}
HEAD_KEYS = {"enableIngress", "headService", "ingressOptions", "labels", "rayStartParams", "resources",
             "serviceType", "template"}
WORKER_KEYS = {"groupName", "idleTimeoutSeconds", "labels", "maxReplicas", "minReplicas", "numOfHosts", "priority",
               "rayStartParams", "replicas", "resources", "scaleStrategy", "suspend", "template"}
AUTH_KEYS = {"enableK8sTokenAuth", "mode", "secretName"}
REPLICA_DEFAULTS = {"minReplicas": 0, "replicas": 0, "maxReplicas": 2**31 - 1, "numOfHosts": 1}
"""What the CRD fills in when a worker group leaves the key out."""
GPU_HOW = "a container limit nvidia.com/gpu >= 1 (or rayStartParams num-gpus)"


def validate_raycluster(doc: dict) -> tuple[list[str], str]:
    if doc.get("apiVersion") != API_VERSION:  # another API version has other keys: checking on would cascade
        return [f"apiVersion: expected {API_VERSION} (KubeRay >= 1.0), got {doc.get('apiVersion')!r}"], ""
    problems = []
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
    groups: list[NodeGroup] = []
    if not isinstance(head, dict):
        problems.append("spec.headGroupSpec: missing or not a mapping (the head pod: rayStartParams and template)")
    else:
        problems += unknown(head, HEAD_KEYS, "spec.headGroupSpec")
        problems += group_checks(head, "spec.headGroupSpec", head=True)
        groups.append(NodeGroup("head", gpus_of(head), 1, 1))
    workers = spec.get("workerGroupSpecs", [])
    if not isinstance(workers, list):
        return problems + [f"spec.workerGroupSpecs: expected a list, got {type(workers).__name__}"], ""
    judged = True  # every group's GPUs and bounds could be read (else the GPU rule would only cascade)
    for i, g in enumerate(workers):
        where = f"spec.workerGroupSpecs[{i}]"
        if not isinstance(g, dict):
            problems.append(f"{where}: expected a mapping, got {type(g).__name__}")
            continue
        problems += unknown(g, WORKER_KEYS, where)
        if not isinstance(g.get("groupName"), str):
            problems.append(f"{where}.groupName: missing (the CRD requires it)")
        found, group = replica_checks(g, where)
        problems += found + group_checks(g, where, head=False)
        if group:
            groups.append(group)
        judged = judged and group is not None
    if judged:
        problems += checks.gpu_rule(groups, "spec.workerGroupSpecs", GPU_HOW)
    problems += auth_checks(spec, [c for c, _ in all_containers(spec)])
    problems += annotation_checks(meta.get("annotations"), any(g.max_nodes > 0 for g in groups[1:]))
    problems += checks.credential_scan(doc, fix="use valueFrom.secretKeyRef (a Kubernetes Secret)")
    auth = "token auth" if (spec.get("authOptions") or {}).get("mode") == "token" else "auth per container env"
    summary = (f"KubeRay RayCluster {meta.get('name')}, ray {spec.get('rayVersion')}, {auth}, GPU groups "
               f"{checks.gpu_summary(groups)}")
    return problems, summary


def unknown(d: dict, allowed: set[str], where: str) -> list[str]:
    return [f"{where}.{k}: unknown key, which the API server drops without a word (allowed: "
            f"{', '.join(sorted(allowed))})" for k in d if k not in allowed]


def ray_version(v: Any) -> list[str]:
    import ray

    if v != ray.__version__:
        return [f"spec.rayVersion: must be the pinned ray {ray.__version__} (the images' ray), got {v!r}"]
    return []


def is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31


def replica_checks(g: dict, where: str) -> tuple[list[str], NodeGroup | None]:
    """KubeRay's replica rules on the group as the CRD defaults it; the group's GPU node count for the GPU rule."""
    counts = {k: g.get(k, default) for k, default in REPLICA_DEFAULTS.items()}
    bad = [k for k, v in counts.items() if not is_count(v) or (k == "numOfHosts" and v < 1)]
    if bad:
        return [f"{where}.{k}: expected an integer >= {1 if k == 'numOfHosts' else 0}, got {counts[k]!r}"
                for k in bad], None
    lo, hi, n = counts["minReplicas"], counts["maxReplicas"], counts["replicas"]
    problems = []
    if lo > hi:
        problems.append(f"{where}: minReplicas {lo} > maxReplicas {hi}; KubeRay refuses the cluster")
    elif "replicas" in g and not lo <= n <= hi:
        problems.append(f"{where}.replicas: {n} is outside minReplicas..maxReplicas ({lo}..{hi}); KubeRay would "
                        f"start {min(max(n, lo), hi)} without saying so")
    hosts = counts["numOfHosts"]
    return problems, NodeGroup(str(g.get("groupName")), gpus_of(g), hi * hosts, lo * hosts)


def containers(group: dict, where: str) -> tuple[list[tuple[str, dict]], list[str]]:
    tpl = group.get("template")
    pod = tpl.get("spec") if isinstance(tpl, dict) else None
    cs = pod.get("containers") if isinstance(pod, dict) else None
    if not isinstance(cs, list) or not cs or not all(isinstance(c, dict) for c in cs):
        return [], [f"{where}.template.spec.containers: missing or empty (the Ray container)"]
    return [(f"{where}.template.spec.containers[{i}]", c) for i, c in enumerate(cs)], []


def all_containers(spec: dict) -> list[tuple[dict, str]]:
    groups = [("spec.headGroupSpec", spec.get("headGroupSpec"))]
    groups += [(f"spec.workerGroupSpecs[{i}]", g) for i, g in enumerate(spec.get("workerGroupSpecs") or [])]
    return [(c, w) for where, g in groups if isinstance(g, dict) for w, c in containers(g, where)[0]]


def gpus_of(group: dict) -> int:
    params = group.get("rayStartParams") if isinstance(group.get("rayStartParams"), dict) else {}
    if str(params.get("num-gpus", "")).isdigit():
        return int(params["num-gpus"])
    total = 0
    for _, c in containers(group, "")[0]:
        limits = (c.get("resources") or {}).get("limits") or {}
        try:
            total += int(limits.get("nvidia.com/gpu", 0))
        except (TypeError, ValueError):
            pass
    return total


def env_of(c: dict) -> dict:
    env = c.get("env")
    return {e.get("name"): e for e in env if isinstance(e, dict)} if isinstance(env, list) else {}


def group_checks(group: dict, where: str, head: bool) -> list[str]:
    problems = []
    params = group.get("rayStartParams", {})
    if not isinstance(params, dict):
        problems.append(f"{where}.rayStartParams: expected a mapping of strings")
        params = {}
    problems += [f"{where}.rayStartParams.{k}: expected a string (KubeRay's CRD), got {type(v).__name__}"
                 for k, v in params.items() if not isinstance(v, str)]
    if head:
        problems += checks.dashboard_exposed(params.get("dashboard-host"), f"{where}.rayStartParams.dashboard-host",
                                             'set "127.0.0.1" and use `kubectl port-forward`')
    cs, found = containers(group, where)
    problems += found
    for cwhere, c in cs:
        if checks.unpinned_image(c.get("image")):
            problems.append(f"{cwhere}.image: {c.get('image')!r} is not pinned (use an explicit version tag or "
                            "an @sha256 digest)")
        argv = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        if "mlflow" in argv:
            for a, b in pairwise(argv):
                if a == "--host":
                    problems += checks.mlflow_all_interfaces(b, f"{cwhere}.args", "bind $(POD_IP) (reached through "
                                                             "the head service) and port-forward for the UI")
        if "env" in c and (not isinstance(c["env"], list) or not all(isinstance(e, dict) for e in c["env"])):
            problems.append(f"{cwhere}.env: expected a list of {{name, value}} mappings")
            continue
        env = env_of(c)
        missing = [f"{k}={v}" for k, v in NO_TELEMETRY.items() if (env.get(k) or {}).get("value") != v]
        if missing:
            problems.append(f"{cwhere}.env: telemetry not off (need {', '.join(missing)})")
        for i, e in enumerate(c.get("env") or []):
            if e.get("name") == "RAY_AUTH_MODE" and str(e.get("value", "")).lower() != "token":
                problems.append(f"{cwhere}.env[{i}]: RAY_AUTH_MODE={e.get('value')} {checks.AUTH_OFF} (KubeRay "
                                "keeps a container's own value even with authOptions)")
    return problems


def auth_checks(spec: dict, cs: list[dict]) -> list[str]:
    """Token auth on: ``authOptions: {mode: token}``, or every container sets RAY_AUTH_MODE=token and takes
    RAY_AUTH_TOKEN from a Secret (KubeRay's manual recipe)."""
    auth = spec.get("authOptions")
    if auth is not None and not isinstance(auth, dict):
        return [f"spec.authOptions: expected a mapping such as {{mode: token}}, got {type(auth).__name__}"]
    auth = auth or {}
    problems = unknown(auth, AUTH_KEYS, "spec.authOptions")
    mode = auth.get("mode")
    if mode not in (None, "token", "disabled"):
        return problems + [f"spec.authOptions.mode: must be token or disabled (KubeRay's CRD), got {mode!r}"]
    if mode == "disabled":
        return problems + [f"spec.authOptions.mode: disabled {checks.AUTH_OFF}"]
    if mode == "token":
        return problems
    manual = cs and all((env_of(c).get("RAY_AUTH_MODE") or {}).get("value") == "token"
                        and "secretKeyRef" in ((env_of(c).get("RAY_AUTH_TOKEN") or {}).get("valueFrom") or {})
                        for c in cs)
    if not manual:
        problems.append("spec.authOptions: token authentication is not on; set authOptions: {mode: token} (KubeRay "
                        ">= 1.5.1 then creates a Secret with the token and gives it to every container), or set "
                        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from a secretKeyRef in every container")
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
    problems += checks.storage_checks(meta, multi, lambda key: f"{where}.{names[key]}")
    problems += checks.tracking_checks(meta["tracking_uri"], multi, f"{where}.ifdd.io/tracking-uri")
    return problems
