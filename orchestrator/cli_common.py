"""Options and defaults shared by the `ifdd` subcommands (all project outputs live under ``runs/``)."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

DEFAULT_STORAGE = "runs/ray"
MIN_FREE_MB = 1024
"""Free space a run needs on its storage and runs/ paths before it starts (checkpoints, MLflow store, Optuna db);
``IFDD_MIN_FREE_MB`` overrides it (0 turns the check off)."""


def add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Ray storage_path for runs and checkpoints (default {DEFAULT_STORAGE}); shared storage "
                        "(NFS, s3://…) on a multi-node cluster")


def resolve_storage(args: argparse.Namespace) -> str:
    """Absolute local path (Ray needs one), or a URI such as s3://… unchanged."""
    s = args.storage
    if "://" in s:
        return s
    path = Path(s).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"--storage: {s} is a file, not a folder") from None
    except OSError as e:
        raise ValueError(f"--storage: cannot create {s} ({e.strerror})") from None
    check_free_space(path, "--storage")
    check_free_space(path.parent, "--storage (its parent holds runs/: MLflow, Optuna, summaries)")
    return str(path)


def check_free_space(path: Path, what: str) -> None:
    """ValueError naming ``what`` if ``path``'s filesystem has less than IFDD_MIN_FREE_MB (default 1024) free."""
    raw = os.environ.get("IFDD_MIN_FREE_MB", str(MIN_FREE_MB))
    try:
        need = float(raw)
    except ValueError:
        raise ValueError(f"IFDD_MIN_FREE_MB: expected a number of MiB, got {raw!r}") from None
    free = shutil.disk_usage(path).free / 2**20
    if free < need:
        raise ValueError(f"{what}: {path} has {free:.0f} MiB free, below the {need:g} MiB a run needs "
                         "(IFDD_MIN_FREE_MB); free some space or point --storage at a larger disk")


def add_tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///<abs>/runs/mlflow.db with artifacts in "
                        "runs/mlartifacts); postgresql+psycopg2://USER@HOST:PORT/DB for a PostgreSQL backend store "
                        "(password in PGPASSWORD or ~/.pgpass, never in the URL); http://HOST:PORT for a tracking "
                        "server every node can reach")
    p.add_argument("--optuna-storage", default=None,
                   help="Optuna storage (default: $IFDD_OPTUNA_STORAGE, else sqlite:///<abs>/runs/optuna.db); "
                        "postgresql+psycopg2://USER@HOST:PORT/DB puts the studies in PostgreSQL (a database of its "
                        "own, not MLflow's; password in PGPASSWORD or ~/.pgpass)")
