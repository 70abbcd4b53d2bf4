"""Shared pytest configuration.

Tests under tests/e2e are marked e2e. With EBB_REQUIRE_E2E=1 (as `make test` and CI
set it) a run fails unless end-to-end tests really ran and none was skipped, so a
missing cluster can never turn into a green build.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).parent / "e2e"
_outcomes: dict[str, int] = {"passed": 0, "skipped": 0, "tests": 0}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "e2e" not in report.keywords:
        return
    if report.when == "call" and report.passed:
        _outcomes["passed"] += 1
    if report.skipped:
        _outcomes["skipped"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("EBB_REQUIRE_E2E") != "1" or exitstatus != 0:
        return
    problems = []
    if session.testscollected == 0:
        problems.append("no tests were collected")
    if _outcomes["passed"] == 0:
        problems.append("no end-to-end test passed (the real control plane did not run)")
    if _outcomes["skipped"]:
        problems.append(f"{_outcomes['skipped']} end-to-end tests were skipped")
    if problems:
        print("\nEBB_REQUIRE_E2E: " + "; ".join(problems))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
