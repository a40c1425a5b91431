"""Starting or joining Ray for one `ifdd` command (docs/stack.md P2, P4, P7, P8, P9; docs/reliability.md, "Ray's
ports and token").

A local Ray is always a fresh instance of its own (``address="local"``), even when a `ray start` cluster or its
stale address file exists on this machine: joining one is what ``--address`` is for. It runs with Ray's token
authentication on, with a fresh token per command in a private temp folder (``RAY_AUTH_TOKEN_PATH``, mode 0600; never
``~/.ray/auth_token``, which Ray would otherwise write world-readable and which every later `ray start` of this user
would then pick up). The variables go into this process's environment before ``ray.init``, so every Ray process
(GCS, raylet, dashboard and its agents, workers: Tune's trials, Train's controller and workers) and every subprocess
inherits them: a client that finds a token but is not told ``RAY_AUTH_MODE=token`` connects without it and is
refused (what "token auth breaks local clients" was). Every service binds 127.0.0.1: the node's address is the
loopback one (Ray's single-machine mode, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which Ray uses on macOS and
Windows), so the GCS, raylet, object manager, agents, workers and metrics servers listen there, not on every
interface; they check the token all the same (docs/reliability.md has the table).

Two local Rays on one machine are isolated: each has its own address, ports (the two metrics ports Ray otherwise
fixes at 44217/44227 included), session folder and token, and Ray Train's placement-group cleaner, which finds "the"
cluster by looking for running GCS processes (and fails with "Found multiple active Ray instances", leaking
placement groups: docs/stack.md P9), is pointed at this command's own dashboard through ``RAY_API_SERVER_ADDRESS``,
set before the workers exist.

Joining a cluster (``--address``, or ``RAY_ADDRESS`` inside a Ray Job) sends its token from ``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or Ray's default ``~/.ray/auth_token`` (Ray's own order); ``check_cluster_token`` asks the GCS
before any work, so a missing or refused token is one ``error:`` line naming where the token was looked for.

The worker-group start timeout is bounded, so a worker group that can never be placed becomes an error instead of
an endless retry; telemetry is off; and SIGTERM is taken back from Ray after ``ray.init`` (its handler aborts
instead of saving).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from orchestrator.env import no_calls_home
from orchestrator.preempt import reinstall as reinstall_sigterm

WORKER_GROUP_START_TIMEOUT_S = "30"
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
METRICS_PORTS = ("DASHBOARD_METRIC_PORT", "AUTOSCALER_METRIC_PORT")
LOCAL_VARS = (*AUTH_VARS, "RAY_API_SERVER_ADDRESS", SINGLE_MACHINE, *METRICS_PORTS)
"""What a local Ray sets in this process's environment (restored by ``shutdown_ray``)."""
DEFAULT_TOKEN = Path("~/.ray/auth_token")
K8S_TOKENS = (Path("/var/run/secrets/ray.io/serviceaccount/token"),
              Path("/var/run/secrets/kubernetes.io/serviceaccount/token"))
"""Where Ray looks for a Kubernetes service-account token when RAY_ENABLE_K8S_TOKEN_AUTH is on (KubeRay RBAC)."""
GCS_PROBE_TIMEOUT_S = 10

_local: dict = {}
"""The local Ray this process started: ``dir`` (its token folder), ``saved`` (the environment before it)."""


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Join ``address`` (``auto``, ``ray://…`` or ``HOST:PORT``) or start a local Ray; returns cluster resources."""
    import ray

    no_calls_home()
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", WORKER_GROUP_START_TIMEOUT_S)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    address = address or os.environ.get("RAY_ADDRESS")  # set inside a Ray Job: join that cluster
    if not ray.is_initialized():
        if address:
            check_cluster_token(address)
            ray.init(address=address, log_to_driver=True)
            reinstall_sigterm()
        else:
            start_local(num_cpus)
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def live_nodes() -> list[dict[str, float]]:
    """Each alive node's resources (the planner sizes GPU workers to their own node)."""
    import ray

    return [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]


# The local Ray ----------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _new_token_file() -> Path:
    """A fresh random token in a new private folder (0700), the file itself 0600."""
    folder = Path(tempfile.mkdtemp(prefix="ifdd-ray-"))
    path = folder / "auth_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def reload_ray_auth() -> None:
    """Make Ray in this process re-read RAY_AUTH_MODE and its token (both are cached on first use; a process that
    talked to another cluster before would send that cluster's token)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def start_local(num_cpus: int | None = None, attempts: int = 3) -> str:
    """Start this command's own local Ray (token auth on, services on 127.0.0.1); returns its dashboard URL."""
    import ray
    from ray._private import ray_constants

    if not _local:
        _local["saved"] = {k: os.environ.get(k) for k in LOCAL_VARS}
        _local["cluster_mode"] = ray_constants.ENABLE_RAY_CLUSTER
        atexit.register(shutdown_ray)  # before Ray's own: the token file outlives every Ray process
    ray_constants.ENABLE_RAY_CLUSTER = False  # read when ray was imported; the children read the variable
    if _local.get("dir"):  # an earlier local Ray of this process, stopped with a bare ray.shutdown()
        shutil.rmtree(_local["dir"], ignore_errors=True)
    for _ in range(attempts):
        token = _new_token_file()
        port = _free_port()
        _local["dir"] = token.parent
        os.environ.pop("RAY_AUTH_TOKEN", None)  # a cluster's token is not this Ray's
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                           "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}", SINGLE_MACHINE: "0",
                           **{var: str(_free_port()) for var in METRICS_PORTS}})
        reload_ray_auth()
        ctx = ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1",
                       include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, log_to_driver=True)
        reinstall_sigterm()
        url = f"http://{ctx.dashboard_url}"
        if url.endswith(f":{port}"):
            print(f"local Ray: dashboard {url}, token authentication on; from another shell: "
                  f"{connect_recipe(ctx.address_info['gcs_address'], token)} (the token is removed when this "
                  "command ends)", flush=True)
            return url
        # another process took the port between our choice and the dashboard's bind: the cleaner would look at
        # the wrong dashboard, so start again on another port
        ray.shutdown()
        shutil.rmtree(token.parent, ignore_errors=True)
    raise RuntimeError(f"the local Ray's dashboard did not get the port it was given in {attempts} attempts")


def connect_recipe(gcs: str, token: Path) -> str:
    """The command line that reaches this local Ray from another shell: its token, token mode, and Ray's
    single-machine mode (without it a client turns 127.0.0.1 into the machine's address, where nothing listens)."""
    return f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token} {SINGLE_MACHINE}=0 ray status --address {gcs}"


def shutdown_ray() -> None:
    """Stop the local Ray this process started, remove its token folder and restore the environment before it
    (tests and benchmarks that start several Rays in one process call this instead of ``ray.shutdown``)."""
    if "ray" in sys.modules:
        import ray

        ray.shutdown()
    if not _local:
        return
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = _local["cluster_mode"]
    if _local.get("dir"):
        shutil.rmtree(_local["dir"], ignore_errors=True)
    for k, v in _local["saved"].items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    reload_ray_auth()  # Ray caches the auth mode and token: a later Ray of this process must not get this one's
    _local.clear()
    atexit.unregister(shutdown_ray)


# Joining a cluster ------------------------------------------------------------------------------------------------
def find_token() -> tuple[str | None, str]:
    """The token Ray would send from this process, in Ray's order (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, the default
    file), and a description of where it was (or was not) found.

    Raises:
        ValueError: RAY_AUTH_TOKEN_PATH names a file that cannot be read or is empty (Ray would abort on it).
    """
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as e:
            raise ValueError(f"RAY_AUTH_TOKEN_PATH: {path}: cannot read the Ray token ({e.strerror})") from None
        if not token:
            raise ValueError(f"RAY_AUTH_TOKEN_PATH: {path}: the file is empty; expected the cluster's Ray token")
        return token, f"RAY_AUTH_TOKEN_PATH={path}"
    k8s = K8S_TOKENS if os.environ.get("RAY_ENABLE_K8S_TOKEN_AUTH", "").lower() in ("1", "true") else ()
    for candidate in (*k8s, DEFAULT_TOKEN.expanduser()):
        try:
            token = candidate.read_text().strip()
        except OSError:
            continue
        if token:
            return token, str(candidate)
    places = ", ".join(f"{c} (absent or empty)" for c in (*k8s, DEFAULT_TOKEN.expanduser()))
    return None, f"RAY_AUTH_TOKEN (unset), RAY_AUTH_TOKEN_PATH (unset), {places}"


def use_token() -> tuple[str | None, str]:
    """Send the token this process finds (``find_token``) on every Ray connection from here; returns it and where
    it came from. Ray sends a token only under ``RAY_AUTH_MODE=token``, and ``ray.init`` with an explicit address
    never turns that on by itself, so it is set here; with no token found nothing is sent (token mode without a
    token is a failed ``RAY_CHECK`` in Ray's token loader: the process aborts). An explicit
    ``RAY_AUTH_MODE=disabled`` is respected."""
    token, where = find_token()
    if token is None:
        os.environ["RAY_AUTH_MODE"] = "disabled"
    elif os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled":
        os.environ["RAY_AUTH_MODE"] = "token"
    reload_ray_auth()
    return token, where


def _gcs_address(address: str) -> str | None:
    """``HOST:PORT`` of the GCS behind ``address`` (``auto`` resolved as Ray does); None for a Ray Client
    ``ray://`` address, which ``ray.init`` checks itself."""
    if address.startswith("ray://"):
        return None
    from ray._private import services

    try:
        return services.canonicalize_bootstrap_address_or_die(address)
    except (ConnectionError, ValueError) as e:
        raise ValueError(f"--address {address}: {' '.join(str(e).split())}") from None


def probe_gcs(gcs: str, timeout_s: float = GCS_PROBE_TIMEOUT_S) -> str | None:
    """Ask the GCS at ``gcs`` one authenticated question; None when it answers, else why not (its own words). A
    port nothing listens on is told in seconds (Ray's own client retries for about a minute)."""
    from ray._raylet import GcsClient

    host, _, port = gcs.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        return f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
    try:
        GcsClient(address=gcs).internal_kv_get(b"__ifdd_probe__", b"ifdd", timeout=timeout_s)
    except Exception as e:  # noqa: BLE001 - Ray raises RpcError/AuthenticationError/ConnectionError/TimeoutError
        first = " ".join(str(e).split()).split(". ", 1)[0]  # Ray appends paragraphs of advice
        return f"{type(e).__name__}: {first[:200]}"
    return None


def check_cluster_token(address: str | None) -> None:
    """Before any work: when joining a cluster (``address`` or ``RAY_ADDRESS``), send its token and check that the
    GCS accepts it.

    Raises:
        ValueError: naming the address and where the token was looked for (the CLI prints ``error: …``, exit 2).
    """
    flag = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address == "local":
        return
    gcs = _gcs_address(address)
    token, where = use_token()
    if gcs is None:
        return
    failure = probe_gcs(gcs)
    if failure is None:
        return
    if "auth" not in failure.lower() and "unauthenticated" not in failure.lower():
        raise ValueError(f"{flag} {address}: no Ray cluster answers at {gcs} ({failure})")
    if token is None:
        raise ValueError(f"{flag} {address}: the cluster requires its Ray token and none was found (looked in "
                         f"{where}); copy it from the head (`ray get-auth-token`) and set RAY_AUTH_TOKEN_PATH")
    raise ValueError(f"{flag} {address}: the cluster refused the Ray token from {where} ({failure})")
