"""SIGTERM (a preempted node, `kill`, a scheduler's stop) as a clean stop: save, say how to resume, exit 143.

The handler turns SIGTERM into the SIGINT path that is already clean: Tune's own SIGINT handler stops a study
gracefully (experiment state saved, trials' Train checkpoints kept, the study reported as partial), and ``ifdd
train`` ends with a KeyboardInterrupt after Ray Train has persisted its last checkpoint. ``cli.main`` then prints
one ``preempted:`` line with the command that continues the run and exits with ``PREEMPTED_EXIT`` (128 + SIGTERM,
distinct from an error's 1/2 and from Ctrl-C's 130).
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading

PREEMPTED_EXIT = 143
_received: list[int] = []


def _on_sigterm(signum, frame) -> None:
    first = not _received
    _received.append(signum)
    if first:
        print("ifdd: SIGTERM received: stopping cleanly and keeping the checkpoints", file=sys.stderr, flush=True)
    signal.raise_signal(signal.SIGINT)


_installed: list[bool] = []


def install() -> None:
    """Route SIGTERM through the graceful SIGINT path (main thread only, as Python requires). ``ray.init``
    replaces the handler with Ray's own (it aborts the process), so ``init_ray`` calls ``reinstall`` after it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        _installed.append(True)


def reinstall() -> None:
    """Take SIGTERM back after ``ray.init`` if the CLI installed the handler (library callers are left alone)."""
    if _installed:
        install()


def preempted() -> bool:
    return bool(_received)


def resume_command(argv: list[str]) -> str:
    """The command that continues this run: ``--fresh`` dropped, ``--resume`` added for search/demo."""
    args = [a for a in argv if a != "--fresh"]
    if args and args[0] in ("search", "demo") and "--resume" not in args:
        args.append("--resume")
    return "ifdd " + shlex.join(args)
