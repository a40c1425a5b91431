"""Security defaults: loopback services, no unsafe deserialisation, checkpoints refused when they hold code,
credentials masked wherever they could be logged or printed."""

from __future__ import annotations

import ast
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ifdd_testkit.procio import LineReader

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("ifdd", "orchestrator", "bench", "tests")
SECRET = "hunter2-Zq8!secret"
ENV_SECRETS = {"MLFLOW_TRACKING_PASSWORD": "mlflow-pw-4711x", "AWS_SECRET_ACCESS_KEY": "aws-sk-0815abcd",
               "PGPASSWORD": "pg-pw-2342zz", "RAY_AUTH_TOKEN": "ray-tok-5c1f9e0b7d"}
RAY_FILE_TOKEN = "ray-file-tok-8a7b6c5d"
"""The Ray token held in the file RAY_AUTH_TOKEN_PATH names (a local Ray's token lives in such a file)."""


# Unsafe deserialisation: an AST scan of the source tree -----------------------------------------------------------
PICKLERS = {"pickle", "cPickle", "_pickle", "cloudpickle", "ray.cloudpickle", "dill", "marshal", "joblib", "shelve"}
YAML_SAFE = {"yaml.safe_load", "yaml.safe_load_all"}

# Every call that reads a model or weights file, with what it can execute. A new call site fails
# test_every_model_loading_call_is_listed until it is added to LOADING_CALLS below, with its reason.
MODEL_LOADERS = {
    "torch.load": "tensors, numbers, strings and containers of them only: weights_only=True is required (an "
                  "unsafe_calls rule), so a file holding pickled code is refused, not run",
    "torch.serialization.load": "as torch.load",
    "torch.export.load": "unpickles the archive's weights and constants with weights_only=False: arbitrary code",
    "torch.jit.load": "TorchScript: runs the archive's code",
    "torch.hub.load": "imports and runs the repository's hubconf.py",
    "mlflow.pytorch.load_model": "MLflow 3.17's default (MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true) loads a "
                                 "pickle-format model as is and unpickles a pt2 archive's weights with "
                                 "weights_only=False: a crafted model runs code. With the variable false it "
                                 "refuses both unless every pt2 record is a tensor or plain data (the project logs "
                                 "pt2 only). Either way it puts the model's logged code/ (a copy of ifdd/) first "
                                 "on sys.path",
    "mlflow.pyfunc.load_model": "as mlflow.pytorch.load_model (the pytorch flavour's loader)",
}
LOADING_CALLS = {
    ("ifdd/checkpoint.py", "torch.load"): "every checkpoint (state.pt, best.pt): weights_only=True",
    ("ifdd/weights.py", "torch.load"): "the Kinetics-400 mvit_v2_s file: weights_only=True",
    ("tests/test_ddp.py", "torch.load"): "the test's own state dict: weights_only=True",
    ("tests/test_model_graph.py", "torch.load"): "the spawned rank's own loss tensor: weights_only=True",
    ("tests/orchestrator/test_search.py", "mlflow.pytorch.load_model"):
        "the champion the test registered, with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false",
    ("tests/orchestrator/test_postgres.py", "mlflow.pytorch.load_model"):
        "the champion the test registered, with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false",
    ("tests/reliability/test_rel_security.py", "mlflow.pytorch.load_model"):
        "the test's own pickle-format tripwire model: what MLflow's default runs, and that false refuses it",
}


def import_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from every import in the module (``import torch as t``,
    ``from torch import load``, ``from mlflow import pytorch as mp``, ``import mlflow.pytorch``)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    aliases[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def qualified(func: ast.expr, aliases: dict[str, str]) -> str:
    """The dotted name a call's function resolves to through the imports (``pd.read_pickle`` ->
    ``pandas.read_pickle``); a local name that is no import stays as it is; '' for anything else (a call on a
    call's result, a subscript)."""
    if isinstance(func, ast.Name):
        return aliases.get(func.id, func.id)
    if isinstance(func, ast.Attribute):
        owner = qualified(func.value, aliases)
        return f"{owner}.{func.attr}" if owner else ""
    return ""


def calls(source: str) -> list[tuple[int, str, dict[str, ast.expr]]]:
    """(line, qualified name, keywords) of every call in ``source``."""
    tree = ast.parse(source)
    aliases = import_aliases(tree)
    return [(n.lineno, qualified(n.func, aliases), {k.arg: k.value for k in n.keywords})
            for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _is(value: ast.expr | None, constant) -> bool:
    return isinstance(value, ast.Constant) and value.value == constant


def unsafe_calls(source: str, name: str = "<src>") -> list[str]:
    """Calls that can run code from a file or a string, owners resolved through the imports: yaml loads other than
    safe_load, torch.load without ``weights_only=True``, pickle-family loads, pandas.read_pickle, numpy.load with
    allow_pickle=True, torch.jit/hub/export loads, eval/exec, subprocess with shell=True, a PyTorch model logged to
    MLflow in any format but pt2; and any mention of MLFLOW_ALLOW_PICKLE_DESERIALIZATION set to true."""
    found = []
    for line, q, kw in calls(source):
        where = f"{name}:{line}"
        owner, _, attr = q.rpartition(".")
        if q in ("eval", "exec", "builtins.eval", "builtins.exec"):
            found.append(f"{where}: {q}()")
        elif owner == "yaml" and "load" in attr and q not in YAML_SAFE:
            found.append(f"{where}: {q}")
        elif q in ("torch.load", "torch.serialization.load") and not _is(kw.get("weights_only"), True):
            found.append(f"{where}: {q} without weights_only=True")
        elif owner in PICKLERS and (attr.startswith("load") or attr in ("Unpickler", "open")):
            found.append(f"{where}: {q}")
        elif attr == "read_pickle":
            found.append(f"{where}: {q}")
        elif q == "numpy.load" and _is(kw.get("allow_pickle"), True):
            found.append(f"{where}: numpy.load(allow_pickle=True)")
        elif q in ("torch.jit.load", "torch.hub.load", "torch.export.load"):
            found.append(f"{where}: {q}")
        elif owner == "subprocess" and _is(kw.get("shell"), True):
            found.append(f"{where}: {q}(shell=True)")
        elif q == "mlflow.pytorch.log_model" and not _is(kw.get("serialization_format"), "pt2"):
            found.append(f"{where}: {q} without serialization_format='pt2'")
    found += [f"{name}:{line}: MLFLOW_ALLOW_PICKLE_DESERIALIZATION set to true" for line in _pickle_allowed(source)]
    return found


def _truthy(v: ast.expr | None) -> bool:
    return isinstance(v, ast.Constant) and str(v.value).lower() in ("true", "1", "yes")


def _pickle_allowed(source: str) -> list[int]:
    """Lines that set MLFLOW_ALLOW_PICKLE_DESERIALIZATION to a true value: in a dict literal, a call's arguments
    (``setenv(name, "true")``) or an item assignment (``os.environ[name] = "1"``)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        pairs: list[tuple[ast.expr | None, ast.expr | None]] = []
        if isinstance(node, ast.Dict):
            pairs = list(zip(node.keys, node.values, strict=True))
        elif isinstance(node, ast.Call):
            pairs = list(zip(node.args, node.args[1:], strict=False))
        elif isinstance(node, ast.Assign):
            pairs = [(t.slice, node.value) for t in node.targets if isinstance(t, ast.Subscript)]
        if any(_is(k, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION") and _truthy(v) for k, v in pairs):
            lines.append(node.lineno)
    return lines


def test_the_scanner_finds_every_unsafe_pattern():
    bad = ("import yaml, torch, pickle, cloudpickle, marshal, subprocess, mlflow\nimport pandas as pd\n"
           "import numpy as np\n"
           "yaml.load(s)\nyaml.full_load(s)\nyaml.unsafe_load(s)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "pickle.load(f)\npickle.loads(b)\ncloudpickle.loads(b)\nmarshal.loads(b)\npd.read_pickle(p)\n"
           "np.load(p, allow_pickle=True)\neval(s)\nexec(s)\nsubprocess.run(c, shell=True)\n"
           "mlflow.pytorch.log_model(m, name='m')\n")
    assert len(unsafe_calls(bad)) == 15
    # owners found through the imports, whatever they are called locally
    aliased = ("from torch import load\nload(p)\nimport torch as t\nt.load(p)\nfrom pickle import loads as l\nl(b)\n"
               "from yaml import unsafe_load\nunsafe_load(s)\nimport numpy\nnumpy.load(p, allow_pickle=True)\n"
               "from subprocess import run\nrun(c, shell=True)\nfrom torch import jit\njit.load(p)\n"
               "import mlflow.pytorch as mp\nmp.log_model(m, name='m', serialization_format='pickle')\n"
               "from torch.serialization import load as tl\ntl(p)\n"
               "os.environ['MLFLOW_ALLOW_PICKLE_DESERIALIZATION'] = 'true'\n")
    assert [hit.split(": ", 1)[1] for hit in unsafe_calls(aliased)] == [
        "torch.load without weights_only=True", "torch.load without weights_only=True", "pickle.loads",
        "yaml.unsafe_load", "numpy.load(allow_pickle=True)", "subprocess.run(shell=True)", "torch.jit.load",
        "mlflow.pytorch.log_model without serialization_format='pt2'",
        "torch.serialization.load without weights_only=True", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION set to true"]
    good = ("import yaml, torch, numpy as np, subprocess, mlflow\nyaml.safe_load(s)\n"
            "torch.load(p, weights_only=True)\nnp.load(p)\nmodel.eval()\nsubprocess.run(['ls'])\n"
            "from json import loads\nloads(s)\nmlflow.pytorch.log_model(m, name='m', serialization_format='pt2')\n"
            "monkeypatch.setenv('MLFLOW_ALLOW_PICKLE_DESERIALIZATION', 'false')\n")
    assert unsafe_calls(good) == []


def _source_files() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 50
    return files


def test_no_unsafe_deserialisation_in_the_source_tree():
    found = [hit for p in _source_files() for hit in unsafe_calls(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == []


def test_every_model_loading_call_is_listed_with_what_it_can_execute():
    """The inventory: each call site of a model/weights loader (owners resolved through the imports) is in
    LOADING_CALLS, and every entry there still exists. What each loader can execute is in MODEL_LOADERS."""
    sites = {(str(p.relative_to(ROOT)), q) for p in _source_files() for _, q, _ in calls(p.read_text())
             if q in MODEL_LOADERS}
    assert sites - set(LOADING_CALLS) == set(), "unlisted model-loading calls: add them to LOADING_CALLS"
    assert set(LOADING_CALLS) - sites == set(), "listed calls no longer in the tree: remove them"


def test_mlflows_default_runs_a_pickled_model_and_false_refuses_it(tmp_path, monkeypatch):
    """Why the loads above set MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false: by default (MLflow 3.17) a model saved in
    the pickle format runs its code when loaded; with the variable false the same load is refused."""
    import mlflow

    marker = tmp_path / "ran"
    model = torch.nn.Sequential(Tripwire(marker))
    mlflow.pytorch.save_model(model, str(tmp_path / "pickled"), serialization_format="pickle", pip_requirements=[])
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(mlflow.exceptions.MlflowException, match="Deserializing model using pickle is disallowed"):
        mlflow.pytorch.load_model(str(tmp_path / "pickled"))
    assert not marker.exists()
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    mlflow.pytorch.load_model(str(tmp_path / "pickled"))  # MLflow's default
    assert marker.exists()


class Tripwire(torch.nn.Module):
    """A module that runs code when unpickled (any pickled object can)."""

    def __init__(self, marker: Path):
        super().__init__()
        self.marker = str(marker)

    def __setstate__(self, state):
        super().__setstate__(state)
        Path(state["marker"]).touch()


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path):
    from ifdd.checkpoint import CheckpointError, load_checkpoint

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "best.pt"
    path.write_bytes(pickle.dumps({"model": Payload()}))
    (tmp_path / "best.pt.sha256").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  best.pt\n")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)
    assert not marker.exists()


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
