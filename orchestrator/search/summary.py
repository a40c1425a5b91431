"""A search's results as text: the terminal table of each study, the summary across folds, and ``summary.md``.
Every number is printed with the protocol that produced it (orchestrator/protocol.py); the tables and their
Markdown are shared with ``ifdd report``."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.protocol import metric_name, selection_split
from orchestrator.search.results import StudyResult
from orchestrator.search.space import SearchSpace


def format_params(p: dict[str, Any]) -> str:
    """``ratio=0.5, lambda_gc=0.123``: searched values by their last key, 3 significant digits."""
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in sorted(p.items()))


def print_study(res: StudyResult, space: SearchSpace) -> None:
    metrics = space.objective.metrics
    p = space.protocol
    where = "mean over the folds' " if len(res.folds) > 1 else ""
    print(f"\n{res.study}: {len(res.trials)} trial(s); Tune's objective on the {where}{selection_split(p.selection)} "
          f"split; b = the base config")
    print(f"  {'trial':<14} {'status':<10} {'epochs':>6} " + " ".join(f"{m:>8}" for m in metrics) + "  params")
    winners = {w.trial_id for w in res.winners.values()}
    for t in res.trials:  # in the order Tune created them: the base first
        mark = ("*" if t.trial_id in winners else " ") + ("b" if t.base else " ")
        print(f" {mark}{t.trial_id:<13} {t.status:<10} {t.epochs:>6} "
              + " ".join(f"{t.values.get(m, 0.0):>8.4f}" for m in metrics) + f"  {format_params(t.params)}"
              + (f"  [{t.reason[:80]}]" if t.reason else ""))
    if space.objective.multi and res.pareto:
        print(f"  Pareto front ({' vs '.join(metrics)}): {', '.join(sorted(res.pareto))}")
    for fold, test in sorted(res.tests.items()):
        w, leak = res.winners[fold], res.leakage.get(fold, {})
        chosen = _values(w.fold_values.get(str(fold), {}), p.selection)
        print(f"  fold {fold}: trial {w.trial_id} chosen on {leak.get('selection_clips', '?')} clips ({chosen}; "
              f"{leak.get('overlap', '?')} of them in fold {fold}'s test split); test once: UAR {test['uar']:.4f} "
              f"WAR {test['war']:.4f} ({test['clips']} clips)")
    if res.deploy:
        print(f"  {res.deploy['label']}: trial {res.deploy['trial_id']} ({format_params(res.deploy['params'])})")


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n{summary['strategy']} summary ({summary['label']})")
    print(f"  {'fold':>4} {'trial':<14} {'test UAR':>9} {'test WAR':>9} {'overlap':>7}  params")
    for r in summary["folds"]:
        print(f"  {r['fold']:>4} {r['trial']:<14} {r['test_uar']:>9.4f} {r['test_war']:>9.4f} "
              f"{(r['leakage'] or {}).get('overlap', '-'):>7}  {format_params(r['params'])}")
    print(f"  mean ± std over {len(summary['folds'])} fold(s): UAR {summary['test_uar_mean']:.4f} ± "
          f"{summary['test_uar_std']:.4f}, WAR {summary['test_war_mean']:.4f} ± {summary['test_war_std']:.4f}")
    print("  overlap: clips that scored the fold's choice and are in its test split (0 = nested)")
    for line in base_lines(summary):
        print(f"  {line}")
    if summary.get("deploy"):
        d = summary["deploy"]
        print(f"  {d['label']}: trial {d['trial_id']} ({format_params(d['params'])})")
    for r in summary["folds"]:
        for w in r.get("warnings", []):
            print(f"  warning: {w}")


def base_lines(summary: dict[str, Any]) -> list[str]:
    """What the search bought: the winner minus the base config per fold, the mean difference and the sign test."""
    split = selection_split(summary["selection"])
    out = []
    for key, what in (("test_uar", "test UAR"), ("test_war", "test WAR")):
        pr = (summary.get("paired") or {}).get(key)
        if pr:
            out.append(f"winner − base, {what}: {_signed(pr['mean_diff'])} mean over folds {pr['folds']} "
                       f"({pr['wins']} up, {pr['losses']} down, {pr['ties']} tied; sign test p = {pr['p']:.3g})")
    sel = next((v for k, v in (summary.get("paired") or {}).items() if k.startswith("selected:") and v), None)
    if sel:
        out.append(f"winner − base on the {split} split the choice was made on: {_signed(sel['mean_diff'])}")
    return out or ["no base-config trial to compare with"]


def _values(values: dict[str, float], selection: str) -> str:
    """``val_uar 0.4120, val_war 0.5000``, named after the split the values come from."""
    return ", ".join(f"{metric_name(k, selection)} {v:.4f}" for k, v in values.items())


def _signed(v: float) -> str:
    return f"{v:+.4f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _clips(r: dict[str, Any]) -> str:
    listed = r.get("listed_clips")
    return str(r["test_clips"]) if listed in (None, r["test_clips"]) else f"{r['test_clips']} of {listed} ⚠"


def fold_table_md(summary: dict[str, Any]) -> list[str]:
    """The per-fold Markdown table: the winner, what it was chosen on, the leakage check, the test figure and the
    clips it covers, and the mean."""
    split = selection_split(summary["selection"])
    lines = [f"| fold | trial | params | chosen on ({split}) | chosen-on clips | of them in this fold's test split | "
             "test UAR % (classes) | test WAR % | test clips |", "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["folds"]:
        sel = _values(r.get("selected_on") or {}, summary["selection"])
        leak = r.get("leakage") or {}
        lines.append(f"| {r['fold']} | {r['trial']} | {format_params(r['params']) or '-'} | {sel} | "
                     f"{leak.get('selection_clips', '-')} | {leak.get('overlap', '-')} | {_pct(r['test_uar'])} "
                     f"({r.get('uar_classes') or '-'}) | {_pct(r['test_war'])} | {_clips(r)} |")
    lines += ["", f"**Mean ± std over {len(summary['folds'])} fold(s)** ({summary['label']}): "
                  f"UAR {_pct(summary['test_uar_mean'])} ± {_pct(summary['test_uar_std'])} %, "
                  f"WAR {_pct(summary['test_war_mean'])} ± {_pct(summary['test_war_std'])} %"]
    warnings = [w for r in summary["folds"] for w in r.get("warnings", [])]
    return lines + ([""] + [f"- warning: {w}" for w in warnings] if warnings else [])


def base_table_md(summary: dict[str, Any]) -> list[str]:
    """Winner vs the base config, fold by fold (chosen-on split and test), with the paired difference."""
    split = selection_split(summary["selection"])
    lines = [f"_{summary['base_label']}._", "",
             f"| fold | winner | base trial | winner {split} | base {split} | winner test UAR % | base test UAR % | "
             "Δ UAR | winner test WAR % | base test WAR % | Δ WAR |", "|---" * 11 + "|"]
    for r in summary["folds"]:
        b = r.get("base")
        if b is None:
            lines.append(f"| {r['fold']} | {r['trial']} | - | | | | | | | | |")
            continue
        key = next(iter(r["selected_on"]), None)
        ws, bs = r["selected_on"].get(key), b["selected_on"].get(key)
        note = " (same)" if b["same_trial"] else ""
        if b["status"] != "complete":
            note += f" ({b['status']} at epoch {b['epochs']})"
        lines.append(f"| {r['fold']} | {r['trial']} | {b['trial']}{note} | "
                     f"{_num(ws)} | {_num(bs)} | {_pct(r['test_uar'])} | {_pct(b['test_uar'])} | "
                     f"{_pct(r['test_uar'] - b['test_uar'])} | {_pct(r['test_war'])} | {_pct(b['test_war'])} | "
                     f"{_pct(r['test_war'] - b['test_war'])} |")
    return lines + [""] + [f"- {line}" for line in base_lines(summary)]


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def deploy_md(summary: dict[str, Any]) -> list[str]:
    d = summary.get("deploy")
    if not d:
        return []
    vals = _values(d["values"], summary["selection"])
    return [f"- **{d['label']}**: trial {d['trial_id']} ({format_params(d['params']) or 'base values'}; {vals})"]


def summary_markdown(summary: dict[str, Any]) -> str:
    s = summary
    lines = [f"# Search summary: {s['space']['name']}", "",
             f"- protocol: **{s['label']}**", f"- strategy: {s['strategy']}; selection: {s['selection']}",
             f"- trials per study: {json.dumps(s['trials'])}", *deploy_md(s), "", "## Per fold", ""]
    return "\n".join(lines + fold_table_md(s) + ["", "## What the search bought: winner vs the base config", ""]
                     + base_table_md(s) + [""])

