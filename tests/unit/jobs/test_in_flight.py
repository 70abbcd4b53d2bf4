"""Admissions in flight: the next pass runs while the last pass's admission writes are
being written. A job in flight holds what it was granted as an admitted job would (no
other job gets that capacity), is never admitted again while in flight, and nothing
else is decided of it; a write that fails gives its capacity back and its job is decided
again. The shell's side: the writer starts admissions without waiting for them, and a
job in flight is never written twice."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ebb import keys
from ebb.kube import ApiError
from extender.jobs import writes
from extender.jobs.lifecycle import Code, State, Status
from extender.jobs.reconcile import Decisions, Reconciler, reconcile
from extender.jobs.writes import Writer
from tests.unit.jobs.factories import job
from tests.unit.jobs.test_incremental import World, event, outcome
from tests.unit.jobs.test_reconcile import snapshot

JOBS = [job(f"j{i}", cpu="1", created=f"2026-01-01T00:00:0{i}Z") for i in range(6)]


def test_a_pass_with_admissions_in_flight_neither_readmits_them_nor_gives_their_capacity() -> None:
    first = reconcile(snapshot(*JOBS))
    assert first.admit == {"ns/j0": 1, "ns/j1": 1, "ns/j2": 1, "ns/j3": 1}  # 4 vCPUs
    # The next pass, while those four writes are in flight (the Jobs still suspended).
    snap = dataclasses.replace(snapshot(*JOBS), in_flight=dict(first.admit))
    second = reconcile(snap)
    assert second.admit == {}
    assert second.used == {"ce": 4.0}
    assert second.statuses["ns/j4"].reason.startswith("position 1 in queue q: waiting for")
    for key in first.admit:  # nothing decided, nor written, of a job in flight
        assert key not in second.statuses
        assert key not in second.requeue and key not in second.fail


def test_a_failed_admission_gives_its_capacity_back_and_is_decided_again() -> None:
    reconciler = Reconciler()
    first = reconciler.run(snapshot(*JOBS))
    in_flight = dict(first.admit)
    reconciler.run(dataclasses.replace(snapshot(*JOBS), in_flight=in_flight), set())
    # j1's write conflicted: it is suspended still and no longer in flight.
    del in_flight["ns/j1"]
    third = reconciler.run(dataclasses.replace(snapshot(*JOBS), in_flight=in_flight), set())
    assert third.admit == {"ns/j1": 1}
    assert third.statuses["ns/j1"].state is State.STARTING


def test_an_elastic_job_in_flight_holds_its_grant_and_does_not_grow() -> None:
    wide = job("wide", cpu="1", parallelism=6, completions=6)
    first = reconcile(snapshot(wide))
    assert first.admit == {"ns/wide": 4}
    second = reconcile(dataclasses.replace(snapshot(wide, vcpus=8), in_flight=first.admit))
    assert second.admit == {}  # (landed, a later pass grows it)
    assert second.used == {"ce": 4.0}


def land(w: World, key: str, pods: int) -> None:
    """An admission's write landed: the Job as an admitted job that asks for what it
    was granted (so, like the job in flight, it wants no more)."""
    j = w.jobs[key]
    w.jobs[key] = dataclasses.replace(
        j,
        suspended=False,
        parallelism=pods,
        requested_parallelism=pods,
        published_state=State.STARTING,
        published_code=Code.ADMITTED.value,
        since=w.now,
        admitted_at=w.now,
    )


def without(d: Decisions, keys: set[str]) -> dict[str, Any]:
    """What a pass decided of the jobs not in `keys`."""
    got: dict[str, Any] = {
        what: {k: v for k, v in value.items() if k not in keys}
        if isinstance(value, dict)
        else value
        for what, value in outcome(d).items()
    }
    got["admit"] = [(k, pods) for k, pods in got["admit"] if k not in keys]
    got["counting"] = got["counting"] - keys
    return got


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.one_of(event, st.tuples(st.sampled_from(("fly", "land", "fail")), st.integers(0, 50))),
        min_size=1,
        max_size=40,
    ),
    reservation=st.sampled_from((0, 50)),
    limit=st.booleans(),
)
def test_admissions_in_flight_count_as_admitted_jobs(
    events: list[tuple[Any, ...]], reservation: int, limit: bool
) -> None:
    """Over random events, with some of the last pass's admissions in flight: the pass
    (incremental or full) admits none of them again, decides nothing of them, and
    decides for every other job what it would decide were their writes landed; a write
    that fails leaves the job to be decided again."""
    w = World(reservation, limit)
    reconciler = Reconciler()
    in_flight: dict[str, int] = {}
    for e in events:
        changed: set[str] = set()
        if e[0] == "fly":  # the last pass's admissions written, not landed yet
            in_flight.update((k, p) for k, p in w.last.admit.items() if k in w.jobs)
        elif e[0] in ("land", "fail") and in_flight:
            key = sorted(in_flight)[e[1] % len(in_flight)]
            pods = in_flight.pop(key)
            if e[0] == "land" and key in w.jobs:
                land(w, key, pods)
                changed.add(key)
        else:
            changed = w.apply(e)
            in_flight = {k: p for k, p in in_flight.items() if k in w.jobs}
            if e[0] == "apply":  # (published: not in flight any more)
                in_flight = {k: p for k, p in in_flight.items() if w.jobs[k].suspended}
        snap = dataclasses.replace(w.snapshot(), in_flight=dict(in_flight))
        got = reconciler.run(snap, changed)
        full = reconcile(snap, settle=False)
        assert outcome(got) == outcome(full), e
        flying = set(in_flight)
        for d in (got, full):
            assert not flying & (d.admit.keys() | d.requeue.keys() | d.fail.keys())
            assert not flying & {k for k, _ in d.statuses.items()}
        # The same pass with those writes landed decides the same for every other job.
        landed = copy.copy(w)
        landed.jobs = dict(w.jobs)
        for key, pods in in_flight.items():
            land(landed, key, pods)
        assert without(full, flying) == without(reconcile(landed.snapshot(), settle=False), flying)
        w.last = full


class _Client:
    """Patches wait until released; each returns what `answer` says."""

    def __init__(self) -> None:
        self.patches: list[str] = []
        self.release = asyncio.Event()
        self.answer: dict[str, Any] = {}

    async def patch(self, resource: Any, name: str, body: Any, namespace: str) -> Any:
        self.patches.append(name)
        await self.release.wait()
        result = self.answer.get(name)
        if isinstance(result, Exception):
            raise result
        return result


class _Jobs:
    def __init__(self) -> None:
        self.store: dict[str, Any] = {}
        self.written: list[Any] = []

    def apply_write(self, raw: Any) -> None:
        self.written.append(raw)


class _Events:
    def record(self, *args: Any, **kwargs: Any) -> None:
        pass


def _admitting(*names: str) -> tuple[dict[str, Any], Decisions]:
    jobs = {f"ns/{n}": dataclasses.replace(job(n), template_ready=True) for n in names}
    status = Status(State.STARTING, Code.ADMITTED, "admitted")
    decisions = Decisions(statuses={k: status for k in jobs}, admit=dict.fromkeys(jobs, 1))
    return jobs, decisions


async def test_the_writer_returns_before_admissions_land_and_counts_them_in_flight() -> None:
    client, settled = _Client(), []
    writer = Writer(
        client,  # type: ignore[arg-type]
        _Jobs(),  # type: ignore[arg-type]
        _Events(),  # type: ignore[arg-type]
        settled=lambda: settled.append(1),
    )
    jobs, decisions = _admitting("a", "b")
    client.answer = {
        "a": {"metadata": {"name": "a"}},
        "b": ApiError(409, "Conflict", "the object has been modified"),
    }
    await asyncio.wait_for(writer.apply(jobs, decisions, 100.0), 1)  # not waiting on writes
    assert dict(writer.in_flight) == {"ns/a": 1, "ns/b": 1}
    # The next pass admits both again (say, from a stale view): neither is written twice.
    await writer.apply(jobs, decisions, 101.0)
    # A publication queued for a job in flight is not written meanwhile.
    writer._enqueue(jobs["ns/a"], {keys.REASON: "x"})
    publisher = asyncio.create_task(writer._publisher())
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(client.patches) == ["a", "b"]
    client.release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    publisher.cancel()
    assert dict(writer.in_flight) == {}  # landed, or failed: the capacity is back
    assert len(settled) == 2


async def test_the_in_flight_cap_leaves_the_rest_to_a_later_pass(monkeypatch: Any) -> None:
    monkeypatch.setattr(writes, "MAX_ADMISSIONS_IN_FLIGHT", 3)
    client = _Client()
    writer = Writer(client, _Jobs(), _Events())  # type: ignore[arg-type]
    jobs, decisions = _admitting("a", "b")
    await writer.apply(jobs, decisions, 100.0)
    more, later = _admitting("c", "d", "e")
    await writer.apply(more, later, 100.0)
    assert dict(writer.in_flight) == {"ns/a": 1, "ns/b": 1, "ns/c": 1}
    writer.cancel_admissions()
    await asyncio.sleep(0)
    assert dict(writer.in_flight) == {}


async def test_admissions_waiting_for_a_slot_are_not_written_once_leadership_is_lost() -> None:
    client = _Client()
    leading = asyncio.Event()
    leading.set()
    writer = Writer(client, _Jobs(), _Events(), concurrency=1, leading=leading)  # type: ignore[arg-type]
    jobs, decisions = _admitting("a", "b")
    await writer.apply(jobs, decisions, 100.0)
    await asyncio.sleep(0)
    assert client.patches == ["a"]  # b waits for the one slot
    leading.clear()
    client.release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert client.patches == ["a"]
    assert dict(writer.in_flight) == {}


def test_a_daemon_restarted_mid_write_decides_from_the_api_alone() -> None:
    """Durable state is the Job's suspend flag: a restarted daemon has nothing in flight;
    a write that landed shows as an admitted Job (holding its capacity), one that did
    not as a suspended Job (decided again), never both."""
    landed = dataclasses.replace(JOBS[0], suspended=False)
    restarted = reconcile(snapshot(landed, *JOBS[1:]))
    assert "ns/j0" not in restarted.admit
    assert restarted.admit == {"ns/j1": 1, "ns/j2": 1, "ns/j3": 1}
