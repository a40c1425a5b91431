"""Helpers for the fault tests: running `ifdd` as a subprocess and reading its output while it runs (from
ifdd_testkit.procio), and counting what MLflow holds. The Ray head, the small synthetic set and the search-space
writer are the shared fixtures (ifdd_testkit.fixtures)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from ifdd_testkit.procio import Proc, wait_for

__all__ = ["Proc", "wait_for", "checkpoints", "flip_byte", "mlflow_counts", "start_mlflow_server", "kill_group",
           "epochs_of", "grep"]


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
    from orchestrator.outputs import Outputs

    proc = subprocess.Popen(server_command(Outputs.resolve(str(store)), "127.0.0.1", port), env={
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
