"""`ifdd launch`: one Ray Job per fold on a running cluster (Job Submission SDK), and their status.

Each job runs ``ifdd search --space … --folds k --share N --resume`` as its own driver on the cluster, so a fold's
study survives the laptop that submitted it, and a job resubmitted after a failure continues its fold. The job ids
are recorded in ``<runs>/launch/<space>.json`` for ``ifdd launch --status``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from orchestrator.commands.options import add_runs_arg, outputs, parse_folds
from orchestrator.env import NO_TELEMETRY

EXCLUDES = ["runs", ".venv", ".git", "*.parquet", "*.arrow", "*.mp4", "__pycache__", ".pytest_cache"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("launch", help="submit one Ray Job per fold to a cluster; --status lists them",
                       description="Submit one `ifdd search` Ray Job per fold to a running cluster through its "
                                   "dashboard (Job Submission SDK), or list submitted jobs with --status.")
    p.add_argument("--space", help="a shipped search space by name, or a search-space YAML (a path inside "
                                   "--working-dir)")
    p.add_argument("--folds", default=None, help="folds, one job each (default: the space's protocol.folds)")
    p.add_argument("--address", default="http://127.0.0.1:8265",
                   help="the head's dashboard address (default http://127.0.0.1:8265, e.g. through `ray dashboard`)")
    add_runs_arg(p)
    p.add_argument("--storage", default=None,
                   help="Ray storage every node reaches (a shared FS path or s3://…); default: <runs>/ray on this "
                        "machine, right only when the head is this machine. For a path, the jobs' runs root (results, "
                        "sqlite stores) is its parent folder; for a URI, the jobs' own $IFDD_RUNS or ./runs")
    p.add_argument("--working-dir", default=".",
                   help="uploaded as the jobs' working dir (runs/, .venv, .git and media excluded); 'none' to use "
                        "the cluster's own checkout")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow server the jobs log to (http://HEAD:5000) or a PostgreSQL backend store "
                        "(postgresql+psycopg2://USER@HOST:PORT/DB); default: a sqlite store next to --storage")
    p.add_argument("--optuna-storage", default=None,
                   help="Optuna storage the jobs share (postgresql+psycopg2://USER@HOST:PORT/DB, its own database); "
                        "default: the jobs' $IFDD_OPTUNA_STORAGE, else a sqlite file next to --storage. The "
                        "password is never sent: the cluster's nodes need PGPASSWORD or ~/.pgpass")
    p.add_argument("--status", action="store_true", help="list the jobs submitted from here and their state")
    p.add_argument("--wait", action="store_true", help="after submitting, wait until every job has finished")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ray.job_submission import JobSubmissionClient

    out = outputs(args)
    if args.status:
        return show_status(lambda: JobSubmissionClient(args.address), args.space, out.launch_dir)
    if not args.space:
        raise ValueError("--space: required unless --status")
    from orchestrator.search.shipped import load_named_space
    from orchestrator.tracking.stores import check_distinct, validate_postgres

    space = load_named_space(args.space).with_folds(parse_folds(args.folds), None)
    if space.protocol.strategy != "fold-wise":
        raise ValueError(f"{args.space}: protocol.strategy: launch submits fold-wise jobs, got "
                         f"{space.protocol.strategy} (run cross-fold with `ifdd search`)")
    for url, flag in ((args.tracking_uri, "--tracking-uri"), (args.optuna_storage, "--optuna-storage")):
        validate_postgres(url, flag)  # reachable from the cluster, not necessarily from here: each job checks
    check_distinct(args.tracking_uri, args.optuna_storage)
    storage = out.storage
    job_runs = None if "://" in storage else str(Path(storage).parent)
    try:
        client = JobSubmissionClient(args.address)
    except Exception as e:  # noqa: BLE001 - the SDK raises ConnectionError, RuntimeError, …
        raise ValueError(f"--address: cannot reach a Ray dashboard at {args.address} "
                         f"({' '.join(str(e).split())[:200]})") from None
    tracking_uri, credentials = job_tracking(args.tracking_uri)
    runtime_env: dict = {"env_vars": {**NO_TELEMETRY, "RAY_AUTH_MODE": "disabled", **credentials}}
    if args.working_dir != "none":
        runtime_env |= {"working_dir": args.working_dir, "excludes": EXCLUDES}
    folds = list(space.protocol.folds)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    records = []
    for fold in folds:
        entry = (f"ifdd search --space {shlex.quote(args.space)} --folds {fold} --storage {shlex.quote(storage)} "
                 + (f"--runs {shlex.quote(job_runs)} " if job_runs else "") + f"--share {len(folds)} --resume"
                 + (f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else "")
                 + (f" --optuna-storage {shlex.quote(args.optuna_storage)}" if args.optuna_storage else ""))
        job_id = client.submit_job(entrypoint=entry, runtime_env=runtime_env,
                                   submission_id=f"ifdd-{space.name}-fold{fold}-{stamp}",
                                   metadata={"ifdd_space": space.name, "fold": str(fold)})
        records.append({"fold": fold, "job_id": job_id, "address": args.address, "entrypoint": entry,
                        "submitted": stamp})
        print(f"fold {fold}: submitted {job_id}")
    out.launch_dir.mkdir(parents=True, exist_ok=True)
    path = out.launch_dir / f"{space.name}.json"
    prior = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps(prior + records, indent=2))
    print(f"\nrecorded in {path}. Follow a job with:\n  ray job logs -f {records[0]['job_id']} --address "
          f"{args.address}\nlist them with:\n  ifdd launch --status --address {args.address}")
    if args.wait:
        return wait_for(client, [r["job_id"] for r in records])
    return 0


def job_tracking(uri: str | None) -> tuple[str | None, dict[str, str]]:
    """The tracking URI for a job's command line, without ``user:password@``, and the MLflow credential variables
    the job gets instead: an entrypoint is recorded in runs/launch/ and listed by the dashboard."""
    from orchestrator.tracking.secrets import split_credentials

    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        bare = split_credentials(uri) if uri else uri
        return bare, {k: os.environ[k] for k in keys if os.environ.get(k)}
    finally:
        for k, v in saved.items():  # submitting jobs must not change this process's credentials
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def wait_for(client, job_ids: list[str], poll_s: float = 5.0) -> int:
    from ray.job_submission import JobStatus

    pending = set(job_ids)
    states: dict[str, str] = {}
    while pending:
        for job in sorted(pending):
            status = client.get_job_status(job)
            if status.is_terminal():
                states[job] = str(status.value)
                pending.discard(job)
                print(f"{job}: {status.value}", flush=True)
                if status != JobStatus.SUCCEEDED:
                    tail = "\n".join(client.get_job_logs(job).splitlines()[-25:])
                    print(f"--- last lines of {job} ---\n{tail}\n---", flush=True)
        if pending:
            time.sleep(poll_s)
    return 0 if all(s == JobStatus.SUCCEEDED.value for s in states.values()) else 1


def show_status(connect, space: str | None, launch_dir: Path) -> int:
    """The jobs recorded under ``launch_dir`` and their state; ``connect()`` makes the Job Submission client, only
    once there is a record to look up (a runs root without launches needs no cluster)."""
    print(f"reading {launch_dir}")
    files = sorted(launch_dir.glob("*.json")) if launch_dir.is_dir() else []
    records = [r for f in files for r in json.loads(f.read_text())]
    if space:
        from orchestrator.search.shipped import load_named_space

        name = load_named_space(space).name
        records = [r for r in records if r["job_id"].startswith(f"ifdd-{name}-")]
    if not records:
        print(f"no jobs submitted from here ({launch_dir} holds no record)")
        return 0
    try:
        client = connect()
    except Exception as e:  # noqa: BLE001 - the SDK raises ConnectionError, RuntimeError, …
        client = None
        print(f"warning: cannot reach the Ray dashboard ({' '.join(str(e).split())[:160]}); states unknown",
              file=sys.stderr)
    print(f"{'job id':<44} {'fold':>4} {'state':<10} submitted")
    for r in records:
        try:
            state = client.get_job_status(r["job_id"]).value if client else "UNREACHABLE"
        except Exception:  # noqa: BLE001 - a job the cluster no longer knows (restarted head)
            state = "UNKNOWN"
        print(f"{r['job_id']:<44} {r['fold']:>4} {state:<10} {r['submitted']}")
    return 0


