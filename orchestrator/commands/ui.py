"""`ifdd ui`: the MLflow UI on the project's tracking store (loopback by default), stopped cleanly by Ctrl-C or
SIGTERM (also when started with SIGINT ignored, e.g. ``nohup ifdd ui &``: orchestrator/preempt.py), the server's
whole process group with it.

The store is ``runs/mlflow.db``, or the PostgreSQL database a search logged to (``--tracking-uri
postgresql+psycopg2://…``; the server process gets the password from PGPASSWORD or ~/.pgpass, never on its command
line). Artifacts are served from ``runs/mlartifacts`` either way."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from orchestrator.commands.options import add_runs_arg, outputs
from orchestrator.env import NO_TELEMETRY
from orchestrator.outputs import Outputs
from orchestrator.tracking.secrets import mask_secrets
from orchestrator.tracking.stores import check_postgres, is_postgres
from orchestrator.tracking.ui_links import runs_view_lines

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="serve the MLflow UI on the project's store (127.0.0.1 by default)",
                       description="Serve the MLflow UI (an `mlflow server`, 1 worker, job execution off) on the "
                                   "project's tracking store runs/mlflow.db (or --tracking-uri) and artifacts "
                                   "runs/mlartifacts.")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; anything else is exposed)")
    add_runs_arg(p)
    p.add_argument("--tracking-uri", default=None,
                   help="backend store (default sqlite:///<abs>/runs/mlflow.db); postgresql+psycopg2://USER@HOST:"
                        "PORT/DB for the PostgreSQL store a search used (password in PGPASSWORD or ~/.pgpass)")
    p.set_defaults(func=run)


def server_command(out: Outputs, host: str, port: int, store: str | None = None) -> list[str]:
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server",
           "--backend-store-uri", store or out.default_tracking_uri,
           "--artifacts-destination", str(out.artifact_root),  # remote clients upload through the server
           "--host", host, "--port", str(port), "--workers", "1"]
    if host not in LOOPBACK:
        cmd += ["--allowed-hosts", "*"]
    return cmd


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port: must be 1-65535, got {args.port}")
    if args.host not in LOOPBACK:
        print(f"warning: --host {args.host} exposes the MLflow UI (and its REST API, which can delete runs) beyond "
              "this machine; prefer 127.0.0.1 with SSH port-forwarding", file=sys.stderr)
    out = outputs(args)
    store = args.tracking_uri
    if store and not (store.startswith("sqlite:///") or is_postgres(store)):
        raise ValueError(f"--tracking-uri: expected sqlite:///PATH or postgresql+psycopg2://USER@HOST:PORT/DB "
                         f"(a backend store to serve), got {mask_secrets(store)}")
    check_postgres(store, "--tracking-uri")
    if store and store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(f"--tracking-uri: {store}: no such sqlite store")
    if not store and not out.mlflow_db.is_file():
        raise FileNotFoundError(f"{out.mlflow_db}: no tracking store yet; run `ifdd demo` or `ifdd search` first "
                                "(or give the --runs they used)")
    env = {**os.environ, **NO_TELEMETRY, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with stop_requested() as stop:
        proc = subprocess.Popen(server_command(out, args.host, args.port, store), env=env, start_new_session=True)
        try:
            return serve(proc, args.host, args.port, mask_secrets(store) if store else str(out.mlflow_db), stop)
        finally:
            stop_server(proc)
            print("MLflow UI stopped", flush=True)


def serve(proc: subprocess.Popen, host: str, port: int, shown: str, stop: StopFlag) -> int:
    """Wait for the server, print its address and the runs views, then wait for a stop or for the server to exit."""
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not stop.requested:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    if stop.requested:
        return 0
    if proc.poll() is not None:
        print(f"error: mlflow server exited with code {proc.returncode} (port {port} in use?)", file=sys.stderr)
        return 2
    print(f"MLflow UI: {url}  (store {shown}; Ctrl-C stops it)", flush=True)
    print("\n".join(runs_view_lines(url)), flush=True)
    while proc.poll() is None and not stop.requested:
        time.sleep(0.5)
    return 0 if stop.requested else proc.returncode or 0


@dataclass
class StopFlag:
    requested: bool = False

    def __call__(self, signum, frame) -> None:
        self.requested = True


@contextlib.contextmanager
def stop_requested():
    """A flag that Ctrl-C sets (and SIGTERM, which orchestrator/preempt.py routes to this SIGINT handler) instead
    of raising ``KeyboardInterrupt`` wherever the main thread happens to be. Raised inside a library's code, that
    exception can be dropped (in a garbage-collection callback Python prints "Exception ignored in …") or turned
    into another one that is caught, and the command would then wait on its server forever (docs/reliability.md,
    "Stopping"). ``serve`` checks the flag where stopping is safe."""
    stop = StopFlag()
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def stop_server(proc: subprocess.Popen, timeout_s: float = 15) -> None:
    """SIGTERM the server's process group, SIGKILL it after ``timeout_s``. A second Ctrl-C/SIGTERM meanwhile is
    ignored (the stop is already under way and bounded), so it cannot cut the cleanup short and leave the server."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the server's own workers, should any outlive it
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
