"""Markdown summary + plotly HTML plots of the benchmark JSONs under ``runs/bench/``, logged to MLflow (``bench``).

Reads whichever of model/data/train/proxy/search/ablation/overhead/gpu.json exist, writes ``summary.md`` and
``plots/*.html`` next to them, and logs the JSONs, the summary and the plots as one run of the MLflow experiment
``bench`` in the project's default store (``orchestrator.outputs.Outputs``; artifacts under ``runs/mlartifacts``).
Without ``gpu.json`` the GPU section gives expected figures from FLOP counts, marked as estimates.

    python bench/summary.py [--dir runs/bench] [--runs runs] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

H100_BF16_DENSE_TFLOPS = 989.0
"""NVIDIA's H100 SXM dense BF16 tensor-core peak (datasheet figure), for the GPU estimate only."""
ASSUMED_MFU = (0.15, 0.35)
"""Model-FLOP utilisation range assumed for the estimate (small video ViTs rarely exceed ~35 %)."""


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _p(x: float | None) -> str:
    """A p-value to two significant figures (6.1e-05, 0.062)."""
    return "–" if x is None else f"{x:.2g}"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows] + [""]


def section_model(d: dict) -> list[str]:
    out = ["## Model throughput (bench/model.py)", "",
           f"Measured: clips/s on CPU ({d['threads']} torch threads, {d['machine']}), warm-up step excluded, IFDD and "
           "the no-ISSM/no-LADM baseline in the same process on random input.", ""]
    return out + _table(["preset", "batch", "mode", "IFDD clips/s", "baseline clips/s", "IFDD cost ratio"],
                        [[r["preset"], r["batch"], r["mode"], r["ifdd_clips_per_s"], r["baseline_clips_per_s"],
                          r["ifdd_cost_ratio"]] for r in d["results"]])


def section_data(d: dict) -> list[str]:
    out = ["## Data-path throughput (bench/data.py)", "", f"Measured: clips/s on one core; {d['source']}.", ""]
    return out + _table(["size", "augment", "mp4", "JPEG", "cache", "mp4/JPEG", "cache/JPEG"],
                        [[r["size"], r["augment"], r["mp4_clips_per_s"], r["jpeg_clips_per_s"],
                          r["cache_clips_per_s"], r["mp4_vs_jpeg"], r["cache_vs_jpeg"]] for r in d["results"]])


def section_train(d: dict) -> list[str]:
    out = ["## Ray Train throughput (bench/train.py)", "",
           f"Measured: last of {d['epochs']} epochs of fold 1, {d['data']}, global batch {d['global_batch']}.", ""]
    out += _table(["workers", "threads/worker", "train clips/s", "epoch s", "run wall s"],
                  [[r["workers"], r["threads_per_worker"], r["train_clips_per_s"], r["epoch_s"], r["run_wall_s"]]
                   for r in d["results"]])
    return out + [f"2 workers vs 1: clips/s × {d['two_vs_one_workers']['clips_per_s']}", ""]


def section_proxy(d: dict) -> list[str]:
    out = ["## The small-scale proxy: pretext init vs scratch (bench/proxy.py)", "",
           f"Measured: {d['measured']}. {d['data']}; {d['epochs']} epochs; the pretext init took "
           f"{d['pretext']['wall_s']:.0f} s to make or reuse ({d['pretext']['checkpoint']}).", ""]
    rows = []
    for r in d["runs"]:
        c = r["val_uar"]
        rows.append([r["init"], r["seed"], r["first_epoch_above"] or "never", c[1] if len(c) > 1 else None,
                     c[4] if len(c) > 4 else None, " ".join(f"{v:.3f}" for v in c), r["test_uar"]])
    out += _table(["init", "seed", f"first epoch with inner-val UAR > {d['threshold']}", "inner-val UAR epoch 2",
                   "inner-val UAR epoch 5", "inner-val UAR per epoch", "test UAR (epoch chosen on inner-val)"], rows)
    return out + ["Seeds past the threshold by epoch 2: " + "; ".join(
        f"{init} {v['passed_by_epoch_2']}/{v['seeds']}" for init, v in d["summary"].items()) + ".", ""]


def section_search(d: dict, plots: Path) -> list[str]:
    b = d["budget"]
    out = ["## Search efficiency (bench/search.py)", "",
           f"Measured: {d['measured']}. {d['data']}, fine-tuned from the pretext init. Both arms start from the base "
           f"config. TPE+ASHA: {b['num_samples']} trials, ≤{b['max_epochs']} epochs, grace {b['grace_period']}, "
           f"reduction ×{b['reduction_factor']}, TPE's first {b['n_startup_trials']} trials random "
           f"(n_startup_trials); random: {b['random_samples']} trials × {b['max_epochs']} epochs, no pruning; "
           f"{b['max_concurrent_trials']} trials at a time. Mapping to the real search: one epoch here is one "
           f"inner-train epoch of the tiny model in-process ({_f(d.get('epoch_s_mean'), 1)} s on one core, the mean "
           "measured here); in `ifdd search` a trial is "
           "a Ray Train worker group and the same Tune searcher and scheduler decide on the same per-epoch inner-val "
           "UAR, so the epoch counts transfer, while the per-trial start-up cost is measured separately (overhead "
           "below). The winners' test UAR: each arm's best inner-val trial re-trained with its config and seed, the "
           "epoch chosen on inner-val, tested once.", ""]
    rows = [[s["seed"], s["random_best"], s["random_epochs"], s["random_epochs_to_best"], s["tpe_asha_best"],
             s["tpe_asha_epochs"], s["tpe_asha_stopped_early"], s["epochs_to_match"], s["ratio_vs_random_total"],
             s["ratio_vs_random_reach"], _winner(s, "random"), _winner(s, "tpe_asha")] for s in d["seeds"]]
    out += _table(["seed", "random best val UAR", "random epochs", "random epochs to its best",
                   "TPE+ASHA best val UAR", "TPE+ASHA epochs", "trials stopped by ASHA",
                   "TPE+ASHA epochs to reach random's best", "ratio vs random total", "ratio vs random's reach",
                   "random winner test UAR", "TPE+ASHA winner test UAR"], rows)
    out += [f"Seeds where TPE+ASHA reached random search's best: {d['matched_seeds']}/{len(d['seeds'])}, within ⅓ "
            f"of random's epochs: {d.get('matched_within_third', '–')}/{len(d['seeds'])} (target: 2 of 3); mean "
            f"epochs ratio (matched seeds, vs random's total epochs): {_f(d['ratio_vs_random_total_mean'])}.", ""]
    try:
        import plotly.graph_objects as go

        fig = go.Figure()
        for s in d["seeds"]:
            for arm, dash in (("tpe_asha", "solid"), ("random", "dot")):
                c = s["curves"][arm]
                fig.add_trace(go.Scatter(x=[p[0] for p in c], y=[p[1] for p in c], mode="lines",
                                         line={"dash": dash, "shape": "hv"}, name=f"{arm} seed {s['seed']}"))
        fig.update_layout(title="Best inner-val UAR vs epochs consumed (bench/search.py)",
                          xaxis_title="epochs consumed (all trials, report-time order)",
                          yaxis_title="best inner-val UAR so far")
        path = plots / "search_curve.html"
        fig.write_html(path, include_plotlyjs="cdn")
        out += [f"Plot: [{path.name}](plots/{path.name})", ""]
    except ImportError:
        out += ["(plotly missing: no plot)", ""]
    return out


def _winner(seed: dict, arm: str) -> float | None:
    return seed.get("winners", {}).get(arm, {}).get("test_uar")


def section_ablation(d: dict, plots: Path) -> list[str]:
    p = d["protocol"]
    out = ["## Ablation (bench/ablation.py)", "",
           f"Measured: {d['data']}; {p['selection']}. Main variants: seeds {p['main_seeds']} × folds "
           f"{p['main_folds']}; grid: seeds {p['grid_seeds']} × folds {p['grid_folds']}; {p['epochs']} epochs each, "
           f"from the {p.get('init', 'scratch')} init. Test UAR/WAR are nested estimates (mean ± std over the runs).",
           ""]
    rows = []
    for t in d["table"]:
        if t.get("infeasible"):
            rows.append([t["variant"], t["group"], "infeasible", "", "", "", ""])
            continue
        rows.append([t["variant"], t["group"], t["runs"], f"{t['test_uar_mean']:.3f} ± {t['test_uar_std']:.3f}",
                     f"{t['test_war_mean']:.3f} ± {t['test_war_std']:.3f}", t["inner_val_uar_mean"],
                     t["best_epoch_mean"]])
    out += _table(["variant", "group", "runs", "test UAR", "test WAR", "inner-val UAR (selected)",
                   "selected epoch (mean)"], rows)
    runs = [r for r in d.get("runs", []) if "val_uar_curve" in r]
    if runs:
        last = sum(r["best_epoch"] == len(r["val_uar_curve"]) for r in runs)
        out += [f"Reading: chance UAR is 1/7 = 0.143. {last} of {len(runs)} runs selected their last epoch on "
                "inner-val, i.e. were still improving when the budget ended: these are early-training figures "
                "(the budget, not convergence).", ""]
        same = [r["test_uar"] for r in runs if r["variant"] == "full" and r["seed"] in p["grid_seeds"]
                and r["fold"] in p["grid_folds"]]
        if same and any(t["group"] == "grid" for t in d["table"]):
            m = sum(same) / len(same)
            out += [f"The grid's missing point, split ratio 0.5 at lifting depth 1 (the paper's), is `full`: on the "
                    f"grid's seeds {p['grid_seeds']} × folds {p['grid_folds']} it scored test UAR {m:.3f} "
                    f"({len(same)} runs), the figure to set the grid rows against.", ""]
    if d.get("paired"):
        out += ["Paired test-UAR differences, per (seed, fold) and per fold (the fold's seeds averaged: they share "
                "its test clips, so the fold rows are the conservative reading); two-sided p-values of the exact "
                "sign test without ties and the Wilcoxon signed-rank test:", ""]
        rows = []
        for x in d["paired"]:
            for unit, y in (("seed × fold", x), ("fold", x.get("folds"))):
                if y:
                    rows.append([x["a"], x["b"], unit, y["pairs"], y["mean_diff"], y["std_diff"], y["a_wins"],
                                 y.get("a_losses"), *(_p(y.get(k)) for k in ("sign_test_p", "wilcoxon_p"))])
        out += _table(["a", "b", "pairs of", "pairs", "mean a−b", "std", "a better", "a worse", "sign test p",
                       "Wilcoxon p"], rows)
    try:
        import plotly.graph_objects as go

        ok = [t for t in d["table"] if not t.get("infeasible")]
        fig = go.Figure(go.Bar(x=[t["variant"] for t in ok], y=[t["test_uar_mean"] for t in ok],
                               error_y={"type": "data", "array": [t["test_uar_std"] for t in ok]}))
        fig.update_layout(title="Nested test UAR per variant, mean ± std (bench/ablation.py)", yaxis_title="test UAR")
        path = plots / "ablation.html"
        fig.write_html(path, include_plotlyjs="cdn")
        out += [f"Plot: [{path.name}](plots/{path.name})", ""]
    except ImportError:
        pass
    return out


def section_overhead(d: dict) -> list[str]:
    s = d["setup"]
    out = ["## Orchestration overhead (bench/overhead.py)", "",
           f"Measured: {d['measured']}. {s['trials']} trials × {s['epochs']} epochs × {s['steps_per_epoch']} steps "
           f"(batch {s['batch']}, {s['clip']}), fold {s['fold']}, {s['worker']}. Ray start: "
           f"{d['ray_start_s']:.1f} s (once, not in the walls below).", ""]
    return out + _table(["mode", "wall s", "Σ epoch s", "Σ train-step s", "epoch time / (wall × conc.)",
                         "train steps / (wall × conc.)", "start latency per trial s"],
                        [[m["mode"], m["wall_s"], m["sum_epoch_s"], m["sum_train_step_s"], m["epoch_time_fraction"],
                          m["train_step_fraction"], m["start_latency_s_mean"]] for m in d["modes"]])


def flops_per_clip() -> dict[str, float]:
    """Forward FLOPs (2 × the MACs ``ifdd model info`` reports) of one xs clip (16×224²), IFDD and baseline."""
    from ifdd.config import model_preset
    from ifdd.info import model_info

    return {variant: 2.0 * model_info(model_preset("xs", **kw))["macs_per_clip"]
            for variant, kw in (("ifdd", {}), ("baseline", {"use_issm": False, "use_ladm": False}))}


RECORDED_GPU = Path(__file__).resolve().parent / "results" / "gpu-h100.json"


def _gpu_rows(d: dict) -> list[list]:
    rows = []
    for r in d["results"]:
        what = r["mode"] + (" (ISSM+LADM off)" if r.get("use_issm") is False else "") + \
            (" (pooling convs in bf16)" if r.get("pool_conv") == "bf16" else "")
        rows.append([r["preset"], what, r["batch"], r["amp"], r["clips_per_s"], r["peak_mem_gib"]])
    return rows


def section_gpu(d: dict | None, flops: dict[str, float] | None) -> list[str]:
    """Measured figures from runs/bench/gpu.json (this run on a GPU), else the ones recorded on the lent H100
    (bench/results/gpu-h100.json, dated), then the FLOP-count estimate, set against the measurement if any."""
    out = ["## GPU (bench/gpu.py)", ""]
    source = "runs/bench/gpu.json (this run)"
    if d is None or not d.get("measured"):
        d = json.loads(RECORDED_GPU.read_text()) if RECORDED_GPU.is_file() else None
        source = f"bench/results/gpu-h100.json, recorded {d.get('recorded', '?')}" if d else ""
    if d is not None:
        out += [f"Measured by bench/gpu.py on {d['device']} ({source}): full optimiser steps (forward + backward + "
                f"AdamW) and no-grad evaluation on random 16×224² clips, {d.get('torch')}, TF32 on, 3 warm-up "
                "steps then 20 timed (CUDA-synchronised perf_counter); peak memory = max_memory_allocated.", ""]
        out += _table(["preset", "what", "batch", "amp", "clips/s", "peak GiB"], _gpu_rows(d))
        out += [f"Same-run ratios: bf16/fp32 training {d['bf16_speedup']}×; IFDD modules' cost (baseline/IFDD) "
                f"{d['ifdd_cost_ratio']}×; attention-pooling convs in fp32 under autocast vs in bf16 "
                f"{d.get('pool_fp32_speedup', '?')}× (the shipped default). DDP: {json.dumps(d.get('ddp', {}))}.", ""]
        prof = d.get("profile", {}).get("bf16")
        if prof:
            out += ["Top CUDA operators of a bf16 training step (torch.profiler, self device time share): " +
                    "; ".join(f"`{r['op'][:48]}` {r['share']:.0%}" for r in prof[:4]) + ".", ""]
    if flops is None:
        flops = flops_per_clip()
    lo, hi = ASSUMED_MFU
    out += ["**Estimates, not measurements**: forward FLOPs of one xs clip (16×224²) = 2 × the MACs of "
            "`ifdd model info` (torch FlopCounterMode); training ≈ 3× forward; H100 dense BF16 peak "
            f"{H100_BF16_DENSE_TFLOPS:g} TFLOPS at an assumed {lo:.0%}–{hi:.0%} utilisation.", ""]
    rows = []
    for variant, f in flops.items():
        per_s = [H100_BF16_DENSE_TFLOPS * 1e12 * u / (3 * f) for u in (lo, hi)]
        epoch = [9_344 / c for c in reversed(per_s)]  # DFEW fold: ~9.3k training clips (80 % of 11.7k)
        rows.append([variant, f / 1e9, f"{per_s[0]:.0f}–{per_s[1]:.0f}", f"{epoch[0]:.0f}–{epoch[1]:.0f}"])
    out += _table(["variant", "forward GFLOPs/clip", "est. train clips/s (H100)",
                   "est. s per DFEW fold epoch (~9.3k clips)"], rows)
    if d is not None:
        train = next(r for r in d["results"] if r["mode"] == "train_step" and r["amp"] == "bf16"
                     and "use_issm" not in r and "pool_conv" not in r)
        mfu = train["clips_per_s"] * 3 * flops["ifdd"] / (H100_BF16_DENSE_TFLOPS * 1e12)
        out += [f"Against the measurement: {train['clips_per_s']} clips/s is {mfu:.1%} of the BF16 peak, far below "
                "the assumed range: MViTv2's attention pooling (depthwise Conv3d) and small per-head matmuls are "
                f"memory- and launch-bound, not FLOP-bound. A DFEW fold epoch (~9.3k clips) takes about "
                f"{9_344 / train['clips_per_s']:.0f} s on one H100 at batch 16.", ""]
    return out


def write_summary(bench: Path, flops: dict[str, float] | None = None) -> Path:
    plots = bench / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    names = ("model", "data", "train", "proxy", "search", "ablation", "overhead", "gpu")
    load = {n: json.loads((bench / f"{n}.json").read_text()) for n in names if (bench / f"{n}.json").is_file()}
    lines = ["# IFDD benchmarks", "", f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
             "bench/summary.py from the JSON files in this folder. Every figure below says how it was measured.", ""]
    if "wall.json" in {p.name for p in bench.iterdir()}:
        w = json.loads((bench / "wall.json").read_text())
        lines += [f"`make bench` wall time: {w['wall_s']:.0f} s on {w.get('cpus', '?')} cores "
                  f"(load average at start {w.get('load_avg_1min_at_start', '?')}; other jobs may have shared the "
                  "CPUs).", ""]
    sections = [("model", section_model), ("data", section_data), ("train", section_train),
                ("proxy", section_proxy)]
    for name, fn in sections:
        if name in load:
            lines += fn(load[name])
    if "search" in load:
        lines += section_search(load["search"], plots)
    if "ablation" in load:
        lines += section_ablation(load["ablation"], plots)
    if "overhead" in load:
        lines += section_overhead(load["overhead"])
    lines += section_gpu(load.get("gpu"), flops)
    path = bench / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def log_mlflow(bench: Path, runs: Path) -> str:
    from orchestrator.outputs import Outputs
    from orchestrator.tracking.client import Tracker, git_commit

    tracker = Tracker(Outputs.resolve(str(runs)).default_tracking_uri, (runs / "mlartifacts").resolve())
    exp = tracker.experiment("bench")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run = tracker.run(exp, f"bench-{stamp}", {"ifdd.kind": "bench", "ifdd.bench_run": stamp})
    tracker.set_tags(run, {"ifdd.git_commit": git_commit()})
    metrics: dict[str, float] = {}
    for p in sorted(bench.glob("*.json")):
        d = json.loads(p.read_text())
        tracker.log_file(run, p, "json")
        if p.stem == "search":
            metrics["search_ratio_vs_random_total_mean"] = d["ratio_vs_random_total_mean"]
            metrics["search_matched_seeds"] = d["matched_seeds"]
            metrics["search_matched_within_third"] = d.get("matched_within_third", 0)
        elif p.stem == "ablation":
            for t in d["table"]:
                if not t.get("infeasible"):
                    metrics[f"ablation_{t['variant']}_test_uar"] = t["test_uar_mean"]
        elif p.stem == "proxy":
            for init, v in d["summary"].items():
                metrics[f"proxy_{init}_passed_by_epoch_2"] = v["passed_by_epoch_2"]
        elif p.stem == "overhead":
            for m in d["modes"]:
                key = "train" if m["mode"].startswith("ifdd train") else f"search_c{m['concurrent']}"
                metrics[f"overhead_{key}_train_step_fraction"] = m["train_step_fraction"]
                metrics[f"overhead_{key}_start_latency_s"] = m["start_latency_s_mean"]
        elif p.stem == "wall":
            metrics["make_bench_wall_s"] = d["wall_s"]
    tracker.log_metrics(run, metrics, step=0)
    tracker.log_file(run, bench / "summary.md")
    for p in sorted((bench / "plots").glob("*.html")):
        tracker.log_file(run, p, "plots")
    tracker.end(run)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="runs/bench")
    ap.add_argument("--runs", default="runs", help="the project's runs folder (MLflow store runs/mlflow.db)")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()
    path = write_summary(Path(args.dir))
    print(f"wrote {path}")
    if not args.no_mlflow:
        run = log_mlflow(Path(args.dir), Path(args.runs))
        print(f"MLflow: experiment bench, run {run} ({Path(args.runs) / 'mlflow.db'})")


if __name__ == "__main__":
    main()
