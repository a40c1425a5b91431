"""The one output root: where every `ifdd` command writes and reads the project's outputs.

``--runs DIR`` (else ``$IFDD_RUNS``, else ``./runs``) holds everything by default::

    <runs>/ray/                  Ray storage: Tune experiments, Train runs and checkpoints   (--storage)
    <runs>/mlflow.db             MLflow's sqlite backend store                               (--tracking-uri)
    <runs>/mlartifacts/          MLflow artifacts of that store
    <runs>/optuna.db             Optuna's studies                (--optuna-storage, $IFDD_OPTUNA_STORAGE)
    <runs>/search/<space>/       one JSON per study, summary.json / summary.md, plots
    <runs>/train/<name>/         `ifdd train` summaries
    <runs>/reports/<space>/      `ifdd report`
    <runs>/launch/<space>.json   jobs submitted by `ifdd launch`
    <runs>/logs/<command>-<time>.log   Ray's, the workers' and the libraries' output of `ifdd search|demo|train`
    <runs>/data/synthetic/       the embedded synthetic DFEW-format set, created on first use
    <runs>/pretrain/<name>/      pretext inits (`ifdd pretrain`; train.init_weights: pretext), created on first use

``--storage``, ``--tracking-uri`` and ``--optuna-storage`` each move one part elsewhere; the rest stays under the
root, so `ifdd report`/`ifdd ui` with the same ``--runs`` always read what a search wrote.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNS_ENV = "IFDD_RUNS"
DEFAULT_RUNS = "runs"
MIN_FREE_MB = 1024
"""Free space a run needs on its storage and runs root before it starts (checkpoints, MLflow store, Optuna db);
``IFDD_MIN_FREE_MB`` overrides it (0 turns the check off)."""


def runs_root(flag: str | None) -> Path:
    """``--runs``, else ``$IFDD_RUNS``, else ``./runs``, as an absolute path (not created)."""
    raw = flag or os.environ.get(RUNS_ENV) or DEFAULT_RUNS
    path = Path(raw).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{'--runs' if flag else RUNS_ENV}: {raw} is a file, not a folder")
    return path


@dataclass(frozen=True)
class Outputs:
    """Resolved output locations of one command."""

    root: Path
    storage: str
    """Ray storage_path: an absolute local path, or a URI such as s3://… (Ray needs one or the other)."""

    @classmethod
    def resolve(cls, runs: str | None = None, storage: str | None = None) -> Outputs:
        root = runs_root(runs)
        if storage and "://" in storage:
            return cls(root, storage)
        return cls(root, str(Path(storage).expanduser().resolve()) if storage else str(root / "ray"))

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def artifact_root(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def default_optuna(self) -> str:
        return f"sqlite:///{self.root / 'optuna.db'}"

    def search_dir(self, space: str) -> Path:
        return self.root / "search" / space

    def train_dir(self, name: str) -> Path:
        return self.root / "train" / name

    def report_dir(self, space: str) -> Path:
        return self.root / "reports" / space

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def launch_dir(self) -> Path:
        return self.root / "launch"

    @property
    def synthetic_dir(self) -> Path:
        return self.root / "data" / "synthetic"

    @property
    def pretrain_dir(self) -> Path:
        return self.root / "pretrain"

    def prepare(self) -> Outputs:
        """Create the root and the local storage folder and check their free space; returns self.

        Raises:
            NotADirectoryError / ValueError: naming --runs or --storage.
        """
        for path, flag in ((self.root, "--runs"), (None if "://" in self.storage else Path(self.storage), "--storage")):
            if path is None:
                continue
            try:
                path.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise NotADirectoryError(f"{flag}: {path} is a file, not a folder") from None
            except OSError as e:
                raise ValueError(f"{flag}: cannot create {path} ({e.strerror})") from None
            check_free_space(path, flag)
        return self

    def describe(self) -> str:
        return f"runs root {self.root} (Ray storage {self.storage})"


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
                         f"(IFDD_MIN_FREE_MB); free some space or point {what} at a larger disk")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
