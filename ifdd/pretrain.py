"""Pretext pretraining (``ifdd pretrain``): a preset's backbone trained on synthetic actions (``ifdd.data.pretext``),
the small-scale stand-in for the Kinetics-400 initialisation of the real study.

``pretrain`` renders the pretext set in memory, trains the preset's architecture on it with ``ifdd.engine.fit`` (the
project's one epoch loop; the checkpoint kept is the epoch with the best held-out pretext accuracy) and writes

- ``pretext.pt`` (+ ``.sha256``, ``ifdd.checkpoint.save_checkpoint``): ``format`` ``ifdd-pretext``, the selected
  epoch's ``model`` state dict (backbone, fusion and the pretext head; ``ifdd.weights`` copies the backbone), the
  pretext ``config`` and the ``record`` below;
- ``pretext.json``: the record: generator version, seed, clips, steps, data hash, pretext accuracy per epoch and at
  the selected epoch, wall time, the recipe.

The pretext model is the preset's backbone and pyramid fusion with the plain mean-pooled head (ISSM/LADM off): the
Kinetics analogue is a generic video classifier, and the fine-tune rebuilds ISSM, LADM and the head from scratch
anyway. ``default_name`` keys a recipe + architecture, so a changed recipe or generator gives a new file instead of
silently reusing an old one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ifdd.checkpoint import save_checkpoint
from ifdd.config import PRESETS, LossConfig, ModelConfig, OptimConfig, to_dict
from ifdd.data.pretext import PRETEXT_CLASSES, PRETEXT_VERSION, data_hash, make_pretext
from ifdd.engine import LRSchedule, build_optimizer, fit
from ifdd.loss import IFDDLoss
from ifdd.model import build_model
from ifdd.weights import PRETEXT_FORMAT

__all__ = ["PretextRecipe", "pretext_model_config", "default_recipe", "default_name", "pretrain", "ensure_pretext",
           "read_record", "CHECKPOINT", "RECORD"]

CHECKPOINT, RECORD = "pretext.pt", "pretext.json"
SHIPPED = Path(__file__).resolve().parent / "pretrained"
"""Pretext inits shipped with the package, one folder per ``default_name`` (made by ``ifdd pretrain``; each
folder's pretext.json says how): a first use copies the matching one instead of pretraining (docs/proxy.md)."""
_ARCH_FIELDS = ("in_chans", "input_norm", "linear_init", "embed_dim", "num_heads", "stage_depths", "kv_stride",
                "pool_kernel", "mlp_ratio")
"""ModelConfig fields that make the backbone: its tensors' shapes (clip length and size only resize rel-pos
tables), its input scaling and its initialisation."""


@dataclass(frozen=True)
class PretextRecipe:
    """How a pretext init is made. Defaults: the tiny preset's init, a few minutes on 2 CPU cores."""

    frames: int = 8
    size: int = 32
    """Pretext clip side: half the tiny fine-tune's 64² (4× fewer pixels per clip; the rel-pos tables are
    resized when the fine-tune loads the init, as MViTv2 does between resolutions)."""
    train_clips: int = 2000
    """Fresh training clips per epoch (each epoch draws new ones, see ``_FreshPerEpoch``)."""
    val_clips: int = 240
    epochs: int = 24
    """At most this many epochs; training ends at the first epoch whose held-out accuracy reaches
    ``target_accuracy``."""
    target_accuracy: float = 0.25
    """Held-out pretext accuracy (chance 1/12) that counts as past the plateau: the tiny model sits at chance for
    1,000–3,000 steps, then climbs; a fine-tune from an init taken just after that starts learning at once
    (docs/proxy.md). 1.0: always run every epoch."""
    batch_size: int = 16
    lr: float = 3e-4
    """Effective AdamW learning rate (no batch scaling), constant after the warm-up: the stop is adaptive, so a
    decay over ``epochs`` would only slow the escape from the plateau."""
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    min_lr_ratio: float = 1.0
    render_workers: int = 1
    """DataLoader worker processes rendering clips while the model trains (0: render in the training process)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(f"target_accuracy: must be in (0, 1], got {self.target_accuracy}")
        if self.render_workers < 0:
            raise ValueError(f"render_workers: must be >= 0, got {self.render_workers}")
        for name in ("frames", "size", "train_clips", "val_clips", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs: must be in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        if self.train_clips < self.batch_size:
            raise ValueError(f"train_clips: {self.train_clips} is below one batch ({self.batch_size})")


def pretext_model_config(model: ModelConfig, recipe: PretextRecipe) -> ModelConfig:
    """The target's architecture at the pretext clip shape, with a pretext head and no ISSM/LADM or dropout."""
    return dataclasses.replace(model, num_classes=len(PRETEXT_CLASSES), num_frames=recipe.frames,
                               image_size=recipe.size, use_issm=False, use_ladm=False, drop_path=0.0,
                               head_dropout=0.0, ladm_drop_path=0.0)


def _arch(model: ModelConfig) -> dict[str, Any]:
    return {f: (list(v) if isinstance(v := getattr(model, f), tuple) else v) for f in _ARCH_FIELDS}


def _preset_of(model: ModelConfig) -> str:
    """The preset whose backbone ``model`` has, else ``custom``."""
    for name, values in PRESETS.items():
        if _arch(ModelConfig(**values)) == _arch(model):
            return name
    return "custom"


def default_name(model: ModelConfig, recipe: PretextRecipe) -> str:
    """Folder name of an init: ``<preset>-<T>x<S>-v<generator>-s<seed>-<hash of architecture + recipe>``."""
    key = json.dumps({"arch": _arch(model), "recipe": dataclasses.asdict(recipe), "generator": PRETEXT_VERSION},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"{_preset_of(model)}-{recipe.frames}x{recipe.size}-v{PRETEXT_VERSION}-s{recipe.seed}-{digest}"


class _Clips(Dataset):
    """Dict samples ``{video (3, T, S, S) float in [0, 1], label, clip_id}`` from rendered uint8 clips."""

    def __init__(self, video: np.ndarray, labels: np.ndarray, start: int):
        self.video, self.labels, self.start = video, labels, start

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return _sample(self.video[i], int(self.labels[i]), self.start + i)


def _sample(clip: np.ndarray, label: int, index: int) -> dict[str, Any]:
    video = torch.from_numpy(clip).permute(3, 0, 1, 2).float().div_(255.0)  # (T,S,S,3) -> (3,T,S,S)
    return {"video": video, "label": label, "clip_id": f"pretext-{index}"}


class _Stream(Dataset):
    """The pretext training set rendered on demand: item ``i`` is clip ``i`` of the generator (class i mod K), so
    the same index gives the same pixels in any worker."""

    def __init__(self, recipe: PretextRecipe):
        self.recipe = recipe

    def __len__(self) -> int:
        return self.recipe.epochs * self.recipe.train_clips

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.recipe
        video, labels = make_pretext(1, frames=r.frames, size=r.size, seed=r.seed, start=int(i))
        return _sample(video[0], int(labels[0]), int(i))


class _FreshPerEpoch(Sampler[int]):
    """Epoch ``e`` (``fit`` calls ``set_epoch``) visits clips ``(e−1)·n … e·n − 1`` of the stream in a seeded
    order: no clip is seen twice, so the model cannot pass the pretext by memorising clips (measured in
    docs/proxy.md: on a fixed set of 2,400 clips the tiny model drove its training loss to 1.2 with held-out
    accuracy at chance)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        return iter(((self.epoch - 1) * self.n + order).tolist())


def pretrain(model: ModelConfig, recipe: PretextRecipe, out_dir: str | Path, *,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``model``'s backbone on the pretext set and write ``pretext.pt`` + ``pretext.json`` into ``out_dir``.

    Returns the record written to ``pretext.json``.
    """
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    cfg = pretext_model_config(model, recipe)
    held = recipe.epochs * recipe.train_clips  # held-out clips come after every training clip
    val_video, val_labels = make_pretext(recipe.val_clips, frames=recipe.frames, size=recipe.size, seed=recipe.seed,
                                         start=held)
    log(f"pretext: {recipe.epochs} x {recipe.train_clips} fresh training clips (rendered as they are drawn, none "
        f"seen twice) + {recipe.val_clips} held-out clips of {len(PRETEXT_CLASSES)} action classes at "
        f"{recipe.frames}x{recipe.size}²")
    torch.manual_seed(recipe.seed)
    train = DataLoader(_Stream(recipe), batch_size=recipe.batch_size, drop_last=True,
                       sampler=_FreshPerEpoch(recipe.train_clips, recipe.seed), num_workers=recipe.render_workers,
                       persistent_workers=recipe.render_workers > 0)
    val = DataLoader(_Clips(val_video, val_labels, held), batch_size=64)
    net = build_model(cfg)
    optim = OptimConfig(lr=recipe.lr, lr_scale_batch=False, weight_decay=recipe.weight_decay,
                        warmup_epochs=recipe.warmup_epochs, min_lr_ratio=recipe.min_lr_ratio)
    optimizer = build_optimizer(net, optim, recipe.batch_size)
    schedule = LRSchedule.from_config(optimizer, optim, global_batch=recipe.batch_size, epochs=recipe.epochs,
                                      steps_per_epoch=len(train))
    loss_fn = IFDDLoss(LossConfig(label_smoothing=0.0, lambda_gc=0.0), cfg.num_classes)

    def on_epoch(m: dict[str, Any], state: Any) -> None:
        log(f"pretext epoch {m['epoch']}/{recipe.epochs}: train loss {m['train_loss']:.3f}, held-out accuracy "
            f"{m['val_war']:.3f} (chance {1 / cfg.num_classes:.3f}, target {recipe.target_accuracy:.2f}), "
            f"{m['clips_per_s']:.0f} clips/s")
        if m["val_war"] >= recipe.target_accuracy:
            state.stop_reason = f"held-out accuracy {m['val_war']:.3f} reached the target {recipe.target_accuracy}"

    state = fit(net, train, val, loss_fn, optimizer, schedule, epochs=recipe.epochs, select_metric="val_war",
                device="cpu", num_classes=cfg.num_classes, on_epoch=on_epoch)
    if state.best_weights is None:
        raise RuntimeError(f"pretext training stopped before its first epoch finished: {state.stop_reason}")
    record = {
        "format": PRETEXT_FORMAT, "generator": "ifdd.data.pretext", "generator_version": PRETEXT_VERSION,
        "classes": list(PRETEXT_CLASSES), "seed": recipe.seed, "preset": _preset_of(model), "arch": _arch(model),
        "recipe": dataclasses.asdict(recipe), "steps": len(state.history) * len(train),
        "epochs_run": len(state.history),
        "data_sha256": data_hash([make_pretext(min(64, recipe.train_clips), frames=recipe.frames, size=recipe.size,
                                               seed=recipe.seed)[0], val_video, val_labels]),
        "data_sha256_covers": "the first 64 training clips and every held-out clip",
        "selected_epoch": state.best["epoch"], "pretext_accuracy": state.best["value"],
        "accuracy_per_epoch": [h["val_war"] for h in state.history],
        "train_loss_per_epoch": [h["train_loss"] for h in state.history],
        "stop_reason": state.stop_reason,
        "wall_s": round(time.perf_counter() - t0, 1), "torch_threads": torch.get_num_threads(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / CHECKPOINT, {"format": PRETEXT_FORMAT, "model": state.best_weights,
                                           "config": to_dict(cfg), "arch": record["arch"], "record": record})
    tmp = out_dir / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out_dir / RECORD)
    log(f"pretext init: {out_dir / CHECKPOINT} (held-out accuracy {record['pretext_accuracy']:.3f} at epoch "
        f"{record['selected_epoch']}, {record['wall_s']:.0f} s)")
    return record


def default_recipe(model: ModelConfig, seed: int = 0) -> PretextRecipe:
    """The recipe of a model's default init (``train.init_weights: pretext``): clips of half the model's frame side,
    rounded down to the multiple of 32 every model needs (at least 32: a 32² or 64² model gets a 32² pretext, a 224²
    one 96²), the defaults of ``PretextRecipe`` otherwise."""
    return PretextRecipe(size=max(32, model.image_size // 2 // 32 * 32), seed=seed)


def read_record(out_dir: str | Path) -> dict[str, Any] | None:
    """The ``pretext.json`` of a finished init in ``out_dir`` (checkpoint and checksum present), else None."""
    out_dir = Path(out_dir)
    files = (out_dir / RECORD, out_dir / CHECKPOINT, out_dir / (CHECKPOINT + ".sha256"))
    if not all(f.is_file() for f in files):
        return None
    try:
        return json.loads(files[0].read_text())
    except json.JSONDecodeError:
        return None


@contextlib.contextmanager
def _exclusive(path: Path):
    """An exclusive flock on ``path`` (two runs creating the same init wait for one another)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def shipped_init(name: str) -> Path | None:
    """The shipped init folder named ``name`` (a ``default_name``), if the package has a finished one."""
    folder = SHIPPED / name
    return folder if read_record(folder) is not None else None


def ensure_pretext(model: ModelConfig, recipe: PretextRecipe, out_dir: str | Path, *, force: bool = False,
                   seed_from: Path | None = None, log: Callable[[str], None] = print
                   ) -> tuple[Path, dict[str, Any], bool]:
    """``out_dir/pretext.pt``: a finished one already there (unless ``force``), else a copy of the finished init
    in ``seed_from`` (a shipped one), else pretrained now. The copy's checksum is verified when it is loaded.

    Returns (checkpoint path, record, whether it was pretrained now). Concurrent callers for the same folder wait
    for the first one instead of training or copying twice.
    """
    out_dir = Path(out_dir)
    with _exclusive(out_dir.parent / f".{out_dir.name}.lock"):
        record = None if force else read_record(out_dir)
        if record is not None:
            return out_dir / CHECKPOINT, record, False
        if not force and seed_from is not None and read_record(seed_from) is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in (CHECKPOINT, CHECKPOINT + ".sha256", RECORD):  # the record last: read_record needs all three
                tmp = out_dir / f".{name}.tmp"
                shutil.copyfile(seed_from / name, tmp)
                tmp.replace(out_dir / name)
            return out_dir / CHECKPOINT, read_record(out_dir), False
        return out_dir / CHECKPOINT, pretrain(model, recipe, out_dir, log=log), True
