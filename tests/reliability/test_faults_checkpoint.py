"""Checkpoint faults without Ray: a writer SIGKILLed mid-write, a corrupted checkpoint, a full disk, the free-space
preflight. (Atomic write and checksum detection themselves are covered in tests/test_engine.py.)"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ifdd_testkit.procio import LineReader

from ifdd.checkpoint import CheckpointError, load_checkpoint, load_first_valid, save_checkpoint
from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "search_spaces" / "smoke.yaml")
WRITER = """
import sys, torch
from ifdd.checkpoint import save_checkpoint
path, n = sys.argv[1], 0
while True:
    n += 1
    save_checkpoint(path, {"epoch": n, "w": torch.full((4_000_000,), float(n))})  # 16 MB: a write takes a while
    print(n, flush=True)
"""
# Where each SIGKILL lands: while a data file is being written (some file in the folder, the checksum files aside,
# holds at least this many bytes but less than a whole checkpoint; the writer is stopped there with SIGSTOP first,
# so the kill point is observed, not timed), or right after a write was reported (None).
KILL_AT = [1, 1 << 20, 8 << 20, 15 << 20, None]


def _partial_size(folder: Path, whole: int, stale: set[str]) -> int | None:
    """Bytes of a data file under way in ``folder`` (shorter than ``whole``; not one of the ``stale`` leftovers of
    earlier killed writers), or None if none is."""
    for p in folder.iterdir():
        if "sha256" not in p.name and p.name not in stale:
            try:
                size = p.stat().st_size
            except FileNotFoundError:  # renamed meanwhile
                continue
            if size < whole:
                return size
    return None


def _stop_mid_write(proc: subprocess.Popen, folder: Path, at_least: int, whole: int, stale: set[str],
                    timeout: float = 60) -> int:
    """SIGSTOP the writer once a data file under way holds ``at_least`` bytes (checked again once stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        size = _partial_size(folder, whole, stale)
        if size is not None and size >= at_least:
            os.kill(proc.pid, signal.SIGSTOP)
            size = _partial_size(folder, whole, stale)
            if size is not None and size >= at_least:
                return size
            os.kill(proc.pid, signal.SIGCONT)
        assert proc.poll() is None, "the writer exited"
        time.sleep(0.0005)
    raise AssertionError(f"never saw a write of >= {at_least} bytes under way in {timeout} s")


@pytest.mark.slow  # ~20 s: five writer processes importing torch
def test_writer_killed_mid_write_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL a process that rewrites one checkpoint in a loop: 4 times stopped inside a write (at 1 B, 1, 8 and
    15 of its 16 MB), once right after one: every time the file on disk verifies and holds one complete epoch
    (never a mix), and it is never older than the last epoch reported."""
    path = tmp_path / "state.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed_inside = []
    for at in KILL_AT:
        stale = {p.name for p in tmp_path.iterdir()} - {"state.pt", "state.pt.sha256"}
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        out = LineReader(proc.stdout, proc)
        try:
            out.wait_for_line(lambda line: line.strip().isdigit(), 120, "a first complete write")
            if at is None:
                out.wait_for_line(lambda line: line.strip() == "2", 60, "a second complete write")
            else:
                killed_inside.append(_stop_mid_write(proc, tmp_path, at, path.stat().st_size, stale))
        finally:
            proc.kill()
            proc.wait(timeout=30)
        out.join()
        last = int(out.lines[-1])
        state = load_checkpoint(path)
        assert state["epoch"] >= last and bool((state["w"] == float(state["epoch"])).all())
    assert len(killed_inside) == 4 and all(size >= at for size, at in zip(killed_inside, KILL_AT, strict=False))
    # a killed writer cannot clean up its hidden temp files; they never shadow the checkpoint
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["state.pt", "state.pt.sha256"]


def _ckpt_dirs(root: Path, n: int) -> list[Path]:
    dirs = []
    for epoch in range(1, n + 1):
        d = root / f"checkpoint_2026-01-01_00-00-0{epoch}.000000"
        save_checkpoint(d / "state.pt", {"epoch": epoch})
        save_checkpoint(d / "best.pt", {"epoch": epoch, "model": {"w": torch.ones(2) * epoch}})
        dirs.append(d)
    return dirs[::-1]  # newest first


def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path):
    dirs = _ckpt_dirs(tmp_path, 3)
    raw = bytearray((dirs[0] / "best.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the newest checkpoint's best.pt
    (dirs[0] / "best.pt").write_bytes(bytes(raw))
    warnings: list[str] = []
    used, files = load_first_valid(dirs, ("state.pt", "best.pt"), warn=warnings.append)
    assert used == dirs[1] and files["state.pt"]["epoch"] == 2 and float(files["best.pt"]["model"]["w"][0]) == 2
    assert len(warnings) == 1 and "SHA-256 mismatch" in warnings[0] and str(dirs[1]) in warnings[0]

    (dirs[1] / "state.pt.sha256").unlink()  # a crash between the two renames: checksum missing
    used, _ = load_first_valid(dirs, ("state.pt", "best.pt"), warn=warnings.append)
    assert used == dirs[2] and "2 unusable" in warnings[-1]

    (dirs[2] / "state.pt").write_bytes(b"")  # nothing usable left: a clear error, never a silent fresh start
    with pytest.raises(CheckpointError, match="no usable checkpoint.*SHA-256 mismatch.*missing.*mismatch"):
        load_first_valid(dirs, ("state.pt", "best.pt"), warn=warnings.append)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    """A real small filesystem to fill up (the tests using it declare ``needs_system("tmpfs")``)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       timeout=30)
    assert r.returncode == 0, f"mount -t tmpfs failed: {r.stderr.decode().strip()}"
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


@pytest.mark.needs_system("tmpfs")
def test_checkpoint_write_hitting_enospc_keeps_the_previous_one(tmp_path):
    with small_tmpfs(tmp_path / "disk", "6m") as disk:
        save_checkpoint(disk / "state.pt", {"epoch": 1, "w": torch.ones(500_000)})  # 2 MB
        with pytest.raises(OSError) as info:
            save_checkpoint(disk / "state.pt", {"epoch": 2, "w": torch.ones(1_500_000)})  # 6 MB: does not fit
        assert info.value.errno == errno.ENOSPC and "the previous checkpoint is kept" in str(info.value)
        assert load_checkpoint(disk / "state.pt")["epoch"] == 1
        assert sorted(p.name for p in disk.iterdir()) == ["state.pt", "state.pt.sha256"]  # temp file removed


@pytest.mark.needs_system("tmpfs")
def test_train_refuses_to_start_on_a_nearly_full_disk(tmp_path, capsys):
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        rc = main(["train", "--config", SMOKE, "--fold", "1", "--runs", str(disk)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: --runs: {disk} has ") and "below the 1024 MiB" in err[0]


def test_free_space_threshold_is_configurable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IFDD_MIN_FREE_MB", str(2**40))  # more than any disk: the check must fire on tmp_path too
    assert main(["search", "--space", SMOKE, "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "IFDD_MIN_FREE_MB" in err and err.startswith("error: --runs:")
    assert not (tmp_path / "search").exists() and not (tmp_path / "mlflow.db").exists()  # nothing written
    monkeypatch.setenv("IFDD_MIN_FREE_MB", "lots")
    assert main(["train", "--config", SMOKE, "--fold", "1", "--runs", str(tmp_path)]) == 2
    assert "error: IFDD_MIN_FREE_MB: expected a number of MiB, got 'lots'" in capsys.readouterr().err
