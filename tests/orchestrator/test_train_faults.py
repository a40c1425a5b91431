"""Fault tolerance of `ifdd train`: a Train worker killed by pid mid-run resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_killed_worker_resumes_from_checkpoint(small_manifest, tmp_path, write_run_yaml):
    cfg = write_run_yaml(tmp_path / "run.yaml", small_manifest, train={"epochs": 8, "max_steps_per_epoch": 4})
    storage = tmp_path / "runs" / "ray"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "train", "--config", str(cfg), "--fold", "1",
                             "--workers", "1", "--runs", str(storage.parent), "--name", "faulty", "--max-failures", "2",
                             "--verbose"],  # the workers' lines (the controller names rank 0's pid) on the terminal
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    killed = None
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None and killed is None:
            # The controller names the rank-0 worker's pid when the group starts (driver logs arrive late, the
            # checkpoint folders at once). Kill it once a second checkpoint folder exists: the first one is then
            # registered (a folder appears when the upload starts, before Ray records the checkpoint).
            pids = [int(m.group(1)) for line in list(lines)
                    if (m := re.search(r"pid=(\d+)\) world_rank=0", line))]
            if pids and len(list((storage / "faulty").glob("checkpoint_*"))) >= 2:
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.1)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    out = "".join(lines)
    assert killed is not None, "no worker pid and checkpoint seen before the run ended"
    assert proc.returncode == 0, out[-3000:]
    summary = json.loads((storage.parent / "train" / "faulty" / "summary.json").read_text())
    seen = [(h.get("epoch"), h.get("start_epoch")) for h in summary["history"]]
    assert [epoch for epoch, _ in seen] == list(range(1, 9)), seen  # no epoch lost or trained twice in the history
    assert any(start is not None and start > 1 for _, start in seen), \
        f"killed {killed}; no resume from a checkpoint: (epoch, start_epoch) {seen}\n" + \
        "\n".join(line for line in out.splitlines() if "pid=" in line and "Reporting" not in line)[-3000:]
    assert Path(summary["checkpoint"], "best.pt").is_file()
