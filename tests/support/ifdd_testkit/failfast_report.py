"""Under ``IFDD_FAILURES_AT_ONCE=1`` (CI's setting) a failing test's traceback is printed the moment it fails, not
only in pytest's summary at the end: a CI run stopped at its time limit still shows why each earlier test failed
(with ``-q`` a failure is otherwise one ``F`` until the session ends)."""

from __future__ import annotations

import os

import pytest

ENV = "IFDD_FAILURES_AT_ONCE"
TAIL = 8000
"""Characters of the traceback printed at once (its end: the assertion and the output captured around it)."""

_config: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(ENV) == "1":
        _config.append(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if config in _config:  # a pytester session run in-process ends before the outer one
        _config.remove(config)


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tr = _config[-1].pluginmanager.get_plugin("terminalreporter") if _config else None
    if tr is None or not report.failed:
        return
    tr.write_line("")
    tr.write_sep("!", f"FAILED {report.nodeid} ({report.when}, {report.duration:.0f} s)")
    tr.write_line(report.longreprtext[-TAIL:])
    for name, text in report.sections:  # captured stdout/stderr/log of the failing phase
        tr.write_sep("-", name)
        tr.write_line(text[-TAIL:])
    tr.write_sep("!", f"end of {report.nodeid}")
