"""A job's demand as reconcile hands it to admission (the daemon and the simulator both
build it with these functions)."""

from __future__ import annotations

import dataclasses

from extender.jobs.lifecycle import State
from extender.jobs.reconcile import admitted_demand, waiting_demand
from tests.unit.jobs.factories import job


def test_a_job_not_admitted_wants_what_is_left_and_waits_from_its_runnable_time() -> None:
    info = dataclasses.replace(
        job("a", completions=10, parallelism=1, indexed=True),
        requested_parallelism=10,
        succeeded=4,
        published_state=State.RUNNABLE,
        since=50.0,
    )
    d = waiting_demand(info, "team-a", now=100.0)
    assert d is not None
    assert (d.key, d.want, d.granted, d.share, d.runnable_since) == ("ns/a", 6, 0, "team-a", 50.0)
    assert d.elastic
    # Not published RUNNABLE yet: it waits from now.
    fresh = waiting_demand(dataclasses.replace(info, since=None), "", now=100.0)
    assert fresh is not None and fresh.runnable_since == 100.0


def test_a_job_with_nothing_left_wants_nothing() -> None:
    info = dataclasses.replace(job("a"), succeeded=1)
    assert waiting_demand(info, "", now=0.0) is None


def test_an_admitted_array_holds_its_parallelism_and_wants_the_rest_without_waiting() -> None:
    info = dataclasses.replace(
        job("a", completions=10, parallelism=3, indexed=True, suspend=False),
        requested_parallelism=10,
        succeeded=2,
        since=5.0,
    )
    d = admitted_demand(info, "s", active=2, bound={"ce": 1}, now=100.0)
    assert (d.granted, d.want, d.bound) == (3, 8, {"ce": 1})
    # Admitted: the starvation bound is for jobs not admitted, so it has waited no time.
    assert d.runnable_since == 100.0
    # Pods still running beyond a lowered parallelism are held too.
    d = admitted_demand(info, "s", active=5, bound={}, now=100.0)
    assert (d.granted, d.want) == (5, 8)


def test_an_admitted_single_job_holds_its_pod_and_wants_no_more() -> None:
    info = job("a", suspend=False)
    d = admitted_demand(info, "", active=0, bound={}, now=0.0)
    assert (d.granted, d.want, d.elastic) == (1, 1, False)


def test_an_array_holds_nothing_for_children_that_failed_for_good() -> None:
    """A child whose retries are used up (its index in status.failedIndexes) is never run
    again by the Job controller: its capacity goes to others, as AWS Batch frees it."""
    info = dataclasses.replace(
        job("a", completions=10, parallelism=10, indexed=True, suspend=False),
        requested_parallelism=10,
        succeeded=5,
        failed_indexes="1,3-4",
    )
    d = admitted_demand(info, "s", active=2, bound={"ce": 2}, now=100.0)
    assert (d.granted, d.want) == (2, 2)
    waiting = waiting_demand(dataclasses.replace(info, suspended=True), "s", now=100.0)
    assert waiting is not None and waiting.want == 2
    every_child_ended = dataclasses.replace(info, failed_indexes="0-4")
    assert waiting_demand(dataclasses.replace(every_child_ended, suspended=True), "", 0.0) is None
