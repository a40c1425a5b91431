"""`ifdd train` preempted by SIGTERM: it stops cleanly (exit 143, one `preempted:` line, checkpoints kept); its
newest checkpoints are then corrupted, and the same command resumes from the last one that verifies, with a
warning, losing and repeating no epoch."""

from __future__ import annotations

import json
import signal

import pytest
from ifdd_testkit.fixtures import cli_env, split_size

from ifdd.checkpoint import load_checkpoint

from . import faults_common as fc

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _registered(run) -> list:
    """The checkpoints Ray registered for the run, oldest first: its checkpoint manager's snapshot (written after a
    checkpoint's upload is recorded, so it can lag the folders on disk); the last one is what a resume is handed."""
    try:
        snapshot = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return []
    return [run / r["checkpoint_dir_name"] for r in snapshot.get("checkpoint_results", [])]


def test_sigterm_then_corrupt_checkpoint_then_resume_loses_no_epoch(small_manifest, tmp_path, write_run_yaml):
    cfg = write_run_yaml(tmp_path / "run.yaml", small_manifest, train={"epochs": 6, "max_steps_per_epoch": 3})
    storage = tmp_path / "runs" / "ray"
    argv = ["train", "--config", str(cfg), "--fold", "1", "--runs", str(storage.parent), "--name", "pre"]
    env = {**cli_env(), "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60"}
    run = storage / "pre"

    first = fc.Proc(argv, tmp_path, env)
    fc.wait_for(lambda: len(_registered(run)) >= 2, 300, "two checkpoints registered by Ray", first)
    first.signal(signal.SIGTERM)
    rc = first.wait(180)
    assert rc == 143, first.out[-3000:]
    preempted = fc.grep(r"^preempted: ", first.out)
    assert len(preempted) == 1 and f"continue with: ifdd train --config {cfg}" in preempted[0], first.out[-3000:]
    assert not (storage.parent / "train" / "pre" / "summary.json").exists()  # it did not pretend to finish
    kept = fc.checkpoints(run)
    assert kept, "no checkpoint kept after SIGTERM"

    # The checkpoint Ray hands back on resume is the newest it registered (its snapshot's latest result), which may
    # be older than the newest folder on disk when the SIGTERM lands between a save and its registration. That one
    # and everything newer go bad (a disk error, a copy cut short); the run must fall back to the one before it.
    registered = _registered(run)
    handed = registered[-1]
    assert handed in kept, (handed, kept)
    older = [d for d in registered[:-1] if d in kept]
    assert older, f"Ray kept no registered checkpoint before {handed.name} (num_to_keep=2): {registered}, {kept}"
    for d in kept:
        if d.name >= handed.name:
            fc.flip_byte(d / "state.pt")
    fallback = older[-1]
    fallback_epoch = int(load_checkpoint(fallback / "state.pt")["epoch"])

    second = fc.Proc(argv, tmp_path, env)
    rc = second.wait(600)
    assert rc == 0, second.out[-4000:]
    warnings = fc.grep(r"warning: rank 0: skipped \d+ unusable checkpoint", second.out)
    assert warnings and "SHA-256 mismatch" in warnings[0] and f"resuming from {fallback}" in warnings[0], \
        second.out[-4000:]
    summary = json.loads((storage.parent / "train" / "pre" / "summary.json").read_text())
    assert fc.epochs_of(summary["history"]) == [1, 2, 3, 4, 5, 6], summary["history"]
    resumed_at = {h["start_epoch"] for h in summary["history"]} - {1}
    assert len(resumed_at) == 1, summary["history"]  # one resume, from the checkpoint that verified
    assert resumed_at == {fallback_epoch + 1}
    assert summary["status"] == "finished" and summary["test"]["clips"] == split_size(small_manifest, 1, "test")
