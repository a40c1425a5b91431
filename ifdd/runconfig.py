"""The run configuration: everything one training run of one config on one fold needs.

A run config is the ``base`` section of a search-space YAML (or a whole YAML whose top level is a run config)::

    model: {preset: tiny, split_ratio: 0.5, ...}    # a preset plus ModelConfig overrides
    loss:  {lambda_gc: 0.1, ...}                    # LossConfig
    optim: {lr: 1.0e-4, ...}                        # OptimConfig
    data:  {manifest: runs/data/synthetic/manifest.parquet, ...}
    train: {epochs: 100, batch_size: 16, ...}

Unknown keys and wrong types are rejected with the dotted key in the message (``base.model.split_rato: unknown
key``). Clip length and size come from the model (``num_frames``, ``image_size``): one source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ifdd.config import PRESETS, LossConfig, ModelConfig, OptimConfig, from_dict, to_dict

__all__ = ["DataConfig", "TrainConfig", "RunConfig", "DEFAULT_SYNTHETIC_MANIFEST", "DEFAULT_SYNTHETIC_CACHE",
           "PRETEXT_INIT", "run_config_from_dict", "load_run_config", "read_yaml", "with_overrides"]

DEFAULT_SYNTHETIC_MANIFEST = "runs/data/synthetic/manifest.parquet"
"""The embedded default dataset: created on demand by ``ifdd train``/``ifdd search`` when missing."""
DEFAULT_SYNTHETIC_CACHE = "runs/data/synthetic/cache64"
"""Its 64² Arrow clip cache (the tiny preset's size), also created on demand when a config names it."""
PRETEXT_INIT = "pretext"
"""``train.init_weights`` value naming the model's default pretext init, created on demand under the runs root."""


@dataclass(frozen=True)
class DataConfig:
    manifest: str = DEFAULT_SYNTHETIC_MANIFEST
    """Parquet manifest written by ``ifdd data index`` (relative paths are relative to the working directory)."""
    root: str | None = None
    """Dataset root the manifest's media paths are relative to; default: the root recorded in the manifest."""
    cache_dir: str | None = None
    """Arrow clip cache from ``ifdd data cache``; None decodes the media directly."""
    augment: bool = True
    """Training augmentation per clip (flip, RandomResizedCrop 0.5–1, colour jitter), shared by all frames."""
    mix_prob: float = 1.0
    """Probability of mixup/cutmix per batch (0 disables batch mixing)."""
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    switch_prob: float = 0.5
    """Probability of cutmix instead of mixup when a batch is mixed."""
    num_workers: int = 0
    """DataLoader worker processes per training worker (0: load in the training process)."""

    def __post_init__(self) -> None:
        if not self.manifest:
            raise ValueError("manifest: must be a path to a manifest.parquet")
        for name in ("mix_prob", "switch_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 16
    """Global batch (split evenly over the data-parallel workers)."""
    eval_batch_size: int = 32
    seed: int = 0
    select_metric: Literal["val_uar", "val_war"] = "val_uar"
    """Inner-val metric that picks the checkpoint tested once on the fold's test split."""
    max_steps_per_epoch: int | None = None
    """Cap on optimizer steps per epoch (smoke tests); None: the whole split."""
    init_weights: str | None = None
    """Initial backbone weights (``ifdd.weights``): ``pretext`` (the model's default pretext init, created on first
    use under ``<runs>/pretrain/``), the path of a pretext init from ``ifdd pretrain`` (any preset), or a
    Kinetics-400 torchvision ``mvit_v2_s`` state dict (xs preset); None trains from scratch. Read with
    ``weights_only=True``; on a cluster, a path every node can read."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.select_metric not in ("val_uar", "val_war"):
            raise ValueError(f"select_metric: must be 'val_uar' or 'val_war', got {self.select_metric!r}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch: must be >= 1 or null, got {self.max_steps_per_epoch}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.optim.warmup_epochs >= self.train.epochs and self.optim.warmup_epochs > 0:
            raise ValueError(f"optim.warmup_epochs: {self.optim.warmup_epochs} must be below "
                             f"train.epochs ({self.train.epochs})")


def run_config_from_dict(data: Any, where: str = "") -> RunConfig:
    """Build a RunConfig from a mapping; ``model.preset`` selects the preset the other model keys override."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    data = dict(data)
    model = data.get("model", {})
    if not isinstance(model, dict):
        raise ValueError(f"{prefix}model: expected a mapping, got {type(model).__name__}")
    model = dict(model)
    preset = model.pop("preset", "xs")
    if preset not in PRESETS:
        raise ValueError(f"{prefix}model.preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = {k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS[preset].items()}
    data["model"] = {**base, **model}
    return from_dict(RunConfig, data, where)


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """``yaml.safe_load`` of a file; FileNotFoundError/ValueError name the file (``what``: the kind of file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); expected a YAML {what} file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None


def load_run_config(path: str | Path) -> RunConfig:
    """Read a run config from YAML: the ``base`` section of a search space, or a bare run config."""
    path = Path(path)
    doc = read_yaml(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    if "base" in doc:
        return run_config_with_file(doc["base"], path, "base")
    return run_config_with_file(doc, path, "")


def run_config_with_file(data: Any, path: Path, where: str) -> RunConfig:
    try:
        return run_config_from_dict(data, where)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def with_overrides(cfg: RunConfig, dotted: dict[str, Any]) -> RunConfig:
    """Apply ``{"model.split_ratio": 0.25, ...}`` overrides (a trial's sampled values) and re-validate."""
    d = to_dict(cfg)
    for key, value in dotted.items():
        parts = key.split(".")
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"{key}: not a path in the run config")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"{key}: not a path in the run config")
        node[parts[-1]] = value
    d["model"] = {"preset": "xs", **d["model"]}
    return run_config_from_dict(d)

