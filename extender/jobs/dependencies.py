"""Job dependencies: when may a job start, and when must it fail because of another.

Types (in `ebb.dev/depends-on`, default afterok):
  afterok     start when the dependency SUCCEEDED; if it FAILED, fail with
              "dependency <name> failed" (AWS Batch's only kind).
  afterany    start when the dependency finished, either way.
  afternotok  start when the dependency FAILED; if it SUCCEEDED this job can never
              run and fails.
  n_to_n      both are array jobs of the same size: child i starts when child i of
              the dependency succeeded. The job itself is admitted once the
              dependency exists; its children wait behind a scheduling gate that is
              lifted index by index. If the dependency fails, so does this job.
A dependency that does not exist yet is waited for (runtime dependencies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ebb.jobspec import Dependency, DependencyType
from extender.jobs.snapshot import JobInfo, parse_index_ranges


@dataclass(frozen=True, slots=True)
class DependencyVerdict:
    ready: bool  # may be admitted
    failed: str | None = None  # a reason if the job must fail
    waiting_for: tuple[str, ...] = ()  # human-readable, one per unmet dependency
    ungated_indexes: frozenset[int] = field(default_factory=frozenset)  # n_to_n children


def outcome(job: JobInfo) -> str | None:
    """SUCCEEDED, FAILED, or None while the job has not finished."""
    if job.terminal == "Complete":
        return "SUCCEEDED"
    if job.terminal == "Failed":
        return "FAILED"
    return None


def resolve(job: JobInfo, lookup: Callable[[str], JobInfo | None]) -> DependencyVerdict:
    """The verdict on `job`'s dependencies; `lookup(name)` finds a Job in its namespace."""
    waiting: list[str] = []
    ungated: frozenset[int] | None = None
    for dep in job.spec.depends_on:
        other = lookup(dep.job)
        if other is None:
            waiting.append(f"job {dep.job} (not created yet)")
            continue
        result = outcome(other)
        verdict = _one(dep, other, result)
        if verdict is _FAIL:
            failed = "failed" if result == "FAILED" else "succeeded (afternotok)"
            return DependencyVerdict(False, failed=f"dependency {dep.job} {failed}")
        if dep.type is DependencyType.N_TO_N:
            done = frozenset(parse_index_ranges(other.completed_indexes))
            ungated = done if ungated is None else ungated & done
        elif verdict is _WAIT:
            state = other.published_state.value if other.published_state else "unknown state"
            waiting.append(f"job {dep.job} ({dep.type.value}; it is {state})")
    return DependencyVerdict(
        not waiting, None, tuple(waiting), ungated if ungated is not None else frozenset()
    )


_OK, _WAIT, _FAIL = object(), object(), object()


def _one(dep: Dependency, other: JobInfo, result: str | None) -> object:
    kind = dep.type
    if kind in (DependencyType.AFTER_OK, DependencyType.N_TO_N):
        return {"SUCCEEDED": _OK, "FAILED": _FAIL}.get(result or "", _WAIT)
    if kind is DependencyType.AFTER_ANY:
        return _OK if result else _WAIT
    return {"FAILED": _OK, "SUCCEEDED": _FAIL}.get(result or "", _WAIT)  # afternotok


def find_cycle(
    start: str, deps_of: Callable[[str], tuple[Dependency, ...] | None]
) -> list[str] | None:
    """A dependency cycle through `start` (names), or None. `deps_of(name)` gives a
    job's dependencies, or None if no such job exists yet."""
    path: list[str] = []
    on_path: set[str] = set()
    done: set[str] = set()

    def visit(name: str) -> list[str] | None:
        if name in on_path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        deps = deps_of(name)
        if deps is None:
            return None
        path.append(name)
        on_path.add(name)
        for dep in deps:
            cycle = visit(dep.job)
            if cycle:
                return cycle
        path.pop()
        on_path.discard(name)
        done.add(name)
        return None

    return visit(start)
