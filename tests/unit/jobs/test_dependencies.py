from __future__ import annotations

from ebb.jobspec import parse_depends_on
from extender.jobs.dependencies import find_cycle, resolve
from extender.jobs.snapshot import JobInfo
from tests.unit.jobs.factories import job

COMPLETE = {"conditions": [{"type": "Complete", "status": "True"}]}
FAILED = {"conditions": [{"type": "Failed", "status": "True"}]}


def lookup(*jobs: JobInfo):  # type: ignore[no-untyped-def]
    by_name = {j.name: j for j in jobs}
    return by_name.get


def test_afterok_waits_then_releases() -> None:
    child = job("child", annotations={"ebb.dev/depends-on": "parent"})
    parent = job("parent", annotations={"ebb.dev/state": "RUNNING"})
    verdict = resolve(child, lookup(parent))
    assert not verdict.ready
    assert verdict.waiting_for == ("job parent (afterok; it is RUNNING)",)
    assert resolve(child, lookup(job("parent", status=COMPLETE))).ready


def test_afterok_fails_when_dependency_fails() -> None:
    child = job("child", annotations={"ebb.dev/depends-on": "parent"})
    verdict = resolve(child, lookup(job("parent", status=FAILED)))
    assert verdict.failed == "dependency parent failed"


def test_afterany_and_afternotok() -> None:
    any_child = job("a", annotations={"ebb.dev/depends-on": "p:afterany"})
    not_ok = job("b", annotations={"ebb.dev/depends-on": "p:afternotok"})
    assert resolve(any_child, lookup(job("p", status=FAILED))).ready
    assert resolve(any_child, lookup(job("p", status=COMPLETE))).ready
    assert resolve(not_ok, lookup(job("p", status=FAILED))).ready
    assert resolve(not_ok, lookup(job("p", status=COMPLETE))).failed == (
        "dependency p succeeded (afternotok)"
    )


def test_runtime_dependency_waits_for_creation() -> None:
    child = job("child", annotations={"ebb.dev/depends-on": "later"})
    verdict = resolve(child, lookup())
    assert verdict.waiting_for == ("job later (not created yet)",)


def test_n_to_n_ungates_completed_indexes_only() -> None:
    child = job("b", indexed=True, completions=5, annotations={"ebb.dev/depends-on": "a:n_to_n"})
    parent = job("a", indexed=True, completions=5, status={"completedIndexes": "0,2-3"})
    verdict = resolve(child, lookup(parent))
    assert verdict.ready
    assert verdict.ungated_indexes == frozenset({0, 2, 3})


def test_cycle_detection() -> None:
    graph = {"a": "b", "b": "c", "c": "a", "d": "missing"}

    def deps_of(name: str):  # type: ignore[no-untyped-def]
        return parse_depends_on(graph[name]) if name in graph else None

    assert find_cycle("a", deps_of) == ["a", "b", "c", "a"]
    assert find_cycle("d", deps_of) is None
