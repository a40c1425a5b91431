"""Helpers for the fault tests: the orchestrator fixtures (a real Ray head, the small synthetic set), running `ifdd`
as a subprocess and reading its output while it runs, and counting what MLflow holds.

Loaded by path (tests use --import-mode=importlib, so test folders are not packages): ``load()`` returns this module.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def orchestrator_fixtures():
    """The fixtures of tests/orchestrator/conftest.py (small_manifest, write_space, ray_head, ifdd_env, …)."""
    return _load(ROOT / "tests" / "orchestrator" / "conftest.py", "ifdd_orchestrator_conftest")


IFDD = str(Path(sys.executable).parent / "ifdd")


class Proc:
    """An `ifdd` subprocess whose stdout+stderr are collected line by line while it runs."""

    def __init__(self, args: list[str], cwd: Path, env: dict):
        self.p = subprocess.Popen([IFDD, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=lambda: self.lines.extend(iter(self.p.stdout.readline, "")), daemon=True)
        self._t.start()

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def signal(self, sig: int) -> None:
        os.kill(self.p.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"ifdd did not exit within {timeout}s:\n{self.out[-3000:]}") from None
        self._t.join(timeout=10)
        return rc


def wait_for(predicate, timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc is not None and proc.p.poll() is not None:
            raise AssertionError(f"ifdd exited ({proc.p.returncode}) before {what}:\n{proc.out[-3000:]}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.out[-3000:]}" if proc else ""))
        time.sleep(0.5)


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())


def flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def mlflow_counts(uri: str, experiment: str, model: str) -> dict:
    """Active parent/child runs, trial ids (with repeats) and registry versions: what a resume must not duplicate."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("ifdd.kind") == "study"]
    try:
        versions = client.search_model_versions(f"name = '{model}'")
        aliases = dict(client.get_registered_model(model).aliases)
    except Exception:  # noqa: BLE001 - no such model yet
        versions, aliases = [], {}
    return {"parents": len(parents), "children": len(children),
            "trial_ids": sorted(r.data.tags.get("ifdd.trial_id", "") for r in children),
            "epochs": {r.data.tags.get("ifdd.trial_id"): sorted(m.step for m in client.get_metric_history(
                r.info.run_id, "val_uar")) for r in children},
            "statuses": sorted(r.info.status for r in children),
            "versions": sorted(int(v.version) for v in versions),
            "aliases": {k: int(v) for k, v in aliases.items()}}  # the REST store gives str, sqlite int


def start_mlflow_server(store: Path, port: int, env: dict, log: Path) -> subprocess.Popen:
    """A real `mlflow server` (the command `ifdd ui` runs) on 127.0.0.1:port over ``store``, in its own session."""
    import urllib.request

    from orchestrator.commands.ui import server_command

    proc = subprocess.Popen(server_command(store, "127.0.0.1", port), env={
        **env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=open(log, "a"), stderr=subprocess.STDOUT,
        start_new_session=True)
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            kill_group(proc)
            raise AssertionError(f"mlflow server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    proc.wait(timeout=30)


def epochs_of(history: list[dict]) -> list[int]:
    return [int(h["epoch"]) for h in history if h.get("val_uar") is not None]


def grep(pattern: str, text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]
