"""`ifdd report`: one search's results as HTML and Markdown, every number with the rule that selected it.

Reads what the search saved under ``<runs>/search/<experiment>/`` (summary.json, one JSON per study, the Optuna plots
as Plotly JSON) and the trials' checkpoints (their per-epoch history), and writes ``report.html`` and ``report.md``
with the protocol that produced every number (orchestrator/protocol.py), the per-fold table (the winner, the split
and the clips it was chosen on, how many of those are in the fold's test split, the test figure and the clips it
covers), mean ± std, the winner vs the base config (paired difference, sign test), the deploy choice of a cross-fold
search, per-class recall, confusion matrices, the Optuna plots, each fold's learning curves and the published DFEW
results, labelled as published and not reproduced here. The HTML tables are the Markdown ones, rendered.
``report.html`` is one self-contained file: images and plots inline, one copy of plotly.js, nothing fetched from the
network.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

from ifdd.data.manifest import LABEL_NAMES
from orchestrator.outputs import Outputs
from orchestrator.protocol import selection_split
from orchestrator.search.results import status_counts
from orchestrator.search.summary import base_table_md, deploy_md, fold_table_md
from orchestrator.tracking.plots import (
    asha_rungs,
    checkpoint_histories,
    figure_div,
    learning_curves,
    plotly_script,
    read_figure,
)
from orchestrator.tracking.study_runs import confusion_png

PUBLISHED_DFEW = [  # 5-fold UAR / WAR (%), as published by their authors
    ("Former-DFER", 53.69, 65.70), ("M3DFEL", 56.10, 69.25), ("LSGTNet", 61.33, 72.34),
    ("MAE-DFER", 63.41, 74.43), ("S2D", 61.82, 76.03), ("DK-CLIP", 64.95, 75.41), ("FineCLIPER", 65.98, 76.21),
]


def latest_experiment(out: Outputs) -> str:
    found = sorted((out.root / "search").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{out.root / 'search'}: no finished search; run `ifdd demo` or `ifdd search` first "
                                "(or give the --runs they used)")
    return found[-1].parent.name


def load_results(out: Outputs, experiment: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    folder = out.search_dir(experiment)
    if not (folder / "summary.json").is_file():
        known = ", ".join(sorted(p.parent.name for p in (out.root / "search").glob("*/summary.json"))) or "none"
        raise FileNotFoundError(f"{folder / 'summary.json'}: no finished search named {experiment!r} "
                                f"(finished: {known})")
    summary = json.loads((folder / "summary.json").read_text())
    studies = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.name != "summary.json"]
    return summary, studies


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def build_report(outputs: Outputs, experiment: str, out: Path) -> tuple[Path, Path]:
    summary, studies = load_results(outputs, experiment)
    out.mkdir(parents=True, exist_ok=True)
    label = summary["label"]
    rows = summary["folds"]
    pngs = {}
    for r in rows:
        if r.get("confusion"):
            pngs[r["fold"]] = confusion_png(r["confusion"], f"fold {r['fold']} test (UAR {r['test_uar']:.3f})",
                                            out / f"confusion_fold{r['fold']}.png")
    plots = study_figures(outputs.search_dir(experiment), summary, studies)
    md = _markdown(summary, studies, rows, label, pngs, plots, experiment)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html(summary, studies, rows, label, pngs, plots, experiment))
    return out / "report.html", out / "report.md"


def study_figures(folder: Path, summary: dict[str, Any], studies: list[dict[str, Any]]
                  ) -> list[tuple[str, Any | None, list[str]]]:
    """Per study: (title, Plotly figure or None, notes) for each Optuna plot and the learning curves; the notes say
    what was left out and why."""
    space = summary.get("space", {})
    budget, objective = space.get("budget", {}), space.get("objective", {})
    split = selection_split(summary["selection"])
    asha = (budget.get("scheduler") == "asha" and summary["strategy"] == "fold-wise" and bool(space.get("search"))
            and isinstance(objective.get("metric", "val_uar"), str))
    out = []
    for st in sorted(studies, key=lambda s: s["folds"]):
        for rel in st.get("plots", []):
            if rel.endswith(".json") and (folder / rel).is_file():
                out.append((f"{st['study']}: {Path(rel).stem.removeprefix(st['study'] + '-').replace('_', ' ')}",
                            read_figure(folder / rel), []))
        skipped = [f"{name.replace('_', ' ')} not drawn: {why}" for name, why in st.get("plots_skipped", {}).items()]
        if skipped:
            out.append((f"{st['study']}: Optuna plots left out", None, skipped))
        if st.get("strategy") != "fold-wise":
            out.append((f"{st['study']}: learning curves", None, [
                "cross-fold trials report once per fold, not per epoch: no learning curves (each fold's epochs are "
                "in the trial's MLflow runs)"]))
            continue
        histories, missing = checkpoint_histories(st["trials"])
        notes = [f"trial {t}: no curve ({why})" for t, why in sorted(missing.items())]
        fig = learning_curves(st, histories, metric="val_uar", split=split, max_epochs=int(budget["max_epochs"]),
                              rungs=asha_rungs(budget) if asha else []) if histories else None
        out.append((f"{st['study']}: learning curves (fold {', '.join(map(str, st['folds']))})", fig, notes))
    return out


def _markdown(summary, studies, rows, label, pngs, plots, experiment) -> str:
    lines = [f"# IFDD search report: {experiment}", "",
             f"- protocol: **{label}** (strategy {summary['strategy']}, selection {summary['selection']})",
             *deploy_md(summary), f"- generated {time.strftime('%Y-%m-%d %H:%M')}", "",
             "## Per-fold test results", "", *fold_table_md(summary),
             "", "## What the search bought: winner vs the base config", "", *base_table_md(summary)]
    lines += ["", "## Per-class test recall (%)", "",
              "| fold | " + " | ".join(LABEL_NAMES) + " |", "|---" * (len(LABEL_NAMES) + 1) + "|"]
    for r in rows:
        rec = r.get("per_class_recall") or []
        lines.append(f"| {r['fold']} | " + " | ".join(_pct(v) for v in rec) + " |")
    lines += ["", "## Confusion matrices (test)", ""] + [f"![fold {f}](confusion_fold{f}.png)" for f in sorted(pngs)]
    lines += ["", "## Trials", "", "| study | trials | status counts |", "|---|---|---|"]
    for st in studies:
        lines.append(f"| {st['study']} | {len(st['trials'])} | {json.dumps(status_counts(st['trials']))} |")
    lines += ["", "## Optuna plots and learning curves", "",
              "Drawn in report.html (next to this file):", ""]
    lines += [f"- {title}" + ("" if fig is not None else ": " + "; ".join(notes)) for title, fig, notes in plots] \
        or ["- none"]
    lines += ["", "## Published DFEW 5-fold results (as reported by their authors; not reproduced here)", "",
              "| method | UAR % | WAR % |", "|---|---|---|"] + [f"| {m} | {u:.2f} | {w:.2f} |"
                                                              for m, u, w in PUBLISHED_DFEW]
    lines += ["", "Published numbers usually select the checkpoint on the test fold (optimistic); this report's "
                  f"numbers: {label}.", ""]
    return "\n".join(lines)


def _md_html(lines: list[str], table_id: str) -> str:
    """Markdown table rows (``| a | b |``, the second one the ``|---|`` rule) and the lines after them as HTML."""
    e, out, rows = html.escape, [], [ln for ln in lines if ln.startswith("|")]
    if rows:
        cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows if not set(r) <= set("|-")]
        head, body = cells[0], cells[1:]
        out.append(f"<table id='{table_id}'><tr>" + "".join(f"<th>{e(c)}</th>" for c in head) + "</tr>"
                   + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
    for ln in lines:
        if ln and not ln.startswith("|"):
            text = ln.removeprefix("- ").replace("**", "")
            if len(text) > 1 and text[0] == text[-1] == "_":  # _emphasis_
                text = text[1:-1]
            out.append(f"<p>{e(text)}</p>")
    return "\n".join(out)


def _html(summary, studies, rows, label, pngs, plots, experiment) -> str:
    e = html.escape
    folds_html = _md_html(fold_table_md(summary), "folds")
    base_html = _md_html(base_table_md(summary), "base")
    deploy_html = _md_html(deploy_md(summary), "deploy")
    recall_rows = "".join(f"<tr><td>{r['fold']}</td>" + "".join(f"<td>{_pct(v)}</td>" for v in (
        r.get("per_class_recall") or [])) + "</tr>" for r in rows)
    images = "".join(
        f"<figure><img alt='confusion fold {f}' src='data:image/png;base64,"
        f"{base64.b64encode(Path(p).read_bytes()).decode()}'><figcaption>fold {f}</figcaption></figure>"
        for f, p in sorted(pngs.items()))
    plot_divs = "".join(
        f"<h3>{e(title)}</h3>" + (figure_div(fig, f"plot-{i}") if fig is not None else "")
        + "".join(f"<p class='note'>{e(n)}</p>" for n in notes) for i, (title, fig, notes) in enumerate(plots)
    ) or "<p>none</p>"
    script = plotly_script() if any(fig is not None for _, fig, _ in plots) else ""
    published = "".join(f"<tr><td>{m}</td><td>{u:.2f}</td><td>{w:.2f}</td></tr>" for m, u, w in PUBLISHED_DFEW)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>IFDD report: {e(experiment)}</title>
{script}<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}th{{background:#eee}}figure{{display:inline-block}}
.label{{background:#fff3cd;padding:6px}}.note{{color:#555;font-size:90%}}</style></head><body>
<h1>IFDD search report: {e(experiment)}</h1>
<p class="label">Protocol: <b>{e(label)}</b> (strategy {e(summary['strategy'])}, selection
{e(summary['selection'])}).</p>{deploy_html}
<h2>Per-fold test results</h2>
{folds_html}
<h2>What the search bought: winner vs the base config</h2>
{base_html}
<h2>Per-class test recall (%)</h2><table><tr><th>fold</th>{''.join(f'<th>{c}</th>' for c in LABEL_NAMES)}</tr>
{recall_rows}</table>
<h2>Confusion matrices (test)</h2>{images}
<h2 id="plots">Optuna plots and learning curves</h2>{plot_divs}
<h2>Published DFEW 5-fold results</h2><p>As reported by their authors; not reproduced here. Most select the
checkpoint on the test fold (optimistic).</p>
<table id="published"><tr><th>method</th><th>UAR %</th><th>WAR %</th></tr>{published}</table>
</body></html>"""
