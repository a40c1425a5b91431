"""A run's inputs, resolved and checked in the driver before Ray starts: the manifest, the clip cache and the
initial weights; the embedded default dataset (synthetic DFEW-format data under the runs root) and the default
pretext init (``train.init_weights: pretext``, under ``<runs>/pretrain/``) created on first use.

A config's ``data.manifest: runs/data/synthetic/manifest.parquet`` (and ``data.cache_dir:
runs/data/synthetic/cache64``), the shipped spaces' value, names the embedded default: it lives under the
command's runs root (``--runs``), not under the working directory.
"""

from __future__ import annotations

from pathlib import Path

from ifdd.data.cache import CACHE_INDEX
from ifdd.runconfig import (
    DEFAULT_SYNTHETIC_CACHE,
    DEFAULT_SYNTHETIC_MANIFEST,
    PRETEXT_INIT,
    RunConfig,
    with_overrides,
)
from orchestrator.outputs import Outputs


def _under_root(configured: str, default: str, out: Outputs) -> tuple[Path, bool]:
    """(absolute path, is the embedded default) of a configured data path."""
    if Path(configured) == Path(default):
        return out.root / Path(default).relative_to("runs"), True
    path = Path(configured).expanduser()
    return (path if path.is_absolute() else Path.cwd() / path), False


def ensure_dataset(cfg: RunConfig, out: Outputs, *, quiet: bool = False) -> RunConfig:
    """Return ``cfg`` with absolute manifest/cache/weights paths, creating the default synthetic set if missing.

    Raises:
        FileNotFoundError: any other missing manifest, with the command that creates it.
    """
    if cfg.train.init_weights == PRETEXT_INIT:
        cfg = with_overrides(cfg, {"train.init_weights": str(ensure_default_pretext(cfg, out, quiet=quiet))})
    elif cfg.train.init_weights and "://" not in cfg.train.init_weights:
        weights = Path(cfg.train.init_weights).expanduser()
        if not weights.is_file():
            raise FileNotFoundError(f"train.init_weights: {weights} not found (a pretext init from `ifdd pretrain`, "
                                    "a torchvision mvit_v2_s Kinetics-400 state dict, `pretext` for the default "
                                    "pretext init, or null to train from scratch)")
        cfg = with_overrides(cfg, {"train.init_weights": str(weights.resolve())})
    absolute, default = _under_root(cfg.data.manifest, DEFAULT_SYNTHETIC_MANIFEST, out)
    if not absolute.exists():
        if not default:
            raise FileNotFoundError(f"{cfg.data.manifest}: manifest not found; index the dataset first with "
                                    f"`ifdd data index --root <DFEW root> --out {cfg.data.manifest}`")
        create_default_synthetic(absolute, quiet=quiet)
    cfg = with_overrides(cfg, {"data.manifest": str(absolute.resolve())})
    sha = check_manifest(cfg)
    if cfg.data.cache_dir:
        cache, default = _under_root(cfg.data.cache_dir, DEFAULT_SYNTHETIC_CACHE, out)
        cache = cache.resolve()
        if not (cache / CACHE_INDEX).is_file():
            if not default:
                raise FileNotFoundError(f"data.cache_dir: {cfg.data.cache_dir} holds no clip cache; write it with "
                                        f"`ifdd data cache --manifest {cfg.data.manifest} --out {cfg.data.cache_dir} "
                                        f"--size {cfg.model.image_size}`")
            create_default_cache(absolute, cache, cfg.model.image_size, quiet=quiet)
        cfg = with_overrides(cfg, {"data.cache_dir": str(cache)})
        check_cache(cfg, sha)
    return cfg


def ensure_default_pretext(cfg: RunConfig, out: Outputs, *, quiet: bool = False) -> Path:
    """The default pretext init of ``cfg.model`` under ``<runs>/pretrain/``: reused when there, else copied from the
    package's shipped init of the same architecture and recipe (tiny), else pretrained now (minutes on CPU)."""
    from ifdd.pretrain import default_name, default_recipe, ensure_pretext, read_record, shipped_init

    recipe = default_recipe(cfg.model)
    name = default_name(cfg.model, recipe)
    folder, shipped = out.pretrain_dir / name, shipped_init(name)
    if not quiet and read_record(folder) is None:
        print(f"default pretext init: copying the shipped {shipped} (made by `ifdd pretrain`; its pretext.json says "
              f"how) into {folder}" if shipped else f"default pretext init missing: pretraining the backbone on "
              f"synthetic actions once into {folder} (ifdd pretrain)", flush=True)
    path, _, _ = ensure_pretext(cfg.model, recipe, folder, seed_from=shipped, log=(lambda _m: None) if quiet else print)
    return path


def check_manifest(cfg: RunConfig) -> str:
    """Read and validate the manifest in the driver (not first in the Ray workers); returns its content hash.

    Raises:
        ValueError: a file that is not an intact ``ifdd data index`` manifest, named ``data.manifest``.
    """
    from ifdd.data.manifest import load_manifest

    try:
        df = load_manifest(cfg.data.manifest)
    except ValueError as e:
        raise ValueError(f"data.manifest: {e}") from None
    root = Path(cfg.data.root or df.attrs["ifdd"].get("root") or "")
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: dataset root {root} not found (recorded in {cfg.data.manifest}; set "
                                "data.root)")
    return str(df.attrs["ifdd"].get("content_sha256", ""))


def check_cache(cfg: RunConfig, manifest_sha: str) -> None:
    """Open the clip cache's index in the driver: built from this manifest, with the model's frame count and clip
    size (a 64² cache under a 224² model would train on upsampled clips)."""
    from ifdd.data.cache import ClipCache

    try:
        cache = ClipCache(cfg.data.cache_dir)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"data.cache_dir: {cfg.data.cache_dir}: unreadable clip cache ({e}); rebuild it with "
                         "`ifdd data cache`") from None
    if manifest_sha and cache.manifest_sha256 != manifest_sha:
        raise ValueError(f"data.cache_dir: {cfg.data.cache_dir} was built from another manifest than "
                         f"{cfg.data.manifest}; rebuild it with `ifdd data cache`")
    if cache.frames != cfg.model.num_frames:
        raise ValueError(f"data.cache_dir: {cfg.data.cache_dir} holds {cache.frames} frames per clip; the model "
                         f"needs {cfg.model.num_frames}")
    if cache.size != cfg.model.image_size:
        raise ValueError(f"data.cache_dir: {cfg.data.cache_dir} holds {cache.size}² clips; the model needs "
                         f"{cfg.model.image_size}²: write a cache of that size with `ifdd data cache --manifest "
                         f"{cfg.data.manifest} --out DIR --size {cfg.model.image_size}`, or drop data.cache_dir")


def create_default_cache(manifest: Path, cache: Path, size: int, *, quiet: bool = False) -> None:
    from ifdd.data.cache import write_cache
    from ifdd.data.manifest import load_manifest

    if not quiet:
        print(f"default clip cache missing: decoding the synthetic set once into {cache} (ifdd data cache)",
              flush=True)
    write_cache(load_manifest(manifest), cache, size=size)


def create_default_synthetic(manifest: Path, *, quiet: bool = False) -> None:
    from ifdd.data.manifest import build_manifest, write_manifest
    from ifdd.data.synth import write_synthetic

    tree = manifest.parent / "dfew"
    if not quiet:
        print(f"default synthetic dataset missing: creating it in {tree} (ifdd data synth) and indexing it to "
              f"{manifest} (ifdd data index)", flush=True)
    write_synthetic(tree)
    write_manifest(build_manifest(tree), manifest)
