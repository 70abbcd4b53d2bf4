"""The job state machine: its drawing is its table, and reconcile takes only its edges."""

from __future__ import annotations

import itertools
import re

import pytest

from extender.jobs import lifecycle
from extender.jobs.lifecycle import TRANSITIONS, IllegalTransition, State, transition
from extender.jobs.reconcile import reconcile
from tests.unit.jobs.factories import job, pod
from tests.unit.jobs.test_reconcile import snapshot

_STATES = r"[A-Z]+(?:, [A-Z]+)*"
_ARROW = " ──► "


def drawn_edges(doc: str) -> set[tuple[State, State]]:
    """The edges of the drawing: each line of arrows, `A, B ──► C ──► D  comment`, is an
    edge from every state on an arrow's left to every state on its right."""
    edges: set[tuple[State, State]] = set()
    for line in doc.splitlines():
        if _ARROW not in line:
            continue
        groups = []
        for part in line.strip().split(_ARROW):
            names = re.match(_STATES, part)
            assert names is not None, f"not a list of states: {part!r} in {line!r}"
            groups.append([State[name] for name in names.group().split(", ")])
        for left, right in itertools.pairwise(groups):
            edges.update(itertools.product(left, right))
    return edges


def test_the_drawing_in_the_docstring_is_the_table() -> None:
    assert lifecycle.__doc__ is not None
    drawn = drawn_edges(lifecycle.__doc__)
    table = {(old, new) for old, news in TRANSITIONS.items() for new in news}
    assert drawn - table == set(), "drawn but not in TRANSITIONS"
    assert table - drawn == set(), "in TRANSITIONS but not drawn"


def test_final_states_have_no_way_out() -> None:
    for state in State:
        assert (TRANSITIONS[state] == frozenset()) is state.terminal


def test_transition_returns_the_new_state_or_raises() -> None:
    assert transition(None, State.RUNNING) is State.RUNNING  # nothing published yet
    assert transition(State.RUNNABLE, State.RUNNABLE) is State.RUNNABLE  # staying
    assert transition(State.RUNNING, State.SUCCEEDED) is State.SUCCEEDED
    with pytest.raises(IllegalTransition, match="SUCCEEDED → RUNNING"):
        transition(State.SUCCEEDED, State.RUNNING)
    with pytest.raises(IllegalTransition, match="PENDING → SUCCEEDED"):
        transition(State.PENDING, State.SUCCEEDED)


def test_a_job_admitted_by_the_pass_that_saw_its_dependency_succeed_goes_pending_to_starting() -> (
    None
):
    parent = job(
        "p",
        suspend=False,
        status={"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
    )
    child = job("c", annotations={"ebb.dev/depends-on": "p", "ebb.dev/state": "PENDING"})
    out = reconcile(snapshot(parent, child))
    assert out.admit == {"ns/c": 1}
    assert out.statuses["ns/c"].state is State.STARTING
    assert out.illegal == {}


def test_a_retry_whose_pod_exists_before_a_pass_saw_the_failure_goes_running_to_starting() -> None:
    j = job(
        "j",
        suspend=False,
        annotations={"ebb.dev/state": "RUNNING"},
        status={"failed": 1, "active": 1},
    )
    pods = [pod("j", "j-1", phase="Failed", exit_code=1), pod("j", "j-2", phase="Pending")]
    out = reconcile(snapshot(j, pods={"ns/j": pods}))
    assert out.statuses["ns/j"].state is State.STARTING
    assert out.illegal == {}


def test_an_illegal_transition_is_reported_and_the_jobs_real_state_published() -> None:
    # A Job Complete whose published state is FAILED: no edge leaves FAILED.
    j = job(
        "j",
        suspend=False,
        annotations={"ebb.dev/state": "FAILED"},
        status={"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
    )
    out = reconcile(snapshot(j))
    assert out.statuses["ns/j"].state is State.SUCCEEDED
    illegal = out.illegal["ns/j"]
    assert (illegal.old, illegal.new) == (State.FAILED, State.SUCCEEDED)
