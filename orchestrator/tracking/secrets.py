"""Credentials never shown: one masking rule for every URL, log line, param, tag and file the project writes.

A database URL keeps its role name and loses only its password (``postgresql+psycopg2://ifdd:***@…``: the name is
needed to reconnect and is no secret); any other scheme's userinfo is masked whole, since a bare one is a token
(``https://TOKEN@``) or a key id (``s3://KEY:SECRET@``). ``password=``-style query values and the values of
credential environment variables (PGPASSWORD, MLFLOW_TRACKING_PASSWORD, AWS_SECRET_ACCESS_KEY, RAY_AUTH_TOKEN, …)
are masked too, and so is the Ray token in the file RAY_AUTH_TOKEN_PATH names (a local Ray's token lives there).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import Any

SECRET_HINTS = ("password", "passwd", "secret", "token", "credential", "access_key", "api_key", "apikey")
QUERY_SECRET = re.compile(r"((?:^|[?&;])[^=&;\s]*(?:password|passwd|secret|token)[^=&;\s]*=)[^&;\s]*", re.IGNORECASE)
"""A ``…password…=VALUE`` query parameter (group 1: everything up to the value)."""
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/@\s]+)@")
_DB_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle")


def _mask_userinfo(m: re.Match) -> str:
    scheme, info = m.group(1), m.group(2)
    if scheme.lower().split("+", 1)[0] in _DB_SCHEMES:
        user, colon, _ = info.partition(":")
        return f"{scheme}://{user}{':***' if colon else ''}@"
    return f"{scheme}://***@"


def _token_file_value() -> str:
    """The Ray token held in the file RAY_AUTH_TOKEN_PATH names ('' when unset or unreadable)."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(4096).strip()
    except OSError:
        return ""


def _secret_env_values() -> list[str]:
    """Values of environment variables that hold credentials (and the Ray token file's content), longest first;
    values under 6 characters are left alone (masking "1" everywhere would garble text)."""
    vals = {v for k, v in os.environ.items() if any(h in k.lower() for h in SECRET_HINTS)} | {_token_file_value()}
    return sorted((v for v in vals if len(v) >= 6), key=len, reverse=True)


def mask_secrets(text: str) -> str:
    """``text`` with every credential replaced by ``***`` (the rule in the module docstring)."""
    text = QUERY_SECRET.sub(r"\1***", _USERINFO.sub(_mask_userinfo, text))
    for v in _secret_env_values():
        text = text.replace(v, "***")
    return text


def safe_params(params: dict[str, Any]) -> dict[str, str]:
    """Params/tags as MLflow strings, never a credential: keys that look secret are masked whole, values through
    ``mask_secrets``; each value is cut at MLflow's 500 characters."""
    out = {}
    for k, v in params.items():
        s = "***" if any(h in k.lower() for h in SECRET_HINTS) else mask_secrets(str(v))
        out[k] = s[:500]
    return out


def split_credentials(uri: str) -> str:
    """An http(s) tracking URI without its ``user:password@``, which moves to MLflow's own credential variables
    (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``): MLflow prints the tracking URI in its "View run"
    lines, so a password left in it would reach stdout and the logs."""
    if not uri.startswith("http") or "@" not in uri.split("://", 1)[1].split("/", 1)[0]:
        return uri
    parts = urllib.parse.urlsplit(uri)
    if parts.username is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = urllib.parse.unquote(parts.password)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
