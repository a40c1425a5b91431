"""Stopping from any shell (docs/reliability.md, "Stopping"): a command started with SIGINT ignored, as `nohup … &`
from a script, cron or a supervisor leave it, stops on SIGTERM and on SIGINT; only a command that can continue
prints how; the clean stop is bounded. The slow cases start `ifdd ui` and a local search under `setsid nohup … &`
from `bash -c` and check the exit, the time taken and that no process of theirs is left."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import ifdd_testkit.fixtures as _fx
import pytest

from orchestrator import preempt

from . import ray_probe as probe

IFDD = str(Path(sys.executable).parent / "ifdd")


def _synth_ignoring_sigint(out: Path, clips_per_class: int, **env: str) -> subprocess.Popen:
    """`ifdd data synth` exec'd from `bash -c` with SIGINT ignored (what a background job of a script inherits)."""
    cmd = f"trap '' INT; exec {IFDD} data synth --out {out} --clips-per-class {clips_per_class} --quiet"
    return subprocess.Popen(["bash", "-c", cmd], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_first_clip(proc: subprocess.Popen, out: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not list((out / "Clip" / "original").glob("*.mp4")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no clip written"
        time.sleep(0.05)


def _sigint_disposition(pid: int) -> bool:
    """True when the process ignores SIGINT (bit 2 of SigIgn in /proc/PID/status)."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigIgn:"))
    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def test_sigterm_stops_a_command_started_with_sigint_ignored_without_a_resume_hint(tmp_path):
    out = tmp_path / "synth"
    proc = _synth_ignoring_sigint(out, 300, IFDD_STOP_GRACE_S="3")  # ~2100 clips: far more than the test waits
    _wait_first_clip(proc, out)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    took = time.time() - t0
    assert proc.returncode == preempt.PREEMPTED_EXIT, err
    assert "ifdd: SIGTERM received: stopping" in err
    assert "stopped: SIGTERM received; ifdd data synth did not finish (nothing to resume)" in err, err
    assert "continue with" not in err and "Traceback" not in err, err
    assert took < 3 + 5, f"took {took:.1f} s"  # the grace (IFDD_STOP_GRACE_S) bounds a clean stop
    assert not (out / "EmoLabel_DataSplit").exists()  # it did stop: the split files come after every clip


def test_sigint_inherited_as_ignored_is_given_back(tmp_path):
    out = tmp_path / "synth"
    proc = _synth_ignoring_sigint(out, 40)
    _wait_first_clip(proc, out)
    assert not _sigint_disposition(proc.pid), "ifdd kept SIGINT ignored"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert not (out / "EmoLabel_DataSplit").exists()


UI_STOP_PROBE = """
import os, signal, sys, time, weakref
from orchestrator.commands.ui import stop_requested

def ctrl_c(*_):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)  # the handler runs here, inside the library's code

class Field:
    __set_name__ = ctrl_c

def in_a_gc_callback():  # the CI hang: SQLAlchemy's weakref callback, run by a collection during an import
    class Collection:
        pass
    c = Collection()
    ref = weakref.ref(c, ctrl_c)
    del c

def in_set_name():  # Ray's import of ray.data: Python 3.11 wraps what __set_name__ raises in a RuntimeError
    try:
        class Expr:
            data_type = Field()
    except Exception as e:  # what an optional import's fallback does
        print("swallowed", type(e).__name__, file=sys.stderr)

before = signal.getsignal(signal.SIGINT)
for case in (in_a_gc_callback, in_set_name):
    with stop_requested() as stop:
        case()
        print(case.__name__, stop.requested)
print("restored", signal.getsignal(signal.SIGINT) is before)
"""


def test_ui_takes_ctrl_c_as_a_flag_so_library_code_cannot_lose_it():
    """`ifdd ui` must not lose a Ctrl-C that lands inside library code. Raised there, ``KeyboardInterrupt`` can be
    printed and dropped (in a garbage-collection callback: "Exception ignored in …") or come out as another
    exception that is then caught; in CI the command then waited on its server until killed. Its handler only sets a
    flag, checked where stopping is safe (SIGTERM reaches the same handler: orchestrator/preempt.py), and the
    previous handler comes back after."""
    done = subprocess.run([sys.executable, "-c", UI_STOP_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:-1] == ["in_a_gc_callback True", "in_set_name True", "restored True"], (
        done.stdout + done.stderr[-2000:])


def test_only_commands_that_can_continue_print_how():
    from orchestrator.cli import build_parser, stop_mode

    parser = build_parser()
    for argv in (["search", "--space", "s.yaml"], ["train", "--config", "c.yaml", "--fold", "1"], ["demo"]):
        mode = stop_mode(parser.parse_args(argv))
        assert mode.resumable and "continue with: ifdd " in preempt.final_line(argv, mode)
    assert preempt.final_line(["search", "--space", "s.yaml", "--fresh"], preempt.RESUMABLE).endswith(
        "continue with: ifdd search --space s.yaml --resume")
    for argv in (["ui"], ["report", "--experiment", "x"], ["data", "synth", "--out", "d"], ["model", "info"],
                 ["cluster", "validate", "f.yaml"], ["launch", "--status"], ["launch", "--space", "s.yaml"]):
        mode = stop_mode(parser.parse_args(argv))
        line = preempt.final_line(argv, mode)
        assert not mode.resumable and "continue with" not in line and line.endswith("(nothing to resume)"), line
    assert stop_mode(parser.parse_args(["ui"])) is preempt.SERVER


# Started under `setsid nohup … &` from `bash -c` (slow: a real MLflow server, a real local Ray) -------------------


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Detached:
    """`bash -c 'setsid nohup ifdd … > LOG 2>&1 & …'`: SIGINT ignored (a non-interactive shell's background job),
    SIGHUP ignored (nohup), its own session (setsid). Every process below it is recorded while it runs."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]):
        self.log, self.rc_file = cwd / "detached.log", cwd / "detached.rc"
        pid_file = cwd / "detached.pid"
        script = (f"setsid -w nohup {shlex.join([IFDD, *argv])} > {self.log} 2>&1 & echo $! > {pid_file}; "
                  f"wait $!; echo $? > {self.rc_file}")
        self.shell = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env)
        deadline = time.time() + 30
        while not (pid_file.is_file() and pid_file.read_text().strip()):
            assert time.time() < deadline, "no pid"
            time.sleep(0.1)
        top = int(pid_file.read_text())
        self.pid = 0
        while not self.pid:  # setsid and nohup exec (or fork) into ifdd
            found = [p for p in sorted(probe.descendants(top)) if IFDD.encode() in _cmdline(p)]
            self.pid = found[0] if found else 0
            assert time.time() < deadline, f"no ifdd process under {top}"
            time.sleep(0.05)
        self.seen: dict[int, str | None] = {}

    @property
    def out(self) -> str:
        return self.log.read_text() if self.log.is_file() else ""

    def record(self) -> None:
        for pid in probe.descendants(self.pid):
            self.seen.setdefault(pid, _start_time(pid))

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not predicate():
            self.record()
            assert self.shell.poll() is None, f"exited before {what}:\n{self.out[-3000:]}"
            assert time.time() < deadline, f"timed out waiting for {what}:\n{self.out[-3000:]}"
            time.sleep(0.5)
        self.record()

    def stop(self, sig: int, timeout: float) -> tuple[int, float]:
        """Send ``sig`` to the ifdd process; returns (its exit status, seconds until it exited)."""
        t0 = time.time()
        os.kill(self.pid, sig)
        while self.shell.poll() is None:
            self.record()
            if time.time() - t0 > timeout:
                self.shell.kill()
                raise AssertionError(f"still running {timeout} s after signal {sig}:\n{self.out[-3000:]}")
            time.sleep(0.2)
        return int(self.rc_file.read_text()), time.time() - t0

    def left(self, within: float = 30) -> list[str]:
        """Processes of its tree still alive ``within`` s after it exited (same pid and start time)."""
        deadline = time.time() + within
        while True:
            alive = [f"{pid} {probe.process_name(pid)}" for pid, start in self.seen.items()
                     if start is not None and _start_time(pid) == start]
            if not alive or time.time() > deadline:
                return alive
            time.sleep(0.5)


@pytest.mark.slow
def test_ui_started_under_setsid_nohup_stops_on_sigterm_with_its_server(tmp_path, ifdd_env):
    from orchestrator.outputs import Outputs
    from orchestrator.tracking.client import Tracker

    runs = tmp_path / "runs"
    Tracker(Outputs.resolve(str(runs)).default_tracking_uri, runs / "mlartifacts")  # the store's schema
    port = _fx.free_port()
    ui = Detached(["ui", "--runs", str(runs), "--port", str(port)], tmp_path, ifdd_env)
    ui.wait_for(lambda: "MLflow UI: http://127.0.0.1:" in ui.out, 180, "the server")
    assert not _sigint_disposition(ui.pid)  # inherited ignored, given back at start
    assert len(ui.seen) >= 2, ui.seen  # ifdd and its mlflow server (and the server's workers)
    rc, took = ui.stop(signal.SIGTERM, 60)
    print(f"\nifdd ui (setsid nohup): SIGTERM -> exit {rc} in {took:.1f} s; processes in its tree: {len(ui.seen)}")
    assert rc == 0, ui.out[-2000:]  # SIGTERM is a server's normal stop, as Ctrl-C is
    lines = ui.out.splitlines()
    assert "ifdd: SIGTERM received: stopping the server" in lines and lines[-1] == "MLflow UI stopped", ui.out
    assert not [ln for ln in lines if ln.startswith(("preempted:", "stopped:"))] and "continue with" not in ui.out
    assert took < 20
    assert ui.left() == []
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the MLflow port is still open"


def _sigterm_search(space: Path, cwd: Path, env: dict[str, str], during_tune: bool) -> tuple[int, float, int, float]:
    """A local search under setsid nohup, SIGTERMed right after its Ray is up (outside any of Tune's handlers) or
    once a trial has checkpointed (inside Tune's); checks its exit and what is left. Returns (exit, seconds to exit,
    processes in its tree, seconds until none was left)."""
    cwd.mkdir()
    runs = cwd / "runs"
    argv = ["search", "--space", str(space), "--runs", str(runs), "--no-register"]
    run = Detached(argv, cwd, env)
    if during_tune:
        run.wait_for(lambda: list(runs.glob("ray/search/*/trials/*/checkpoint_*")), 400, "a trial checkpoint")
    else:
        run.wait_for(lambda: "local Ray: dashboard" in run.out, 240, "the local Ray")
    assert not _sigint_disposition(run.pid)
    rc, took = run.stop(signal.SIGTERM, 240)
    t_exit = time.time()
    assert run.left() == [], run.left(0)  # no Ray process (GCS, raylet, dashboard, workers) outlives the command
    gone = time.time() - t_exit
    assert rc == preempt.PREEMPTED_EXIT, run.out[-3000:]
    resume = [ln for ln in run.out.splitlines() if ln.startswith("preempted: ")]
    assert len(resume) == 1 and resume[0].endswith(f"continue with: ifdd {shlex.join(argv)} --resume"), resume
    assert "Traceback" not in run.out, run.out[-3000:]
    token = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+) ", run.out)
    assert token and not Path(token.group(1)).exists()  # the local Ray's token went with it
    return rc, took, len(run.seen), gone


@pytest.mark.slow
@pytest.mark.ray
def test_search_started_under_setsid_nohup_stops_on_sigterm_before_and_during_tune(small_manifest, write_space,
                                                                                  tmp_path, ifdd_env):
    space = write_space(tmp_path / "sg.yaml", small_manifest, budget={"num_samples": 2, "max_epochs": 3,
                                                                      "scheduler": "none"},
                        protocol={"folds": [1]}, resources={"workers_per_trial": 1, "max_concurrent_trials": 1})
    for during_tune in (False, True):
        rc, took, n, gone = _sigterm_search(space, tmp_path / f"tune-{during_tune}", ifdd_env, during_tune)
        print(f"\nifdd search (setsid nohup), SIGTERM {'during' if during_tune else 'before'} Tune: exit {rc} in "
              f"{took:.1f} s; {n} processes in its tree, none left {gone:.1f} s after it exited")
