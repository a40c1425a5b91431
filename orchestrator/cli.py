"""The ``ifdd`` command.

Contract (docs/architecture.md, "The CLI contract"): exit 0 on success; exit 2 with a one-line ``error: …`` on stderr,
naming the file/field and what is wrong, on bad input; exit 143 after SIGTERM (orchestrator/preempt.py), with a
``preempted: … continue with: …`` line for the commands that can continue (search, train, demo) and a plain
``stopped:`` line for the others; `ifdd ui` treats SIGTERM like Ctrl-C, its normal stop (exit 0). Every subcommand
has ``--help``. Subcommands are registered by the modules in
``orchestrator/commands``; a command that is not built yet is absent rather than a placeholder.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from orchestrator import preempt
from orchestrator.commands import cluster as cluster_cmd
from orchestrator.commands import data as data_cmd
from orchestrator.commands import demo as demo_cmd
from orchestrator.commands import launch as launch_cmd
from orchestrator.commands import model as model_cmd
from orchestrator.commands import pretrain as pretrain_cmd
from orchestrator.commands import report as report_cmd
from orchestrator.commands import search as search_cmd
from orchestrator.commands import train as train_cmd
from orchestrator.commands import ui as ui_cmd
from orchestrator.env import no_calls_home

COMMAND_GROUPS = [model_cmd, data_cmd, pretrain_cmd, train_cmd, search_cmd, launch_cmd, report_cmd, ui_cmd, demo_cmd,
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


def stop_mode(args: argparse.Namespace) -> preempt.StopMode:
    """How ``args.command`` stops on SIGTERM: search/train/demo keep checkpoints and can continue; ui stops its
    server; the rest (report, data, model, cluster, launch) have nothing to continue."""
    if args.command in ("search", "train", "demo"):
        return preempt.RESUMABLE
    return preempt.SERVER if args.command == "ui" else preempt.ONE_SHOT


def main(argv: list[str] | None = None) -> int:
    no_calls_home()
    preempt.restore_sigint()  # ignored when inherited from `nohup … &`, cron, supervisors: kill -INT must stop us
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    mode = stop_mode(args)
    last = preempt.final_line(sys.argv[1:] if argv is None else argv, mode)
    preempt.install(mode, last)  # SIGTERM: a clean stop, exit 143
    try:
        if mode is preempt.RESUMABLE:
            from orchestrator.ray_session import check_cluster_token

            check_cluster_token(getattr(args, "address", None))  # joining a cluster: its token, before any work
        rc = int(args.func(args) or 0)
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if not preempt.preempted():
            print("interrupted", file=sys.stderr)
            return 130
        rc = preempt.PREEMPTED_EXIT
    except SystemExit:  # Ray Train's SIGINT handler exits after aborting the run
        if not preempt.preempted():
            raise
        rc = preempt.PREEMPTED_EXIT
    if not preempt.preempted():
        return rc
    if mode is preempt.SERVER:
        return 0  # SIGTERM is a server's normal stop, as Ctrl-C is
    print(last, file=sys.stderr, flush=True)
    return preempt.PREEMPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
