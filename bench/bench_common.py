"""Shared pieces of the science benchmarks (search.py, ablation.py, overhead.py): an in-memory synthetic set and one
in-process training run built from the project's own engine, model, loss and run config.

The set is the project's synthetic DFEW tree (``ifdd.data.synth``: H.264 mp4s, 16 frames at 64²), indexed with
``ifdd.data.manifest`` and decoded once by ``ClipDataset`` (decord + the eval transform) at ``FRAMES`` × ``SIZE``²,
so every run reads the same tensors from memory instead of decoding. Fold membership (inner-train / inner-val /
test) is the manifest's, exactly what ``ifdd train`` and ``ifdd search`` use.

``fit`` runs ``ifdd.engine.fit``, the epoch loop the Ray Train workers of ``ifdd search`` run, in this process;
the checkpoint is chosen on the selection split (inner-val in the nested protocol) and only that checkpoint is
evaluated once on the test fold.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ifdd.engine import evaluate
from ifdd.engine import fit as engine_fit
from ifdd.model import build_model
from ifdd.pipeline import build_training
from ifdd.runconfig import RunConfig
from ifdd.weights import load_init_weights

FRAMES, SIZE = 8, 32
"""Clip shape the benchmarks train on: 8 of the 16 synthetic frames (uniform) at 32², the pretext init's own shape
(``ifdd pretrain``'s default recipe). Measured in ``make bench`` on the 2-core box, one torch thread, fold 1 (517
inner-train clips), the full tiny IFDD from the pretext init: about 2.3 s per epoch at 8×32² in a plain process
(3.0 s inside a Tune trial), against about 10 s at 8×64², and as early a curve: inner-val UAR 0.38-0.55 at epoch 1
over 5 seeds (0.55-0.61 at 8×64², docs/proxy.md). From scratch the model stays near chance at either size (8×32²:
it memorised the training clips over 10 epochs)."""
SOURCE_SIZE, SOURCE_FRAMES = 64, 16
BENCH_MODEL = {"preset": "tiny", "num_frames": FRAMES, "image_size": SIZE, "head_dropout": 0.0, "drop_path": 0.0,
               "ladm_drop_path": 0.0}
"""``model`` section of every benchmark run config (the tiny preset at the benchmark clip shape)."""


def pretext_init(workdir: Path, quick: bool = False) -> tuple[str, dict[str, Any]]:
    """(checkpoint path, record) of the benchmark model's default pretext init (``train.init_weights: pretext``)
    under ``workdir/runs/pretrain/``, made or reused by ``orchestrator.inputs.ensure_default_pretext`` as for
    ``ifdd search`` (the package ships it); with ``quick``, a one-epoch init of 64 clips instead (a pipeline check,
    written beside it)."""
    import dataclasses

    from ifdd.pretrain import default_name, default_recipe, ensure_pretext, read_record
    from ifdd.runconfig import run_config_from_dict
    from orchestrator.inputs import ensure_default_pretext
    from orchestrator.outputs import Outputs

    cfg = run_config_from_dict({"model": BENCH_MODEL})
    out = Outputs.resolve(str(workdir / "runs"))
    if not quick:
        path = ensure_default_pretext(cfg, out)
        return str(path), read_record(path.parent)
    recipe = dataclasses.replace(default_recipe(cfg.model), train_clips=64, val_clips=24, epochs=1, warmup_epochs=0)
    path, record, _ = ensure_pretext(cfg.model, recipe, out.pretrain_dir / default_name(cfg.model, recipe))
    return str(path), record


@dataclass
class MemoryData:
    video: torch.Tensor
    """(N, 3, T, S, S) float in [0, 1], decoded once."""
    label: torch.Tensor
    clip_id: list[str]
    folds: dict[int, dict[str, np.ndarray]]
    """fold -> role (train | val | test | trainval) -> row indices into ``video``."""
    description: str

    def split(self, fold: int, role: str) -> ClipTensors:
        return ClipTensors(self, self.folds[fold][role])

    def counts(self, fold: int, role: str, num_classes: int = 7) -> list[int]:
        idx = self.folds[fold][role]
        return [int(c) for c in np.bincount(self.label[idx].numpy(), minlength=num_classes)[:num_classes]]


class ClipTensors(Dataset):
    """Dict samples ``{video, label, clip_id}`` (what ``ClipDataset`` gives) from the decoded tensors."""

    def __init__(self, data: MemoryData, idx: np.ndarray):
        self.data, self.idx = data, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(self.idx[i])
        return {"video": self.data.video[j], "label": self.data.label[j], "clip_id": self.data.clip_id[j]}


def synthetic_memory(workdir: Path, clips_per_class: int = 100, min_per_class: int = 25, seed: int = 0
                     ) -> MemoryData:
    """Write (once, reused when present) and decode the synthetic set; ``workdir`` keeps the mp4 tree."""
    from ifdd.data.dataset import ClipDataset
    from ifdd.data.manifest import build_manifest, load_manifest, write_manifest
    from ifdd.data.synth import write_synthetic

    root, manifest = workdir / "dfew", workdir / "manifest.parquet"
    marker = workdir / "params.json"
    params = {"clips_per_class": clips_per_class, "min_per_class": min_per_class, "seed": seed,
              "size": SOURCE_SIZE, "frames": SOURCE_FRAMES}
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".lock", "a") as lock:  # scripts run side by side (run_all --quick) write it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (manifest.is_file() and marker.is_file() and json.loads(marker.read_text()) == params):
            write_synthetic(root, clips_per_class=clips_per_class, min_per_class=min_per_class, seed=seed,
                            size=SOURCE_SIZE, frames=SOURCE_FRAMES, fmt="mp4", workers=2)
            write_manifest(build_manifest(root, workers=2), manifest)
            marker.write_text(json.dumps(params))
    df = load_manifest(manifest)
    ds = ClipDataset(df, 1, "trainval", frames=FRAMES, size=SIZE, train=False)
    test = ClipDataset(df, 1, "test", frames=FRAMES, size=SIZE, train=False)
    samples = [ds[i] for i in range(len(ds))] + [test[i] for i in range(len(test))]
    ids = [str(s["clip_id"]) for s in samples]
    pos = {c: i for i, c in enumerate(ids)}
    ok = df[df["status"].eq("ok")]
    folds = {}
    for k in range(1, 6):
        col = ok[f"fold{k}"].to_numpy()
        rows = np.array([pos[str(c)] for c in ok["clip_id"]])
        folds[k] = {r: np.sort(rows[col == r]) for r in ("train", "val", "test")}
        folds[k]["trainval"] = np.sort(np.concatenate([folds[k]["train"], folds[k]["val"]]))
    return MemoryData(torch.stack([s["video"] for s in samples]), torch.tensor([int(s["label"]) for s in samples]),
                      ids, folds, f"synthetic DFEW-format set, {len(ids)} clips (seed {seed}), H.264 "
                                  f"{SOURCE_FRAMES}×{SOURCE_SIZE}² decoded to {FRAMES}×{SIZE}²")


def fit(cfg: RunConfig, data: MemoryData, fold: int, *, selection: str = "val", test: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train ``cfg`` on ``fold`` in this process with ``ifdd.engine.fit`` (the loop ``ifdd search`` runs); returns
    the history, the selected epoch and, for the nested protocol, its single test evaluation.

    ``selection="val"``: train on inner-train, pick the epoch with the best ``cfg.train.select_metric`` on
    inner-val, then evaluate those weights once on the test fold (the nested protocol of ``ifdd train``).
    ``cfg.train.init_weights`` initialises the backbone as the Ray Train worker does (``ifdd.weights``).
    """
    train_role, sel_role = {"val": ("train", "val"), "test": ("trainval", "test")}[selection]
    torch.manual_seed(cfg.train.seed)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    train = DataLoader(data.split(fold, train_role), batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                       generator=gen)
    val = DataLoader(data.split(fold, sel_role), batch_size=cfg.train.eval_batch_size)
    model = build_model(cfg.model)
    init = load_init_weights(model, cfg.train.init_weights).summary() if cfg.train.init_weights else "scratch"
    parts = build_training(cfg, model, data.counts(fold, train_role), steps_per_epoch=len(train), device="cpu")
    state = engine_fit(model, train, val, parts.loss_fn, parts.optimizer, parts.schedule,
                       epochs=cfg.train.epochs, select_metric=cfg.train.select_metric, device="cpu",
                       num_classes=cfg.model.num_classes, max_steps=cfg.train.max_steps_per_epoch,
                       on_epoch=None if on_epoch is None else lambda m, _s: on_epoch({**m, "time": time.time()}))
    best = {"epoch": state.best["epoch"], "value": state.best["value"], **state.best["metrics"]}
    out = {"history": state.history, "best": best, "train_s": sum(h["epoch_s"] for h in state.history),
           "init": init}
    if test and selection == "val":
        model.load_state_dict(state.best_weights)
        t = evaluate(model, DataLoader(data.split(fold, "test"), batch_size=cfg.train.eval_batch_size),
                     device="cpu", num_classes=cfg.model.num_classes)
        out["test"] = {"uar": t["uar"], "war": t["war"], "clips": t["clips"]}
    return out


_POOL_DATA: MemoryData | None = None


def _pool_init(workdir: str, clips_per_class: int) -> None:
    global _POOL_DATA
    torch.set_num_threads(1)
    _POOL_DATA = synthetic_memory(Path(workdir), clips_per_class=clips_per_class)


def pool_data() -> MemoryData:
    """The decoded set, in a process of ``map_in_pool``."""
    if _POOL_DATA is None:
        raise RuntimeError("pool_data(): only in a process started by map_in_pool")
    return _POOL_DATA


def map_in_pool(fn: Callable[[dict[str, Any]], dict[str, Any]], jobs: Iterable[dict[str, Any]], workdir: Path,
                clips_per_class: int, procs: int = 2) -> Iterator[dict[str, Any]]:
    """``fn(job)`` for every job, in job order, in ``procs`` spawned processes of one torch thread each, each holding
    the decoded set of ``synthetic_memory(workdir, clips_per_class)`` (written before, by the caller)."""
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_init,
                             initargs=(str(workdir), clips_per_class)) as pool:
        yield from pool.map(fn, jobs)


def machine() -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "load_avg_1min_at_start": load}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"wrote {path}", flush=True)
