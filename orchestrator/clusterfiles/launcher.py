"""Ray cluster-launcher YAMLs judged as `ray up` judges them, then the project's checks.

`ray up` (ray.autoscaler._private.commands, Ray 2.60) reads ``provider.type`` and ``cluster_name`` from the file as
written, then ``prepare_config`` fills the provider's ``defaults.yaml`` (a file inside the ray wheel): it drops empty
legacy ``head_node``/``worker_nodes`` and a top-level ``min_workers``, merges ``setup_commands`` into the head and
worker setup commands and fills per-node-type worker bounds. Only then does ``validate_config`` apply
``ray-schema.json`` and its semantic checks. The same two functions run here (offline: neither builds a node
provider, so no cloud SDK is imported and nothing is contacted; private API, hence ray's exact pin), and every schema
error is reported, named by its key in the file as written. AWS fills missing node-type ``resources`` from EC2
during `ray up` (a cloud call): that gap is left open here, with a note.

Then what `ray up` only finds out after a paid head node has started (a ``file_mounts`` path missing here, a node
type whose ``min_workers`` exceeds its ``max_workers``, the on-prem head among its workers, a moving docker tag, a
token nobody gets), and the project's settings (checks.py).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import io
import json
import logging
import re
from pathlib import Path

from orchestrator.clusterfiles import checks, roles
from orchestrator.clusterfiles.checks import NodeGroup, key_path
from orchestrator.clusterfiles.yamlfile import resolve_local

FAKE_PROVIDERS = {"fake_multinode", "fake_multinode_docker"}  # Ray's own test providers


def ray_providers() -> list[str]:
    """Provider types `ray up` knows and prepare_config can fill offline (a defaults.yaml in the wheel)."""
    from ray.autoscaler._private.providers import _DEFAULT_CONFIGS, _NODE_PROVIDERS

    return sorted((set(_NODE_PROVIDERS) & set(_DEFAULT_CONFIGS)) - FAKE_PROVIDERS)


def validate_launcher(raw: dict) -> tuple[list[str], str, list[str]]:
    """(problems, summary, notes) of one launcher YAML document."""
    problems = read_before_prepare(raw)
    if problems:
        return problems, "", []
    cfg, problems, notes = ray_judgement(raw)
    if problems:
        return problems, "", notes
    problems = late_failures(raw, cfg) + project_checks(raw, cfg)
    return problems, summarize(cfg), notes


def read_before_prepare(raw: dict) -> list[str]:
    """What `ray up` reads from the file as written, before any default is filled (a KeyError otherwise)."""
    provider = raw.get("provider")
    if not isinstance(provider, dict):
        return ["provider: missing or not a mapping (e.g. {type: aws, region: us-west-2}); `ray up` reads "
                "provider.type first"]
    known = ray_providers()
    if provider.get("type") not in known:
        return [f"provider.type: must be one of {', '.join(known)} (the providers ray {ray_version()} can "
                f"prepare), got {provider.get('type')!r}"]
    if "cluster_name" not in raw:
        return ["cluster_name: missing; `ray up` reads it before filling Ray's default and stops with "
                "KeyError: 'cluster_name' (unless given --cluster-name)"]
    return []


def ray_version() -> str:
    import ray

    return ray.__version__


# ---------------------------------------------------------------- Ray's own judgement


def ray_judgement(raw: dict) -> tuple[dict, list[str], list[str]]:
    """prepare_config + Ray's schema (every error) + validate_config's semantic checks, with Ray's printout
    captured as notes."""
    from ray.autoscaler._private.util import prepare_config

    out = io.StringIO()
    with quiet_ray(out):
        try:
            cfg = prepare_config(copy.deepcopy(raw))
            crash = None
        except Exception as e:  # noqa: BLE001 - Ray raises KeyError/TypeError/click aborts on malformed input
            cfg, crash = {}, e
    notes = ray_notes(out.getvalue())
    if crash is not None:
        # Name the keys through the schema on the file as prepare_config would have seen it after its drops.
        problems = schema_problems(ray_drops(raw), raw)
        if not problems:
            said = " ".join(notes) or " ".join(str(crash).split()) or type(crash).__name__
            problems = [f"{ray_message_key(said, raw)}: ray autoscaler: {said[:300]}"]
        return {}, problems, []
    if cfg["provider"]["type"] == "aws":
        for name, nt in (cfg.get("available_node_types") or {}).items():
            if isinstance(nt, dict) and "resources" not in nt:
                nt["resources"] = {}
                notes.append(f"available_node_types.{name}.resources: not set; `ray up` detects it from the EC2 "
                             "instance type (an AWS call, not made here)")
    problems = schema_problems(cfg, raw) or semantic_problems(cfg, raw)
    return cfg, problems, notes


@contextlib.contextmanager
def quiet_ray(out: io.StringIO):
    """Ray's autoscaler prints through cli_logger (stdout) and logs warnings through a handler Ray bound to stderr
    at import: both go to ``out`` (its info lines, "setting max workers for …", are dropped)."""
    log = logging.getLogger("ray.autoscaler")
    saved = log.level, log.propagate
    handler = logging.StreamHandler(out)
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+\s+\w+ \S+ -- ")


def ray_notes(printed: str) -> list[str]:
    """Ray's printout as notes: colours and logging timestamps removed, a message's continuation lines joined."""
    notes: list[str] = []
    for line in printed.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip()
        if not line.strip():
            continue
        if notes and not LOG_PREFIX.match(line) and line[:1].isspace() is False and notes[-1].endswith(":"):
            notes[-1] += " " + line.strip()
        else:
            notes.append(LOG_PREFIX.sub("", line).strip())
    return notes


def ray_message_key(said: str, raw: dict) -> str:
    """The key a message of Ray's is about: the first key of the file (or of its provider) it mentions, a missing
    one first (Ray's local provider says "Please supply a `head_ip` and list of `worker_ips`")."""
    provider = raw.get("provider") if isinstance(raw.get("provider"), dict) else {}
    words = re.findall(r"[A-Za-z_]+", said)
    for pick in (lambda w: w in ("head_ip", "worker_ips", "coordinator_address") and w not in provider,
                 lambda w: w in raw, lambda w: w in provider):
        hit = next((w for w in words if pick(w)), None)
        if hit:
            return hit if hit in raw else f"provider.{hit}"
    return "(top level)"


def ray_drops(raw: dict) -> dict:
    """The file as prepare_config sees it after its silent drops (empty head_node/worker_nodes, top-level
    min_workers; on-prem an empty available_node_types), to name keys when prepare_config itself crashed."""
    view = {k: v for k, v in raw.items() if not (k in ("head_node", "worker_nodes") and not v) and k != "min_workers"}
    if (raw.get("provider") or {}).get("type") == "local" and not raw.get("available_node_types"):
        view.pop("available_node_types", None)
    return view


def schema_problems(cfg: dict, raw: dict) -> list[str]:
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    errors = jsonschema.validators.validator_for(schema)(schema).iter_errors(cfg)
    found: list[str] = []
    for e in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        for line in schema_messages(e, raw):
            if line not in found:
                found.append(line)
    return found


def file_path(parts: list, raw: dict) -> list:
    """A prepared config's key path as the file spells it: prepare_config prepends ``setup_commands`` to the head
    and worker setup commands."""
    if len(parts) >= 2 and parts[0] in ("head_setup_commands", "worker_setup_commands") and isinstance(parts[1], int):
        n = len(raw.get("setup_commands") or []) if isinstance(raw.get("setup_commands"), list) else 0
        return ["setup_commands", parts[1], *parts[2:]] if parts[1] < n else [parts[0], parts[1] - n, *parts[2:]]
    return parts


def schema_messages(e, raw: dict) -> list[str]:
    """A jsonschema error as ``key.path: message`` lines, one per offending key."""
    where = file_path(list(e.absolute_path), raw)
    if e.validator == "additionalProperties":
        allowed = sorted(e.schema.get("properties", {}))
        extra = sorted(k for k in e.instance if k not in allowed
                       and not any(re.search(p, k) for p in e.schema.get("patternProperties", {})))
        return [f"{key_path(where + [k])}: unknown key{known_keys_hint(k, allowed)}" for k in extra] \
            or [f"{key_path(where)}: {e.message}"]
    if e.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", e.message)
        return [f"{key_path(where + missing[:1])}: required key missing"]
    if e.validator == "type":
        return [f"{key_path(where)}: expected {e.validator_value}, got {type(e.instance).__name__} {e.instance!r}"]
    return [f"{key_path(where)}: {' '.join(e.message.split())[:200]}"]


def known_keys_hint(key: str, allowed: list[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else the keys the schema allows there."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.75)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (Ray's schema allows: {', '.join(allowed)})" if allowed else ""


def semantic_problems(cfg: dict, raw: dict) -> list[str]:
    """validate_config's checks after the schema, each named by its key (Ray's own wording is kept as a fallback)."""
    from ray.autoscaler._private.util import validate_config

    types = cfg.get("available_node_types") or {}
    head = cfg.get("head_node_type")
    if head not in types:
        if "head_node_type" not in raw:
            return [f"head_node_type: missing (one of available_node_types: {', '.join(types)}); Ray's default "
                    f"{head!r} is not one of them"]
        return [f"head_node_type: {head!r} is not one of available_node_types ({', '.join(types) or 'none'})"]
    total_min = sum(nt.get("min_workers", 0) for nt in types.values())
    if total_min > cfg["max_workers"]:
        local = " (on-prem, min_workers defaults to the number of worker_ips)" if cfg["provider"]["type"] == "local" \
            else ""
        return [f"max_workers: {cfg['max_workers']} is below the sum of the node types' min_workers ({total_min})"
                + local]
    out = io.StringIO()
    try:
        with quiet_ray(out):
            validate_config(cfg)
    except Exception as e:  # noqa: BLE001 - ValueError/RuntimeError with Ray's message
        return [f"ray autoscaler: {' '.join(str(e).split())[:300]}"]
    return []


# ---------------------------------------------------------------- what `ray up` finds out only on the cluster


def late_failures(raw: dict, cfg: dict) -> list[str]:
    problems = []
    for remote, local in (cfg.get("file_mounts") or {}).items():
        if not isinstance(local, str):
            problems.append(f"file_mounts[{remote!r}]: expected a local path, got {type(local).__name__}")
        elif not resolve_local(local).exists():
            make = " (make it once with `ray get-auth-token --generate`)" if local.endswith(".ray/auth_token") else ""
            problems.append(f"file_mounts[{remote!r}]: {local} does not exist on this machine{make}; `ray up` "
                            "would fail copying it after the head node has started")
    for name, nt in (raw.get("available_node_types") or {}).items():
        lo, hi = (nt.get("min_workers"), nt.get("max_workers")) if isinstance(nt, dict) else (None, None)
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            problems.append(f"available_node_types.{name}: min_workers {lo} > max_workers {hi}; Ray would keep "
                            f"at most {hi} without saying so")
    provider = cfg["provider"]
    if provider["type"] == "local":  # (min_workers > max_workers here is refused by validate_config already)
        seen = {provider["head_ip"]: "provider.head_ip"}
        for i, ip in enumerate(provider.get("worker_ips") or []):
            if ip in seen:
                problems.append(f"provider.worker_ips[{i}]: {ip} is already {seen[ip]}; the local provider keys "
                                "nodes by IP, so one machine cannot be two nodes")
            seen.setdefault(ip, f"provider.worker_ips[{i}]")
    problems += image_problems(cfg)
    return problems


def image_problems(cfg: dict) -> list[str]:
    images = [(f"docker.{k}", (cfg.get("docker") or {}).get(k)) for k in ("image", "head_image", "worker_image")]
    images += [(f"available_node_types.{n}.docker.worker_image", (nt.get("docker") or {}).get("worker_image"))
               for n, nt in (cfg.get("available_node_types") or {}).items()]
    return [f"{where}: {image!r} is not pinned (a moving tag: a node started later runs other code); use an "
            "explicit version tag such as rayproject/ray:2.60.0-py312-gpu, or an @sha256 digest"
            for where, image in images if isinstance(image, str) and image and checks.unpinned_image(image)]


# ---------------------------------------------------------------- the project's checks


def project_checks(raw: dict, cfg: dict) -> list[str]:
    problems: list[str] = []
    meta, found = read_metadata(raw.get("metadata"))
    problems += found
    groups, where, how = node_groups(cfg)
    multi = any(g.max_nodes > 0 for g in groups[1:])
    if meta:
        problems += checks.storage_checks(meta, multi)
        head_ip = cfg["provider"].get("head_ip") if cfg["provider"]["type"] == "local" else None
        problems += checks.tracking_checks(meta.get("tracking_uri"), multi, "metadata.ifdd.tracking_uri", head_ip)
    problems += checks.gpu_rule(groups, where, how)
    problems += service_checks(cfg, meta)
    problems += roles.telemetry_checks(cfg, raw, multi)
    problems += roles.auth_checks(cfg, raw, multi)
    problems += checks.credential_scan(raw)
    return problems


def read_metadata(section) -> tuple[dict, list[str]]:
    if not isinstance(section, dict) or "ifdd" not in section:
        return {}, ["metadata.ifdd: missing (the project's settings: " + ", ".join(checks.REQUIRED_METADATA) + ")"]
    meta = section["ifdd"]
    if not isinstance(meta, dict):
        return {}, [f"metadata.ifdd: expected a mapping, got {type(meta).__name__}"]
    keys = checks.METADATA_KEYS
    problems = [f"metadata.ifdd.{k}: unknown key (allowed: {', '.join(keys)})" for k in meta if k not in keys]
    problems += [f"metadata.ifdd.{k}: required ({keys[k]})" for k in checks.REQUIRED_METADATA if k not in meta]
    problems += [f"metadata.ifdd.{k}: expected a string, got {type(v).__name__}" for k, v in meta.items()
                 if k in keys and not isinstance(v, str)]
    return ({} if problems else meta), problems


def node_groups(cfg: dict) -> tuple[list[NodeGroup], str, str]:
    """The head first, then the worker types, with the GPUs each states; and how this file states them."""
    if cfg["provider"]["type"] == "local":  # one node type inferred from IPs: GPUs are what `ray start` is given
        def gpus(key: str) -> int:
            return max([int(v) for _, c in roles.commands(cfg, key) for v in roles.flag_values(c, "--num-gpus")
                        if v.isdigit()] or [0])
        nt = cfg["available_node_types"][cfg["head_node_type"]]
        workers = NodeGroup("workers", gpus("worker_start_ray_commands"), int(cfg.get("max_workers", 0)),
                            int(nt.get("min_workers", 0)))
        multi = workers.max_nodes > 0
        where = "worker_start_ray_commands" if multi else "head_start_ray_commands"
        return [NodeGroup("head", gpus("head_start_ray_commands"), 1), workers], where, "`ray start --num-gpus=N`"
    head = cfg["head_node_type"]
    types = cfg["available_node_types"]
    gpu = {n: int((nt.get("resources") or {}).get("GPU", 0)) for n, nt in types.items()}
    groups = [NodeGroup(head, gpu[head], 1)]
    groups += [NodeGroup(n, gpu[n], min(int(nt.get("max_workers", 0)), int(cfg["max_workers"])),
                         int(nt.get("min_workers", 0))) for n, nt in types.items() if n != head]
    return groups, "available_node_types", "resources.GPU >= 1"


def service_checks(cfg: dict, meta: dict) -> list[str]:
    problems = []
    for where, cmd in roles.commands(cfg, "head_start_ray_commands", "head_setup_commands"):
        for host in roles.flag_values(cmd, "--dashboard-host"):
            problems += checks.dashboard_exposed(host, where, "bind 127.0.0.1 and reach it with `ray dashboard FILE`")
        if "mlflow server" in cmd and meta.get("mlflow_artifacts"):
            dest = roles.flag_values(cmd, "--artifacts-destination") + roles.flag_values(cmd, "--default-artifact-root")
            if dest and dest[0] != meta["mlflow_artifacts"]:
                problems.append(f"{where}: mlflow artifacts go to {dest[0]}, not metadata.ifdd.mlflow_artifacts "
                                f"({meta['mlflow_artifacts']})")
        if "mlflow server" in cmd or "mlflow ui" in cmd:
            for host in roles.flag_values(cmd, "--host") + roles.flag_values(cmd, "-h"):
                problems += checks.mlflow_all_interfaces(host, where, "bind the head's private IP (workers) and use "
                                                         "`ssh -L` for the UI")
    return problems


def summarize(cfg: dict) -> str:
    p = cfg["provider"]
    if p["type"] == "local":
        return (f"local provider, head {p['head_ip']}, {len(p['worker_ips'])} worker IP(s), "
                f"max_workers {cfg.get('max_workers', 0)}")
    groups, _, _ = node_groups(cfg)
    workers = ", ".join(f"{g.name} ({g.min_nodes}-{g.max_nodes} × {g.gpus} GPU)" for g in groups[1:])
    return (f"{p['type']} in {p.get('region') or p.get('location') or '?'}, head {groups[0].name}, workers "
            f"{workers or 'none'}, max_workers {cfg['max_workers']}")
