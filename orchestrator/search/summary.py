"""A search's results as text: the terminal table of each study, the cross-fold summary, and ``summary.md``.
Every number is printed with the rule that selected it (orchestrator/protocol.py)."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.protocol import SELECTION_LABEL
from orchestrator.search.results import StudyResult
from orchestrator.search.space import SearchSpace


def format_params(p: dict[str, Any]) -> str:
    """``ratio=0.5, lambda_gc=0.123``: searched values by their last key, 3 significant digits."""
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in sorted(p.items()))


def print_study(res: StudyResult, space: SearchSpace) -> None:
    metrics = space.objective.metrics
    split = "test" if space.protocol.selection == "test" else "inner-val"
    print(f"\n{res.study}: {len(res.trials)} trial(s); objective on {split}")
    print(f"  {'trial':<12} {'status':<10} {'epochs':>6} " + " ".join(f"{m:>8}" for m in metrics) + "  params")
    for t in sorted(res.trials, key=lambda t: t.trial_id):
        mark = "*" if res.best and t.trial_id == res.best.trial_id else " "
        print(f" {mark}{t.trial_id:<12} {t.status:<10} {t.epochs:>6} "
              + " ".join(f"{t.values.get(m, 0.0):>8.4f}" for m in metrics) + f"  {format_params(t.params)}"
              + (f"  [{t.reason[:80]}]" if t.reason else ""))
    if space.objective.multi and res.pareto:
        print(f"  Pareto front ({' vs '.join(metrics)}): {', '.join(sorted(res.pareto))}")
    for fold, test in sorted(res.tests.items()):
        print(f"  fold {fold} test (once, trial {res.best.trial_id}): UAR {test['uar']:.4f} WAR {test['war']:.4f} "
              f"({test['clips']} clips)")


def print_summary(summary: dict[str, Any]) -> None:
    label = SELECTION_LABEL[summary["selection"]]
    print(f"\n{summary['strategy']} summary ({label})")
    print(f"  {'fold':>4} {'trial':<12} {'test UAR':>9} {'test WAR':>9}  params")
    for r in summary["folds"]:
        print(f"  {r['fold']:>4} {r['trial']:<12} {r['test_uar']:>9.4f} {r['test_war']:>9.4f}  "
              f"{format_params(r['params'])}")
    print(f"  mean ± std over {len(summary['folds'])} fold(s): UAR {summary['test_uar_mean']:.4f} ± "
          f"{summary['test_uar_std']:.4f}, WAR {summary['test_war_mean']:.4f} ± {summary['test_war_std']:.4f}")


def selected_on(selection: str) -> str:
    return "test (optimistic)" if selection == "test" else "inner-val"


def fold_table_md(summary: dict[str, Any]) -> list[str]:
    """The per-fold Markdown table (test metrics in %, with the values each winner was selected on) and the mean."""
    lines = [f"| fold | trial | params | selected on ({selected_on(summary['selection'])}) | test UAR % | "
             "test WAR % | test clips |", "|---|---|---|---|---|---|---|"]
    for r in summary["folds"]:
        sel = ", ".join(f"{k} {v:.4f}" for k, v in (r.get("selected_on") or {}).items())
        lines.append(f"| {r['fold']} | {r['trial']} | {format_params(r['params']) or '-'} | {sel} | "
                     f"{_pct(r['test_uar'])} | {_pct(r['test_war'])} | {r['test_clips']} |")
    lines += ["", f"**Mean ± std over {len(summary['folds'])} fold(s)** ({SELECTION_LABEL[summary['selection']]}): "
                  f"UAR {_pct(summary['test_uar_mean'])} ± {_pct(summary['test_uar_std'])} %, "
                  f"WAR {_pct(summary['test_war_mean'])} ± {_pct(summary['test_war_std'])} %"]
    return lines


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    s = summary
    lines = [f"# Search summary: {s['space']['name']}", "",
             f"- strategy: {s['strategy']}", f"- selection: {SELECTION_LABEL[s['selection']]}",
             f"- trials per study: {json.dumps(s['trials'])}", ""]
    return "\n".join(lines + fold_table_md(s) + [""])
