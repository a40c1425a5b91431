"""Shared fixtures (a pytest plugin, loaded by tests/conftest.py): a small synthetic DFEW set (64², 16 frames), run
configs and search spaces pointing at it, local Ray, a real Ray head, PostgreSQL; and ``split_size``, the clip count
of a split, for tests that check a count against the manifest instead of ``> 0``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml

from ifdd.data.manifest import build_manifest, write_manifest
from ifdd.data.synth import write_synthetic


@pytest.fixture(scope="session")
def small_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dfew") / "DFEW"
    write_synthetic(root, clips_per_class=8, min_per_class=5, frames=16, size=64, seed=1, fmt="mp4", workers=2)
    return write_manifest(build_manifest(root, workers=2), root.parent / "manifest.parquet")


def split_size(manifest: Path, fold: int, role: str) -> int:
    """Clips of ``role`` (train, val, trainval, test) in ``fold`` of ``manifest``: what a run on it must count."""
    from ifdd.data.manifest import fold_split, load_manifest

    return len(fold_split(load_manifest(manifest), fold, role))


def _write_run_yaml(path: Path, manifest: Path, **sections) -> Path:
    base = {"model": {"preset": "tiny"}, "optim": {"lr": 2e-3, "warmup_epochs": 0},
            "data": {"manifest": str(manifest), "mix_prob": 0.0},
            "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "max_steps_per_epoch": 3}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    path.write_text(yaml.safe_dump({"base": base}))
    return path


@pytest.fixture
def write_run_yaml():
    """``write_run_yaml(path, manifest, **section_overrides)``: a search-space YAML whose ``base`` is a fast run."""
    return _write_run_yaml


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray per test module (the CLI joins it), shut down afterwards (its token and environment too)."""
    from orchestrator.ray_session import init_ray, shutdown_ray

    init_ray(None, num_cpus=2)
    yield
    shutdown_ray()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOKEN_ENV = "IFDD_TEST_RAY_TOKEN_PATH"


def session_token() -> Path:
    """The Ray token of this test session's clusters: one file (0600, in a private temp folder) made on first use
    and named in this process's environment. Every `ray start` head, every ``token_cluster_env`` cluster and every
    client of ``cli_env`` uses it."""
    import os
    import secrets
    import tempfile

    if not os.environ.get(TOKEN_ENV):
        path = Path(tempfile.mkdtemp(prefix="ifdd-test-ray-")) / "auth_token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        os.environ[TOKEN_ENV] = str(path)
    return Path(os.environ[TOKEN_ENV])



@pytest.fixture
def token_cluster_env(monkeypatch):
    """This process in token mode with the session's token, for a ``ray.cluster_utils.Cluster`` started here: its
    node processes inherit the environment, so the cluster has token auth like every Ray the project starts, and
    the ``ifdd`` subprocesses of ``cli_env`` (token mode) can join it. Ray caches the mode: re-read on both ends."""
    from orchestrator.ray_session import reload_ray_auth

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(session_token()))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    reload_ray_auth()
    yield
    monkeypatch.undo()
    reload_ray_auth()

def cli_env() -> dict[str, str]:
    """Environment for `ifdd`/`ray` subprocesses: this venv first on PATH, no telemetry, Ray's token auth on with
    the session's token (``session_token``); no inherited cluster address or token."""
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(var, None)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(session_token()), "PYTHONUNBUFFERED": "1"})
    return env


def auth_header() -> dict[str, str]:
    return {"Authorization": f"Bearer {session_token().read_text().strip()}"}


@pytest.fixture
def ray_head(tmp_path):
    """A real Ray head (`ray start --head --block`) on loopback with the dashboard and token authentication (the
    session's token); yields (gcs, dashboard URL).

    Stopped by signalling its own process group, never `ray stop` (which would kill every Ray on the machine).
    """
    import os
    import signal
    import subprocess
    import tempfile
    import time
    import urllib.request

    port, dash = free_port(), free_port()
    log = open(tmp_path / "ray-head.log", "w")
    proc = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         "--disable-usage-stats"],
        env=cli_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    while True:
        try:
            req = urllib.request.Request(f"{url}/api/version", headers=auth_header())
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"ray head did not come up: {(tmp_path / 'ray-head.log').read_text()[-2000:]}")
        time.sleep(1)
    yield f"127.0.0.1:{port}", url
    os.killpg(proc.pid, signal.SIGTERM)
    try:  # `ray start --block` rarely exits on SIGTERM within 30 s (measured): the group is killed after 5 s
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (workers)
    except ProcessLookupError:
        pass
    log.close()
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # `ray stop` would remove it
    if current.is_file() and current.read_text().strip().endswith(f":{port}"):
        current.unlink()


TWO_AT_A_TIME = {"workers_per_trial": 1, "max_concurrent_trials": 2}
"""``resources`` for a search whose trial order is not the point: two trials at a time overlap Ray's per-trial chain
of process starts on 2 cores (docs/stack.md P22); the default space runs one trial with every core."""


def _write_space(path: Path, manifest: Path, **sections) -> Path:
    doc = {
        "name": path.stem,
        "base": {"model": {"preset": "tiny", "head_dropout": 0.0},
                 "optim": {"lr": 2e-3, "warmup_epochs": 0},
                 "data": {"manifest": str(manifest), "mix_prob": 0.0, "augment": False},
                 "train": {"batch_size": 8, "eval_batch_size": 16, "max_steps_per_epoch": 2}},
        # (0.125, depth 2) leaves the second level's static branch empty: an infeasible corner of the space
        "search": {"model.split_ratio": {"type": "categorical", "choices": [0.125, 0.5]},
                   "model.lifting_depth": {"type": "int", "low": 1, "high": 2},
                   "loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
        "objective": {"metric": "val_uar", "mode": "max"},
        "budget": {"num_samples": 4, "max_epochs": 2, "grace_period": 1, "reduction_factor": 2, "seed": 3},
        "protocol": {"selection": "val", "strategy": "fold-wise", "folds": [1, 2]},
        "resources": {"workers_per_trial": 1},
    }
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="session")
def write_space():
    """``write_space(path, manifest, **section_overrides)``: a fast 2-fold search space on the small set."""
    return _write_space


@pytest.fixture(scope="session")
def ifdd_env():
    return cli_env()


# PostgreSQL -----------------------------------------------------------------------------------------------------
class PostgresServer:
    """A throwaway PostgreSQL on 127.0.0.1 with password auth (scram-sha-256) for the superuser ``postgres``."""

    def __init__(self, bindir: Path, root: Path, port: int, password: str):
        self.bindir, self.root, self.port, self.password = bindir, root, port, password

    def url(self, db: str) -> str:
        """A psycopg2 URL without the password (it comes from PGPASSWORD)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"

    def createdb(self, name: str) -> str:
        import subprocess

        subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        name], check=True, env=self.env(), capture_output=True, timeout=60)
        return self.url(name)

    def env(self, password: str | None = None) -> dict[str, str]:
        return {**cli_env(), "PGPASSWORD": password or self.password}


def _as_postgres(cmd: list[str]) -> list[str]:
    import os

    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session (initdb + pg_ctl, fsync off, data dir from mkdtemp owned by the
    postgres user since pytest's tmp dirs are 0700); tests create their own databases. Needs Debian's
    `postgresql` package (.ci/run installs it)."""
    import os
    import secrets
    import shutil
    import subprocess
    import tempfile

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.skip("system package missing: PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")
    bindir = found[-1].parent
    root = Path(tempfile.mkdtemp(prefix="ifdd-pg-"))
    password = secrets.token_urlsafe(16)
    (root / "pw").write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    data, port = root / "data", free_port()
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "scram-sha-256", "-U", "postgres",
                                 f"--pwfile={root / 'pw'}", "-N"]), check=True, capture_output=True, timeout=120)
    (root / "pw").unlink()
    opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w",
                                 "start"]), check=True, capture_output=True, timeout=120)
    try:
        yield PostgresServer(bindir, root, port, password)
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def no_pickle_loading():
    """MLflow's model loaders with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false (MLflow 3.17's default is true):
    a model that needs unpickling is refused, so a registered model that loads here is a pickle-free pt2."""
    import os

    before = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = before
