"""Checkpoint files and RNG state for resumable training; plain PyTorch, no Ray.

``save_checkpoint`` writes atomically (temp file in the same directory, fsync, ``os.replace``) with a SHA-256
sidecar that stays valid through a crash at any point; ``load_checkpoint`` verifies it and loads with
``weights_only=True``, so a checkpoint holds only tensors, primitives and dicts/lists of them;
``load_first_valid`` falls back to an older checkpoint directory when the newest fails its checksum.
``capture_rng_state`` packs every generator's state in that form.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_first_valid", "capture_rng_state",
           "restore_rng_state"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing its checksum, is corrupt, or holds objects ``weights_only`` refuses."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_temp(directory: Path, name: str, write: Callable[[Any], Any]) -> Path:
    """Write a hidden temp file next to the target and fsync it; removed again if writing fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause: BaseException | None = e
        while cause is not None:  # torch.save wraps an ENOSPC from the file in a RuntimeError
            if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
                raise OSError(errno.ENOSPC, f"no space left on device writing {directory / name}; the previous "
                                            "checkpoint is kept") from e
            cause = cause.__cause__ or cause.__context__
        raise
    return Path(tmp)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform/filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> str:
    """Write ``state`` to ``path`` atomically, with its SHA-256 in ``<path>.sha256``; returns the digest.

    ``state`` must hold only tensors, numbers, strings, None and dicts/lists of them (``torch.load`` reads it back
    with ``weights_only=True``): configs as plain dicts, RNG states from ``capture_rng_state``. Every file is written
    to a temp file in the same directory, fsynced, then renamed over the old one, and the checksum file lists the
    digests the checkpoint may have at that moment, so a crash at any point (even between two renames) leaves a
    checkpoint that verifies: the previous one or the new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = path.with_name(path.name + ".sha256")
    previous = _recorded(sidecar)[:1] if path.is_file() else []
    temps: list[Path] = []

    def put_sidecar(digests: list[str]) -> None:
        text = "".join(f"{d}  {path.name}\n" for d in digests)
        temps.append(_write_temp(path.parent, sidecar.name, lambda f: f.write(text.encode())))
        os.replace(temps[-1], sidecar)

    try:
        temps.append(_write_temp(path.parent, path.name, lambda f: torch.save(state, f)))
        data, digest = temps[-1], _sha256(temps[-1])
        put_sidecar([digest, *previous])  # the old file and the new one both verify while the data is renamed
        os.replace(data, path)
        put_sidecar([digest])
    finally:
        for tmp in temps:  # only left over if something above failed
            tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return digest


def _recorded(sidecar: Path) -> list[str]:
    """The digests a checksum file lists (one ``<sha256>  <name>`` line each)."""
    if not sidecar.is_file():
        return []
    return [line.split()[0] for line in sidecar.read_text().splitlines() if line.split()]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify ``path`` against ``<path>.sha256`` and load it with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such checkpoint.
        CheckpointError: the checksum file is missing, the digest differs (corrupt or partly written), or the file
            holds objects that ``weights_only`` loading refuses.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    if not sidecar.is_file():
        raise CheckpointError(f"checkpoint {path}: checksum file {sidecar.name} is missing")
    recorded = _recorded(sidecar)
    actual = _sha256(path)
    if actual not in recorded:
        raise CheckpointError(f"checkpoint {path}: SHA-256 mismatch (file {actual[:16]}…, recorded "
                              f"{recorded[0][:16] if recorded else 'nothing'}…); the file is corrupt or was partly "
                              "written")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: cannot be loaded with weights_only=True: {e}") from e


def checkpoint_dirs_newest_first(run_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint_<timestamp>`` folders of a run that hold a ``state.pt``, newest first (the names sort by
    time): the candidates of ``load_first_valid`` for a resume or a read of the run's history."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted((p for p in run_dir.glob("checkpoint_*") if (p / "state.pt").is_file()), key=lambda p: p.name,
                  reverse=True)


def load_first_valid(dirs: Sequence[str | os.PathLike], names: Sequence[str], map_location: str | torch.device = "cpu",
                     warn: Callable[[str], None] | None = None) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Load ``names`` from the first of ``dirs`` (newest first) whose files all verify; warn about each one skipped.

    ``names[0]`` must exist in a usable directory, the others are loaded when present. A directory whose files fail
    their checksum (corrupt, or cut short by a crash or a full disk) is skipped with a warning naming the file and
    the directory used instead, so a resume falls back to the previous checkpoint rather than failing or loading a
    damaged one.

    Raises:
        CheckpointError: no directory holds a usable checkpoint (the message lists why each was refused).
    """
    warn = warn or (lambda msg: warnings.warn(msg, stacklevel=3))
    refused: list[str] = []
    for d in map(Path, dirs):
        try:
            loaded = {n: load_checkpoint(d / n, map_location) for n in names if n == names[0] or (d / n).exists()}
        except (CheckpointError, FileNotFoundError) as e:
            refused.append(" ".join(str(e).split()))
            continue
        if refused:
            warn(f"skipped {len(refused)} unusable checkpoint(s) ({'; '.join(refused)}); resuming from {d}")
        return d, loaded
    raise CheckpointError("no usable checkpoint: " + ("; ".join(refused) or "no checkpoint directories"))


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if present) CUDA generator states, as tensors and primitives only."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``. CUDA states are restored only when CUDA is available (device count may
    differ from the run that saved them: the common prefix is restored)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
