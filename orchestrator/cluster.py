"""Offline validation of the cluster files in ``cluster/``: Ray cluster-launcher YAMLs and KubeRay manifests.

Launcher YAMLs go through Ray's own autoscaler code, the way ``ray up`` reads them (stack-notes §7, P17):
``prepare_config`` fills the provider's shipped ``defaults.yaml`` (a file inside the ray wheel) and per-node-type
worker bounds, then ``validate_config`` checks the result against ``ray-schema.json``. Neither builds a node provider,
so nothing contacts a cloud and no cloud SDK (boto3, googleapiclient) is imported; both are private API, which is
why ray is pinned exactly. Ray's jsonschema errors are translated into ``key.path: message``.

Then the project's own checks, on settings a Ray schema cannot know: the top-level ``metadata`` key (which Ray's
schema allows and Ray never interprets) holds an ``ifdd`` mapping with the ``--storage`` and ``--tracking-uri`` the
user passes to ``ifdd launch``/``ifdd search``. A KubeRay ``RayCluster`` carries the same settings as
``ifdd.io/*`` annotations (cluster_kuberay.py). Every problem is one line ``FILE: key.path: what is wrong``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

PROVIDERS = ("aws", "gcp", "local")
METADATA_KEYS = {
    "storage": "the --storage of `ifdd launch/search`: s3://…, gs://… or a path under shared_fs",
    "tracking_uri": "the --tracking-uri of `ifdd launch/search`: http://HOST:PORT of the head's MLflow server",
    "mlflow_artifacts": "where the MLflow server keeps artifacts (s3://…, gs://… or a path under shared_fs)",
    "shared_fs": "absolute mount point of the file system every node shares (NFS, EFS, Filestore)",
}
REQUIRED_METADATA = ("storage", "tracking_uri")
HEAD_IP_PLACEHOLDER = "{head_ip}"
"""Stands for the head's private IP in a tracking URI when it is only known after ``ray up`` (cloud providers)."""
LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}
SHARED_SCHEMES = ("s3://", "gs://")


class ClusterFileError(ValueError):
    """An unreadable or non-YAML cluster file."""


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise ClusterFileError(f"{path}: cannot read ({reason})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ClusterFileError(f"{path}: not valid YAML ({' '.join(str(e).split())[:200]})") from None


def validate_file(path: str | Path) -> tuple[list[str], str]:
    """Problems of one cluster file as ``FILE: key: message`` lines (empty when valid), and a one-line summary."""
    path = Path(path)
    try:
        doc = load_yaml(path)
    except ClusterFileError as e:
        return [str(e)], ""
    if not isinstance(doc, dict):
        return [f"{path}: expected a mapping at the top level, got {type(doc).__name__}"], ""
    if "apiVersion" in doc or "kind" in doc:
        from orchestrator.cluster_kuberay import validate_raycluster

        problems, summary = validate_raycluster(doc)
    else:
        problems, summary = validate_launcher(doc)
    return [f"{path}: {p}" for p in problems], summary


# ---------------------------------------------------------------- launcher YAMLs


def validate_launcher(raw: dict) -> tuple[list[str], str]:
    problems = precheck(raw)
    if problems:
        return problems, ""
    try:
        cfg, notes = ray_validate(raw)
    except RayConfigError as e:
        return [str(e)], ""
    problems = project_checks(raw, cfg)
    return problems, summarize(cfg) + notes


def precheck(raw: dict) -> list[str]:
    """What prepare_config would crash on (KeyError, abort) or silently paper over with its defaults."""
    provider = raw.get("provider")
    if not isinstance(provider, dict):
        return ["provider: missing or not a mapping (e.g. {type: aws, region: us-west-2})"]
    ptype = provider.get("type")
    if ptype not in PROVIDERS:
        return [f"provider.type: must be one of {', '.join(PROVIDERS)} (the providers these files are written "
                f"for), got {ptype!r}"]
    if ptype == "local":
        problems = [f"{k}: not supported with provider.type local (one node type, inferred from head_ip/worker_ips)"
                    for k in ("available_node_types", "head_node_type") if k in raw]
        if not isinstance(provider.get("head_ip"), str) or not provider.get("head_ip"):
            problems.append("provider.head_ip: missing (the head node's address)")
        if not isinstance(provider.get("worker_ips"), list):
            problems.append("provider.worker_ips: missing or not a list (the worker nodes' addresses; [] for none)")
        return problems
    types = raw.get("available_node_types")
    if not isinstance(types, dict) or not types:
        return ["available_node_types: missing or empty (a head node type and GPU worker node types)"]
    bad = [f"available_node_types.{k}: expected a mapping, got {type(v).__name__}" for k, v in types.items()
           if not isinstance(v, dict)]
    if bad:
        return bad
    head = raw.get("head_node_type")
    if head is None:
        return [f"head_node_type: missing (one of available_node_types: {', '.join(types)}); Ray's default "
                f"would name a node type this file does not define"]
    if head not in types:
        return [f"head_node_type: {head!r} is not one of available_node_types ({', '.join(types)})"]
    return []


class RayConfigError(ValueError):
    pass


def ray_validate(raw: dict) -> tuple[dict, str]:
    """Ray's schema on the file, then prepare_config + validate_config (offline) as `ray up` does; returns the
    prepared config and any notes Ray printed."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    # The file as written first: typos and wrong types named by key before prepare_config's arithmetic meets them.
    errors = sorted(jsonschema.validators.validator_for(schema)(schema).iter_errors(raw),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise RayConfigError(schema_message(errors[0]))
    out = io.StringIO()
    quiet = logging.getLogger("ray.autoscaler")  # "setting max workers for …" info lines
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            cfg = prepare_config(copy.deepcopy(raw))
            validate_config(cfg)
    except jsonschema.ValidationError as e:
        raise RayConfigError(schema_message(e)) from None
    except (ValueError, KeyError, TypeError, AssertionError, RuntimeError, NotImplementedError) as e:
        raise RayConfigError(f"ray autoscaler: {' '.join(str(e).split()) or type(e).__name__}") from None
    except Exception as e:  # noqa: BLE001 - cli_logger.abort raises click exceptions (message in the printout)
        said = " ".join(out.getvalue().split()) or str(e)
        raise RayConfigError(f"ray autoscaler: {strip_ansi(said)[:300]}") from None
    finally:
        quiet.setLevel(level)
    notes = [strip_ansi(line).strip() for line in out.getvalue().splitlines()]
    notes = [n for n in notes if n]
    return cfg, "".join(f"\n  note from ray: {n}" for n in notes)


def strip_ansi(s: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", s)


def key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def schema_message(e) -> str:
    """A jsonschema error as ``key.path: message`` (the offending key itself for unknown/missing keys)."""
    where = list(e.absolute_path)
    if e.validator == "additionalProperties":
        extra = re.findall(r"'([^']+)' (?:was|were) unexpected", e.message)
        keys = re.findall(r"'([^']+)'", e.message.split("(")[-1]) if not extra else []
        unknown = keys or extra
        allowed = sorted(e.schema.get("properties", {}))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{key_path(where + unknown[:1])}: unknown key{hint}"
    if e.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", e.message)
        return f"{key_path(where + missing[:1])}: required key missing"
    if e.validator == "type":
        return f"{key_path(where)}: expected {e.validator_value}, got {type(e.instance).__name__} {e.instance!r}"
    return f"{key_path(where)}: {' '.join(e.message.split())[:200]}"


def commands(cfg: dict, *keys: str) -> list[tuple[str, str]]:
    """(key path, command) for the command lists ``keys`` (and per-node-type overrides of them)."""
    out = []
    for k in keys:
        out += [(f"{k}[{i}]", c) for i, c in enumerate(cfg.get(k) or []) if isinstance(c, str)]
        for name, nt in (cfg.get("available_node_types") or {}).items():
            out += [(f"available_node_types.{name}.{k}[{i}]", c) for i, c in enumerate(nt.get(k) or [])
                    if isinstance(c, str)]
    return out


def flag_values(command: str, flag: str) -> list[str]:
    """Values given to ``--flag VALUE`` / ``--flag=VALUE`` in a shell command (quotes stripped)."""
    return [m.strip("'\"") for m in re.findall(rf"{re.escape(flag)}(?:=|\s+)(\"[^\"]*\"|'[^']*'|\S+)", command)]


def max_worker_nodes(cfg: dict) -> int:
    if cfg["provider"]["type"] == "local":  # one node type shared by head and workers; prepared from worker_ips
        return int(cfg.get("max_workers", 0))
    head = cfg.get("head_node_type")
    per_type = sum(int(nt.get("max_workers", 0)) for name, nt in cfg["available_node_types"].items() if name != head)
    return min(int(cfg.get("max_workers", 0)), per_type)


def project_checks(raw: dict, cfg: dict) -> list[str]:
    problems: list[str] = []
    meta, found = read_metadata(raw.get("metadata"))
    problems += found
    multi = max_worker_nodes(cfg) > 0
    local = cfg["provider"]["type"] == "local"
    if meta:
        problems += storage_checks(meta, multi)
        host_hint = cfg["provider"].get("head_ip") if local else None
        problems += tracking_checks(meta.get("tracking_uri"), multi, "metadata.ifdd.tracking_uri", host_hint)
    problems += gpu_check(cfg, multi)
    head_cmds = commands(cfg, "head_start_ray_commands", "head_setup_commands")
    for where, cmd in head_cmds:
        for host in flag_values(cmd, "--dashboard-host"):
            if host not in ("127.0.0.1", "localhost"):
                problems.append(f"{where}: --dashboard-host {host} exposes the Ray dashboard (it can run any job); "
                                "bind 127.0.0.1 and reach it with `ray dashboard FILE`")
        if "mlflow server" in cmd and meta.get("mlflow_artifacts"):
            dest = flag_values(cmd, "--artifacts-destination") + flag_values(cmd, "--default-artifact-root")
            if dest and dest[0] != meta["mlflow_artifacts"]:
                problems.append(f"{where}: mlflow artifacts go to {dest[0]}, not metadata.ifdd.mlflow_artifacts "
                                f"({meta['mlflow_artifacts']})")
        if "mlflow server" in cmd or "mlflow ui" in cmd:
            for host in flag_values(cmd, "--host") + flag_values(cmd, "-h"):
                if host in ("0.0.0.0", "::"):
                    problems.append(f"{where}: mlflow --host {host} serves the MLflow API on every interface; bind "
                                    "the head's private IP (workers) and use `ssh -L` for the UI")
    all_cmds = commands(cfg, "setup_commands", "head_setup_commands", "worker_setup_commands",
                        "head_start_ray_commands", "worker_start_ray_commands", "initialization_commands")
    if not any("RAY_USAGE_STATS_ENABLED=0" in c or "--disable-usage-stats" in c for _, c in all_cmds):
        problems.append("head_start_ray_commands: Ray usage stats not disabled (set RAY_USAGE_STATS_ENABLED=0 and "
                        "pass --disable-usage-stats)")
    problems += credential_scan(raw)
    return problems


def read_metadata(section: Any) -> tuple[dict, list[str]]:
    if not isinstance(section, dict) or "ifdd" not in section:
        return {}, ["metadata.ifdd: missing (the project's settings: " + ", ".join(REQUIRED_METADATA) + ")"]
    meta = section["ifdd"]
    if not isinstance(meta, dict):
        return {}, [f"metadata.ifdd: expected a mapping, got {type(meta).__name__}"]
    problems = [f"metadata.ifdd.{k}: unknown key (allowed: {', '.join(METADATA_KEYS)})" for k in meta
                if k not in METADATA_KEYS]
    problems += [f"metadata.ifdd.{k}: required ({METADATA_KEYS[k]})" for k in REQUIRED_METADATA if k not in meta]
    problems += [f"metadata.ifdd.{k}: expected a string, got {type(v).__name__}" for k, v in meta.items()
                 if k in METADATA_KEYS and not isinstance(v, str)]
    return ({} if problems else meta), problems


def is_shared(path: str, shared_fs: str | None) -> bool:
    if path.startswith(SHARED_SCHEMES):
        return True
    if not shared_fs or not path.startswith("/"):
        return False
    return Path(path) == Path(shared_fs) or Path(shared_fs) in Path(path).parents


def storage_checks(meta: dict, multi: bool, name=lambda key: f"metadata.ifdd.{key}") -> list[str]:
    """``name(key)``: how the file spells the setting (a key path, or a KubeRay annotation)."""
    problems = []
    shared_fs = meta.get("shared_fs")
    if shared_fs is not None and not shared_fs.startswith("/"):
        problems.append(f"{name('shared_fs')}: must be an absolute mount point, got {shared_fs!r}")
        shared_fs = None
    for key in ("storage", "mlflow_artifacts"):
        value = meta.get(key)
        if value is None:
            continue
        if not value.strip():
            problems.append(f"{name(key)}: empty")
        elif multi and not is_shared(value, shared_fs):
            problems.append(f"{name(key)}: {value!r} is not shared storage; with worker nodes it must be s3://…, "
                            f"gs://… or a path under {name('shared_fs')} (NFS)"
                            + ("" if shared_fs else ", which is not set"))
    return problems


def tracking_checks(uri: str | None, multi: bool, where: str, head_ip: str | None = None) -> list[str]:
    if uri is None:
        return []
    parts = urlsplit(uri.replace(HEAD_IP_PLACEHOLDER, "10.0.0.1"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"{where}: expected http://HOST:PORT of the MLflow server, got {uri!r}"]
    host = parts.hostname
    if multi and (host in LOOPBACK or host.startswith("127.")):
        return [f"{where}: {host} is not reachable from the worker nodes; use the head's private IP "
                f"(http://{HEAD_IP_PLACEHOLDER}:5000 when it is only known after `ray up`)"]
    if head_ip and host != head_ip and HEAD_IP_PLACEHOLDER not in uri and host not in LOOPBACK:
        return [f"{where}: host {host} is not provider.head_ip ({head_ip}), where the MLflow server runs"]
    return []


def gpu_check(cfg: dict, multi: bool) -> list[str]:
    if cfg["provider"]["type"] == "local":
        # One node type inferred from IPs: the GPU count is what the start commands give Ray.
        where = "worker_start_ray_commands" if multi else "head_start_ray_commands"
        gpus = [int(v) for _, c in commands(cfg, where) for v in flag_values(c, "--num-gpus") if v.isdigit()]
        if not any(g >= 1 for g in gpus):
            return [f"{where}: no `ray start --num-gpus=N` (N >= 1): the GPU nodes' count must be explicit"]
        return []
    head = cfg["head_node_type"]
    gpu_types = [name for name, nt in cfg["available_node_types"].items()
                 if (nt.get("resources") or {}).get("GPU", 0) >= 1 and (name == head or nt.get("max_workers", 0) > 0)]
    if not gpu_types:
        return ["available_node_types: no node type with resources.GPU >= 1 and max_workers >= 1 (add a GPU "
                "worker node type)"]
    return []


SECRET_KEY = re.compile(r"(pass(word)?|secret|token|access_key|api_key|credential)s?$", re.I)
SECRET_ASSIGN = re.compile(r"\b([A-Z0-9_]*(PASSWORD|SECRET|TOKEN|ACCESS_KEY)[A-Z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s;&|]+)")
URI_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s/]+)@")
SQL_PASSWORD = re.compile(r"\bPASSWORD\s+'([^']*)'", re.I)
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


def is_reference(value: str) -> bool:
    """A value taken from elsewhere at run time: $VAR, ${VAR}, $(command), a printf slot, or empty."""
    v = value.strip("'\"")
    return not v or v.startswith("$") or v == "%s"


def credential_scan(doc: Any, where: tuple = ()) -> list[str]:
    """Literal secrets anywhere in the document (values, command strings); references to env vars are fine."""
    problems = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if isinstance(k, str) and SECRET_KEY.search(k) and isinstance(v, str | int) and not is_reference(str(v)) \
                    and k not in ("ssh_private_key", "ssh_public_key", "KeyName"):
                problems.append(f"{key_path(where + (k,))}: literal credential; take it from an environment "
                                "variable or a secret store")
            else:
                problems += credential_scan(v, where + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            problems += credential_scan(v, where + (i,))
    elif isinstance(doc, str):
        found = [m.group(3) for m in SECRET_ASSIGN.finditer(doc)] + URI_PASSWORD.findall(doc) + \
            SQL_PASSWORD.findall(doc)
        if any(not is_reference(v) for v in found) or AWS_KEY_ID.search(doc):
            problems.append(f"{key_path(where)}: literal credential in a string; take it from an environment "
                            "variable ($NAME) or a secret store")
    return problems


def summarize(cfg: dict) -> str:
    p = cfg["provider"]
    if p["type"] == "local":
        return (f"local provider, head {p['head_ip']}, {len(p['worker_ips'])} worker IP(s), "
                f"max_workers {cfg.get('max_workers', 0)}")
    head = cfg["head_node_type"]
    workers = ", ".join(f"{n} ({nt.get('min_workers', 0)}-{nt.get('max_workers', 0)} × "
                        f"{(nt.get('resources') or {}).get('GPU', 0)} GPU)"
                        for n, nt in cfg["available_node_types"].items() if n != head)
    return f"{p['type']} in {p.get('region', '?')}, head {head}, workers {workers}, max_workers {cfg['max_workers']}"
