"""What each kind of node of a launcher YAML runs, and the settings every one of them must start Ray with.

`ray up` runs, on the head: ``initialization_commands``, ``setup_commands`` + ``head_setup_commands`` (merged by
prepare_config), ``head_start_ray_commands``; on a worker of node type T: T's ``initialization_commands`` (else the
global ones), T's ``worker_setup_commands`` (which replace the global setup and worker setup commands) else the
merged ``worker_setup_commands``, then ``worker_start_ray_commands``. A setting exported in any of them (a line in
``~/.bashrc``, an ``export``, a ``VAR=value`` prefix) reaches that node's Ray. Two settings are checked per node:
usage stats off, and token authentication on with a token that reaches the node.
"""

from __future__ import annotations

import re

from orchestrator.clusterfiles.checks import AUTH_OFF, auth_modes, is_reference

TOKEN_DEFAULT = "~/.ray/auth_token"
"""Where Ray looks for the token when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set (Ray's token-auth docs)."""


def mapped(key: str, i: int, raw: dict | None) -> str:
    """``key[i]`` of the prepared config as the file spells it (setup_commands come first in the merged lists)."""
    if raw is not None and key in ("head_setup_commands", "worker_setup_commands"):
        n = len(raw.get("setup_commands") or []) if isinstance(raw.get("setup_commands"), list) else 0
        return f"setup_commands[{i}]" if i < n else f"{key}[{i - n}]"
    return f"{key}[{i}]"


def commands(cfg: dict, *keys: str, raw: dict | None = None) -> list[tuple[str, str]]:
    """(key path, command) for the command lists ``keys`` and the per-node-type overrides of them."""
    out = []
    for k in keys:
        out += [(mapped(k, i, raw), c) for i, c in enumerate(cfg.get(k) or []) if isinstance(c, str)]
        for name, nt in (cfg.get("available_node_types") or {}).items():
            out += [(f"available_node_types.{name}.{k}[{i}]", c) for i, c in enumerate(nt.get(k) or [])
                    if isinstance(c, str)]
    return list(dict.fromkeys(out))


def flag_values(command: str, flag: str) -> list[str]:
    """Values given to ``--flag VALUE`` / ``--flag=VALUE`` in a shell command (quotes stripped)."""
    return [m.strip("'\"") for m in re.findall(rf"{re.escape(flag)}(?:=|\s+)(\"[^\"]*\"|'[^']*'|\S+)", command)]


def head_commands(cfg: dict) -> list[str]:
    head = (cfg.get("available_node_types") or {}).get(cfg.get("head_node_type"), {})
    init = head.get("initialization_commands", cfg.get("initialization_commands") or [])
    return [*init, *(cfg.get("head_setup_commands") or []), *(cfg.get("head_start_ray_commands") or [])]


def worker_commands(cfg: dict) -> dict[str, list[str]]:
    """Node type -> the commands one of its workers runs, for every worker type that may start."""
    out = {}
    for name, nt in (cfg.get("available_node_types") or {}).items():
        if name == cfg.get("head_node_type") and cfg["provider"]["type"] != "local":
            continue
        if cfg["provider"]["type"] != "local" and not nt.get("max_workers", 0):
            continue
        init = nt.get("initialization_commands", cfg.get("initialization_commands") or [])
        setup = nt.get("worker_setup_commands", cfg.get("worker_setup_commands") or [])
        label = "worker" if cfg["provider"]["type"] == "local" else name  # one inferred type, local.cluster.node
        out[label] = [*init, *setup, *(cfg.get("worker_start_ray_commands") or [])]
    return out


def _strings(cmds: list) -> list[str]:
    return [c for c in cmds if isinstance(c, str)]


def telemetry_checks(cfg: dict, raw: dict, multi: bool) -> list[str]:
    def off(cmds: list) -> bool:
        return any("RAY_USAGE_STATS_ENABLED=0" in c or "--disable-usage-stats" in c for c in _strings(cmds))

    fix = "set RAY_USAGE_STATS_ENABLED=0 and pass --disable-usage-stats"
    problems = [] if off(head_commands(cfg)) else [f"head_start_ray_commands: Ray usage stats not disabled on the "
                                                   f"head, which is the node that reports them ({fix})"]
    if multi:
        problems += [f"worker_start_ray_commands: Ray usage stats not disabled on the {name} nodes ({fix})"
                     for name, cmds in worker_commands(cfg).items() if not off(cmds)]
    return problems


def auth_checks(cfg: dict, raw: dict, multi: bool) -> list[str]:
    """Token auth turned off anywhere is an error; so is a node that starts without it, or without the token."""
    every = commands(cfg, "initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                     "head_start_ray_commands", "worker_start_ray_commands", raw=raw)
    problems = [f"{where}: RAY_AUTH_MODE={mode} {AUTH_OFF}" for where, cmd in every for mode in auth_modes(cmd)
                if mode.lower() != "token"]
    if problems:
        return problems

    def on(cmds: list) -> bool:
        return any(mode.lower() == "token" for c in _strings(cmds) for mode in auth_modes(c))

    how = ("export RAY_AUTH_MODE=token in setup_commands (a ~/.bashrc line) or prefix `ray start` with it; "
           "without it the cluster accepts jobs from whoever reaches its ports")
    if not on(head_commands(cfg)):
        problems.append(f"head_start_ray_commands: Ray token authentication is not on for the head ({how})")
    if multi:
        problems += [f"worker_start_ray_commands: Ray token authentication is not on for the {name} nodes ({how})"
                     for name, cmds in worker_commands(cfg).items() if not on(cmds)]
    if not problems and not token_reaches_nodes(cfg, [c for _, c in every]):
        problems.append("file_mounts: token authentication is on but no node gets the token, so `ray start` stops "
                        "on the head (no authentication token was found) after it was paid for; mount yours: "
                        f"file_mounts: {{{TOKEN_DEFAULT}: {TOKEN_DEFAULT}}} (made once by `ray get-auth-token "
                        "--generate`)")
    return problems


def token_reaches_nodes(cfg: dict, cmds: list[str]) -> bool:
    """A token file mounted where Ray reads it (its default path or a RAY_AUTH_TOKEN_PATH the commands set), or
    RAY_AUTH_TOKEN taken from the environment at run time."""
    paths = {TOKEN_DEFAULT} | {v.strip("'\"") for c in cmds for v in re.findall(r"RAY_AUTH_TOKEN_PATH=(\S+)", c)}
    for remote in (cfg.get("file_mounts") or {}):
        if remote in paths or str(remote).rstrip("/").endswith("/.ray/auth_token"):
            return True
    return any(is_reference(v) and v.strip("'\"") for c in cmds
               for v in re.findall(r"(?<![\w$])RAY_AUTH_TOKEN=(\"[^\"]*\"|'[^']*'|[^\s;&|)]+)", c))
