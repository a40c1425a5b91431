"""SIGTERM and SIGINT as a clean stop, however the command was started (docs/reliability.md, "Stopping").

SIGTERM (a preempted node, `kill`, a scheduler's stop) takes the path Ctrl-C takes: when Tune or Ray Train has its
own SIGINT handler installed (during a study's or a run's ``fit``), SIGINT is raised so that it stops gracefully
(experiment state saved, the trials' Train checkpoints kept, the study reported as partial); otherwise a
``KeyboardInterrupt`` is raised directly, so the stop never depends on SIGINT being deliverable. A process started
in the background by a non-interactive shell (``nohup ifdd … &``, cron, many supervisors) inherits SIGINT as
*ignored* (docs/stack.md P7); ``restore_sigint`` gives it Python's default handler back, so ``kill -INT`` stops it
too. A watchdog bounds the clean stop: a command still running ``grace_s`` after the first SIGTERM exits at once.

``cli.main`` then prints one line and exits with ``PREEMPTED_EXIT`` (128 + SIGTERM, distinct from an error's 1/2 and
from Ctrl-C's 130). Only a command that can continue prints how (``preempted: … continue with: ifdd … --resume``).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from dataclasses import dataclass

PREEMPTED_EXIT = 143


@dataclass(frozen=True)
class StopMode:
    """How a command stops on SIGTERM: what it says first, how long its clean stop may take."""

    notice: str
    grace_s: float
    resumable: bool


RESUMABLE = StopMode("stopping cleanly and keeping the checkpoints", 120.0, True)
"""search/train/demo: Tune or Train save their state first (seconds on one box; longer to remote storage)."""
SERVER = StopMode("stopping the server", 30.0, False)
ONE_SHOT = StopMode("stopping", 15.0, False)
"""report, data, model, cluster validate, launch: nothing to save; outputs are written atomically."""

_received: list[int] = []
_mode: list[StopMode] = []
_final: list[str] = []
"""The line the command ends with after SIGTERM (``cli.main`` prints it; the watchdog too, should it fire)."""


def _grace(mode: StopMode) -> float:
    raw = os.environ.get("IFDD_STOP_GRACE_S")
    try:
        return float(raw) if raw else mode.grace_s
    except ValueError:
        return mode.grace_s


def _watchdog(grace_s: float) -> None:
    """Exit ``grace_s`` after the first SIGTERM if the clean stop has not finished (a thread pool draining its
    queue, a hung call); Ray's reaper process then stops a local Ray's processes."""
    def expire() -> None:
        print(f"ifdd: still running {grace_s:g} s after SIGTERM; exiting now (IFDD_STOP_GRACE_S)", file=sys.stderr,
              flush=True)
        if _final:
            print(_final[0], file=sys.stderr, flush=True)
        os._exit(PREEMPTED_EXIT)

    timer = threading.Timer(grace_s, expire)
    timer.daemon = True
    timer.start()


def _on_sigterm(signum, frame) -> None:
    first = not _received
    _received.append(signum)
    mode = _mode[0] if _mode else RESUMABLE
    if first:
        print(f"ifdd: SIGTERM received: {mode.notice}", file=sys.stderr, flush=True)
        _watchdog(_grace(mode))
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        signal.raise_signal(signal.SIGINT)  # Tune's / Ray Train's own graceful stop
    else:
        raise KeyboardInterrupt


def restore_sigint() -> bool:
    """Give SIGINT Python's default handler back when it was inherited as ignored; True if it was."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return True
    return False


def install(mode: StopMode = RESUMABLE, final_line: str = "") -> None:
    """Route SIGTERM to a clean stop (main thread only, as Python requires); ``final_line`` is what the command
    ends with after it. ``ray.init`` replaces the handler with Ray's own (it aborts the process), so ``init_ray``
    calls ``reinstall`` after it."""
    if threading.current_thread() is threading.main_thread():
        _mode[:] = [mode]
        _final[:] = [final_line] if final_line else []
        signal.signal(signal.SIGTERM, _on_sigterm)


def reinstall() -> None:
    """Take SIGTERM back after ``ray.init`` if the CLI installed the handler (library callers are left alone)."""
    if _mode and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def final_line(argv: list[str], mode: StopMode) -> str:
    """What a command stopped by SIGTERM says last: how to continue it, or that there is nothing to continue."""
    if mode.resumable:
        return (f"preempted: stopped on SIGTERM; checkpoints and finished trials are kept; continue with: "
                f"{resume_command(argv)}")
    words = [a for a in argv[:2] if not a.startswith("-")]  # `data synth`, `launch`, `report`
    return f"stopped: SIGTERM received; ifdd {' '.join(words)} did not finish (nothing to resume)"


def preempted() -> bool:
    return bool(_received)


def resume_command(argv: list[str]) -> str:
    """The command that continues this run: ``--fresh`` dropped, ``--resume`` added for search/demo."""
    args = [a for a in argv if a != "--fresh"]
    if args and args[0] in ("search", "demo") and "--resume" not in args:
        args.append("--resume")
    return "ifdd " + shlex.join(args)
