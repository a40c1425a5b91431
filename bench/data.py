"""Data-path throughput on one core: clips/s for mp4 decode, JPEG frame folders and the Arrow cache.

Prints one JSON object. A synthetic DFEW tree is written to a temp folder with 16-frame clips at 224² (the size of
the release's ``clip_224x224_16f`` frames) as both JPEG folders and mp4s, indexed twice (``--media frames16`` and
``--media mp4``), and cached at each output size. Each measurement reads ``ClipDataset`` samples one after another
in this process (``torch.set_num_threads(1)``: clips/s per core), for output sizes 64² and 224², with the eval
transform (resize only) and with training augmentation (flip, RandomResizedCrop, colour jitter). Ratios are
against the JPEG path at the same size and augmentation. The cache is read with a warm page cache.

``augment_paths`` (224² cache, training augmentation, batches of 16 through a ``DataLoader`` in this process, collate
included): ``before`` = the training transform before this change (tests/transforms_reference.py), ``loader`` = the
per-clip path of today, ``device_loader_share`` = what the DataLoader still does when the augmentation runs on the
training device (read the clip, copy it as uint8, collate), and ``device_batch_on_cpu`` = ``BatchTrainAugment``'s
own work run on this CPU (on a GPU it runs there; bench/gpu.py times it); each as ms of one core per clip and as a
ratio of clips/s to ``before``.

    python bench/data.py [--clips-per-class 4] [--seconds 2.0] [--out runs/bench/data.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ifdd.data.cache import write_cache
from ifdd.data.dataset import ClipDataset
from ifdd.data.manifest import build_manifest, write_manifest
from ifdd.data.synth import write_synthetic
from ifdd.data.transforms import BatchTrainAugment, TrainTransform

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from transforms_reference import ReferenceTrainTransform  # noqa: E402

SOURCE_SIZE, FRAMES = 224, 16


def clips_per_s(ds: ClipDataset, seconds: float) -> float:
    ds[0]  # warm-up: opens the cache mapping, first-call overheads
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ds[n % len(ds)]
        n += 1
    return n / (time.perf_counter() - t0)


def loader_ms_per_clip(ds: ClipDataset, seconds: float, batch: int = 16) -> float:
    """ms of this core per clip, reading batches from a DataLoader in this process (collate included)."""
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(0))
    next(iter(loader))  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for b in loader:
            n += len(b["label"])
            if time.perf_counter() - t0 >= seconds:
                break
    return 1000 * (time.perf_counter() - t0) / n


def augment_paths(df, cache: Path, size: int, seconds: float, rounds: int = 2) -> dict:
    """The training augmentation's CPU cost per clip on each path (see the module docstring); best of ``rounds``
    round-robin rounds, so a load spike from another process hits one round of one path."""
    def dataset(augment_on: str, reference: bool = False) -> ClipDataset:
        ds = ClipDataset(df, 1, "trainval", frames=FRAMES, size=size, train=True, cache_dir=cache,
                         augment_on=augment_on)
        if reference:
            ds.transform = ReferenceTrainTransform(size)
        return ds

    device_ds = dataset("device")
    video = torch.stack([device_ds[i]["video"] for i in range(16)])  # one uint8 batch (16, 3, T, S, S)
    aug = BatchTrainAugment(TrainTransform(size), seed=0)

    def device_batch() -> float:
        aug(video, torch.zeros(16, dtype=torch.long))  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            aug(video, torch.zeros(16, dtype=torch.long))
            n += 16
        return 1000 * (time.perf_counter() - t0) / n

    paths = {"before": lambda: loader_ms_per_clip(dataset("loader", reference=True), seconds),
             "loader": lambda: loader_ms_per_clip(dataset("loader"), seconds),
             "device_loader_share": lambda: loader_ms_per_clip(device_ds, seconds),
             "device_batch_on_cpu": device_batch}
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, fn in paths.items():
            best[name] = min(best.get(name, float("inf")), fn())
    out = {"size": size, "batch": 16, "source": "Arrow cache"}
    for name, ms in best.items():
        out[name] = {"ms_per_clip": round(ms, 2), "clips_per_s": round(1000 / ms, 1),
                     "vs_before": round(best["before"] / ms, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips-per-class", type=int, default=4, help="synthetic clips per class (min 5 per class)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results, setup = [], {}
    with tempfile.TemporaryDirectory(prefix="ifdd-bench-data-") as tmp:
        root = Path(tmp) / "dfew"
        t0 = time.perf_counter()
        rec = write_synthetic(root, clips_per_class=args.clips_per_class, min_per_class=5, frames=FRAMES,
                              size=SOURCE_SIZE, fmt="both", workers=1)
        setup["synth_s"] = round(time.perf_counter() - t0, 2)
        manifests = {}
        for media, kind in (("frames16", "jpeg"), ("mp4", "mp4")):
            t0 = time.perf_counter()
            df = build_manifest(root, media=media, workers=1)
            setup[f"index_{kind}_s"] = round(time.perf_counter() - t0, 2)
            write_manifest(df, Path(tmp) / f"{kind}.parquet")
            manifests[kind] = df
        for size in (64, 224):
            t0 = time.perf_counter()
            write_cache(manifests["jpeg"], Path(tmp) / f"cache{size}", size=size, frames=FRAMES, workers=1)
            setup[f"cache_{size}_write_s"] = round(time.perf_counter() - t0, 2)
            for augment in (False, True):
                row: dict[str, object] = {"size": size, "augment": augment}
                for path in ("mp4", "jpeg", "cache"):
                    df = manifests["mp4" if path == "mp4" else "jpeg"]
                    cache = Path(tmp) / f"cache{size}" if path == "cache" else None
                    ds = ClipDataset(df, 1, "trainval", frames=FRAMES, size=size, train=augment, augment=augment,
                                     cache_dir=cache)
                    row[f"{path}_clips_per_s"] = round(clips_per_s(ds, args.seconds), 1)
                for path in ("mp4", "cache"):
                    row[f"{path}_vs_jpeg"] = round(row[f"{path}_clips_per_s"] / row["jpeg_clips_per_s"], 2)
                results.append(row)
        paths = augment_paths(manifests["jpeg"], Path(tmp) / "cache224", 224, args.seconds)
    text = json.dumps({
        "bench": "data", "torch_threads": 1, "python": platform.python_version(), "torch": torch.__version__,
        "machine": platform.machine(), "source": f"synthetic, {rec['clips']} clips, {FRAMES} frames at "
                                                 f"{SOURCE_SIZE}² (JPEG q95 folders + H.264 mp4, GOP {FRAMES})",
        "setup_seconds": setup, "results": results, "augment_paths": paths,
    }, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
