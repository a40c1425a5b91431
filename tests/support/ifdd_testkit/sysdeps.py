"""Tests that drive a system package for real (PostgreSQL, chromium, sshd/rsync, a tmpfs mount) say so, and CI can
never pass them as skipped.

A test declares what it needs with ``@pytest.mark.needs_system("postgresql", ...)`` (names from ``SYSTEM_DEPS``);
using a fixture listed in ``FIXTURE_DEPS`` (``postgres``) declares it too. Each need is probed once, at collection:

- normally, a test whose package is missing is skipped with a reason starting ``system package missing:``;
- under ``IFDD_REQUIRE_SYSTEM_DEPS=1`` (CI, which installs them) collection itself fails, naming every selected
  test and what it lacks, so even ``pytest --co`` fails loudly and nothing is reported as a harmless skip.

A skip raised while a test runs (``pytest.skip(f"{SYSTEM_SKIP} ...")``, e.g. by a fixture that finds out late) is
turned into a failure under ``IFDD_REQUIRE_SYSTEM_DEPS=1`` as well. Any other skip (no CUDA device, say) is left a
skip: CI has no GPU, and a GPU test skipping there is expected.

Loaded by tests/conftest.py (``pytest_plugins``); a plain module, imported normally.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

SYSTEM_SKIP = "system package missing:"
REQUIRE_ENV = "IFDD_REQUIRE_SYSTEM_DEPS"


@dataclass(frozen=True)
class SystemDep:
    what: str
    """What is needed, as the skip/failure message names it."""
    install: str
    """How to get it."""
    probe: Callable[[], bool]


def _postgres() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))


def _openssh() -> bool:
    return all(shutil.which(t) for t in ("ssh", "ssh-keygen", "rsync")) and bool(
        shutil.which("sshd") or Path("/usr/sbin/sshd").exists())


def _tmpfs() -> bool:
    """Whether this process can mount (and unmount) a small tmpfs: root and util-linux's mount."""
    d = tempfile.mkdtemp(prefix="ifdd-tmpfs-probe-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d], capture_output=True, timeout=30)
        if r.returncode != 0:
            return False
        subprocess.run(["umount", d], capture_output=True, timeout=30)
        return True
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        os.rmdir(d)


SYSTEM_DEPS: dict[str, SystemDep] = {
    "postgresql": SystemDep("PostgreSQL server binaries under /usr/lib/postgresql", "apt-get install postgresql",
                            _postgres),
    "runuser": SystemDep("root with util-linux's runuser (to run PostgreSQL as its own user)",
                         "run as root; apt-get install util-linux",
                         lambda: os.geteuid() == 0 and shutil.which("runuser") is not None),
    "chromium": SystemDep("chromium at /usr/bin/chromium (driven by playwright)", "apt-get install chromium",
                          lambda: Path("/usr/bin/chromium").exists()),
    "openssh": SystemDep("sshd, ssh, ssh-keygen and rsync", "apt-get install openssh-server openssh-client rsync",
                         _openssh),
    "tmpfs": SystemDep("a tmpfs mount (root and util-linux's mount)", "run as root; apt-get install mount",
                       _tmpfs),
}
"""Every system dependency a test may declare, with the probe that finds it."""

FIXTURE_DEPS = {"postgres": ("postgresql",)}
"""Fixtures that need a system package: a test using one (directly or through another fixture) needs it too."""


@functools.cache
def present(name: str) -> bool:
    return SYSTEM_DEPS[name].probe()


def skip_reason(name: str) -> str:
    dep = SYSTEM_DEPS[name]
    return f"{SYSTEM_SKIP} {dep.what} ({dep.install})"


def needs(item: pytest.Item) -> list[str]:
    """The system dependencies ``item`` declares, by marker or through its fixtures."""
    names = [n for mark in item.iter_markers("needs_system") for n in mark.args]
    for fixture in getattr(item, "fixturenames", ()):
        names += FIXTURE_DEPS.get(fixture, ())
    unknown = sorted(set(names) - set(SYSTEM_DEPS))
    if unknown:
        raise pytest.UsageError(f"{item.nodeid}: needs_system: unknown {unknown}; known: {sorted(SYSTEM_DEPS)}")
    return list(dict.fromkeys(names))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_system(*names): drives these system packages for real (ifdd_testkit/"
                                       "sysdeps.py SYSTEM_DEPS); skipped without them, an error under "
                                       f"{REQUIRE_ENV}=1")


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only the tests that will run count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lacking: list[str] = []
    for item in items:
        missing = [n for n in needs(item) if not present(n)]
        if not missing:
            continue
        if os.environ.get(REQUIRE_ENV) == "1":
            lacking.append(f"  {item.nodeid}: " + "; ".join(skip_reason(n) for n in missing))
        else:
            item.add_marker(pytest.mark.skip(reason=skip_reason(missing[0])))
    if lacking:
        raise pytest.UsageError(f"{REQUIRE_ENV}=1 but {len(lacking)} selected test(s) lack a system package:\n"
                                + "\n".join(lacking))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(REQUIRE_ENV) == "1":
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if SYSTEM_SKIP in reason:
            report.outcome = "failed"
            report.longrepr = f"{REQUIRE_ENV}=1 but skipped: {reason}"
