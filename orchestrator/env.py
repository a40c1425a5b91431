"""Process-wide environment defaults set before Ray or MLflow start: no calls home, quiet, loopback."""

from __future__ import annotations

import os

NO_TELEMETRY = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def no_calls_home() -> None:
    """Force the telemetry opt-outs (a user's own value of 'on' is overridden on purpose)."""
    os.environ.update(NO_TELEMETRY)
