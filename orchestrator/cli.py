"""The ``ifdd`` command.

Contract (docs/architecture.md, "The CLI contract"): exit 0 on success; exit 2 with a one-line ``error: …`` on stderr,
naming the file/field and what is wrong, on bad input; exit 143 with a ``preempted:`` line after SIGTERM
(orchestrator/preempt.py). Every subcommand has ``--help``. Subcommands are registered by the modules in
``orchestrator/commands``; a command that is not built yet is absent rather than a placeholder.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from orchestrator.commands import cluster as cluster_cmd
from orchestrator.commands import data as data_cmd
from orchestrator.commands import demo as demo_cmd
from orchestrator.commands import launch as launch_cmd
from orchestrator.commands import model as model_cmd
from orchestrator.commands import report as report_cmd
from orchestrator.commands import search as search_cmd
from orchestrator.commands import train as train_cmd
from orchestrator.commands import ui as ui_cmd
from orchestrator.env import no_calls_home
from orchestrator.preempt import PREEMPTED_EXIT, install, preempted, resume_command

COMMAND_GROUPS = [model_cmd, data_cmd, train_cmd, search_cmd, launch_cmd, report_cmd, ui_cmd, demo_cmd,
                  cluster_cmd]


class UsageError(Exception):
    """Bad input detected by a command; printed as ``error: …`` with exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with the CLI contract: a bad flag, a missing argument or an unknown command is one ``error: …`` line
    naming the command (not the whole usage block), exit code 2. Sub-commands inherit the class."""

    def error(self, message: str) -> NoReturn:
        msg = " ".join(message.split())
        self.exit(2, f"error: {self.prog}: {msg} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ifdd",
        description="Distributed hyperparameter search and nested cross-validation for IFDD on DFEW.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    no_calls_home()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    install()  # SIGTERM: stop cleanly, keep checkpoints, exit 143
    try:
        rc = int(args.func(args) or 0)
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if not preempted():
            print("interrupted", file=sys.stderr)
            return 130
        rc = PREEMPTED_EXIT
    except SystemExit:  # Ray Train's SIGINT handler exits after aborting the run
        if not preempted():
            raise
        rc = PREEMPTED_EXIT
    if preempted():
        argv = sys.argv[1:] if argv is None else argv
        print(f"preempted: stopped on SIGTERM; checkpoints and finished trials are kept; continue with: "
              f"{resume_command(argv)}", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT
    return rc


if __name__ == "__main__":
    sys.exit(main())
