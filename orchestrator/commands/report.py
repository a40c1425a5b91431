"""`ifdd report`: HTML + Markdown report of a finished search (<runs>/search/<experiment>/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.commands.options import add_runs_arg, outputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML and Markdown report of a finished search",
                       description="Write report.html and report.md for a finished search: per-fold table with "
                                   "mean ± std and the selection rule, per-class recall, confusion matrices, Optuna "
                                   "plots, each fold's learning curves and published DFEW results (labelled as "
                                   "such). report.html is one file that opens from disk with no network.")
    p.add_argument("--experiment", default=None, help="search-space name (default: the latest finished search)")
    p.add_argument("--out", default=None, help="output folder (default <runs>/reports/<experiment>)")
    add_runs_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.report import build_report, latest_experiment

    out = outputs(args)
    print(f"runs root {out.root}: reading {out.root / 'search'}")
    experiment = args.experiment or latest_experiment(out)
    html_path, md_path = build_report(out, experiment, Path(args.out) if args.out else out.report_dir(experiment))
    print(f"wrote {html_path} and {md_path}")
    return 0
