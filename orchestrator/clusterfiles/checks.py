"""The project's checks shared by launcher YAMLs and KubeRay manifests: storage, tracking URI, the GPU rule,
telemetry, token authentication, exposed services, pinned images and literal credentials.

Each check returns problems as ``key.path: what is wrong`` lines; the caller prefixes the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


# ---------------------------------------------------------------- storage and tracking


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


# ---------------------------------------------------------------- GPUs: one rule for both file kinds


@dataclass
class NodeGroup:
    """A head or worker node type / group: how many GPUs each node states and how many such nodes may run."""
    name: str
    gpus: int
    max_nodes: int  # the head: 1
    min_nodes: int = 0


def gpu_rule(groups: list[NodeGroup], where: str, how: str) -> list[str]:
    """Some node that can start states GPU >= 1: a GPU head, or a worker type/group with max >= 1. ``how``: how this
    kind of file states a node's GPUs."""
    if any(g.gpus >= 1 and g.max_nodes >= 1 for g in groups):
        return []
    return [f"{where}: no node that can start states a GPU (a head, or a worker type with max >= 1, with {how}); "
            "the Train workers need GPUs, and a count Ray only detects at start-up is invisible here"]


def gpu_summary(groups: list[NodeGroup]) -> str:
    return ", ".join(f"{g.name} ({g.min_nodes}-{g.max_nodes} × {g.gpus} GPU)" for g in groups
                     if g.gpus >= 1 and g.max_nodes >= 1) or "none"


# ---------------------------------------------------------------- exposure, images, token auth


def dashboard_exposed(host: str | None, where: str, fix: str) -> list[str]:
    if host in ("127.0.0.1", "localhost"):
        return []
    shown = "not set, so 0.0.0.0 (KubeRay's default)" if host is None else host
    return [f"{where}: dashboard host {shown} exposes the Ray dashboard (it runs any job it is sent); {fix}"]


def mlflow_all_interfaces(host: str, where: str, fix: str) -> list[str]:
    if host in ("0.0.0.0", "::"):
        return [f"{where}: mlflow --host {host} serves the MLflow API on every interface; {fix}"]
    return []


def unpinned_image(image: Any) -> bool:
    """True unless the image names an explicit version tag or a digest (``latest``, ``latest-gpu``, ``nightly``,
    no tag at all are moving targets: a node started next month runs other code)."""
    if not isinstance(image, str) or not image.strip():
        return True
    if "@sha256:" in image:
        return False
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return True
    tag = name.split(":", 1)[1].lower()
    return tag.startswith(("latest", "nightly")) or not any(c.isdigit() for c in tag)


AUTH_ASSIGN = re.compile(r"(?<![\w$])RAY_AUTH_MODE=(\"[^\"]*\"|'[^']*'|[^\s;&|)]+)")


def auth_modes(text: str) -> list[str]:
    """Values given to RAY_AUTH_MODE in a shell command or env value."""
    return [m.strip("'\"") for m in AUTH_ASSIGN.findall(text)]


AUTH_OFF = ("turns Ray's token authentication off: whoever reaches a Ray port (dashboard, GCS, client) can run "
            "code as the cluster's user; use RAY_AUTH_MODE=token")


# ---------------------------------------------------------------- literal credentials

SECRET_NAMES = {
    "PASSWORD", "PASSWD", "SECRET", "TOKEN", "API_KEY", "APIKEY", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY", "RAY_AUTH_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY",
    "GITHUB_TOKEN", "GH_TOKEN", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "DATABRICKS_TOKEN", "KAGGLE_KEY", "NGC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "COMET_API_KEY",
    "NEPTUNE_API_TOKEN", "DOCKER_PASSWORD", "REDIS_PASSWORD", "POSTGRES_PASSWORD", "MYSQL_PASSWORD",
    "MYSQL_ROOT_PASSWORD", "SECRET_KEY", "ACCESS_TOKEN", "AUTH_TOKEN", "CLIENT_SECRET", "PRIVATE_KEY",
}
"""Names (environment variables, YAML keys) whose value is a secret, spelled exactly."""
SECRET_SUFFIXES = ("_PASSWORD", "_PASSWD", "_SECRET", "_SECRET_KEY", "_SECRET_ACCESS_KEY", "_API_KEY", "_APIKEY",
                   "_TOKEN", "_ACCESS_TOKEN", "_AUTH_TOKEN", "_CLIENT_SECRET", "_ACCOUNT_KEY")
"""The naming convention of secrets (``FOO_PASSWORD``, ``X_API_KEY``); ``*_PATH``/``*_FILE`` hold where a secret
is, not the secret, and ``TOKENIZERS_PARALLELISM`` is not a token."""
NOT_SECRETS = {"SSH_PRIVATE_KEY", "SSH_PUBLIC_KEY", "KEY_NAME", "SECRET_NAME"}
"""Ray's ``auth.ssh_private_key`` is a path; KubeRay's ``secretName`` names a Secret."""

ASSIGN = re.compile(r"(?<![\w$\-./])([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s;&|)]+)")
SECRET_FLAG = re.compile(r"(?<![\w-])--(password|passwd|token|secret|api-key|auth-token|access-key|secret-key|"
                         r"client-secret)(?:=|\s+)(\"[^\"]*\"|'[^']*'|[^\s;&|)]+)")
AWS_CONFIGURE = re.compile(r"\baws\s+configure\s+set\s+(?:--profile\s+\S+\s+)?([\w.]+)\s+(\"[^\"]*\"|'[^']*'|\S+)")
URI_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s/]+)@")
SQL_PASSWORD = re.compile(r"\bPASSWORD\s+'([^']*)'", re.I)
KNOWN_VALUES = {
    "an AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "a GitHub token": re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,})\b"),
    "a Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
}


def secret_name(name: str) -> bool:
    """``name`` (an env var, a YAML key in snake_case or camelCase) names a secret by the conventions above."""
    if "/" in name:  # a path (file_mounts keys): where a secret may be, not a secret
        return False
    n = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper().replace("-", "_").replace(".", "_")
    if n in NOT_SECRETS:
        return False
    return n in SECRET_NAMES or n.endswith(SECRET_SUFFIXES)


def is_reference(value: str) -> bool:
    """A value taken from elsewhere at run time: $VAR, ${VAR}, $(command), a printf slot, a template, or empty."""
    v = str(value).strip().strip("'\"").strip()
    return not v or v.startswith(("$", "{{", "%s")) or v == "%s"


def string_findings(text: str) -> list[str]:
    """What in a string (a command, an env value) is a literal secret, named without its value."""
    found = [f"{name}=…" for name, value in ASSIGN.findall(text) if secret_name(name) and not is_reference(value)]
    found += [f"--{flag} …" for flag, value in SECRET_FLAG.findall(text) if not is_reference(value)]
    found += [f"aws configure set {key} …" for key, value in AWS_CONFIGURE.findall(text)
              if secret_name(key.rsplit(".", 1)[-1]) and not is_reference(value)]
    found += ["a password in a URI" for value in URI_PASSWORD.findall(text) if not is_reference(value)]
    found += ["an SQL PASSWORD '…'" for value in SQL_PASSWORD.findall(text) if not is_reference(value)]
    found += [what for what, pattern in KNOWN_VALUES.items() if pattern.search(text)]
    return found


def credential_scan(doc: Any, where: tuple = (), fix: str = "take it from an environment variable ($NAME) or a "
                    "secret store") -> list[str]:
    """Literal secrets anywhere in a document: values of secret-named keys, ``{name: SECRET, value: …}`` entries
    (Kubernetes env), and secrets inside strings. The document was bounded by the reader (yamlfile)."""
    problems = []
    if isinstance(doc, dict):
        env_name = doc.get("name")
        if isinstance(env_name, str) and "value" in doc and secret_name(env_name) \
                and not is_reference(str(doc["value"])):
            problems.append(f"{key_path(where + ('value',))}: literal {env_name}; use valueFrom.secretKeyRef")
        for k, v in doc.items():
            if k == "value" and isinstance(env_name, str) and secret_name(env_name):
                continue
            if isinstance(k, str) and secret_name(k) and isinstance(v, str | int | float) \
                    and not isinstance(v, bool) and not is_reference(str(v)):
                problems.append(f"{key_path(where + (k,))}: literal credential; {fix}")
            else:
                problems += credential_scan(v, where + (k,), fix)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            problems += credential_scan(v, where + (i,), fix)
    elif isinstance(doc, str):
        found = list(dict.fromkeys(string_findings(doc)))
        if found:
            problems.append(f"{key_path(where)}: literal credential in a string ({', '.join(found)}); {fix}")
    return problems
