"""The incremental pass (`Reconciler.run` told which jobs changed) decides exactly what
a full pass over the same snapshot decides with every status decided in turn
(`reconcile(..., settle=False)`, today's pass), over random sequences of events: jobs
added, ended, deleted, cancelled, admitted and published, running a pod, their
scheduling priority changed; nodes joining and leaving environments; queue priorities,
compute environments and fair-share usage changed; time passing (the starvation
bound)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ebb.model import JobQueue, PodInfo, SchedulingPolicy, ShareWeight, StateTimeLimitAction
from ebb.resources import Resources
from extender.jobs.admission import CapacityLimit
from extender.jobs.reconcile import Decisions, Reconciler, Snapshot, reconcile
from extender.jobs.snapshot import JobInfo, format_time
from tests.unit.jobs.factories import job, pod

GIB = 2**30
SHARES = ("s0", "s1", "s2")


def capacity(vcpus: int) -> CapacityLimit:
    return CapacityLimit(Resources(vcpus * 1000, 2**60, 2**40))


def world(reservation: int, limit: bool) -> tuple[dict[str, JobQueue], dict[str, SchedulingPolicy]]:
    full = StateTimeLimitAction("CAPACITY:COMPUTE_ENVIRONMENT_FULL", "RUNNABLE", 50, "CANCEL")
    limits = (full,) if limit else ()
    queues = {
        "fifo": JobQueue("fifo", 1, ("a", "b")),
        "peer": JobQueue("peer", 1, ("b",), state_time_limit_actions=limits),
        "fair": JobQueue("fair", 0, ("a",), scheduling_policy="pol"),
    }
    shares = tuple(ShareWeight(s, 1.0 + i) for i, s in enumerate(SHARES))
    policies = {"pol": SchedulingPolicy("pol", 3600, reservation, shares)}
    return queues, policies


add = st.tuples(
    st.just("add"),
    st.sampled_from(("fifo", "peer", "fair", "gone")),
    st.integers(1, 4),  # vCPUs
    st.integers(0, 2),  # scheduling priority
    st.sampled_from(SHARES),
    st.integers(1, 3),  # pods (more than one: elastic)
    st.booleans(),  # published RUNNABLE already
)
apply = st.tuples(st.just("apply"))
run = st.tuples(st.just("run"), st.integers(0, 50))
node = st.tuples(st.just("node"), st.integers(0, 2), st.sampled_from(("a", "b", "")))
tick = st.tuples(st.just("tick"), st.sampled_from((1.0, 30.0, 120.0)))
# (Repeated: the events that take several steps to matter come more often.)
event = st.one_of(
    add,
    add,
    apply,
    apply,
    run,
    node,
    node,
    tick,
    tick,
    st.tuples(st.sampled_from(("end", "delete", "cancel", "priority")), st.integers(0, 50)),
    st.tuples(st.just("queue"), st.sampled_from(("fifo", "peer", "fair")), st.integers(0, 2)),
    st.tuples(st.just("ce"), st.sampled_from(("a", "b")), st.integers(0, 12)),
    st.tuples(st.just("usage"), st.sampled_from(SHARES), st.floats(0, 1e6)),
)


class World:
    def __init__(self, reservation: int, limit: bool) -> None:
        self.queues, self.policies = world(reservation, limit)
        self.capacity = {"a": capacity(6), "b": capacity(4)}
        self.jobs: dict[str, JobInfo] = {}
        self.pods: dict[str, list[PodInfo]] = {}
        self.nodes: dict[str, str] = {}  # node → CE
        self.usage: dict[str, dict[str, float]] = {}
        self.now = 1000.0
        self.made = 0
        self.last = Decisions()

    def snapshot(self) -> Snapshot:
        return Snapshot(
            now=self.now,
            jobs=dict(self.jobs),
            pods_by_job={key: list(pods) for key, pods in self.pods.items() if key in self.jobs},
            queues=dict(self.queues),
            policies=dict(self.policies),
            capacity=dict(self.capacity),
            node_compute_environment=dict(self.nodes),
            decayed_usage={q: dict(u) for q, u in self.usage.items()},
            starvation_seconds=100.0,
        )

    def pick(self, i: int, suspended: bool | None = None) -> str | None:
        keys = [
            k
            for k, j in self.jobs.items()
            if j.terminal is None and (suspended is None or j.suspended == suspended)
        ]
        return keys[i % len(keys)] if keys else None

    def apply(self, e: tuple[Any, ...]) -> set[str]:
        """Applies one event; returns the keys of the jobs it changed."""
        kind = e[0]
        if kind == "add":
            return self.add(*e[1:])
        if kind == "apply":
            return self.publish()
        if kind in ("end", "delete", "cancel", "priority", "run"):
            return self.touch(kind, e[1])
        if kind == "queue":
            self.queues[e[1]] = dataclasses.replace(self.queues[e[1]], priority=e[2])
        elif kind == "ce":
            self.capacity[e[1]] = capacity(e[2])
        elif kind == "node":
            if e[2]:
                self.nodes[f"n{e[1]}"] = e[2]
            else:
                self.nodes.pop(f"n{e[1]}", None)
        elif kind == "usage":
            self.usage.setdefault("fair", {})[e[1]] = e[2]
        else:
            self.now += e[1]
        return set()

    def add(  # noqa: PLR0917 (an event's fields)
        self, queue: str, cpu: int, priority: int, share: str, pods: int, published: bool
    ) -> set[str]:
        self.made += 1
        annotations = {"ebb.dev/scheduling-priority": str(priority)}
        if published:
            annotations |= {"ebb.dev/state": "RUNNABLE", "ebb.dev/since": format_time(self.now)}
        info = job(
            f"j{self.made}",
            queue=queue,
            share=share,
            cpu=str(cpu),
            parallelism=pods,
            completions=pods,
            annotations=annotations,
            created=f"1970-01-01T00:{self.made % 60:02d}:00Z",
        )
        self.jobs[info.key] = info
        return {info.key}

    def touch(self, kind: str, i: int) -> set[str]:
        key = self.pick(i, suspended=False if kind in ("end", "run") else None)
        if key is None:
            return set()
        j = self.jobs[key]
        if kind == "end":
            self.jobs[key] = dataclasses.replace(j, terminal="Complete", succeeded=j.parallelism)
        elif kind == "delete":
            del self.jobs[key]
        elif kind == "run":  # a pod of it runs on a node
            self.pods[key] = [pod(j.name, f"{j.name}-p", node=f"n{i % 3}")]
        elif kind == "cancel":
            self.jobs[key] = dataclasses.replace(j, cancel="by a test")
        else:
            spec = dataclasses.replace(j.spec, scheduling_priority=i % 3)
            self.jobs[key] = dataclasses.replace(j, spec=spec)
        return {key}

    def publish(self) -> set[str]:
        """The last pass's admissions and statuses written."""
        changed = set()
        for key, status in self.last.statuses.items():
            j = self.jobs.get(key)
            published = (status.state, status.code.value)
            if j is None or j.terminal or (j.published_state, j.published_code) == published:
                continue
            pods = self.last.admit.get(key)
            self.jobs[key] = dataclasses.replace(
                j,
                suspended=j.suspended and pods is None,
                parallelism=pods or j.parallelism,
                published_state=status.state,
                published_code=status.code.value,
                since=self.now,
                admitted_at=self.now if pods else j.admitted_at,
            )
            changed.add(key)
        return changed


def outcome(d: Decisions) -> dict[str, Any]:
    return {
        "statuses": dict(d.statuses.items()),
        "admit": list(d.admit.items()),  # in the order admission granted them
        "requeue": d.requeue,
        "fail": d.fail,
        "restart": d.restart,
        "attempts": d.attempts,
        "array_status": d.array_status,
        "counting": d.counting,
        "ungate": sorted(d.ungate),
        "clear_indexes": sorted(d.clear_indexes),
        "illegal": {k: (v.old, v.new) for k, v in d.illegal.items()},
        "running_vcpus": d.running_vcpus,
        "used": d.used,
    }


# Sequences where what a job decided alone goes stale unless redone: a node moving to
# another environment (where its pods are bound), a job not yet published RUNNABLE (it
# waits since now) and an admitted job growing (its demand has waited for nothing)
# left behind while time passes.
@example(
    [
        ("add", "fifo", 1, 0, "s0", 1, True),
        ("apply",),
        ("run", 0),
        ("node", 0, "a"),
        ("node", 0, "b"),
    ],
    0,
    False,
)
@example(
    [
        ("add", "peer", 4, 0, "s0", 1, True),
        ("apply",),
        ("add", "peer", 1, 0, "s0", 1, False),
        ("tick", 120.0),
        ("add", "peer", 1, 0, "s0", 1, True),
    ],
    0,
    False,
)
@example(
    [
        ("add", "peer", 2, 0, "s0", 3, True),
        ("apply",),
        ("add", "peer", 1, 0, "s0", 1, True),
        ("tick", 120.0),
        ("tick", 1.0),
    ],
    0,
    False,
)
@settings(max_examples=600, deadline=None)
@given(
    events=st.lists(event, min_size=1, max_size=40),
    reservation=st.sampled_from((0, 50)),
    limit=st.booleans(),
)
def test_incremental_passes_decide_what_full_passes_decide(
    events: list[tuple[Any, ...]], reservation: int, limit: bool
) -> None:
    w = World(reservation, limit)
    reconciler = Reconciler()
    for e in events:
        changed = w.apply(e)
        snap = w.snapshot()
        got = reconciler.run(snap, changed)
        full = reconcile(snap, settle=False)
        assert outcome(got) == outcome(full), e
        # Each status read on its own (as the writer reads an admitted job's) is the one
        # listed: a settled queue's status is found by its key.
        for key, status in full.statuses.items():
            assert got.statuses.get(key) == status, key
            assert key in got.statuses
        assert len(got.statuses) == len(full.statuses)
        w.last = full
