"""The suite's own machinery (tests/support/ifdd_testkit/sysdeps.py), run on small throwaway test files with
pytester in a subprocess: a missing system package is a skip locally and a loud failure under CI's
IFDD_REQUIRE_SYSTEM_DEPS=1, already at collection (``pytest --co``), naming every test that needs it."""

from __future__ import annotations

from pathlib import Path

import pytest

SUPPORT = Path(__file__).resolve().parent / "support"

CONFTEST = """
import pytest
from ifdd_testkit import sysdeps

pytest_plugins = ["ifdd_testkit.sysdeps"]
sysdeps.SYSTEM_DEPS["nosuchpkg"] = sysdeps.SystemDep("the nosuchpkg tool", "apt-get install nosuchpkg",
                                                     lambda: False)
sysdeps.SYSTEM_DEPS["haveit"] = sysdeps.SystemDep("a tool that is there", "-", lambda: True)
sysdeps.FIXTURE_DEPS["nosuch_server"] = ("nosuchpkg",)


@pytest.fixture
def nosuch_server():
    return "would start nosuchpkg"


@pytest.fixture
def uses_server(nosuch_server):
    return nosuch_server
"""

TESTS = """
import pytest


@pytest.mark.needs_system("nosuchpkg")
def test_marked():
    pass


def test_through_a_fixture(uses_server):
    pass


@pytest.mark.needs_system("haveit")
def test_present():
    pass


def test_skips_at_run_time():
    pytest.skip("system package missing: found out late (apt-get install late)")


def test_other_skip():
    pytest.skip("no CUDA device")


@pytest.mark.slow
@pytest.mark.needs_system("nosuchpkg")
def test_deselected_by_marker():
    pass
"""


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(SUPPORT))
    monkeypatch.delenv("IFDD_REQUIRE_SYSTEM_DEPS", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\naddopts = --strict-markers -p no:cacheprovider\n")
    pytester.makepyfile(test_needs=TESTS)
    return pytester


def test_without_the_variable_missing_packages_are_skips_with_the_prefix(suite):
    result = suite.runpytest_subprocess("-rs")
    result.assert_outcomes(passed=1, skipped=5)
    result.stdout.fnmatch_lines(["*test_needs.py:*system package missing: the nosuchpkg tool "
                                 "(apt-get install nosuchpkg)*"])
    assert result.stdout.str().count("system package missing: the nosuchpkg tool") == 3
    result.stdout.fnmatch_lines(["*no CUDA device*"])


def test_collection_fails_naming_every_selected_test_that_lacks_a_package(suite, monkeypatch):
    monkeypatch.setenv("IFDD_REQUIRE_SYSTEM_DEPS", "1")
    for args in (["--co", "-q"], ["-q"]):
        result = suite.runpytest_subprocess(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
        err = result.stderr.str()
        assert "IFDD_REQUIRE_SYSTEM_DEPS=1 but 3 selected test(s) lack a system package" in err, err
        for test in ("test_marked", "test_through_a_fixture", "test_deselected_by_marker"):
            assert f"test_needs.py::{test}: system package missing: the nosuchpkg tool" in err, err
        assert "test_present" not in err and "passed" not in result.stdout.str()  # nothing ran


def test_deselected_tests_do_not_count_and_run_time_skips_fail(suite, monkeypatch):
    monkeypatch.setenv("IFDD_REQUIRE_SYSTEM_DEPS", "1")
    result = suite.runpytest_subprocess("-rfs", "-m", "not slow", "-k", "not marked and not fixture")
    # the late skip with the prefix is a failure; the skip for another reason stays a skip
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*IFDD_REQUIRE_SYSTEM_DEPS=1 but skipped: *system package missing: found out late*",
                                 "*SKIPPED*no CUDA device*"])


def test_an_unknown_package_name_is_refused(suite):
    suite.makepyfile(test_typo="""
import pytest

@pytest.mark.needs_system("postgress")
def test_typo():
    pass
""")
    result = suite.runpytest_subprocess("--co", "-q", "test_typo.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "needs_system: unknown ['postgress']" in result.stderr.str()


def test_under_the_variable_a_failure_is_printed_when_it_happens_not_only_at_the_end(pytester, monkeypatch):
    """ifdd_testkit/failfast_report.py: the traceback of a failing test comes before the tests after it run."""
    monkeypatch.setenv("PYTHONPATH", str(SUPPORT))
    pytester.makeconftest('pytest_plugins = ["ifdd_testkit.failfast_report"]\n')
    pytester.makepyfile(test_order="""
def test_fails():
    print("captured before the failure")
    assert 1 + 1 == 3, "the reason"


def test_after():
    print("second test ran")
""")
    monkeypatch.setenv("IFDD_FAILURES_AT_ONCE", "1")
    out = pytester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider").stdout.str()
    at_once = out.index("FAILED test_order.py::test_fails (call, ")
    assert out.index("the reason", at_once) < out.index("second test ran") < out.index("short test summary")
    monkeypatch.delenv("IFDD_FAILURES_AT_ONCE")
    out = pytester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider").stdout.str()
    assert "FAILED test_order.py::test_fails (call" not in out and "second test ran" in out
