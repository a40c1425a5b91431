"""The shipped head commands of cluster/onprem.yaml, run for real: PostgreSQL role/database setup and the MLflow server,
as shipped (no login) and with its MLflow basic-auth option switched on.

A throwaway PostgreSQL (password auth over TCP) stands in for the head's system server; `sudo -u postgres` is mapped
to `runuser` on its socket, and the head's address/ports to this machine's. Everything else is the file's own text:
the password files, the idempotent SQL, the basic-auth config, `mlflow server` on the head's address with
PGPASSWORD, the stop command.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ONPREM = Path(__file__).resolve().parents[2] / "cluster" / "onprem.yaml"
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PG_BIN or shutil.which("runuser") is None or os.geteuid() != 0,
                       reason="system package missing: needs root, runuser and Debian's postgresql binaries"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_ip() -> str:
    """This machine's first non-loopback address: the stand-in for the head's private IP."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return next(ip for ip in out if "." in ip and not ip.startswith("127."))


@pytest.fixture
def postgres():
    pg_bin = PG_BIN[-1]
    d = tempfile.mkdtemp(prefix="ifdd-pg-")  # not tmp_path: the postgres user cannot enter pytest's 0700 tree
    os.chmod(d, 0o755)
    shutil.chown(d, "postgres")
    port = free_port()
    subprocess.run(["runuser", "-u", "postgres", "--", f"{pg_bin}/initdb", "-D", f"{d}/data", "-U", "postgres",
                    "--auth-local=trust", "--auth-host=scram-sha-256"], check=True, capture_output=True)
    subprocess.run(["runuser", "-u", "postgres", "--", f"{pg_bin}/pg_ctl", "-D", f"{d}/data", "-l", f"{d}/log", "-w",
                    "-o", f"-h 127.0.0.1 -p {port} -k {d} -c fsync=off", "start"], check=True, capture_output=True)
    try:
        yield d, port, pg_bin
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{pg_bin}/pg_ctl", "-D", f"{d}/data", "-m", "fast",
                        "-w", "stop"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def head_command(doc: dict, key: str, *needles: str) -> str:
    """The one command of ``key`` containing every needle (so the test follows edits of the file)."""
    found = [c for c in doc[key] if all(n in c for n in needles)]
    assert len(found) == 1, (key, needles, found)
    return found[0]


def search_experiments(url: str, auth: tuple[str, str] | None) -> int:
    import base64

    req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search", data=b'{"max_results": 1}',
                                 headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        return urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("mlflow_auth", ["off", "basic-auth"])
def test_head_commands_start_mlflow_on_postgres(postgres, tmp_path, mlflow_auth, monkeypatch):
    d, pg_port, pg_bin = postgres
    doc = yaml.safe_load(ONPREM.read_text())
    home, bindir = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    bindir.mkdir()
    (bindir / "sudo").write_text(f'#!/bin/bash\n[ "$1" = -u ] && {{ u=$2; shift 2; exec runuser -u "$u" -- '
                                 f'env PGHOST={d} PGPORT={pg_port} "$@"; }}\nexec "$@"\n')
    (bindir / "sudo").chmod(0o755)
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MLFLOW_TRACKING_"))}
    env |= {"HOME": str(home), "PATH": f"{bindir}:{pg_bin}:{venv_bin}:{env['PATH']}"}
    ip, port = host_ip(), free_port()

    setup = head_command(doc, "head_setup_commands", "pg_password")
    auth_setup = head_command(doc, "head_setup_commands", "mlflow_auth.ini")
    for _ in range(2):  # `ray up` re-runs setup on every update: it must be idempotent
        for cmd in (setup, auth_setup):
            r = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
    secrets = {name: home / ".ifdd" / name for name in ("pg_password", "mlflow_admin_password", "mlflow_secret_key")}
    for secret in secrets.values():
        assert secret.stat().st_mode & 0o777 == 0o600
        assert len(secret.read_text().strip()) >= 32
    password = secrets["pg_password"].read_text().strip()
    admin_password = secrets["mlflow_admin_password"].read_text().strip()

    start = head_command(doc, "head_start_ray_commands", "mlflow server")
    assert "IFDD_MLFLOW_AUTH=off" in start  # the shipped default
    start = (start.replace("IFDD_MLFLOW_AUTH=off", f"IFDD_MLFLOW_AUTH={mlflow_auth}").replace("10.0.0.10", ip)
             .replace(":5000", f":{port}").replace("--port 5000", f"--port {port}")
             .replace("127.0.0.1:5432", f"127.0.0.1:{pg_port}"))
    stop = head_command(doc, "head_start_ray_commands", "kill", "mlflow.pid")
    try:
        r = subprocess.run(["bash", "-c", start], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        url = f"http://{ip}:{port}"
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                assert time.time() < deadline, (home / ".ifdd" / "mlflow.log").read_text()[-2000:]
                time.sleep(0.5)
        with pytest.raises(OSError):  # bound to the head's address only, not every interface
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert password not in ps and admin_password not in ps, "a password is visible in a process's arguments"

        if mlflow_auth == "basic-auth":
            assert search_experiments(url, None) == 401
            assert search_experiments(url, ("admin", "wrong-password-123")) == 401
            assert search_experiments(url, ("admin", admin_password)) == 200
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
        else:
            assert search_experiments(url, None) == 200  # what the default exposes: the API to whoever reaches it
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=url)
        run = client.create_run(client.create_experiment("cluster-head-smoke"))
        client.log_metric(run.info.run_id, "val_uar", 0.5)
        psql = [f"{pg_bin}/psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "mlflow", "-d", "mlflow", "-tAc"]
        rows = subprocess.run(psql + ["select count(*) from runs"], env={**env, "PGPASSWORD": password},
                              capture_output=True, text=True)
        assert rows.stdout.strip() == "1", rows.stderr
        wrong = subprocess.run(psql + ["select 1"], env={**env, "PGPASSWORD": "wrong"}, capture_output=True)
        assert wrong.returncode != 0
    finally:
        pid_file = home / ".ifdd" / "mlflow.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        subprocess.run(["bash", "-c", stop], env=env, timeout=30)
        if pid:
            for _ in range(40):
                if subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode:
                    break
                time.sleep(0.5)
            else:
                os.kill(pid, 9)
                pytest.fail("the shipped stop command left the MLflow server running")
