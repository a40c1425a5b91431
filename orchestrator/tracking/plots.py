"""Optuna study plots as standalone HTML: optimisation history, parallel coordinates, parameter importances.

Written next to the study's results (``runs/search/<space>/plots/``), logged to the study's parent MLflow run and
linked from ``ifdd report``. A plot Optuna cannot draw (too few finished trials, a single parameter for the
importances, a multi-objective study's history) is skipped with the reason, never faked.
"""

from __future__ import annotations

from pathlib import Path

PLOTS = ("optimization_history", "parallel_coordinate", "param_importances")


def optuna_plots(study_name: str, storage: str, out: Path) -> tuple[list[Path], dict[str, str]]:
    import optuna
    import optuna.visualization as vis

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    out.mkdir(parents=True, exist_ok=True)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    multi = len(study.directions) > 1
    written, skipped = [], {}
    for name in PLOTS:
        if len(done) < 2:
            skipped[name] = f"{len(done)} completed trial(s); needs 2"
            continue
        kwargs = {"target": (lambda t: t.values[0]), "target_name": "objective 1"} if multi else {}
        try:
            fig = getattr(vis, f"plot_{name}")(study, **kwargs)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            skipped[name] = " ".join(str(e).split())[:200]
            continue
        fig.update_layout(title=f"{study_name}: {name.replace('_', ' ')}")
        path = out / f"{study_name}-{name}.html"
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        written.append(path)
    return written, skipped
