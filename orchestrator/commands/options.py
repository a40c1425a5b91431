"""Flags shared by the `ifdd` subcommands: the output root and its overrides, the fold list."""

from __future__ import annotations

import argparse

from orchestrator.outputs import RUNS_ENV, Outputs


def add_runs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default=None,
                   help=f"the project's output root (default ${RUNS_ENV}, else ./runs): Ray storage, the MLflow and "
                        "Optuna stores, summaries, reports and launch records all live under it")


def add_output_args(p: argparse.ArgumentParser, *, stores: bool = True) -> None:
    """``--runs`` and ``--storage``; with ``stores`` also ``--tracking-uri`` and ``--optuna-storage``."""
    add_runs_arg(p)
    p.add_argument("--storage", default=None,
                   help="Ray storage_path for runs and checkpoints (default <runs>/ray); shared storage (NFS, "
                        "s3://…) on a multi-node cluster")
    if stores:
        add_store_args(p)


def add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///<runs>/mlflow.db with artifacts in "
                        "<runs>/mlartifacts); postgresql+psycopg2://USER@HOST:PORT/DB for a PostgreSQL backend store "
                        "(password in PGPASSWORD or ~/.pgpass, never in the URL); http://HOST:PORT for a tracking "
                        "server every node can reach")
    p.add_argument("--optuna-storage", default=None,
                   help="Optuna storage (default: $IFDD_OPTUNA_STORAGE, else sqlite:///<runs>/optuna.db); "
                        "postgresql+psycopg2://USER@HOST:PORT/DB puts the studies in PostgreSQL (a database of its "
                        "own, not MLflow's; password in PGPASSWORD or ~/.pgpass)")


def add_verbose_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="also show here what goes to the log file <runs>/logs/<command>-<time>.log: every epoch "
                        "line, Ray's and the workers' output, the libraries' INFO logging")


def outputs(args: argparse.Namespace) -> Outputs:
    """The command's output locations from ``--runs``/``--storage`` (not created yet)."""
    return Outputs.resolve(getattr(args, "runs", None), getattr(args, "storage", None))


def parse_folds(text: str | None) -> tuple[int, ...] | None:
    """``1-5``, ``1,3`` or ``2`` -> a tuple of folds (ValueError naming --folds otherwise)."""
    if text is None:
        return None
    folds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            folds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--folds: expected e.g. 1-5, 1,3 or 2, got {text!r}") from None
    if not folds or any(not 1 <= f <= 5 for f in folds) or len(set(folds)) != len(folds):
        raise ValueError(f"--folds: distinct folds in 1-5, got {text!r}")
    return tuple(folds)
