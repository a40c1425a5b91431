"""Security defaults: loopback services, credentials masked wherever they could be logged or printed. (Unsafe
deserialisation and checkpoints that hold code: test_rel_unsafe_loading.py; Ray's listeners: test_rel_ray_auth.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ifdd_testkit.procio import LineReader

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hunter2-Zq8!secret"
ENV_SECRETS = {"MLFLOW_TRACKING_PASSWORD": "mlflow-pw-4711x", "AWS_SECRET_ACCESS_KEY": "aws-sk-0815abcd",
               "PGPASSWORD": "pg-pw-2342zz", "RAY_AUTH_TOKEN": "ray-tok-5c1f9e0b7d"}
RAY_FILE_TOKEN = "ray-file-tok-8a7b6c5d"
"""The Ray token held in the file RAY_AUTH_TOKEN_PATH names (a local Ray's token lives in such a file)."""


# Services on loopback ----------------------------------------------------------------------------------------------
def listening(port: int) -> list[str]:
    """Local addresses listening on TCP ``port`` (from ss)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[3].rsplit(":", 1)[0] for line in out.splitlines()})


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_defaults_to_loopback_and_warns_when_exposed(tmp_path, capsys):
    from orchestrator.cli import build_parser

    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    assert main(["ui", "--host", "0.0.0.0", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("warning: --host 0.0.0.0 exposes the MLflow UI") and err[1].startswith("error: ")
    assert main(["ui", "--runs", str(tmp_path)]) == 2
    assert "warning" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """A real `ifdd ui` (mlflow server) on its default host, on a fresh store; yields (runs, port)."""
    import signal
    import time
    import urllib.request

    from orchestrator.outputs import Outputs
    from orchestrator.tracking.client import Tracker

    runs = tmp_path_factory.mktemp("ui") / "runs"
    Tracker(Outputs.resolve(str(runs)).default_tracking_uri, runs / "mlartifacts")  # creates the store's schema
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ifdd"), "ui", "--runs", str(runs), "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    output = LineReader(proc.stdout, proc)  # drained while the server runs: a full pipe would block it
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, output.text[-3000:]
                time.sleep(0.5)
        else:
            raise AssertionError(f"ifdd ui did not answer /health within 90 s:\n{output.text[-3000:]}")
        yield runs, port
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow  # the mlflow server takes ~25 s to start on 2 cores
def test_ui_listens_on_loopback_only(ui_server):
    _, port = ui_server
    assert listening(port) == ["127.0.0.1"]


# The local Ray's listeners (every one on loopback, each checking the token): test_rel_ray_auth.py


# Credentials are never logged --------------------------------------------------------------------------------------
def all_text(folder: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def assert_no_secret(blob: bytes | str, where: str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for s in (SECRET, *ENV_SECRETS.values(), RAY_FILE_TOKEN):
        assert s.encode() not in data, f"{s} leaked into {where}"


def set_secret_env(monkeypatch, tmp_path: Path) -> None:
    """The credential variables of ENV_SECRETS, and RAY_AUTH_TOKEN_PATH naming a file that holds RAY_FILE_TOKEN."""
    for k, v in ENV_SECRETS.items():
        monkeypatch.setenv(k, v)
    token_file = tmp_path / "ray_token"
    token_file.write_text(RAY_FILE_TOKEN + "\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))


def log_a_run(uri: str, artifact_root: Path | None) -> str:
    """What a study logs for one trial, through the project's Tracker: the flattened run config as params (whose
    storage, weights and database URIs carry a password), identifying tags, a JSON artifact, a metric."""
    from ifdd.config import to_dict
    from ifdd.runconfig import run_config_from_dict
    from orchestrator.tracking.client import Tracker, flatten

    cfg = run_config_from_dict({"model": {"preset": "tiny"},
                                "train": {"init_weights": f"s3://AKIAEXAMPLE:{SECRET}@bucket/k400.pth"}})
    tracker = Tracker(uri, artifact_root)
    exp = tracker.experiment("secrets")
    run = tracker.run(exp, "trial-0", {"ifdd.study": "fold1",
                                       "ifdd.storage": f"s3://key:{SECRET}@bucket/ray"})
    tracker.log_params(run, {**flatten(to_dict(cfg)), "optuna.storage": f"postgresql://ifdd:{SECRET}@db:5432/optuna",
                             "db_password": SECRET, "aws_region": ENV_SECRETS["AWS_SECRET_ACCESS_KEY"],
                             "notes": f"store password {os.environ.get('MLFLOW_TRACKING_PASSWORD')}",
                             "ray_note": f"joined with {ENV_SECRETS['RAY_AUTH_TOKEN']} / {RAY_FILE_TOKEN}"})
    tracker.set_tags(run, {"ifdd.tracking_uri": uri, "ifdd.note": f"pg {ENV_SECRETS['PGPASSWORD']}",
                           "ifdd.ray": f"Bearer {ENV_SECRETS['RAY_AUTH_TOKEN']} {RAY_FILE_TOKEN}"})
    tracker.log_json(run, "registry.json", {"tracking_uri": uri, "pw": ENV_SECRETS["PGPASSWORD"],
                                            "ray": [ENV_SECRETS["RAY_AUTH_TOKEN"], RAY_FILE_TOKEN]})
    tracker.log_metrics(run, {"val_uar": 0.5}, 1)
    tracker.end(run)
    return run


def read_back(uri: str, run_id: str, tmp_path: Path) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "dl")))
    assert (local / "registry.json").is_file()
    return repr(run.data.params) + repr(run.data.tags) + (local / "registry.json").read_text()


def test_credentials_are_masked_in_a_sqlite_store(tmp_path, monkeypatch):
    from orchestrator.outputs import Outputs

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    set_secret_env(monkeypatch, tmp_path)
    runs = tmp_path / "runs"
    uri = Outputs.resolve(str(runs)).default_tracking_uri
    run_id = log_a_run(uri, runs / "mlartifacts")
    text = read_back(uri, run_id, tmp_path)
    assert "s3://***@bucket/k400.pth" in text and "postgresql://ifdd:***@db:5432/optuna" in text
    assert "'db_password': '***'" in text
    assert_no_secret(text, "params, tags and artifacts")
    assert_no_secret(all_text(runs), "the store and artifact folder")


@pytest.mark.slow
def test_credentials_in_a_tracking_server_url_are_masked(ui_server, tmp_path, monkeypatch, capsys):
    """user:password@ in --tracking-uri works against a real server (basic auth) and is never logged or printed."""
    runs, port = ui_server
    set_secret_env(monkeypatch, tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)  # the URL's password takes its place
    uri = f"http://alice:{SECRET}@127.0.0.1:{port}"
    run_id = log_a_run(uri, None)
    text = read_back(uri, run_id, tmp_path)
    assert f"http://***@127.0.0.1:{port}" in text
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == SECRET  # MLflow's own basic-auth variable, not the URI
    assert_no_secret(text, "params, tags and artifacts")
    assert_no_secret(all_text(runs), "the server's store and artifacts")
    out = capsys.readouterr().out
    assert f"View run trial-0 at: http://127.0.0.1:{port}/" in out  # MLflow prints the URI it was given
    assert_no_secret(out, "stdout")


def test_a_bad_tracking_url_with_a_password_is_not_printed(tmp_path, capsys):
    port = free_port()  # nothing listens there
    for host in (f"127.0.0.1:{port}", "no-such-host.invalid"):
        rc = main(["search", "--space", str(ROOT / "search_spaces" / "smoke.yaml"), "--runs",
                   str(tmp_path / "runs"), "--tracking-uri", f"http://alice:{SECRET}@{host}"])
        out, err = capsys.readouterr()
        assert rc == 2 and err.startswith("error: --tracking-uri: no MLflow server answers at http://***@"), err
        assert_no_secret(out + err, "the error")
    assert not (tmp_path / "runs").exists()


def test_launch_moves_url_credentials_out_of_the_job_command_line(monkeypatch):
    from orchestrator.commands.launch import job_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    bare, env = job_tracking(f"http://alice:{SECRET}@head:5000")
    assert bare == "http://head:5000"
    assert env == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": SECRET}
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ  # the submitting process is left as it was
    assert job_tracking(None) == (None, {})


@pytest.mark.parametrize("raw, shown", [
    ("postgresql+psycopg2://postgres@127.0.0.1:5432/ml", "postgresql+psycopg2://postgres@127.0.0.1:5432/ml"),
    (f"postgresql://ifdd:{SECRET}@db:5432/optuna", "postgresql://ifdd:***@db:5432/optuna"),
    (f"s3://AKIAEXAMPLE:{SECRET}@bucket/k", "s3://***@bucket/k"),
    ("https://ghp_tokenvalue@git.example/x", "https://***@git.example/x"),
    (f"http://h/x?user=a&password={SECRET}", "http://h/x?user=a&password=***"),
])
def test_a_database_url_keeps_its_role_name_and_every_secret_is_masked(raw, shown):
    from orchestrator.tracking.secrets import mask_secrets

    assert mask_secrets(f"uri {raw} end") == f"uri {shown} end"


def test_the_ray_token_is_masked_from_the_variable_and_from_its_file(tmp_path, monkeypatch):
    from orchestrator.tracking.secrets import mask_secrets

    set_secret_env(monkeypatch, tmp_path)
    text = f"Authorization: Bearer {ENV_SECRETS['RAY_AUTH_TOKEN']}; file token {RAY_FILE_TOKEN}."
    assert mask_secrets(text) == "Authorization: Bearer ***; file token ***."
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "gone"))  # unreadable: nothing to mask, no error
    assert mask_secrets(RAY_FILE_TOKEN) == RAY_FILE_TOKEN


# Which Ray token a client sends (Ray's own order) ------------------------------------------------------------------
def test_the_cluster_token_is_found_in_rays_order_and_a_bad_source_is_named(tmp_path, monkeypatch):
    from orchestrator.ray_session import find_token

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    token, where = find_token()
    assert token is None
    assert where == f"RAY_AUTH_TOKEN (unset), RAY_AUTH_TOKEN_PATH (unset), {home}/.ray/auth_token (absent or empty)"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("default-token\n")
    assert find_token() == ("default-token", f"{home}/.ray/auth_token")
    path = tmp_path / "tok"
    path.write_text(" path-token \n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert find_token() == ("path-token", f"RAY_AUTH_TOKEN_PATH={path}")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")
    assert find_token() == ("env-token", "RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    path.write_text("")
    with pytest.raises(ValueError, match=f"^RAY_AUTH_TOKEN_PATH: {path}: the file is empty"):
        find_token()
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="^RAY_AUTH_TOKEN_PATH: .*missing: cannot read the Ray token"):
        find_token()
