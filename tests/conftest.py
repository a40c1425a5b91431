"""Suite-wide setup. Shared fixtures and hooks live in tests/support/ifdd_testkit (on sys.path through pyproject's
``pythonpath``), imported here as plugins, so every folder uses them and none loads another's conftest by path:

- ``ifdd_testkit.sysdeps``: ``needs_system`` (tests that drive PostgreSQL, chromium, sshd, a tmpfs mount skip without
  them with a ``system package missing:`` reason, and fail instead under ``IFDD_REQUIRE_SYSTEM_DEPS=1``, CI's
  setting, already at collection);
- ``ifdd_testkit.fixtures``: the small synthetic set, run configs and search spaces on it, local Ray, a Ray head,
  PostgreSQL;
- ``ifdd_testkit.failfast_report``: under ``IFDD_FAILURES_AT_ONCE=1`` (CI) a failure's traceback is printed when it
  happens, so a run cut off at its time limit still says why.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["ifdd_testkit.sysdeps", "ifdd_testkit.fixtures", "ifdd_testkit.failfast_report", "pytester"]


@pytest.fixture(scope="session", autouse=True)
def runs_root_outside_the_checkout(tmp_path_factory):
    """Commands run without ``--runs`` write under $IFDD_RUNS: a temp folder, never the checkout's ./runs."""
    os.environ["IFDD_RUNS"] = str(tmp_path_factory.mktemp("default-runs"))
    yield


@pytest.fixture(autouse=True)
def torch_state_is_left_as_found():
    """No test changes torch's thread count or global RNG for the tests after it (either would make results depend
    on the order tests run in)."""
    import torch

    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        yield
    torch.set_num_threads(threads)


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's Ray token folder (made by ifdd_testkit.fixtures.session_token)."""
    import shutil
    from pathlib import Path

    token = os.environ.get("IFDD_TEST_RAY_TOKEN_PATH")
    if token:
        shutil.rmtree(Path(token).parent, ignore_errors=True)
