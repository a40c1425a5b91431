"""Options and defaults shared by the `ifdd` subcommands (all project outputs live under ``runs/``)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_STORAGE = "runs/ray"


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
    return str(path)


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
