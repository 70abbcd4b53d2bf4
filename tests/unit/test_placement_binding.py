"""The bind verb: binds beyond the slots wait a little, then answer with an Error instead
of piling up past kube-scheduler's httpTimeout; a bind kube-scheduler would never ask
(unknown or plain pod, a node filter rejects) is refused and counted. (Binding against
the API server itself, and the refusals over mutual TLS, are tested end to end:
tests/e2e/test_placement_daemon.py, tests/e2e/test_security.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from ebb.events import EventRecorder, ObjectRef
from ebb.kube import Event, EventType
from ebb.model import PodInfo
from ebb.server import add_ops_routes
from extender.placement.cache import PlacementCache
from extender.placement.protocol import BindingArgs, ExtenderArgs
from extender.placement.service import Binding, EbbExtender
from tests.unit.placement_objects import environment, no_failures, node, pod, queue


def extender_with(
    pods: dict[str, PodInfo], post: Binding, *, batch_only: bool = False
) -> EbbExtender:
    """Nodes: `plain` (no environment) and `batch` (of environment ce, 4 CPUs); queue q
    runs on ce."""
    cache = PlacementCache()
    for info in (node("plain"), node("batch", "ce")):
        cache.on_node(Event(EventType.ADDED, info.name, None, info))
    return EbbExtender(
        cache,
        pods,
        {"q": queue("q", "ce"), "other": queue("other", "ce2")},
        {"ce": environment("ce"), "ce2": environment("ce2")},
        binding=post,
        ready=lambda: True,
        batch_only=batch_only,
    )


async def test_binds_beyond_the_slots_are_refused_after_the_wait() -> None:
    release = asyncio.Event()
    posted: list[str] = []

    async def slow_post(
        args: BindingArgs, annotations: Mapping[str, str]
    ) -> None:  # holds its slot until released
        posted.append(args.pod_name)
        await release.wait()

    pods = {f"ns/p{i}": pod(f"p{i}", namespace="ns") for i in range(1, 5)}
    extender = extender_with(
        pods, Binding(slow_post, no_failures, concurrency=2, wait=0.2, assumed_pod_ttl=30.0)
    )
    refused = REGISTRY.get_sample_value("ebb_extender_binds_refused_total") or 0.0
    first = [
        asyncio.create_task(extender.bind(BindingArgs(f"p{i}", "ns", "", "plain"))) for i in (1, 2)
    ]
    await asyncio.sleep(0.05)
    error = await extender.bind(BindingArgs("p3", "ns", "", "plain"))
    assert error == (
        "binding ns/p3 to plain: 2 bindings in flight and none done within 0.2 s; try again later"
    )
    assert posted == ["p1", "p2"]  # the refused bind never reached the API server
    assert REGISTRY.get_sample_value("ebb_extender_binds_refused_total") == refused + 1
    late = asyncio.create_task(extender.bind(BindingArgs("p4", "ns", "", "plain")))
    release.set()  # a slot frees within the wait: the waiting bind goes through
    assert await asyncio.gather(*first, late) == ["", "", ""]
    assert posted == ["p1", "p2", "p4"]


@pytest.mark.parametrize(
    ("pod_name", "node_name", "batch_only", "reason", "error"),
    [
        ("ghost", "plain", False, "unknown_pod", "Ebb has not seen this pod"),
        ("plain", "plain", True, "not_a_batch_pod", "the pod has no Ebb queue label"),
        ("plain", "batch", False, "node_rejected", "does not tolerate the taint ebb.dev/batch"),
        ("big", "batch", False, "node_rejected", "cpu: need 8, allocatable 4"),
        ("elsewhere", "batch", False, "node_rejected", "not in queue other"),
        ("fits", "nowhere", False, "node_rejected", "no such node"),
    ],
)
async def test_a_bind_kube_scheduler_would_never_ask_is_refused_and_counted(
    pod_name: str, node_name: str, *, batch_only: bool, reason: str, error: str
) -> None:
    pods = {
        "ns/plain": pod("plain", namespace="ns"),
        "ns/big": pod("big", "q", cpu="8", namespace="ns"),
        "ns/elsewhere": pod("elsewhere", "other", namespace="ns"),
        "ns/fits": pod("fits", "q", namespace="ns"),
    }
    # A plain pod does not tolerate the batch taint.
    pods["ns/plain"] = dataclasses.replace(pods["ns/plain"], tolerations=())
    posted: list[str] = []

    async def post(args: BindingArgs, annotations: Mapping[str, str]) -> None:
        posted.append(args.pod_name)

    extender = extender_with(
        pods,
        Binding(post, no_failures, concurrency=1, wait=1, assumed_pod_ttl=30),
        batch_only=batch_only,
    )
    metric = "ebb_refused_calls_total"
    before = REGISTRY.get_sample_value(metric, {"reason": reason}) or 0.0
    answer = await extender.bind(BindingArgs(pod_name, "ns", "", node_name))
    assert error in answer
    assert posted == []
    assert REGISTRY.get_sample_value(metric, {"reason": reason}) == before + 1
    # The batch pod that fits its queue's environment is bound.
    assert await extender.bind(BindingArgs("fits", "ns", "", "batch")) == ""
    assert posted == ["fits"]


async def test_a_job_pod_being_bound_keeps_gang_pods_off_its_node() -> None:
    """Between a Job pod's bind and the watch showing it bound, its node is not empty:
    a multi-node job's pod filtered meanwhile must not be placed beside it."""

    async def post(
        args: BindingArgs, annotations: Mapping[str, str]
    ) -> None:  # the watch never shows it: assumed only
        pass

    job_pod = dataclasses.replace(pod("p1", "q", namespace="ns"), job_uid="job-1")
    extender = extender_with(
        {"ns/p1": job_pod}, Binding(post, no_failures, concurrency=1, wait=1, assumed_pod_ttl=30)
    )
    assert await extender.bind(BindingArgs("p1", "ns", "", "batch")) == ""
    assert extender._cache.occupants("batch") == (1, 0)


async def test_a_taint_only_the_cache_still_shows_is_read_afresh_before_a_refusal() -> None:
    """kube-scheduler may see a new node's not-ready taint go before Ebb's watch does: a
    bind the cache would refuse for a taint is checked against the node read afresh."""
    posted: list[str] = []

    async def post(args: BindingArgs, annotations: Mapping[str, str]) -> None:
        posted.append(args.pod_name)

    not_ready = ("node.kubernetes.io/not-ready", "", "NoSchedule")
    fresh: dict[str, tuple[tuple[str, str, str], ...] | None] = {"batch": ()}

    async def node_taints(name: str) -> tuple[tuple[str, str, str], ...] | None:
        return fresh[name]

    binding = Binding(
        post, no_failures, concurrency=1, wait=1, assumed_pod_ttl=30, node_taints=node_taints
    )
    pods = {f"ns/p{i}": pod(f"p{i}", "q", namespace="ns") for i in (1, 2)}
    extender = extender_with(pods, binding)
    stale = dataclasses.replace(extender._cache.nodes["batch"].info, taints=(not_ready,))
    extender._cache.on_node(Event(EventType.MODIFIED, "batch", None, stale))
    assert await extender.bind(BindingArgs("p1", "ns", "", "batch")) == ""  # gone, afresh
    fresh["batch"] = (not_ready,)  # still there when read afresh: refused
    answer = await extender.bind(BindingArgs("p2", "ns", "", "batch"))
    assert "does not tolerate the taint node.kubernetes.io/not-ready:NoSchedule" in answer
    assert posted == ["p1"]


class RecordedEvents(EventRecorder):
    """Events kept in a list instead of sent."""

    def __init__(self) -> None:
        self.recorded: list[tuple[ObjectRef, str, str, bool]] = []

    def record(self, ref: ObjectRef, reason: str, message: str, *, warning: bool = False) -> None:
        self.recorded.append((ref, reason, message, warning))


async def scrape(metric: str) -> float:
    """A sample of the daemon's /metrics, read as Prometheus does."""
    app = web.Application()
    add_ops_routes(app, lambda: True)
    async with TestClient(TestServer(app)) as client:
        text = await (await client.get("/metrics")).text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(metric))


def gang_extender(
    size: int, hold: float, posted: list[str]
) -> tuple[EbbExtender, dict[str, PodInfo], RecordedEvents]:
    """A gang of `size` pods of Job `train` and batch nodes n0, n1, ... for them."""

    async def post(args: BindingArgs, annotations: Mapping[str, str]) -> None:
        posted.append(args.pod_name)

    pods = {
        f"ns/train-{i}": dataclasses.replace(
            pod(f"train-{i}", "q", namespace="ns"),
            job_uid="job-1",
            job_name="train",
            gang_size=size,
        )
        for i in range(size)
    }
    binding = Binding(post, no_failures, concurrency=4, wait=1, assumed_pod_ttl=30, gang_hold=hold)
    extender = extender_with(pods, binding)
    for i in range(size):
        info = node(f"n{i}", "ce")
        extender._cache.on_node(Event(EventType.ADDED, info.name, None, info))
    extender.events = RecordedEvents()
    return extender, pods, extender.events


async def test_a_gang_not_fully_placed_within_the_hold_is_released_counted_and_told() -> None:
    posted: list[str] = []
    extender, _, events = gang_extender(3, 0.2, posted)
    metric = 'ebb_extender_gang_releases_total{reason="timed_out"}'
    before = await scrape(metric)
    answers = await asyncio.gather(
        *(extender.bind(BindingArgs(f"train-{i}", "ns", "", f"n{i}")) for i in (0, 1))
    )
    for answer in answers:  # the third pod never had a node
        assert "not fully placed within 0.2 s (2 of 3 pods had a node)" in answer, answer
        assert "released the nodes of its 2 held pods, they wait again" in answer, answer
    assert posted == []
    assert [extender._cache.occupants(f"n{i}") for i in range(3)] == [(0, 0)] * 3
    assert await scrape(metric) == before + 1
    ((job, reason, message, warning),) = events.recorded
    assert (job.kind, job.namespace, job.name, job.uid) == ("Job", "ns", "train", "job-1")
    assert (reason, warning) == ("GangHoldTimedOut", True)
    assert message.startswith("multi-node job not fully placed within 0.2 s (2 of 3 pods")


async def test_a_held_pod_deleted_releases_its_gang_at_once() -> None:
    posted: list[str] = []
    extender, pods, events = gang_extender(3, 30.0, posted)
    metric = 'ebb_extender_gang_releases_total{reason="pod_deleted"}'
    before = await scrape(metric)
    held = [
        asyncio.create_task(extender.bind(BindingArgs(f"train-{i}", "ns", "", f"n{i}")))
        for i in (0, 1)
    ]
    await asyncio.sleep(0.05)
    assert extender._cache.gang_placed("job-1") == 2
    gone = pods.pop("ns/train-1")  # its Job was terminated
    extender._cache.on_pod(Event(EventType.DELETED, gone.key, gone, None))
    extender.on_pod(Event(EventType.DELETED, gone.key, gone, None))
    answers = await asyncio.wait_for(asyncio.gather(*held), 1)  # not the 30 s window
    for answer in answers:
        assert "its pod ns/train-1 was deleted while held; released the nodes of its 2" in answer
    assert posted == [] and extender._cache.gang_placed("job-1") == 0
    assert await scrape(metric) == before + 1
    assert [(r, w) for _, r, _, w in events.recorded] == [("GangHoldReleased", True)]


@pytest.mark.parametrize("change", ["cordoned", "deleted"])
async def test_a_gang_whose_held_node_is_cordoned_or_deleted_is_released_not_bound(
    change: str,
) -> None:
    """The autoscaler cannot see a held pod (not bound yet): it may cordon the node as
    idle, then terminate it. A gang complete by then is released, never bound there."""
    posted: list[str] = []
    extender, _, events = gang_extender(2, 30.0, posted)
    metric = 'ebb_extender_gang_releases_total{reason="node_unusable"}'
    before = await scrape(metric)
    held = asyncio.create_task(extender.bind(BindingArgs("train-0", "ns", "", "n0")))
    await asyncio.sleep(0.05)
    if change == "cordoned":
        drained = node("n0", "ce", draining=True)
        extender._cache.on_node(Event(EventType.MODIFIED, "n0", None, drained))
        why = "node n0 of its pod ns/train-0 was tainted ebb.dev/draining:NoSchedule while held"
    else:
        extender._cache.on_node(Event(EventType.DELETED, "n0", node("n0", "ce"), None))
        why = "node n0 of its pod ns/train-0 was deleted while held"
    last = await extender.bind(BindingArgs("train-1", "ns", "", "n1"))
    first = await asyncio.wait_for(held, 1)
    for answer in (first, last):
        assert f"{why}; released the nodes of its 2 held pods, they wait again" in answer
    assert posted == [] and extender._cache.gang_placed("job-1") == 0
    assert await scrape(metric) == before + 1
    assert [(r, w) for _, r, _, w in events.recorded] == [("GangHoldReleased", True)]


async def test_a_gang_is_held_and_bound_in_one_environment_and_zone() -> None:
    # Queue q runs on ce then ce2. ce has one empty node in each of zones a and b, ce2 two
    # in zone a: only ce2's zone a has room for the whole gang, and its first pod, held
    # there, keeps the second pod there too (ce's nodes would have room for one pod now).
    posted: list[str] = []

    async def post(args: BindingArgs, annotations: Mapping[str, str]) -> None:
        posted.append(args.node)

    pods = {
        f"ns/train-{i}": dataclasses.replace(
            pod(f"train-{i}", "q", namespace="ns"), job_uid="job-1", job_name="train", gang_size=2
        )
        for i in range(2)
    }
    cache = PlacementCache()
    for name, ce, zone in (
        ("ce-a", "ce", "a"),
        ("ce-b", "ce", "b"),
        ("x0", "ce2", "a"),
        ("x1", "ce2", "a"),
    ):
        info = dataclasses.replace(node(name, ce), zone=zone)
        cache.on_node(Event(EventType.ADDED, info.name, None, info))
    extender = EbbExtender(
        cache,
        pods,
        {"q": queue("q", "ce", "ce2")},
        {"ce": environment("ce"), "ce2": environment("ce2")},
        binding=Binding(post, no_failures, concurrency=4, wait=1, assumed_pod_ttl=30),
        ready=lambda: True,
    )
    names = ["ce-a", "ce-b", "x0", "x1"]
    first = await extender.filter(ExtenderArgs(pods["ns/train-0"], names))
    assert list(first.node_names) == ["x0", "x1"]
    held = asyncio.create_task(extender.bind(BindingArgs("train-0", "ns", "", "x0")))
    await asyncio.sleep(0.05)
    second = await extender.filter(ExtenderArgs(pods["ns/train-1"], names))
    assert list(second.node_names) == ["x1"]
    assert second.unresolvable["ce-a"] == (
        "multi-node job's pods all go to ce ce2, zone a, where its other pods are"
    )
    assert await extender.bind(BindingArgs("train-1", "ns", "", "x1")) == ""
    assert await asyncio.wait_for(held, 1) == "" and sorted(posted) == ["x0", "x1"]
