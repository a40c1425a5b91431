"""A study's plots: Optuna's (optimisation history, parallel coordinates, parameter importances) and the learning
curves of its trials.

Optuna's are drawn when a study finishes and saved next to its results (``<runs>/search/<space>/plots/``) as Plotly
JSON, one file per plot, for ``ifdd report`` to inline, plus one page ``<study>-optuna.html`` holding all of them
with one embedded copy of plotly.js, logged to the study's parent MLflow run. The learning curves are drawn by the
report from the trials' checkpoints (each ``state.pt`` carries the history of every epoch). A plot that cannot say
anything (too few finished trials, a single parameter for the importances, importances Optuna warns are all equal) is
skipped with the reason, never faked.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

PLOTS = ("optimization_history", "parallel_coordinate", "param_importances")
MARKERS = {"stopped": ("x", "stopped early by ASHA"), "nonfinite": ("triangle-down", "stopped: non-finite loss"),
           "error": ("octagon", "errored")}


def optuna_figures(study_name: str, storage: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(plot name -> Plotly figure, plot name -> why it was skipped) for one Optuna study."""
    import optuna
    import optuna.visualization as vis

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    multi = len(study.directions) > 1
    figures, skipped = {}, {}
    for name in PLOTS:
        if len(done) < 2:
            skipped[name] = f"{len(done)} completed trial(s); needs 2"
            continue
        kwargs = {"target": (lambda t: t.values[0]), "target_name": "objective 1"} if multi else {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fig = getattr(vis, f"plot_{name}")(study, **kwargs)
            except (ValueError, RuntimeError, ZeroDivisionError) as e:
                skipped[name] = " ".join(str(e).split())[:200]
                continue
        said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if said:  # e.g. "Parameter importances will be equal": a plot of nothing
            skipped[name] = " ".join(" ".join(said).split())[:200]
            continue
        fig.update_layout(title=f"{study_name}: {name.replace('_', ' ')}")
        figures[name] = fig
    return figures, skipped


def optuna_plots(study_name: str, storage: str, out: Path) -> tuple[list[Path], dict[str, str]]:
    """Write each Optuna plot as ``<study>-<plot>.json`` and all of them as ``<study>-optuna.html`` (one embedded
    plotly.js) under ``out``; returns the files written and the plots skipped with their reasons."""
    figures, skipped = optuna_figures(study_name, storage)
    if not figures:
        return [], skipped
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures.items():
        path = out / f"{study_name}-{name}.json"
        fig.write_json(path)
        written.append(path)
    page = out / f"{study_name}-optuna.html"
    page.write_text(standalone_page(f"{study_name}: Optuna plots", list(figures.values())), encoding="utf-8")
    return [page, *written], skipped


# learning curves ------------------------------------------------------------------------------------------------
def checkpoint_histories(trials: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """trial id -> every epoch's metrics from its latest checkpoint's ``state.pt``, and trial id -> why a trial's
    history could not be read (no checkpoint: infeasible or errored before its first epoch; an unreadable file)."""
    from ifdd.checkpoint import CheckpointError, load_checkpoint

    histories, missing = {}, {}
    for t in trials:
        if not t.get("checkpoint"):
            missing[t["trial_id"]] = f"{t['status']}, no checkpoint"
            continue
        path = Path(t["checkpoint"]) / "state.pt"
        try:
            histories[t["trial_id"]] = list(load_checkpoint(path).get("history", []))
        except (OSError, CheckpointError) as e:
            missing[t["trial_id"]] = " ".join(str(e).split())[:160]
    return histories, missing


def asha_rungs(budget: dict[str, Any]) -> list[int]:
    """The epochs at which ASHA compares trials: grace_period · reduction_factor^k below max_epochs."""
    rungs, r = [], int(budget["grace_period"])
    while r < int(budget["max_epochs"]):
        rungs.append(r)
        r *= int(budget["reduction_factor"])
    return rungs


def learning_curves(study: dict[str, Any], histories: dict[str, list[dict[str, Any]]], *, metric: str, split: str,
                    max_epochs: int, rungs: list[int]):
    """One fold-wise study's trials as lines of ``metric`` per epoch; trials ASHA stopped end in a cross, the
    winner is drawn thick; ASHA's rungs are dotted verticals."""
    import plotly.graph_objects as go

    best = (study.get("best") or {}).get("trial_id")
    status = {t["trial_id"]: t["status"] for t in study["trials"]}
    fig = go.Figure()
    for trial_id, history in sorted(histories.items()):
        points = [(int(h["epoch"]), h[metric]) for h in history if h.get(metric) is not None]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        winner = trial_id == best
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"{trial_id}{' (chosen)' if winner else ''}"
                                 f" {status.get(trial_id, '')}", line={"width": 4 if winner else 1.5},
                                 marker={"size": 5}, legendgroup=trial_id))
        marker = MARKERS.get(status.get(trial_id, ""))
        if marker:
            fig.add_trace(go.Scatter(x=[xs[-1]], y=[ys[-1]], mode="markers", legendgroup=trial_id, showlegend=False,
                                     marker={"symbol": marker[0], "size": 13, "color": "black"},
                                     hovertext=f"{trial_id}: {marker[1]} after epoch {xs[-1]}", hoverinfo="text"))
    for r in rungs:
        fig.add_vline(x=r, line_dash="dot", line_color="grey", annotation_text=f"ASHA rung {r}",
                      annotation_position="top")
    fig.update_layout(title=f"{study['study']}: {metric} on {split} per epoch (× = stopped early by ASHA)",
                      xaxis_title="epoch", yaxis_title=f"{metric} ({split})", xaxis={"range": [0.5, max_epochs + 0.5],
                                                                                     "dtick": 1}, height=420)
    return fig


# HTML -----------------------------------------------------------------------------------------------------------
def figure_div(fig, div_id: str) -> str:
    """A figure as a <div> and its drawing script, without plotly.js (the page carries one copy)."""
    import plotly.io as pio

    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def plotly_script() -> str:
    """plotly.js itself, inline: the page works from disk with no network."""
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def read_figure(path: Path):
    import plotly.io as pio

    return pio.read_json(path)


def standalone_page(title: str, figures: list) -> str:
    import html

    divs = "".join(figure_div(f, f"plot-{i}") for i, f in enumerate(figures))
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>{plotly_script()}'
            f"</head><body>{divs}</body></html>")
