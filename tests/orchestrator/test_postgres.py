"""MLflow's backend store and Optuna's storage on a real PostgreSQL server (the `postgres` fixture).

The password lives only in PGPASSWORD: URLs with one are refused, and the tests check it never reaches stdout,
MLflow params/tags, the summaries or anything under runs/ (Ray's pickled experiment state included).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from ifdd_testkit.fixtures import no_pickle_loading
from ifdd_testkit.procio import LineReader, Proc, wait_for

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "search_spaces" / "smoke.yaml")
IFDD = str(Path(sys.executable).parent / "ifdd")


@pytest.fixture
def pg_dbs(postgres, request):
    """Two fresh databases (MLflow's, Optuna's) named after the test."""
    tag = "".join(c for c in request.node.name.lower() if c.isalnum())[-40:]
    return postgres.createdb(f"ml_{tag}"), postgres.createdb(f"opt_{tag}")


def _search_fails(tmp_path, capsys, *flags) -> str:
    argv = ["search", "--space", SMOKE, "--runs", str(tmp_path / "runs"), *flags]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), captured.err
    assert not (tmp_path / "runs" / "ray" / "search").exists()  # nothing started
    assert not (tmp_path / "runs" / "optuna.db").exists() and not (tmp_path / "runs" / "mlflow.db").exists()
    return err[0] + captured.out


def test_bad_or_unreachable_postgres_urls_exit_2_with_the_password_masked(postgres, pg_dbs, tmp_path, capsys,
                                                                          monkeypatch):
    ml, opt = pg_dbs
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    port = postgres.port
    inline = f"postgresql+psycopg2://postgres:{postgres.password}@127.0.0.1:{port}/{ml.rsplit('/', 1)[1]}"
    msg = _search_fails(tmp_path, capsys, "--tracking-uri", inline)
    assert msg.startswith("error: --tracking-uri: postgresql+psycopg2://postgres:***@127.0.0.1")
    assert "PGPASSWORD" in msg and postgres.password not in msg

    msg = _search_fails(tmp_path, capsys, "--optuna-storage", f"{opt}?password=hunter2")
    assert msg.startswith("error: --optuna-storage:") and "password=***" in msg and "hunter2" not in msg

    msg = _search_fails(tmp_path, capsys, "--optuna-storage", opt.replace("+psycopg2", ""))
    assert msg.startswith("error: --optuna-storage:") and "postgresql+psycopg2://" in msg

    msg = _search_fails(tmp_path, capsys, "--optuna-storage", "postgresql+psycopg2://postgres@127.0.0.1:9/optuna")
    assert msg.startswith("error: --optuna-storage: cannot connect to PostgreSQL at "
                          "postgresql+psycopg2://postgres@127.0.0.1:9/optuna")

    msg = _search_fails(tmp_path, capsys, "--tracking-uri", postgres.url("no_such_db"))
    assert msg.startswith("error: --tracking-uri: cannot connect") and 'database "no_such_db" does not exist' in msg

    msg = _search_fails(tmp_path, capsys, "--tracking-uri", ml, "--optuna-storage", ml)
    assert msg.startswith("error: --optuna-storage:") and "MLflow's database too" in msg
    one = f"sqlite:///{tmp_path / 'one.db'}"
    msg = _search_fails(tmp_path, capsys, "--tracking-uri", one, "--optuna-storage", one)
    assert "MLflow's database too" in msg and not (tmp_path / "one.db").exists()

    monkeypatch.setenv("IFDD_OPTUNA_STORAGE", "mysql://somewhere/optuna")
    msg = _search_fails(tmp_path, capsys)
    assert msg.startswith("error: IFDD_OPTUNA_STORAGE: expected sqlite:///PATH or postgresql+psycopg2://")
    monkeypatch.delenv("IFDD_OPTUNA_STORAGE")

    wrong = "not-the-" + postgres.password
    monkeypatch.setenv("PGPASSWORD", wrong)
    msg = _search_fails(tmp_path, capsys, "--tracking-uri", ml)
    assert msg.startswith("error: --tracking-uri: cannot connect to PostgreSQL at " + ml)
    assert "password authentication failed" in msg and wrong not in msg


def test_launch_refuses_a_password_in_a_url_before_contacting_the_cluster(tmp_path, capsys):
    argv = ["launch", "--space", SMOKE, "--address", "http://127.0.0.1:9", "--optuna-storage",
            "postgresql+psycopg2://ifdd:s3cret@db.example:5432/optuna"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --optuna-storage: postgresql+psycopg2://ifdd:***@db.example") and "s3cret" not in err


def test_ui_refuses_a_url_with_a_password_or_a_server_url(tmp_path, capsys):
    assert main(["ui", "--runs", str(tmp_path), "--tracking-uri", "postgresql+psycopg2://u:pw123@127.0.0.1/db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tracking-uri: postgresql+psycopg2://u:***@127.0.0.1/db") and "pw123" not in err
    assert main(["ui", "--runs", str(tmp_path), "--tracking-uri", "http://127.0.0.1:5000"]) == 2
    assert "a backend store to serve" in capsys.readouterr().err


INIT = """
import sys
import optuna
from orchestrator.tracking.stores import schema_lock
from orchestrator.tracking.client import Tracker
ml, opt, name, art = sys.argv[1:]
with schema_lock(ml), schema_lock(opt):
    Tracker(ml, __import__("pathlib").Path(art))
    optuna.storages.RDBStorage(opt)
optuna.create_study(study_name=name, storage=opt)
Tracker(ml, __import__("pathlib").Path(art)).experiment(name)
"""


@pytest.mark.slow
def test_fold_jobs_creating_the_schemas_together_do_not_collide(postgres, pg_dbs, tmp_path, monkeypatch):
    """Three drivers starting at once on fresh databases (as `ifdd launch` fold jobs do): the advisory lock
    serialises MLflow's migrations and Optuna's table creation, then each creates its own study."""
    ml, opt = pg_dbs
    procs = [subprocess.Popen([sys.executable, "-c", INIT, ml, opt, f"fold{k}", str(tmp_path / "art")],
                              env={**postgres.env(), "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in (1, 2, 3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-1500:] for o in outs)
    import optuna
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("PGPASSWORD", postgres.password)
    assert {s.study_name for s in optuna.get_all_study_summaries(storage=opt)} == {"fold1", "fold2", "fold3"}
    assert {e.name for e in MlflowClient(ml).search_experiments()} >= {"fold1", "fold2", "fold3"}


@pytest.mark.slow
def test_ui_serves_a_postgres_backend_store_on_loopback(postgres, pg_dbs, tmp_path, monkeypatch):
    from orchestrator.tracking.client import Tracker

    ml, _ = pg_dbs
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    runs = tmp_path / "runs"
    tracker = Tracker(ml, runs / "mlartifacts")
    exp = tracker.experiment("pgui")
    run_id = tracker.run(exp, "pgui-run", {"ifdd.study": "pgui-fold1"})
    tracker.log_params(run_id, {"model.split_ratio": 0.5})
    port = _free_port()
    proc = subprocess.Popen([IFDD, "ui", "--runs", str(runs), "--port", str(port), "--tracking-uri", ml],
                            env=postgres.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    reader = LineReader(proc.stdout, proc)
    try:
        banner = reader.wait_for_line("MLflow UI: ", 120)
        assert f"http://127.0.0.1:{port}" in banner and f"store {ml};" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}",
                                    timeout=30) as r:
            run = json.loads(r.read())["run"]
        assert run["info"]["experiment_id"] == exp and run["info"]["run_name"] == "pgui-run"
        assert {"key": "model.split_ratio", "value": "0.5"} in run["data"]["params"]
        cmdlines = _tree_cmdlines(proc.pid)
        assert any("--backend-store-uri" in c and ml in c for c in cmdlines), cmdlines
        assert not any(postgres.password in c for c in cmdlines)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"ifdd ui still running 30 s after Ctrl-C:\n{reader.text[-3000:]}") from None
    reader.join()
    assert proc.returncode == 0 and reader.lines[-1] == "MLflow UI stopped\n", reader.text[-3000:]
    assert "Traceback" not in reader.text, reader.text[-3000:]
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "port still open after Ctrl-C"


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(1200)  # ~200 s on 2 quiet cores
def test_search_on_postgres_keeps_optuna_and_mlflow_there_and_resumes(postgres, pg_dbs, small_manifest, tmp_path,
                                                                       ray_head, write_space, monkeypatch):
    """A 2-fold search with both stores on PostgreSQL, interrupted (Ctrl-C) and resumed with --resume."""
    address, _ = ray_head
    ml, opt = pg_dbs
    space = write_space(tmp_path / "pgs.yaml", small_manifest,
                        search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
                        budget={"num_samples": 2, "max_epochs": 2, "scheduler": "none"},
                        resources={"workers_per_trial": 1, "max_concurrent_trials": 1})
    storage = tmp_path / "runs" / "ray"
    argv = [IFDD, "search", "--space", str(space), "--runs", str(storage.parent), "--address", address,
            "--tracking-uri", ml, "--optuna-storage", opt]
    env = postgres.env()
    outputs = []

    # 1) Ctrl-C once a trial has checkpointed: a partial study, nothing selected (exit 1).
    proc = Proc(argv[1:], tmp_path, env)  # stdout+stderr read while it runs: a full pipe never blocks it
    wait_for(lambda: bool(list(storage.glob("search/*/trials/*/checkpoint_*"))), 300, "a trial checkpoint", proc)
    proc.signal(signal.SIGINT)
    rc = proc.wait(180)
    outputs.append(proc.out)
    assert rc == 1, proc.out[-4000:]
    assert "is partial" in proc.out

    # 2) --resume against the same PostgreSQL stores finishes both folds.
    done = subprocess.run([*argv, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    outputs += [done.stdout, done.stderr]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "study pgs-fold1: resuming" in done.stdout
    assert f"Optuna: {opt}" in done.stdout
    assert f"browse with `ifdd ui --runs {storage.parent} --tracking-uri {ml}`" in done.stdout  # it opens the store

    runs = tmp_path / "runs"
    assert not (runs / "optuna.db").exists() and not (runs / "mlflow.db").exists()
    summary = json.loads((runs / "search" / "pgs" / "summary.json").read_text())
    assert summary["registry"]["tracking_uri"] == ml and summary["optuna_storage"] == opt
    assert [r["fold"] for r in summary["folds"]] == [1, 2]

    monkeypatch.setenv("PGPASSWORD", postgres.password)
    _check_optuna(opt, summary)
    tags_and_params = _check_mlflow(ml, summary)

    secret = postgres.password
    assert not any(secret in text for text in outputs)
    assert not any(secret in v for v in tags_and_params)
    leaked = [p for p in runs.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked, leaked  # summaries, Tune's tuner.pkl / searcher state, MLflow artifacts


def _check_optuna(url: str, summary: dict) -> None:
    import optuna

    names = {s.study_name for s in optuna.get_all_study_summaries(storage=url)}
    assert names == {"pgs-fold1", "pgs-fold2"}
    for row in summary["folds"]:
        study = optuna.load_study(study_name=row["study"], storage=url)
        states = [t.state for t in study.trials]
        assert states.count(optuna.trial.TrialState.COMPLETE) == 2, states  # none lost or redone by the resume
        best = max(t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
        assert best == pytest.approx(row["selected_on"]["val_uar"])


def _check_mlflow(url: str, summary: dict) -> list[str]:
    """Parents, children and the registry in PostgreSQL; returns every tag and param value it saw."""
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name("pgs")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("ifdd.kind") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["ifdd.study"] for r in parents) == ["pgs-fold1", "pgs-fold2"]
    assert len(children) == 4 and {c.data.tags["mlflow.parentRunId"] for c in children} == {
        p.info.run_id for p in parents}
    assert all("test_uar" in p.data.metrics for p in parents)
    for c in children:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_uar")]
        # one point per epoch, none lost or duplicated by the Ctrl-C and the resume (PostgreSQL returns them
        # unordered); an epoch checkpointed after Tune's last result is logged by the reconcile
        assert sorted(steps) == [1, 2], steps
    model = client.get_registered_model("ifdd-synthetic-pgs-foldwise")
    assert {"fold1", "fold2", "champion"} <= set(model.aliases)
    assert summary["registry"]["champion_version"] == str(model.aliases["champion"])
    mlflow.set_tracking_uri(url)
    with no_pickle_loading():  # the registered pt2 passes MLflow's pickle-free check
        net = mlflow.pytorch.load_model("models:/ifdd-synthetic-pgs-foldwise@champion", map_location="cpu")
    with torch.no_grad():
        assert net(torch.rand(1, 3, 16, 64, 64)).shape == (1, 7)
    versions = client.search_model_versions("name='ifdd-synthetic-pgs-foldwise'")
    return [str(v) for r in runs for v in (*r.data.tags.values(), *r.data.params.values())] + [
        str(v) for mv in versions for v in mv.tags.values()]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree_cmdlines(root: int) -> list[str]:
    """Command lines of ``root`` and all its descendants."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= new
        grew = bool(new)
    out = []
    for pid in tree:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return out
