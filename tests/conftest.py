"""Suite-wide: tests that drive a system package (PostgreSQL, sshd/rsync, chromium) skip without it, with a reason
that starts with ``system package missing:``; CI installs those packages and sets ``IFDD_REQUIRE_SYSTEM_DEPS=1``,
which turns such a skip into a failure so a broken install can never pass as skipped tests."""

from __future__ import annotations

import os

import pytest

SYSTEM_SKIP = "system package missing:"


@pytest.fixture(scope="session", autouse=True)
def runs_root_outside_the_checkout(tmp_path_factory):
    """Commands run without ``--runs`` write under $IFDD_RUNS: a temp folder, never the checkout's ./runs."""
    os.environ["IFDD_RUNS"] = str(tmp_path_factory.mktemp("default-runs"))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("IFDD_REQUIRE_SYSTEM_DEPS") == "1":
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if SYSTEM_SKIP in reason:
            report.outcome = "failed"
            report.longrepr = f"IFDD_REQUIRE_SYSTEM_DEPS=1 but skipped: {reason}"


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's Ray token folder (made by tests/orchestrator/conftest.py's ``session_token``)."""
    import shutil
    from pathlib import Path

    token = os.environ.get("IFDD_TEST_RAY_TOKEN_PATH")
    if token:
        shutil.rmtree(Path(token).parent, ignore_errors=True)
