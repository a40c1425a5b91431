"""A real `ray up` over SSH to 127.0.0.1 (our own sshd) with Ray's token authentication on, the search submitted with
`ifdd launch` (carrying the cluster's token), then `ray down`.

Marked ``cluster``: `ray down` is a machine-wide `ray stop`, so this runs alone (`make test-cluster`, its own pytest
process, after the slow suite) and holds /tmp/ifdd-ray.lock for the whole run.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from ifdd_testkit.fixtures import split_size

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
RAY_LOCK = Path("/tmp/ifdd-ray.lock")


def _load_loopback():
    spec = importlib.util.spec_from_file_location("ray_up_loopback", REPO / "cluster/loopback/ray_up_loopback.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ancestor_holds(path: Path) -> bool:
    """True when a process above us (e.g. `flock /tmp/ifdd-ray.lock pytest …`) holds the flock on ``path``."""
    ino = os.stat(path).st_ino
    holders = {int(f[4]) for f in (line.split() for line in Path("/proc/locks").read_text().splitlines())
               if len(f) > 5 and f[1] == "FLOCK" and f[5].rsplit(":", 1)[-1] == str(ino)}
    pid = os.getppid()
    while pid > 1:
        if pid in holders:
            return True
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return False


@contextlib.contextmanager
def ray_lock(timeout: float = 900):
    """The machine-wide Ray lock (held by us, or by an ancestor such as `flock /tmp/ifdd-ray.lock pytest`); fails
    after ``timeout`` seconds instead of waiting forever behind a stuck holder."""
    with open(RAY_LOCK, "a") as fd:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if _ancestor_holds(RAY_LOCK):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{RAY_LOCK} still held by another process after {timeout:.0f} s") from None
                time.sleep(1)
        yield


@pytest.mark.needs_system("openssh")
@pytest.mark.timeout(1500)  # ~110 s on 2 quiet cores, plus up to 15 min waiting for the Ray lock
def test_ray_up_on_loopback_runs_the_search_and_ray_down_leaves_nothing(small_manifest, write_space):
    import mlflow

    lo = _load_loopback()
    # a short root: Ray's Unix sockets live under <TMPDIR>/ray/session_…/sockets (108-byte path limit)
    root = Path(tempfile.mkdtemp(prefix="ifdd-rayup-", dir="/tmp"))
    try:
        space = write_space(root / "lo.yaml", small_manifest, budget={"num_samples": 2, "max_epochs": 1},
                            search={"loss.lambda_gc": {"type": "float", "low": 0.01, "high": 1.0, "log": True}})
        storage = root / "shared" / "ray"
        lb = lo.Loopback(root)
        t0 = time.time()
        with ray_lock():
            out = lo.cycle(lb, ["--space", str(space), "--folds", "1-2", "--working-dir", str(REPO),
                                "--runs", str(storage.parent)], cwd=root)
        out["timings"]["total"] = round(time.time() - t0, 1)
        print(f"\nray up loopback timings (s): {json.dumps(out['timings'])}\n--- ray up (tail) ---\n"
              f"{out['up'][-1500:]}\n--- ifdd launch (tail) ---\n{out['launch'][-2500:]}\n--- ray down (tail) ---\n"
              f"{out['down'][-800:]}")

        # the head came up through ssh and was the whole cluster
        assert "Writing cluster state: ['127.0.0.1']" in out["up"], out["up"]
        # token authentication is on: the dashboard refuses a request without the token (the launch below sent it)
        assert out["unauthenticated"] == {"/api/version": 401, "/api/jobs/": 401}, out["unauthenticated"]
        # `ray status`, polled until the autoscaler settled: one node with 2 CPUs, none pending
        assert lo.steady(out["status"]), out["status"]
        # both fold jobs succeeded and wrote their results
        assert out["launch_rc"] == 0, out["launch"]
        assert out["launch"].count("SUCCEEDED") == 2, out["launch"]
        results = root / "shared" / "search" / "lo"
        for fold in (1, 2):
            study = json.loads((results / f"lo-fold{fold}.json").read_text())
            assert study["complete"] and len(study["trials"]) == 2, study
            assert study["best"] is not None
            assert study["tests"][str(fold)]["clips"] == split_size(small_manifest, fold, "test")
        summary = json.loads((results / "summary.json").read_text())
        assert summary["selection"] == "val" and summary["folds"]
        # the token was never written into a job's entrypoint, the launch records, the results or the output
        token = lb.token.read_bytes().strip()
        shared = [p for p in (root / "shared").rglob("*") if p.is_file()]
        assert shared and not [p for p in shared if token in p.read_bytes()]
        assert token.decode() not in out["launch"]
        # MLflow (the sqlite store next to --storage): a parent run per fold, a child run per trial, both winners
        client = mlflow.MlflowClient(f"sqlite:///{root / 'shared' / 'mlflow.db'}")
        exp = client.get_experiment_by_name("lo")
        runs = client.search_runs([exp.experiment_id], max_results=100)
        parents = [r for r in runs if r.data.tags.get("ifdd.kind") == "study"]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert sorted(r.data.tags["ifdd.study"] for r in parents) == ["lo-fold1", "lo-fold2"]
        assert all("test_uar" in p.data.metrics for p in parents)
        assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
        model = f"ifdd-{summary['registry']['model'].removeprefix('ifdd-')}"
        for fold in (1, 2):
            assert client.get_model_version_by_alias(model, f"fold{fold}").version
        # `ray down` really stopped Ray (a bare `ray stop` without the venv on PATH would not) and closed ssh
        assert out["down_rc"] == 0, out["down"]
        assert out["raylets_left"] == [], out["raylets_left"]
        assert out["control_sockets"], "ray up used no ssh ControlMaster sockets (wrong control dir?)"
        assert not lb.control_dir.exists() and not any(Path(s).exists() for s in out["control_sockets"])
        assert lb.sshd.poll() is not None
    finally:
        shutil.rmtree(root, ignore_errors=True)
