"""`ifdd report`: one search's results as HTML and Markdown, every number with the rule that selected it.

Reads what the search saved under ``<runs>/search/<experiment>/`` (summary.json, one JSON per study, the Optuna plot
HTML) and writes ``report.html`` (self-contained: confusion matrices embedded, plots copied alongside) and
``report.md`` with the protocol that produced every number (orchestrator/protocol.py), the per-fold table (the
winner, the split and the clips it was chosen on, how many of those are in the fold's test split, the test figure
and the clips it covers), mean ± std, the winner vs the base config (paired difference, sign test), the deploy
choice of a cross-fold search, per-class recall, confusion matrices, the Optuna plots and the published DFEW
results, labelled as published and not reproduced here. The HTML tables are the Markdown ones, rendered.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import time
from pathlib import Path
from typing import Any

from ifdd.data.manifest import LABEL_NAMES
from orchestrator.outputs import Outputs
from orchestrator.search.results import status_counts
from orchestrator.search.summary import base_table_md, deploy_md, fold_table_md
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
    plots = []
    for st in studies:
        for rel in st.get("plots", []):
            src = outputs.search_dir(experiment) / rel
            if src.is_file():
                shutil.copy2(src, out / src.name)
                plots.append(src.name)
    md = _markdown(summary, studies, rows, label, pngs, plots, experiment)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html(summary, studies, rows, label, pngs, plots, experiment))
    return out / "report.html", out / "report.md"


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
    lines += ["", "## Optuna plots", ""] + ([f"- [{p}]({p})" for p in plots]
                                            or ["- none (each study JSON lists why under plots_skipped)"])
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
    plot_frames = "".join(f"<h3>{e(p)}</h3><iframe src='{e(p)}' width='100%' height='460'></iframe>"
                          for p in plots) or "<p>none (each study JSON lists why under plots_skipped)</p>"
    published = "".join(f"<tr><td>{m}</td><td>{u:.2f}</td><td>{w:.2f}</td></tr>" for m, u, w in PUBLISHED_DFEW)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>IFDD report: {e(experiment)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}th{{background:#eee}}figure{{display:inline-block}}
.label{{background:#fff3cd;padding:6px}}</style></head><body>
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
<h2>Optuna plots</h2>{plot_frames}
<h2>Published DFEW 5-fold results</h2><p>As reported by their authors; not reproduced here. Most select the
checkpoint on the test fold (optimistic).</p>
<table id="published"><tr><th>method</th><th>UAR %</th><th>WAR %</th></tr>{published}</table>
</body></html>"""
