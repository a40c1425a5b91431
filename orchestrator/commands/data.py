"""`ifdd data synth | index | cache`: synthetic DFEW-format data, the validated manifest, the Arrow clip cache.

Structural problems raise ``ValueError``/``FileNotFoundError`` in ``ifdd.data`` (naming file, row and what is wrong)
and the CLI turns them into ``error: …`` with exit code 2; per-clip problems are quarantined rows, counted in the
summary printed here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ifdd.data.manifest import LABEL_NAMES as LABELS


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("data", help="synthetic data, the DFEW manifest and the clip cache")
    group.set_defaults(func=lambda _args: group.print_help())
    gsub = group.add_subparsers(dest="data_command", metavar="COMMAND")

    synth = gsub.add_parser("synth", help="write synthetic clips in the DFEW release layout",
                            description="Write a synthetic DFEW tree: temporal facial-motion classes, random static "
                                        "appearance, DFEW class imbalance, 5 disjoint test folds.")
    synth.add_argument("--out", required=True, help="output folder (empty, or a previous synthetic tree)")
    synth.add_argument("--clips-per-class", type=int, default=100,
                       help="mean clips per class; sizes follow DFEW's shares (default 100, ~700 clips)")
    synth.add_argument("--min-per-class", type=int, default=25,
                       help="floor per class (default 25: 5 per test fold, so Disgust is in every fold)")
    synth.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    synth.add_argument("--size", type=int, default=64, help="frame side in pixels, even (default 64)")
    synth.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    synth.add_argument("--format", choices=("mp4", "frames", "both"), default="mp4",
                       help="Clip/original/<id>.mp4, Clip/clip_224x224_16f/<id>/<n>.jpg, or both (default mp4)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=run_synth)

    index = gsub.add_parser("index", help="validate a DFEW tree and write the Parquet manifest",
                            description="Read the DFEW release as shipped (or a synthetic tree), open every clip, "
                                        "and write a manifest with per-fold train/val/test roles.")
    index.add_argument("--root", required=True, help="dataset root (holds EmoLabel_DataSplit/ and Clip/)")
    index.add_argument("--out", default="manifest.parquet", help="manifest path (default manifest.parquet)")
    index.add_argument("--val-fraction", type=float, default=0.1,
                       help="inner-val share of each fold's training clips, stratified by label (default 0.1)")
    index.add_argument("--seed", type=int, default=0, help="seed of the inner-val split (default 0)")
    index.add_argument("--media", choices=("auto", "frames16", "frames", "mp4"), default="auto",
                       help="media source: auto = first present of Clip/clip_224x224_16f, Clip/clip_224x224, "
                            "Clip/original (default auto)")
    index.add_argument("--min-frames", type=int, default=16,
                       help="quarantine clips with fewer frames (default 16)")
    index.add_argument("--verify", choices=("quick", "full"), default="quick",
                       help="quick: image headers + first/last frame decoded; full: every frame (default quick)")
    index.add_argument("--workers", type=int, default=None, help="threads opening clips (default min(8, cores))")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(func=run_index)

    cache = gsub.add_parser("cache", help="decode every usable clip once into memory-mapped Arrow shards",
                            description="Write uint8 clips at a fixed size into Arrow IPC shards for fast random "
                                        "access (ClipDataset(cache_dir=…)).")
    cache.add_argument("--manifest", required=True, help="manifest.parquet from `ifdd data index`")
    cache.add_argument("--out", required=True, help="cache folder (empty, or a previous cache)")
    cache.add_argument("--size", type=int, default=112, help="stored frame side (default 112)")
    cache.add_argument("--frames", type=int, default=16, help="frames per clip, sampled uniformly (default 16)")
    cache.add_argument("--root", default=None, help="dataset root (default: the one recorded in the manifest)")
    cache.add_argument("--shard-mb", type=int, default=1024, help="shard size limit in MiB (default 1024)")
    cache.add_argument("--workers", type=int, default=None, help="decoding threads (default min(8, cores))")
    cache.add_argument("--quiet", action="store_true", help="no progress bar")
    cache.set_defaults(func=run_cache)


def _progress(desc: str, quiet: bool, unit: str = "clip"):
    from tqdm import tqdm

    return lambda it, total: tqdm(it, total=total, desc=desc, unit=unit, file=sys.stderr, disable=quiet,
                                  dynamic_ncols=True, leave=False)


def run_synth(args: argparse.Namespace) -> int:
    from ifdd.data.synth import write_synthetic  # deferred: keeps `ifdd --help` fast

    rec = write_synthetic(args.out, clips_per_class=args.clips_per_class, frames=args.frames, size=args.size,
                          seed=args.seed, fmt=args.format, min_per_class=args.min_per_class,
                          progress=_progress("rendering", args.quiet))
    sizes = ", ".join(f"{k} {v}" for k, v in rec["class_sizes"].items())
    print(f"wrote {rec['clips']} synthetic clips ({args.format}, {args.frames}x{args.size}x{args.size}, "
          f"seed {args.seed}) to {args.out}")
    print(f"  per class: {sizes}")
    print(f"  test fold sizes: {', '.join(map(str, rec['test_fold_sizes']))}")
    print(f"next: ifdd data index --root {args.out} --out {Path(args.out) / 'manifest.parquet'}")
    return 0


def run_index(args: argparse.Namespace) -> int:
    from ifdd.data.manifest import build_manifest, write_manifest

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {args.workers}")
    if Path(args.out).is_dir():  # checked before opening every clip
        raise IsADirectoryError(f"--out: {args.out} is a folder; give the manifest's file name")
    df = build_manifest(args.root, media=args.media, val_fraction=args.val_fraction, seed=args.seed,
                        min_frames=args.min_frames, verify=args.verify, workers=args.workers,
                        progress=_progress("opening clips", args.quiet))
    path = write_manifest(df, args.out)
    print(format_summary(df))
    print(f"wrote {path} (content sha256 {df.attrs['ifdd']['content_sha256'][:12]}…)")
    return 0


def format_summary(df) -> str:
    """Clips per fold x role x class (usable clips), quarantined clips by reason, and the DFEW release check."""
    from ifdd.data.manifest import EXPECTED_DFEW, EXPECTED_DFEW_TOTAL, FOLD_COLUMNS

    meta = df.attrs["ifdd"]
    ok = df[df["status"].eq("ok")]
    bad = df[~df["status"].eq("ok")]
    lines = [f"{meta['root']}: {len(df)} clips in the split files, {len(ok)} ok, {len(bad)} quarantined "
             f"(media {meta['media']}, verify {meta['verify']}, val fraction {meta['val_fraction']}, "
             f"seed {meta['seed']})",
             f"{'fold':<5}{'role':<7}{'clips':>7}" + "".join(f"{n:>10}" for n in LABELS)]
    for k, col in enumerate(FOLD_COLUMNS, start=1):
        for role in ("train", "val", "test", "none"):
            part = ok[ok[col].eq(role)]
            if role == "none" and part.empty:
                continue
            counts = part["label"].value_counts()
            lines.append(f"{k:<5}{role:<7}{len(part):>7}" + "".join(f"{int(counts.get(c, 0)):>10}"
                                                                    for c in range(len(LABELS))))
    if bad.empty:
        lines.append("quarantined: none")
    else:
        lines.append(f"quarantined: {len(bad)} clips (kept in the manifest, never used for training or evaluation)")
        kinds = bad["reason"].str.split(":", n=1).str[0]
        for kind, group in bad.groupby(kinds, sort=True):
            ids = ", ".join(group["clip_id"].head(5)) + (", …" if len(group) > 5 else "")
            lines.append(f"  {kind:<26}{len(group):>6}  {ids}")
            lines.append(f"    e.g. {group['reason'].iloc[0]}")
    if not meta.get("synthetic") and len(df) >= 10_000:
        lines.append("DFEW release check: train/test clips per fold in the split files, expected vs found")
        for k, col in enumerate(FOLD_COLUMNS, start=1):
            tr, te = int(df[col].isin(["train", "val"]).sum()), int(df[col].eq("test").sum())
            exp = EXPECTED_DFEW[k]
            mark = "ok" if (tr, te) == exp else "DIFFERS"
            lines.append(f"  fold {k}: expected {exp[0]:,}/{exp[1]:,}  found {tr:,}/{te:,}  {mark}")
        mark = "ok" if len(df) == EXPECTED_DFEW_TOTAL else "DIFFERS"
        lines.append(f"  total:  expected {EXPECTED_DFEW_TOTAL:,}  found {len(df):,}  {mark}")
    return "\n".join(lines)


def run_cache(args: argparse.Namespace) -> int:
    from ifdd.data.cache import write_cache
    from ifdd.data.manifest import load_manifest

    if args.shard_mb < 1:
        raise ValueError(f"--shard-mb: must be >= 1, got {args.shard_mb}")
    df = load_manifest(args.manifest)
    index = write_cache(df, args.out, size=args.size, frames=args.frames, root=args.root,
                        shard_bytes=args.shard_mb << 20, workers=args.workers,
                        progress=_progress("caching", args.quiet, unit="batch"))
    nbytes = sum((Path(args.out) / s["file"]).stat().st_size for s in index["shards"])
    print(f"wrote {index['clips']} clips ({args.frames}x{args.size}x{args.size} uint8) in {len(index['shards'])} "
          f"shard(s), {nbytes / 2**20:.1f} MiB, to {args.out}")
    if index["failed"]:
        print(f"failed to decode {len(index['failed'])} clip(s); ClipDataset decodes them from the media "
              "and applies its failure policy:")
        for cid, reason in sorted(index["failed"].items())[:20]:
            print(f"  {cid}: {reason}")
    return 0
