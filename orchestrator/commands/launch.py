"""`ifdd launch`: one Ray Job per fold on a running cluster (Job Submission SDK), and their status.

Each job runs ``ifdd search --space … --folds k --share N --resume`` as its own driver on the cluster, so a fold's
study survives the laptop that submitted it, and a job resubmitted after a failure continues its fold. The job ids
are recorded in ``<runs>/launch/<space>.json`` for ``ifdd launch --status``, each as soon as it is submitted.

A cluster with token authentication (docs/reliability.md, "Ray's ports and token") gets its token as a bearer header
on every Jobs API request, from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ``~/.ray/auth_token``; it is checked against
the dashboard before anything is submitted, and it is never written into a job's entrypoint or runtime environment
(a job's driver gets the cluster's own token from the node it runs on).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from orchestrator.commands.options import add_runs_arg, outputs, parse_folds
from orchestrator.env import NO_TELEMETRY

EXCLUDES = ["runs", ".venv", ".git", "*.parquet", "*.arrow", "*.mp4", "__pycache__", ".pytest_cache"]


DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
"""Where `ray dashboard CLUSTER.yaml` forwards the head's dashboard."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("launch", help="submit one Ray Job per fold to a cluster; --status lists them",
                       description="Submit one `ifdd search` Ray Job per fold to a running cluster through its "
                                   "dashboard (Job Submission SDK), or list submitted jobs with --status.")
    p.add_argument("--space", help="a shipped search space by name, or a search-space YAML (a path inside "
                                   "--working-dir)")
    p.add_argument("--folds", default=None, help="folds, one job each (default: the space's protocol.folds)")
    p.add_argument("--address", default=None,
                   help=f"the head's dashboard address (default {DEFAULT_DASHBOARD}, e.g. through `ray dashboard`); "
                        "given, it is reached and its token checked first, also for --status")
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
    p.add_argument("--no-register", dest="register", action="store_false",
                   help="the fold jobs register no model versions (`ifdd search --no-register`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = outputs(args)
    if args.status:
        if args.address:  # a cluster named on the command line: reached, and its token checked, before anything
            client = jobs_client(args.address)
            return show_status(lambda: client, args.space, out.launch_dir)
        return show_status(lambda: jobs_client(DEFAULT_DASHBOARD), args.space, out.launch_dir)
    args.address = args.address or DEFAULT_DASHBOARD
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
    client = jobs_client(args.address)
    tracking_uri, credentials = job_tracking(args.tracking_uri)
    runtime_env: dict = {"env_vars": {**NO_TELEMETRY, **credentials}}  # never the Ray token: the dashboard lists it
    if args.working_dir != "none":
        runtime_env |= {"working_dir": args.working_dir, "excludes": EXCLUDES}
    folds = list(space.protocol.folds)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out.launch_dir / f"{space.name}.json"
    records = []
    for fold in folds:
        entry = (f"ifdd search --space {shlex.quote(args.space)} --folds {fold} --storage {shlex.quote(storage)} "
                 + (f"--runs {shlex.quote(job_runs)} " if job_runs else "") + f"--share {len(folds)} --resume"
                 + (f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else "")
                 + (f" --optuna-storage {shlex.quote(args.optuna_storage)}" if args.optuna_storage else "")
                 + ("" if args.register else " --no-register"))
        job_id = submit_when_ready(client, args.address, entrypoint=entry, runtime_env=runtime_env,
                                   submission_id=f"ifdd-{space.name}-fold{fold}-{stamp}",
                                   metadata={"ifdd_space": space.name, "fold": str(fold)})
        records.append({"fold": fold, "job_id": job_id, "address": args.address, "entrypoint": entry,
                        "submitted": stamp})
        record(path, records[-1])  # at once: a launch stopped half-way still lists what it submitted
        print(f"fold {fold}: submitted {job_id}", flush=True)
    print(f"\nrecorded in {path}. Follow a job with:\n  ray job logs -f {records[0]['job_id']} --address "
          f"{args.address}\nlist them with:\n  ifdd launch --status --address {args.address}")
    if args.wait:
        return wait_for(client, [r["job_id"] for r in records])
    return 0


AGENT_NOT_READY = "No available agent to submit job"
"""The Jobs API's answer (HTTP 500) while a just-started head's job agent has not registered yet."""


def submit_when_ready(client, address: str, deadline_s: float = 60.0, **job) -> str:
    """``client.submit_job(**job)``, retried every 2 s while the head's job agent is still starting (a cluster
    just brought up answers the dashboard before it takes jobs); past ``deadline_s``, a one-line error (exit 2)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as e:
            if AGENT_NOT_READY not in str(e):
                raise
            if time.monotonic() > deadline:
                raise ValueError(f"--address {address}: the head's job agent did not come up within "
                                 f"{deadline_s:.0f} s (`ray status` on the head; its dashboard_agent.log)") from None
        time.sleep(2)


def record(path: Path, entry: dict) -> None:
    """Append one submitted job to ``path`` (a JSON list), atomically (a reader never sees half a file)."""
    prior = json.loads(path.read_text()) if path.is_file() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(prior + [entry], indent=2))
    tmp.replace(path)


def jobs_client(address: str):
    """A Jobs API client for the dashboard at ``address``, carrying the cluster's token when it has token auth.

    ``--address`` decides: RAY_ADDRESS / RAY_API_SERVER_ADDRESS in this shell would silently take its place in the
    SDK, so they are dropped from this process."""
    from ray.job_submission import JobSubmissionClient

    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        os.environ.pop(var, None)
    headers = dashboard_auth(address)
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as e:  # noqa: BLE001 - the SDK raises ConnectionError, RuntimeError, …
        raise ValueError(f"--address: cannot reach a Ray dashboard at {address} "
                         f"({' '.join(str(e).split())[:200]})") from None


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def dashboard_auth(address: str) -> dict[str, str]:
    """The headers the dashboard at ``address`` needs: a bearer token when it runs with token authentication (the
    token found as Ray finds it, checked here), none (with a warning) when it runs without.

    Raises:
        ValueError: the dashboard is unreachable, or requires a token that is missing or refused.
    """
    from orchestrator.ray_session import find_token

    base = address.rstrip("/")
    try:
        status, body = _get(f"{base}/api/authentication_mode")  # public: answers before any token is sent
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ValueError(f"--address: cannot reach a Ray dashboard at {address} ({' '.join(str(reason).split())[:200]})"
                         ) from None
    try:
        mode = json.loads(body)["authentication_mode"] if status == 200 else None
    except (ValueError, KeyError, TypeError):
        mode = None
    if mode is None:
        raise ValueError(f"--address: no Ray {'2.52+ ' if status == 404 else ''}dashboard answers at {address} "
                         f"(GET /api/authentication_mode: HTTP {status})")
    if mode != "token":
        print(f"warning: the Ray cluster at {address} runs without token authentication: anyone who reaches its "
              "dashboard or GCS port can run code on it (start every node with RAY_AUTH_MODE=token)", file=sys.stderr)
        return {}
    token, where = find_token()
    if token is None:
        raise ValueError(f"--address {address}: the cluster requires its Ray token and none was found (looked in "
                         f"{where}); copy it from the head (`ray get-auth-token`) and set RAY_AUTH_TOKEN_PATH")
    headers = {"Authorization": f"Bearer {token}"}
    status, _ = _get(f"{base}/api/version", headers)
    if status in (401, 403):
        raise ValueError(f"--address {address}: the cluster refused the Ray token from {where} (HTTP {status})")
    return headers


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


