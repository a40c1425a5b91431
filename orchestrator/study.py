"""Running the studies of a search space one after another, and the summary across folds.

Every printed and saved number says how it was selected: ``selection: val`` gives a nested estimate (trials
ranked on inner-val, each fold's test split evaluated once with the chosen checkpoint); ``selection: test`` is
paper parity (ranked on the test split itself: optimistic, best-on-test).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import sys
from pathlib import Path
from typing import Any

from ifdd.config import to_dict
from orchestrator.plots import optuna_plots
from orchestrator.ray_env import init_ray, plan_trials
from orchestrator.report_text import SELECTION_LABEL
from orchestrator.search import (
    Paths,
    StudyResult,
    TrialRow,
    best_checkpoints,
    collect,
    make_tuner,
    prepare_study,
    select,
    study_names,
    study_payload,
    summary_payload,
    test_once,
)
from orchestrator.space import SearchSpace
from orchestrator.stores import is_postgres, mask_url, schema_lock
from orchestrator.tracking import Tracker, default_uri, flatten, git_commit, mask_secrets, split_credentials
from orchestrator.tracking_study import dataset_name, log_study, register_best, set_champion
from orchestrator.tracking_tune import MLflowTrialCallback, TrialTracking, reconcile
from orchestrator.train import write_summary


def cluster_plan(space: SearchSpace, address: str | None, num_cpus: int | None, share: int = 1):
    import ray

    cluster = init_ray(address, num_cpus=num_cpus)
    nodes = [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]
    r = space.resources
    return plan_trials(cluster, r.workers_per_trial, r.cpus_per_worker, r.gpus_per_worker, r.max_concurrent_trials,
                       nodes=nodes, share=share), cluster


def run_search(space: SearchSpace, *, storage: str, runs: Path, resume: bool, fresh: bool,
               address: str | None = None, num_cpus: int | None = None, share: int = 1,
               tracking_uri: str | None = None, optuna_storage: str | None = None) -> bool:
    """Run (or resume) every study of ``space``; True when all finished and the summary was written."""
    paths = Paths(storage, runs, space.name, optuna_storage)
    # user:password@ goes to MLflow's credential variables here, so no copy of it reaches Tune's saved state
    uri = split_credentials(tracking_uri) if tracking_uri else default_uri(runs)
    artifact_root = None if uri.startswith("http") else str((runs / "mlartifacts").resolve())
    paths.results.mkdir(parents=True, exist_ok=True)
    # fold jobs started together (ifdd launch) would race creating the schemas (sqlite: file lock; PostgreSQL:
    # an advisory lock per database)
    with init_lock(runs), schema_lock(uri), schema_lock(paths.optuna):
        tracker = Tracker(uri, Path(artifact_root) if artifact_root else None)  # unreachable: fails before training
        import optuna

        optuna.storages.RDBStorage(paths.optuna)
    plan, cluster = cluster_plan(space, address, num_cpus, share)
    dataset = dataset_name(space.base.data.manifest)
    common_tags = {"ifdd.selection": space.protocol.selection, "ifdd.strategy": space.protocol.strategy,
                   "ifdd.git_commit": git_commit(), "ifdd.manifest_sha256": manifest_hash(space.base.data.manifest),
                   "ifdd.dataset": dataset}
    champions: list[dict[str, Any]] = []
    print(f"search {space.name}: {space.protocol.strategy}, folds {list(space.protocol.folds)}, "
          f"{space.budget.num_samples} trials per study, ≤{space.budget.max_epochs} epochs, objective "
          f"{'/'.join(space.objective.metrics)} ({'/'.join(space.objective.modes)}), selection "
          f"{space.protocol.selection}\ncluster {cluster.get('CPU', 0):g} CPU / {cluster.get('GPU', 0):g} GPU: "
          f"{plan.describe()}", flush=True)
    results: list[dict[str, Any]] = []
    all_done, untracked = True, []

    def study_tracking(study: str, folds: list[int]) -> TrialTracking:
        return TrialTracking(uri, artifact_root, space.name, study,
                             parent_tags={"ifdd.study": study, "ifdd.kind": "study"},
                             base_params=flatten(to_dict(space.trial_base())),
                             trial_tags={**common_tags, "ifdd.fold": ",".join(map(str, folds))})

    for study, folds in study_names(space):
        mode = prepare_study(space, study, paths, resume=resume, fresh=fresh)
        if mode == "done":
            payload = json.loads(paths.study_json(study).read_text())
            print(f"\nstudy {study}: finished earlier, reusing {paths.study_json(study)}")
            if payload.get("tracking_pending"):  # finished while the tracking store was down: log it now
                print(f"study {study}: logging it to MLflow now ({payload['tracking_pending']})", flush=True)
                payload.pop("tracking_pending")
                if try_track(study_tracking(study, folds), result_from_payload(payload), space, paths, dataset,
                             payload, common_tags):
                    write_summary(paths.study_json(study), payload)
                else:
                    untracked.append(study)
            results.append(payload)
            champions += results[-1].get("registered", [])
            continue
        print(f"\nstudy {study}: {'resuming' if mode == 'restore' else 'starting'} (folds {folds})", flush=True)
        tracking = study_tracking(study, folds)
        try:
            if mode == "new":
                tracking.tracker.delete_study_runs(space.name, study)
            tracking.tracker.set_tags(tracking.parent()[1], {**common_tags, "ifdd.fold": ",".join(map(str, folds))})
        except Exception as e:  # noqa: BLE001 - the store went down between studies: the callback warns too
            print(f"warning: MLflow: {' '.join(str(e).split())[:200]}", file=sys.stderr)
        res = run_study(space, study, folds, paths, plan, restore=mode == "restore", tracking=tracking)
        payload = study_payload(res, space)
        if not try_track(tracking, res, space, paths, dataset, payload, common_tags):
            untracked.append(study)
        champions += payload.get("registered", [])
        write_summary(paths.study_json(study), payload)
        print_study(res, space)
        if not res.complete:
            all_done = False
            print(f"study {study} is partial: {res.note}\nnothing was selected or tested; continue with: "
                  f"ifdd search --space {space.path} --folds {','.join(map(str, space.protocol.folds))} "
                  f"--strategy {space.protocol.strategy} --resume", file=sys.stderr)
            break
        results.append(payload)
    if not all_done:
        return False
    if untracked:
        summary = summary_payload(space, results)
        write_summary(paths.results / "summary.json", summary)
        (paths.results / "summary.md").write_text(summary_markdown(summary))
        print_summary(summary)
        print(f"\nerror: MLflow at {uri} was unreachable; every trial and test result is saved under {paths.results} "
              f"and in the Ray checkpoints, but studies {', '.join(untracked)} are not in MLflow and no champion "
              f"was set. Once the server is back, log them with: ifdd search --space {space.path} --folds "
              f"{','.join(map(str, space.protocol.folds))} --strategy {space.protocol.strategy} --resume",
              file=sys.stderr, flush=True)
        return False
    with init_lock(runs):  # fold jobs of one `ifdd launch` finish at any time: the last one sees every fold
        siblings = sibling_studies(space, paths, {r["study"] for r in results})
        results = sorted(results + siblings, key=lambda r: r["folds"])
        champions += [c for r in siblings for c in r.get("registered", [])]
        champion = set_champion(tracker, dataset, champions)
        summary = summary_payload(space, results)
        if siblings:
            summary["from_other_runs"] = [r["study"] for r in siblings]
        summary["registry"] = {"model": f"ifdd-{dataset}", "champion_version": champion,
                               "folds": {str(c["fold"]): c["version"] for c in champions},
                               "tracking_uri": mask_secrets(uri), "experiment": space.name}
        summary["optuna_storage"] = mask_url(paths.optuna)
        write_summary(paths.results / "summary.json", summary)
        (paths.results / "summary.md").write_text(summary_markdown(summary))
    print_summary(summary)
    print(f"\nsaved {paths.results / 'summary.json'} and summary.md")
    if champion:
        aliases = ", ".join(f"fold{c['fold']}" for c in champions)
        print(f"registered ifdd-{dataset}: aliases {aliases}, champion = "
              f"version {champion} (best selection value); load with mlflow.pytorch.load_model("
              f"'models:/ifdd-{dataset}@champion')")
    browse = mask_secrets(uri) if uri.startswith("http") else \
        f"`ifdd ui{' --tracking-uri ' + mask_url(uri) if is_postgres(uri) else ''}`"
    print(f"MLflow: {mask_secrets(uri)} (experiment {space.name}); Optuna: {mask_url(paths.optuna)}; "
          f"browse with {browse}")
    return True


def sibling_studies(space: SearchSpace, paths: Paths, have: set[str]) -> list[dict[str, Any]]:
    """Complete fold-wise studies of this space that other runs saved next to ours (the other fold jobs of an
    ``ifdd launch``, or an earlier ``ifdd search --folds k``), so summary.json covers every finished fold."""
    if space.protocol.strategy != "fold-wise":
        return []
    out = []
    for path in sorted(paths.results.glob(f"{space.name}-fold*.json")):
        if path.stem in have or not re.fullmatch(rf"{re.escape(space.name)}-fold\d+", path.stem):
            continue
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            print(f"warning: {path}: not read into the summary ({e})", file=sys.stderr)
            continue
        if payload.get("complete") and payload.get("tests") and not payload.get("tracking_pending"):
            out.append(payload)
    return out


@contextlib.contextmanager
def init_lock(runs: Path):
    runs.mkdir(parents=True, exist_ok=True)
    with open(runs / ".init.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def manifest_hash(manifest: str) -> str:
    from ifdd.data.manifest import load_manifest

    return str(load_manifest(manifest).attrs["ifdd"].get("content_sha256", ""))[:16]


def try_track(tracking: TrialTracking, res: StudyResult, space: SearchSpace, paths: Paths, dataset: str,
              payload: dict[str, Any], common_tags: dict[str, str]) -> bool:
    """``track_study`` unless the tracking store is down: then the study's payload is marked ``tracking_pending``
    (its Ray results are kept as they are) and False is returned; ``--resume`` logs it once the store is back. A
    failure while the store answers its health check is a bug and is raised."""
    try:
        tracking.tracker.check()  # fails in seconds instead of MLflow's minutes of HTTP retries
        tracking.tracker.set_tags(tracking.parent()[1], {**common_tags, "ifdd.fold": ",".join(map(str, res.folds))})
        track_study(tracking, res, space, paths, dataset, payload)
        return True
    except Exception as e:  # noqa: BLE001 - decided below: an outage is recorded, anything else re-raised
        try:
            tracking.tracker.check()
        except ValueError:
            payload["tracking_pending"] = f"MLflow unreachable: {' '.join(str(e).split())[:200]}"
            write_summary(paths.study_json(res.study), payload)
            print(f"warning: study {res.study}: MLflow is unreachable; its results are saved in "
                  f"{paths.study_json(res.study)} and will be logged by --resume", file=sys.stderr, flush=True)
            return False
        raise


def result_from_payload(p: dict[str, Any]) -> StudyResult:
    """The StudyResult a saved ``<study>.json`` describes (to log a study finished during a tracking outage)."""
    return StudyResult(p["study"], list(p["folds"]), bool(p["complete"]), [TrialRow(**t) for t in p["trials"]],
                       TrialRow(**p["best"]) if p.get("best") else None, list(p.get("pareto", [])),
                       {int(k): v for k, v in p.get("tests", {}).items()}, p.get("note", ""))


def track_study(tracking: TrialTracking, res: StudyResult, space: SearchSpace, paths: Paths, dataset: str,
                payload: dict[str, Any]) -> None:
    """Reconcile the trials' runs from their checkpoints, log the parent run, register the fold winners."""
    from ifdd.checkpoint import load_checkpoint
    from ifdd.runconfig import with_overrides

    histories = {}
    if space.protocol.strategy == "fold-wise":
        for row in res.trials:
            if row.checkpoint and (Path(row.checkpoint) / "state.pt").is_file():
                histories[row.trial_id] = load_checkpoint(Path(row.checkpoint) / "state.pt").get("history", [])
    added = reconcile(tracking, res.trials, histories)
    if added:
        print(f"MLflow: logged {added} epoch(s) the live logging had missed", flush=True)
    cfg = with_overrides(space.trial_base(), res.best.params) if res.best else space.trial_base()
    parent = log_study(tracking, res, space, cfg)
    if space.params:
        plots, skipped = optuna_plots(res.study, paths.optuna, paths.results / "plots")
        for path in plots:
            tracking.tracker.log_file(parent, path, "optuna")
        payload["plots"] = [str(p.relative_to(paths.results)) for p in plots]
        payload["plots_skipped"] = skipped
        write_summary(paths.study_json(res.study), payload)
    if res.complete and res.best and res.tests:
        versions = register_best(tracking, parent, res, cfg, best_checkpoints(res.best, res.study, res.folds, paths),
                                 dataset)
        key = space.objective.metrics[0]
        payload["registered"] = [{"fold": f, "version": v, "selection_value": res.best.values[key]}
                                 for f, v in versions.items()]
        write_summary(paths.study_json(res.study), payload)


def run_study(space: SearchSpace, study: str, folds: list[int], paths: Paths, plan, *, restore: bool,
              tracking: TrialTracking) -> StudyResult:
    tuner = make_tuner(space, study, folds, paths, plan, restore=restore, callbacks=[MLflowTrialCallback(tracking)])
    grid = tuner.fit()
    rows, complete = collect(grid, space)
    res = StudyResult(study, folds, complete, rows)
    if not complete:
        finished = sum(r.status not in ("error",) for r in rows if r.epochs)
        res.note = (f"{grid.num_terminated} of {space.budget.num_samples} trials finished "
                    f"({grid.num_errors} errored, {len(rows) - grid.num_terminated - grid.num_errors} interrupted; "
                    f"{finished} reported results)")
        return res
    res.best, res.pareto = select(rows, space)
    if res.best is None:
        res.complete, res.note = False, "no trial produced a usable checkpoint (all infeasible or failed)"
        return res
    res.tests = test_once(best_checkpoints(res.best, study, folds, paths), res.best, space, plan)
    return res


# Text output --------------------------------------------------------------------------------------------------
def _params(p: dict[str, Any]) -> str:
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
              + " ".join(f"{t.values.get(m, 0.0):>8.4f}" for m in metrics) + f"  {_params(t.params)}"
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
        print(f"  {r['fold']:>4} {r['trial']:<12} {r['test_uar']:>9.4f} {r['test_war']:>9.4f}  {_params(r['params'])}")
    print(f"  mean ± std over {len(summary['folds'])} fold(s): UAR {summary['test_uar_mean']:.4f} ± "
          f"{summary['test_uar_std']:.4f}, WAR {summary['test_war_mean']:.4f} ± {summary['test_war_std']:.4f}")


def summary_markdown(summary: dict[str, Any]) -> str:
    s = summary
    lines = [f"# Search summary: {s['space']['name']}", "",
             f"- strategy: {s['strategy']}", f"- selection: {SELECTION_LABEL[s['selection']]}",
             f"- trials per study: {json.dumps(s['trials'])}", "",
             "| fold | trial | test UAR | test WAR | test clips | params |", "|---|---|---|---|---|---|"]
    for r in s["folds"]:
        lines.append(f"| {r['fold']} | {r['trial']} | {r['test_uar']:.4f} | {r['test_war']:.4f} | "
                     f"{r['test_clips']} | {_params(r['params'])} |")
    lines += ["", f"**mean ± std**: UAR {s['test_uar_mean']:.4f} ± {s['test_uar_std']:.4f}, "
                  f"WAR {s['test_war_mean']:.4f} ± {s['test_war_std']:.4f}", ""]
    return "\n".join(lines)
