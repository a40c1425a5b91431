"""Ray's token authentication, end to end (docs/reliability.md, "Ray's ports and token"): the project's default
local Ray refuses jobs and clients that lack its token and serves those that carry it; a local search listens on
loopback only and every port it opens checks the token (or serves only metrics); `ifdd search --address` and `ifdd
launch` join a `ray start --head` that has token auth (the launch submits one Ray Job per fold, both SUCCEED, `launch
--status` lists them), and a missing or wrong token is one `error:` line before any work; the token never reaches an
entrypoint, a log, a summary or MLflow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import ifdd_testkit.fixtures as _fx
import pytest
from ifdd_testkit.fixtures import split_size

from . import faults_common as fc
from . import ray_probe as probe

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]
IFDD = str(Path(sys.executable).parent / "ifdd")



LOCAL_RAY = """
import json, os, sys
import ray
from orchestrator.ray_session import init_ray
init_ray(None, num_cpus=1)
node = ray._private.worker._global_node
print("READY " + json.dumps({"gcs": node.gcs_address, "dashboard": "http://" + ray._private.worker.get_dashboard_url(),
                             "token_path": os.environ["RAY_AUTH_TOKEN_PATH"]}), flush=True)
sys.stdin.read()  # until the test closes stdin
"""

CLIENT = """
import sys, time, ray
t = time.time()
try:
    ray.init(address=sys.argv[1], log_to_driver=False)
    print("WORKED", ray.get(ray.remote(lambda: 6 * 7).remote()), flush=True)
except Exception as e:
    print("REFUSED", type(e).__name__, " ".join(str(e).split())[:300], round(time.time() - t, 1), flush=True)
"""


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """No Ray token anywhere: no RAY_* variables, an empty HOME (so no ~/.ray/auth_token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra)
    return env


def _http(url: str, token: str | None = None, data: bytes | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _client(gcs: str, env: dict[str, str]) -> tuple[str, str]:
    """(the client's verdict line, its stderr: Ray logs the GCS's refusal there)."""
    out = subprocess.run([sys.executable, "-c", CLIENT, gcs], env=env, capture_output=True, text=True, timeout=180)
    return (out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "no output"), out.stderr


def _one_error(run: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("error: ")]
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stdout + run.stderr
    return lines[0]


def test_the_default_local_ray_refuses_jobs_and_clients_without_its_token(tmp_path):
    home = tmp_path / "home"
    helper = subprocess.Popen([sys.executable, "-c", LOCAL_RAY], env=bare_env(home), cwd=tmp_path,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        deadline = time.time() + 180
        while not (lines and lines[-1].startswith("READY ")):
            assert time.time() < deadline and helper.poll() is None, "".join(lines)
            lines.append(helper.stdout.readline())
        info = json.loads(lines[-1].split(" ", 1)[1])
        gcs, dash, token_path = info["gcs"], info["dashboard"], Path(info["token_path"])
        token = token_path.read_text().strip()
        # the printed way in from another shell: the token, token mode, Ray's single-machine mode (loopback)
        recipe = re.search(r"from another shell: ((?:\w+=\S+ )+)ray status --address (\S+) ", "".join(lines))
        reach = dict(kv.split("=", 1) for kv in recipe.group(1).split())
        assert recipe.group(2) == gcs and reach == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path),
                                                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, recipe.group(0)
        deadline = time.time() + 60
        while True:  # right after the start the autoscaler may not have reported yet ("No cluster status")
            status = subprocess.run(["ray", "status", "--address", gcs], env=bare_env(home, **reach),
                                    capture_output=True, text=True, timeout=120)
            if "/1.0 CPU" in status.stdout or time.time() > deadline:
                break
            time.sleep(2)
        assert status.returncode == 0 and "/1.0 CPU" in status.stdout, status.stdout + status.stderr
        # a fresh token per command, private to this user, never Ray's world-readable ~/.ray/auth_token
        assert token_path.stat().st_mode & 0o777 == 0o600 and token_path.parent.stat().st_mode & 0o777 == 0o700
        assert not (home / ".ray").exists()
        assert gcs.startswith("127.0.0.1:") and dash.startswith("http://127.0.0.1:")

        # Jobs API (HTTP): listing and submitting (which runs code) are refused without the token
        marker = tmp_path / "ran-without-token"
        job = json.dumps({"entrypoint": f"touch {marker}"}).encode()
        assert _http(f"{dash}/api/jobs/") == 401
        assert _http(f"{dash}/api/jobs/", token="not-the-token") == 403
        assert _http(f"{dash}/api/jobs/", data=job) == 401
        assert _http(f"{dash}/api/jobs/", token="not-the-token", data=job) == 403
        # … and work with it: a job submitted with the project's token runs
        from ray.job_submission import JobStatus, JobSubmissionClient

        from orchestrator.commands.launch import submit_when_ready

        assert _http(f"{dash}/api/jobs/", token=token) == 200
        client = JobSubmissionClient(dash, headers={"Authorization": f"Bearer {token}"})
        # (a just-started head answers the dashboard before its job agent takes jobs: `ifdd launch` waits for it)
        job_id = submit_when_ready(client, dash, entrypoint="python -c \"print('ran with the token')\"")
        deadline = time.time() + 120
        while not client.get_job_status(job_id).is_terminal():
            assert time.time() < deadline, client.get_job_logs(job_id)
            time.sleep(1)
        assert client.get_job_status(job_id) == JobStatus.SUCCEEDED
        assert "ran with the token" in client.get_job_logs(job_id)
        assert not marker.exists()

        # a client connection (ray.init to the GCS): refused without the token, served with it
        loop = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        t0 = time.time()
        refused, log = _client(gcs, bare_env(home, **loop))
        print(f"\nclient without the token: {refused} ({time.time() - t0:.1f} s)")
        assert refused.startswith("REFUSED") and "Unauthenticated" in log, refused + log[-2000:]
        wrong, log = _client(gcs, bare_env(home, **loop, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-token"))
        assert wrong.startswith("REFUSED") and "InvalidAuthToken" in log, wrong + log[-2000:]
        assert _client(gcs, bare_env(home, **reach))[0] == "WORKED 42"

        # `ifdd search --address` without the token / with a wrong one: one error line naming where it looked,
        # before anything is written
        argv = [IFDD, "search", "--space", str(ROOT / "search_spaces" / "smoke.yaml"), "--address", gcs,
                "--runs", str(tmp_path / "runs")]
        t0 = time.time()
        missing = _one_error(subprocess.run(argv, env=bare_env(home, **loop), capture_output=True, text=True,
                                            timeout=120))
        took = time.time() - t0
        assert missing == (f"error: --address {gcs}: the cluster requires its Ray token and none was found (looked "
                           f"in RAY_AUTH_TOKEN (unset), RAY_AUTH_TOKEN_PATH (unset), {home}/.ray/auth_token (absent "
                           "or empty)); copy it from the head (`ray get-auth-token`) and set RAY_AUTH_TOKEN_PATH")
        bad = _one_error(subprocess.run(argv, env=bare_env(home, **loop, RAY_AUTH_TOKEN="not-the-token"),
                                        capture_output=True, text=True, timeout=120))
        assert bad.startswith(f"error: --address {gcs}: the cluster refused the Ray token from RAY_AUTH_TOKEN ("), bad
        assert "not-the-token" not in bad
        assert not (tmp_path / "runs").exists()
        print(f"`ifdd search --address` without the token: refused in {took:.1f} s: {missing}")
    finally:
        helper.stdin.close()
        helper.wait(timeout=120)
    assert helper.returncode == 0 and not token_path.parent.exists()  # the token is gone with its Ray


def test_a_local_search_listens_on_loopback_only_and_every_port_checks_the_token(small_manifest, write_space,
                                                                                 tmp_path, ifdd_env):
    space = write_space(tmp_path / "ports.yaml", small_manifest, budget={"num_samples": 1, "max_epochs": 1},
                        protocol={"folds": [1]})
    runs = tmp_path / "runs"
    proc = fc.Proc(["search", "--space", str(space), "--runs", str(runs), "--no-register"], tmp_path,
                   {**ifdd_env, "HOME": str(tmp_path / "home")})
    rows: dict[tuple[str, int], dict] = {}
    token = None
    while proc.p.poll() is None:
        found = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+) ", proc.out)
        if token is None and found:
            token = Path(found.group(1)).read_text().strip()
        if token:
            for listener in probe.listeners(probe.descendants(proc.p.pid)):
                if (listener.host, listener.port) not in rows:
                    try:
                        rows[listener.host, listener.port] = probe.verdict(listener, token)
                    except OSError:  # a worker that exited between `ss` and the probe
                        continue
        time.sleep(1)
    assert proc.wait(60) == 0, proc.out[-3000:]
    table = sorted(rows.values(), key=lambda r: (r["process"], r["address"]))
    print("\nlistening sockets of a local `ifdd search` (Ray 2.60, token auth on):")
    for r in table:
        print(f"  {r['address']:<24} {r['process']:<28} {r['protocol']:<5} {r['verdict']:<9} "
              f"{ {k: v for k, v in r.items() if k not in ('address', 'process', 'protocol', 'verdict')} }")
    kinds = {r["process"] for r in table}
    assert {"gcs_server", "raylet", "dashboard.py", "ray::DashboardAgent"} <= kinds, kinds
    assert any(k.startswith("ray::") and "Agent" not in k for k in kinds), kinds  # Tune/Train workers were seen
    # Nothing of Ray listens beyond loopback. torch.distributed's rendezvous store does, in rank 0 of each Train run,
    # for the run's length: torch binds it to every interface and has no option to bind one address, and it asks
    # for no credential (docs/reliability.md, "Ray's ports and token"); it is tolerated here and nothing else is.
    exposed = [r for r in table if not r["loopback"] and r["verdict"] != "c10d-store"]
    assert exposed == [], exposed
    assert not [r for r in table if r["verdict"] == "open"]  # only Prometheus metrics are served without a token
    metrics = {r["process"] for r in table if r["verdict"] == "metrics"}
    assert metrics <= {"dashboard.py", "monitor.py", "ray::DashboardAgent"}, metrics
    refused = [r for r in table if r["verdict"] == "refused"]
    assert {r["process"] for r in refused} >= {"gcs_server", "raylet", "ray::DashboardAgent", "dashboard.py"}
    # the token never reached the output or anything the search wrote (results, MLflow, Ray storage)
    assert token not in proc.out
    written = [p for p in runs.rglob("*") if p.is_file()]
    assert written and not [p for p in written if token.encode() in p.read_bytes()]


def test_search_and_launch_join_a_token_head_and_a_missing_or_wrong_token_is_refused(small_manifest, write_space,
                                                                                     tmp_path, ray_head, ifdd_env):
    from ray.job_submission import JobSubmissionClient

    address, dashboard = ray_head
    token = _fx.session_token().read_text().strip()
    space = write_space(tmp_path / "tk.yaml", small_manifest, budget={"num_samples": 1, "max_epochs": 1},
                        protocol={"folds": [1]})
    no_token = {k: v for k, v in ifdd_env.items() if k != "RAY_AUTH_TOKEN_PATH"} | {"HOME": str(tmp_path / "nohome")}
    wrong = {**no_token, "RAY_AUTH_TOKEN": "not-the-cluster-token"}
    search = [IFDD, "search", "--space", str(space), "--folds", "1", "--address", address, "--no-register"]
    launch = [IFDD, "launch", "--space", str(space), "--folds", "1-2", "--address", dashboard, "--working-dir",
              "none", "--no-register"]

    # a missing or wrong token: one error line each, nothing written, nothing submitted
    looked = f"RAY_AUTH_TOKEN (unset), RAY_AUTH_TOKEN_PATH (unset), {tmp_path}/nohome/.ray/auth_token (absent or empty)"
    for argv, where in ((search, address), (launch, dashboard), (launch[:2] + ["--status", "--address", dashboard],
                                                                 dashboard)):
        argv = [*argv, "--runs", str(tmp_path / "refused")]
        err = _one_error(subprocess.run(argv, env=no_token, capture_output=True, text=True, timeout=120))
        assert err.startswith(f"error: --address {where}: the cluster requires its Ray token and none was found "
                              f"(looked in {looked})"), err
        err = _one_error(subprocess.run(argv, env=wrong, capture_output=True, text=True, timeout=120))
        assert err.startswith(f"error: --address {where}: the cluster refused the Ray token from RAY_AUTH_TOKEN"), err
        assert "not-the-cluster-token" not in err
    assert not (tmp_path / "refused").exists()

    # with the cluster's token (RAY_AUTH_TOKEN_PATH): a search joins the head; a launch of folds 1-2 submits one
    # Ray Job per fold (each an `ifdd search --folds k --share 2`), both succeed, and `launch --status` says so
    t0 = time.time()
    joined = subprocess.run([*search, "--runs", str(tmp_path / "joined")], env=ifdd_env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert joined.returncode == 0, joined.stdout[-3000:] + joined.stderr[-3000:]
    t1 = time.time()
    launched = subprocess.run([*launch, "--runs", str(tmp_path / "launched"), "--wait"], env=ifdd_env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=1200)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    assert launched.stdout.count("submitted ifdd-tk-fold") == 2, launched.stdout[-3000:]
    print(f"\nsearch --address on the token head: {t1 - t0:.0f} s; 2-fold launch --wait: {time.time() - t1:.0f} s")
    status = subprocess.run([*launch[:2], "--status", "--address", dashboard, "--runs", str(tmp_path / "launched")],
                            env=ifdd_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and status.stdout.count("SUCCEEDED") == 2, status.stdout + status.stderr
    for root, folds in (("joined", (1,)), ("launched", (1, 2))):
        for fold in folds:
            study = json.loads((tmp_path / root / "search" / "tk" / f"tk-fold{fold}.json").read_text())
            assert study["complete"] and study["tests"][str(fold)]["clips"] == split_size(small_manifest, fold, "test")

    # the token is in no entrypoint, runtime environment, job log, output or written file
    client = JobSubmissionClient(dashboard, headers={"Authorization": f"Bearer {token}"})
    record = json.loads((tmp_path / "launched" / "launch" / "tk.json").read_text())
    assert len(record) == 2
    for job in record:
        info = client.get_job_info(job["job_id"])
        shown = json.dumps({"entrypoint": info.entrypoint, "runtime_env": info.runtime_env, "metadata": info.metadata})
        assert "RAY_AUTH" not in shown and token not in shown, shown
        assert token not in client.get_job_logs(job["job_id"])
    for run in (joined, launched):
        assert token not in run.stdout + run.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".log"]
    assert written and not [p for p in written if token.encode() in p.read_bytes()]
