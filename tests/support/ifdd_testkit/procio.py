"""Subprocesses under test, read while they run and waited on with deadlines.

A test that iterates ``proc.stdout`` checks its deadline only when a line arrives, so a child that hangs silently
hangs the test; a pipe nobody reads fills up (Ray and MLflow are chatty) and blocks the child. ``LineReader`` drains
the pipe on a daemon thread and lets the test wait for a line with a deadline that holds whether or not output comes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

IFDD = str(Path(sys.executable).parent / "ifdd")


class LineReader:
    """Every line of ``stream`` (text mode), collected on a daemon thread until EOF."""

    def __init__(self, stream, proc: subprocess.Popen | None = None):
        self.lines: list[str] = []
        self.proc = proc
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for line in iter(stream.readline, ""):
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def wait_for_line(self, match: str | Callable[[str], bool], timeout: float, what: str | None = None) -> str:
        """The first line that starts with ``match`` (or satisfies it); AssertionError with the output's tail if
        none came within ``timeout`` seconds or the stream ended first."""
        test = (lambda line: line.startswith(match)) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if test(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(min(left, 1.0))
        rc = self.proc.poll() if self.proc is not None else None
        why = "output ended" if self._eof else f"timed out after {timeout:.0f} s"
        raise AssertionError(f"{why} waiting for {what or match!r} (rc {rc}):\n{self.text[-3000:]}")

    def join(self, timeout: float = 10) -> None:
        self._thread.join(timeout)


class Proc:
    """An `ifdd` subprocess (or any command, with ``cmd``) whose stdout+stderr are collected while it runs."""

    def __init__(self, args: list[str], cwd: Path, env: dict, cmd: list[str] | None = None, **popen):
        self.p = subprocess.Popen([*(cmd or [IFDD]), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, **popen)
        self.reader = LineReader(self.p.stdout, self.p)

    @property
    def lines(self) -> list[str]:
        return self.reader.lines

    @property
    def out(self) -> str:
        return self.reader.text

    def signal(self, sig: int) -> None:
        os.kill(self.p.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=60)
            raise AssertionError(f"{self.p.args[0]} did not exit within {timeout}s:\n{self.out[-3000:]}") from None
        self.reader.join()
        return rc

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=60)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None,
             every: float = 0.5) -> None:
    """Poll ``predicate`` until true; AssertionError (with ``proc``'s output) past ``timeout`` or if it exited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.p.poll() is not None:
            raise AssertionError(f"process exited ({proc.p.returncode}) before {what}:\n{proc.out[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.out[-3000:]}" if proc else ""))
        time.sleep(every)
