"""Helpers for the Ray security tests: the listening sockets of a process tree (from ``ss``), and whether each one
refuses a request without Ray's token (HTTP: 401/403; gRPC: UNAUTHENTICATED).

Loaded by path (tests use --import-mode=importlib, so test folders are not packages).
"""

from __future__ import annotations

import http.client
import subprocess
from pathlib import Path
from typing import NamedTuple

# Read-only calls of each Ray gRPC service (an empty request), so probing a port cannot change the cluster even if it
# were open; plus the object manager's Pull (it has no read-only call; an empty Pull asks for no object), which is
# only ever sent without the token.
WITHOUT_TOKEN_ONLY = {"/ray.rpc.ObjectManagerService/Pull"}
GRPC_PROBES = (
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",  # GCS
    "/ray.rpc.NodeManagerService/GetNodeStats",  # raylet: node manager
    "/ray.rpc.ObjectManagerService/Pull",  # raylet: object manager
    "/ray.rpc.CoreWorkerService/NumPendingTasks",  # every driver and worker process
    "/ray.rpc.ReporterService/GetTraceback",  # dashboard agent
    "/ray.rpc.autoscaler.AutoscalerStateService/GetClusterStatus",  # GCS (autoscaler state)
)


class Listener(NamedTuple):
    host: str
    port: int
    pid: int
    process: str

    @property
    def loopback(self) -> bool:
        return self.host.removeprefix("[::ffff:").removesuffix("]").startswith("127.") or self.host in ("[::1]",)


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def process_name(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    args = [a.decode(errors="replace") for a in raw if a]
    if not args:
        return "?"
    if args[0].startswith("ray::"):
        return args[0].split()[0]  # ray::IDLE, ray::DashboardAgent, ray::_TrainWorker…
    for a in args[:3]:
        name = Path(a).name
        if name in ("gcs_server", "raylet") or name.endswith(".py") and name not in ("setup_worker.py",):
            return name
    return Path(args[0]).name


def listeners(pids: set[int]) -> list[Listener]:
    """TCP listening sockets owned by ``pids`` (``ss -ltnpH``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        host, _, port = fields[3].rpartition(":")
        for owner in fields[5].split("),("):
            pid = int(owner.split("pid=", 1)[1].split(",", 1)[0]) if "pid=" in owner else -1
            if pid in pids:
                found.append(Listener(host, int(port), pid, process_name(pid)))
    return found


def http_get(host: str, port: int, path: str = "/api/jobs/", token: str | None = None) -> tuple[int | str, bytes]:
    """The status and first bytes of a GET, or ``not HTTP`` when the port does not speak HTTP/1."""
    conn = http.client.HTTPConnection(host, port, timeout=3)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.read(200)
    except (http.client.HTTPException, ConnectionResetError):
        return "not HTTP", b""
    finally:
        conn.close()


def serves_only_metrics(host: str, port: int) -> bool:
    """A Prometheus exporter: every path answers the same ``# HELP``/``# TYPE`` text (it runs nothing)."""
    bodies = [http_get(host, port, path) for path in ("/metrics", "/api/jobs/", "/")]
    return all(status == 200 and body.startswith((b"# HELP", b"# TYPE")) for status, body in bodies)


def grpc_codes(host: str, port: int, token: str | None = None) -> dict[str, str]:
    """Status code of each GRPC_PROBES call (empty request, 3 s), without or with the token."""
    import grpc

    metadata = [("authorization", f"Bearer {token}")] if token else None
    codes = {}
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        for method in GRPC_PROBES:
            if token and method in WITHOUT_TOKEN_ONLY:
                continue
            try:
                channel.unary_unary(method)(b"", timeout=3, metadata=metadata)
                codes[method] = "OK"
            except grpc.RpcError as e:
                codes[method] = e.code().name
    return codes


def is_c10d_store(host: str, port: int) -> bool:
    """Whether torch.distributed's rendezvous store (``TCPStore``, which Ray Train starts on rank 0 for every run,
    one worker included) answers there: a client connects and asks for a key that does not exist. In a child
    process with a deadline: a listener that accepts and never answers keeps a store client past its own timeout."""
    import subprocess
    import sys

    code = ("import sys; from datetime import timedelta; import torch.distributed as d; "
            "s = d.TCPStore(sys.argv[1], int(sys.argv[2]), is_master=False, timeout=timedelta(seconds=3), "
            "wait_for_workers=False); print(s.check(['ifdd-probe-no-such-key']))")
    try:
        done = subprocess.run([sys.executable, "-c", code, host, str(port)], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and done.stdout.strip() == "False"


def verdict(listener: Listener, token: str) -> dict:
    """How ``listener`` answers without the token, and with it: ``refused`` (HTTP 401/403 or gRPC UNAUTHENTICATED
    for some call that the token makes work), ``metrics`` (a Prometheus exporter, read-only, no token asked),
    ``open`` (anything else that works without the token), or ``untested`` (nothing it answers was tried)."""
    host = "127.0.0.1" if listener.host in ("*", "0.0.0.0", "[::]") else listener.host.strip("[]").removeprefix(
        "::ffff:")
    row = {"address": f"{listener.host}:{listener.port}", "process": listener.process, "loopback": listener.loopback}
    # a Ray worker process is retitled by what it runs (ray::RayTrainWorker, ray::execute.chdir_to_working_dir, ...)
    if not listener.loopback and listener.process.startswith("ray::") and is_c10d_store(host, listener.port):
        row.update(protocol="c10d", verdict="c10d-store")
        return row
    status, _ = http_get(host, listener.port)
    if status != "not HTTP":
        with_token, _ = http_get(host, listener.port, token=token)
        refused = status in (401, 403)
        row.update(protocol="HTTP", without_token=status, with_token=with_token,
                   verdict="refused" if refused else "metrics" if serves_only_metrics(host, listener.port) else "open")
        return row
    bare, authed = grpc_codes(host, listener.port), grpc_codes(host, listener.port, token)
    refused = [m for m, c in bare.items() if c == "UNAUTHENTICATED" and authed.get(m) != "UNAUTHENTICATED"]
    opened = [m for m, c in bare.items() if c == "OK"]
    row.update(protocol="gRPC", refused_calls=[m.rsplit("/", 1)[1] for m in refused],
               open_calls=[m.rsplit("/", 1)[1] for m in opened],
               verdict="open" if opened else "refused" if refused else "untested")
    return row
