"""`ifdd search`'s loop: the studies of a search space one after another, then the summary across folds.

Every printed and saved number says which protocol produced it (orchestrator/protocol.py, docs/protocol.md):
fold-wise nested, cross-fold nested (leave-fold-out selection) or paper parity (best on test, optimistic). Each
study is recorded with its fingerprint before it runs; resuming or reusing one under another fingerprint, or
summarising a sibling fold study recorded under another, is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ifdd.config import to_dict
from orchestrator.outputs import DEFAULT_RUNS, RUNS_ENV, Outputs, write_json
from orchestrator.planner import TrialPlan, plan_trials
from orchestrator.protocol import fingerprint_diff, label, protocol_key
from orchestrator.ray_session import init_ray, live_nodes
from orchestrator.search.results import (
    Paths,
    result_from_payload,
    study_fingerprint,
    study_names,
    study_payload,
    summary_payload,
)
from orchestrator.search.space import SearchSpace
from orchestrator.search.study_tracking import try_track
from orchestrator.search.summary import print_study, print_summary, summary_markdown
from orchestrator.search.tuner import prepare_study, run_study
from orchestrator.tracking.client import Tracker, flatten, git_commit
from orchestrator.tracking.registry import dataset_name, model_name, set_champion
from orchestrator.tracking.secrets import mask_secrets
from orchestrator.tracking.stores import is_postgres, schema_lock
from orchestrator.tracking.tune_callback import TrialTracking


@dataclass
class SearchRun:
    """What every study of one ``ifdd search`` shares: the space, where things go, the tracking store."""

    space: SearchSpace
    out: Outputs
    paths: Paths
    uri: str
    tracker: Tracker
    dataset: str
    tags: dict[str, str]
    """Tags of every run of this search: protocol, selection rule, strategy, git commit, manifest hash, dataset."""
    manifest_sha256: str
    register: bool = True
    """Register each fold's winner in the model registry (False: ``--no-register``)."""

    @property
    def model(self) -> str:
        """The registered model of this space and protocol."""
        p = self.space.protocol
        return model_name(self.dataset, self.space.name, protocol_key(p.strategy, p.selection))

    def fingerprint(self, folds: list[int]) -> dict[str, Any]:
        return study_fingerprint(self.space, folds, self.manifest_sha256)

    @property
    def artifact_root(self) -> str | None:
        return None if self.uri.startswith("http") else str(self.out.artifact_root)

    def tracking(self, study: str, folds: list[int]) -> TrialTracking:
        return TrialTracking(self.uri, self.artifact_root, self.space.name, study,
                             parent_tags={"ifdd.study": study, "ifdd.kind": "study"},
                             base_params=flatten(to_dict(self.space.trial_base())),
                             trial_tags=self.study_tags(folds), selection=self.space.protocol.selection)

    def study_tags(self, folds: list[int]) -> dict[str, str]:
        return {**self.tags, "ifdd.fold": ",".join(map(str, folds))}

    def command(self, *extra: str) -> str:
        """The `ifdd search` command line that continues this search (same space, folds, strategy, root)."""
        p = self.space.protocol
        return " ".join(["ifdd search --space", self.space.path, "--folds", ",".join(map(str, p.folds)),
                         "--strategy", p.strategy, *runs_flag(self.out), *extra])


def runs_flag(out: Outputs) -> list[str]:
    """``--runs ROOT`` unless the root is ./runs with no $IFDD_RUNS set: a hint must open the store that was written
    wherever it is run (an $IFDD_RUNS of this shell may be unset in the next)."""
    default = out.root == Path(DEFAULT_RUNS).resolve() and not os.environ.get(RUNS_ENV)
    return [] if default else ["--runs", str(out.root)]


def open_search(space: SearchSpace, out: Outputs, uri: str, optuna: str, register: bool = True) -> SearchRun:
    """Create (under locks) the MLflow and Optuna schemas and the results folder; fails before any training when
    a store is unreachable."""
    paths = Paths(out, space.name, optuna)
    paths.results.mkdir(parents=True, exist_ok=True)
    # fold jobs started together (ifdd launch) would race creating the schemas (sqlite: file lock; PostgreSQL:
    # an advisory lock per database)
    with init_lock(out.root), schema_lock(uri), schema_lock(optuna):
        tracker = Tracker(uri, None if uri.startswith("http") else out.artifact_root)
        import optuna as optuna_lib

        optuna_lib.storages.RDBStorage(optuna)
    dataset = dataset_name(space.base.data.manifest)
    sha = manifest_hash(space.base.data.manifest)
    p = space.protocol
    tags = {"ifdd.selection": p.selection, "ifdd.strategy": p.strategy,
            "ifdd.protocol": protocol_key(p.strategy, p.selection),
            "ifdd.protocol_label": label(p.strategy, p.selection),
            "ifdd.git_commit": git_commit(), "ifdd.manifest_sha256": sha[:16], "ifdd.dataset": dataset}
    return SearchRun(space, out, paths, uri, tracker, dataset, tags, sha, register)


def cluster_plan(space: SearchSpace, address: str | None, num_cpus: int | None, share: int = 1
                 ) -> tuple[TrialPlan, dict[str, float]]:
    cluster = init_ray(address, num_cpus=num_cpus)
    return plan_trials(cluster, space.resources, nodes=live_nodes(), share=share), cluster


def run_search(space: SearchSpace, *, out: Outputs, uri: str, optuna: str, resume: bool, fresh: bool,
               address: str | None = None, num_cpus: int | None = None, share: int = 1, register: bool = True
               ) -> bool:
    """Run (or resume) every study of ``space``; True when all finished and the summary was written.

    ``uri``/``optuna``: the checked tracking URI and Optuna storage (``tracking.stores.check_stores``).
    ``register``: register the fold winners (False: runs are logged, no model versions or aliases)."""
    run = open_search(space, out, uri, optuna, register)
    plan, cluster = cluster_plan(space, address, num_cpus, share)
    print_header(space, cluster, plan, out)
    results, untracked = [], []
    for study, folds in study_names(space):
        payload, tracked = run_or_reuse(run, study, folds, plan, resume=resume, fresh=fresh)
        if not payload["complete"]:
            print(f"study {study} is partial: {payload['note']}\nnothing was selected or tested; continue with: "
                  f"{run.command('--resume')}", file=sys.stderr)
            return False
        results.append(payload)
        if not tracked:
            untracked.append(study)
    if untracked:
        write_summary(run, summary_payload(space, results))
        print(f"\nerror: MLflow at {mask_secrets(uri)} was unreachable; every trial and test result is saved under "
              f"{run.paths.results} and in the Ray checkpoints, but studies {', '.join(untracked)} are not in MLflow "
              f"and no champion was set. Once the server is back, log them with: {run.command('--resume')}",
              file=sys.stderr, flush=True)
        return False
    summary = finish(run, results)
    print_outcome(run, summary)
    return True


def print_header(space: SearchSpace, cluster: dict[str, float], plan: TrialPlan, out: Outputs) -> None:
    p = space.protocol
    print(f"search {space.name}: {p.strategy}, folds {list(p.folds)}, "
          f"{space.budget.num_samples} trials per study (the first: the base config), ≤{space.budget.max_epochs} "
          f"epochs, objective {'/'.join(space.objective.metrics)} (max); protocol: {label(p.strategy, p.selection)}"
          f"\n{out.describe()}\ncluster {cluster.get('CPU', 0):g} CPU / "
          f"{cluster.get('GPU', 0):g} GPU: {plan.describe()}", flush=True)


def run_or_reuse(run: SearchRun, study: str, folds: list[int], plan: TrialPlan, *, resume: bool, fresh: bool
                 ) -> tuple[dict[str, Any], bool]:
    """One study: reused when it finished earlier (logged now if the store was down then), else run or resumed.
    Returns its payload (also saved as ``<study>.json``) and whether it is in MLflow."""
    fingerprint = run.fingerprint(folds)
    mode = prepare_study(run.space, study, folds, run.paths, fingerprint, resume=resume, fresh=fresh)
    if mode == "done":
        return reuse_study(run, study, folds)
    print(f"\nstudy {study}: {'resuming' if mode == 'restore' else 'starting'} (folds {folds})", flush=True)
    tracking = run.tracking(study, folds)
    try:
        if mode == "new":
            tracking.tracker.delete_study_runs(run.space.name, study)
        tracking.tracker.set_tags(tracking.parent()[1], run.study_tags(folds))
    except Exception as e:  # noqa: BLE001 - the store went down between studies: the callback warns too
        print(f"warning: MLflow: {' '.join(str(e).split())[:200]}", file=sys.stderr)
    res = run_study(run.space, study, folds, run.paths, plan, restore=mode == "restore", tracking=tracking,
                    fingerprint=fingerprint)
    payload = study_payload(res, run.space)
    tracked = try_track(tracking, res, run.space, run.paths, run.model, payload, run.study_tags(folds), run.register)
    write_json(run.paths.study_json(study), payload)
    print_study(res, run.space)
    return payload, tracked


def reuse_study(run: SearchRun, study: str, folds: list[int]) -> tuple[dict[str, Any], bool]:
    path = run.paths.study_json(study)
    payload = json.loads(path.read_text())
    print(f"\nstudy {study}: finished earlier, reusing {path}")
    if not payload.get("tracking_pending"):
        return payload, True
    # finished while the tracking store was down: log it now
    print(f"study {study}: logging it to MLflow now ({payload.pop('tracking_pending')})", flush=True)
    tracked = try_track(run.tracking(study, folds), result_from_payload(payload), run.space, run.paths, run.model,
                        payload, run.study_tags(folds), run.register)
    if tracked:
        write_json(path, payload)
    return payload, tracked


def finish(run: SearchRun, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary over every finished fold of this space (ours and the sibling fold jobs'), the champion alias,
    summary.json and summary.md; under the runs lock, since fold jobs of one `ifdd launch` finish at any time and
    the last one must see every fold."""
    with init_lock(run.out.root):
        siblings = sibling_studies(run.space, run.paths, {r["study"] for r in results}, run.fingerprint)
        results = sorted(results + siblings, key=lambda r: r["folds"])
        champions = [c for r in results for c in r.get("registered", [])]
        champion = set_champion(run.tracker, run.model, champions, run.space.protocol.selection)
        summary = summary_payload(run.space, results)
        if siblings:
            summary["from_other_runs"] = [r["study"] for r in siblings]
        summary["registry"] = {"model": run.model, "champion_version": champion,
                               "folds": {str(c["fold"]): c["version"] for c in champions},
                               "tracking_uri": mask_secrets(run.uri), "experiment": run.space.name}
        summary["optuna_storage"] = mask_secrets(run.paths.optuna)
        write_summary(run, summary)
    return summary


def write_summary(run: SearchRun, summary: dict[str, Any]) -> None:
    write_json(run.paths.results / "summary.json", summary)
    (run.paths.results / "summary.md").write_text(summary_markdown(summary))
    print_summary(summary)
    print(f"\nsaved {run.paths.results / 'summary.json'} and summary.md")


def print_outcome(run: SearchRun, summary: dict[str, Any]) -> None:
    reg = summary["registry"]
    aliases = ", ".join(f"fold{f}" for f in reg["folds"])
    if reg["champion_version"]:
        print(f"registered {reg['model']}: aliases {aliases}, champion = version {reg['champion_version']} (best "
              f"inner-val value); load with mlflow.pytorch.load_model('models:/{reg['model']}@champion')")
    elif reg["folds"]:
        print(f"registered {reg['model']}: aliases {aliases}; no champion alias: these versions were chosen on the "
              "test split (paper parity)")
    elif not run.register:
        print(f"no model registered (--no-register); each fold winner's checkpoint is named in "
              f"{run.paths.results}/<study>.json")
    uri = run.uri
    if uri.startswith("http"):
        browse = mask_secrets(uri)
    else:
        flags = runs_flag(run.out) + (["--tracking-uri", mask_secrets(uri)] if is_postgres(uri) else [])
        browse = "`" + " ".join(["ifdd ui", *flags]) + "`"
    print(f"MLflow: {mask_secrets(uri)} (experiment {run.space.name}); Optuna: {mask_secrets(run.paths.optuna)}; "
          f"browse with {browse}; report with `{' '.join(['ifdd report', *runs_flag(run.out)])}`")


def sibling_studies(space: SearchSpace, paths: Paths, have: set[str], fingerprint) -> list[dict[str, Any]]:
    """Complete fold-wise studies of this space that other runs saved next to ours (the other fold jobs of an
    ``ifdd launch``, or an earlier ``ifdd search --folds k``), so summary.json covers every finished fold. One
    recorded under another fingerprint (``fingerprint(folds)``: an edited space, another manifest) is left out with
    a warning naming the difference: one summary never mixes two protocols or inputs."""
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
        if not (payload.get("complete") and payload.get("tests") and not payload.get("tracking_pending")):
            continue
        diff = fingerprint_diff(payload.get("fingerprint"), fingerprint(payload.get("folds", [])))
        if diff:
            print(f"warning: {path}: left out of the summary, recorded under another fingerprint "
                  f"({'; '.join(diff)}); rerun that fold with --fresh to include it", file=sys.stderr)
            continue
        out.append(payload)
    return out


@contextlib.contextmanager
def init_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".init.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def manifest_hash(manifest: str) -> str:
    from ifdd.data.manifest import load_manifest

    return str(load_manifest(manifest).attrs["ifdd"].get("content_sha256", ""))
