"""Database URLs of the two stores: MLflow's backend store and Optuna's storage, on sqlite (default) or PostgreSQL.

PostgreSQL is spoken through psycopg2 and says so in the URL: ``postgresql+psycopg2://USER@HOST:PORT/DB`` (plain
``postgresql://`` would select psycopg 3, which is not installed). MLflow and Optuna need separate databases: both
keep an ``alembic_version`` table, and MLflow's migrations die on Optuna's revision.

Credentials never travel in a URL. The password comes from libpq's own environment, ``PGPASSWORD`` (or
``~/.pgpass`` / ``PGPASSFILE``), in the process that connects; a URL carrying a password is refused, because the
URLs end up in Ray's pickled experiment state, Ray Job entrypoints, process lists, MLflow tags and summary files.
Wherever a URL is shown it goes through ``mask_secrets`` anyway (tracking/secrets.py).

An MLflow tracking *server* (``http://HOST:PORT``) is checked through its ``/health`` endpoint (``check_uri``).
"""

from __future__ import annotations

import base64
import contextlib
import os
import urllib.request
import zlib
from pathlib import Path

from orchestrator.outputs import Outputs
from orchestrator.tracking.secrets import QUERY_SECRET, mask_secrets, split_credentials

OPTUNA_ENV = "IFDD_OPTUNA_STORAGE"
PG_DRIVER = "postgresql+psycopg2"
_PG_SCHEMES = ("postgresql", "postgres")


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.split("://", 1)[0].split("+", 1)[0].lower() in _PG_SCHEMES


def optuna_storage(flag_value: str | None, out: Outputs) -> str:
    """``--optuna-storage``, else ``$IFDD_OPTUNA_STORAGE``, else ``sqlite:///<runs>/optuna.db``; validated."""
    url = flag_value or os.environ.get(OPTUNA_ENV) or out.default_optuna
    flag = _optuna_flag(flag_value)
    if not (url.startswith("sqlite:///") or is_postgres(url)):
        raise ValueError(f"{flag}: expected sqlite:///PATH or {PG_DRIVER}://USER@HOST:PORT/DB, got {mask_secrets(url)}")
    validate_postgres(url, flag)
    return url


def _optuna_flag(flag_value: str | None) -> str:
    """What an error about the Optuna storage names: the flag, or the variable it came from."""
    return OPTUNA_ENV if os.environ.get(OPTUNA_ENV) and not flag_value else "--optuna-storage"


def check_stores(tracking_uri: str | None, optuna_flag: str | None, out: Outputs) -> tuple[str, str]:
    """Every store of a search checked before any work: the MLflow URI (server health or database connection), the
    Optuna storage (resolved as in ``optuna_storage``), and that the two are not one database.

    Returns:
        (tracking URI, Optuna storage URL): the defaults under the runs root where no flag names them; an http(s)
        URI without its ``user:password@`` (moved to MLflow's credential variables).
    """
    optuna_url = optuna_storage(optuna_flag, out)
    uri = tracking_uri or out.default_tracking_uri
    check_distinct(uri, optuna_url)
    check_uri(uri)
    check_postgres(optuna_url, _optuna_flag(optuna_flag))
    return split_credentials(uri), optuna_url


def check_uri(uri: str | None) -> None:
    """Fail fast (ValueError naming --tracking-uri) if a tracking server does not answer its /health, or a
    PostgreSQL backend store is malformed, carries a password or cannot be connected to.

    Credentials of a server (``user:password@`` in the URI, or MLFLOW_TRACKING_USERNAME/PASSWORD) are sent as HTTP
    basic auth, never printed."""
    check_postgres(uri, "--tracking-uri")
    if not (uri and uri.startswith("http")):
        return
    bare = split_credentials(uri)
    req = urllib.request.Request(f"{bare.rstrip('/')}/health")
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        user_pass = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        req.add_header("Authorization", "Basic " + base64.b64encode(user_pass.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 200:
                raise OSError(f"HTTP {r.status}")
    except (OSError, ValueError) as e:
        raise ValueError(f"--tracking-uri: no MLflow server answers at {mask_secrets(uri)} "
                         f"({mask_secrets(str(e))}); start one (e.g. `ifdd ui`) or fix the URI") from None


def validate_postgres(url: str | None, flag: str) -> None:
    """The URL's form: the psycopg2 driver, a database name, no password (ValueError naming ``flag``)."""
    if not is_postgres(url):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = mask_secrets(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(f"{flag}: not a database URL: {shown}") from None
    if parsed.drivername != PG_DRIVER:
        raise ValueError(f"{flag}: {shown}: write the driver into the URL as {PG_DRIVER}://… (psycopg2 is the "
                         f"installed driver; {parsed.drivername}:// would need another)")
    if parsed.password is not None or any(QUERY_SECRET.search(f"?{k}=") for k in parsed.query):
        raise ValueError(f"{flag}: {shown}: the URL carries a password; remove it and give it in PGPASSWORD or "
                         "~/.pgpass (URLs are stored in Ray's experiment state and shown in logs)")
    if not parsed.database:
        raise ValueError(f"{flag}: {shown}: name the database (…/DB); MLflow and Optuna each need their own")


def check_postgres(url: str | None, flag: str, timeout_s: int = 5) -> None:
    """Validate, then connect once: an unreachable server, a wrong password or a missing database fails here with a
    one-line ValueError naming ``flag``, before any work starts."""
    if not is_postgres(url):
        return
    validate_postgres(url, flag)
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": timeout_s})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError as e:
        cause = " ".join(str(getattr(e, "orig", None) or e).split())
        secret = os.environ.get("PGPASSWORD")
        if secret:
            cause = cause.replace(secret, "***")
        raise ValueError(f"{flag}: cannot connect to PostgreSQL at {mask_secrets(url)} ({cause[:240]}); start the "
                         "server, create the database, or set PGPASSWORD") from None
    finally:
        engine.dispose()


def check_distinct(tracking_uri: str | None, optuna_url: str) -> None:
    """MLflow and Optuna in one database (PostgreSQL or sqlite file) collide on ``alembic_version``: refuse it."""
    def where(u: str | None) -> tuple | None:
        if u and u.startswith("sqlite:///"):
            return ("sqlite", str(Path(u.removeprefix("sqlite:///")).resolve()))
        if is_postgres(u):
            from sqlalchemy.engine import make_url

            p = make_url(u)
            return (p.host or "localhost").lower(), p.port or 5432, p.database
        return None

    if where(tracking_uri) is not None and where(tracking_uri) == where(optuna_url):
        raise ValueError(f"--optuna-storage: {mask_secrets(optuna_url)} is MLflow's database too (--tracking-uri); "
                         "give Optuna its own database (both keep an alembic_version table)")


@contextlib.contextmanager
def schema_lock(url: str | None):
    """On PostgreSQL, a session advisory lock held while the store creates or migrates its tables: fold jobs on
    different machines starting together on a fresh database would otherwise collide (UniqueViolation on
    pg_type). A no-op for other stores (sqlite is covered by the file lock under runs/)."""
    if not is_postgres(url):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    key = zlib.crc32(b"ifdd-schema-init") & 0x7FFFFFFF
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()
