"""The placement cache: node states follow the watch, and pods the extender bound count on
their node until the watch shows them (assumed pods), exactly once."""

from __future__ import annotations

from ebb.kube import Event, EventType
from ebb.model import NodeInfo, PodInfo
from ebb.resources import Resources
from extender.placement.cache import PlacementCache
from extender.placement.scoring import filter_nodes
from tests.unit.placement_objects import environment, node, pod, queue

CPU = Resources(cpu_milli=1000)


def add_node(cache: PlacementCache, info: NodeInfo) -> None:
    cache.on_node(Event(EventType.ADDED, info.name, None, info))


def change_pod(cache: PlacementCache, old: PodInfo | None, new: PodInfo | None) -> None:
    kind = EventType.DELETED if new is None else EventType.MODIFIED if old else EventType.ADDED
    key = (new or old).key  # type: ignore[union-attr]
    cache.on_pod(Event(kind, key, old, new))


def used(cache: PlacementCache, name: str) -> int:
    return cache.nodes[name].used.cpu_milli


def test_watched_pods_fill_their_nodes_and_leave_when_they_go() -> None:
    cache = PlacementCache()
    early = pod("early", "q", cpu="1", node_name="n")  # a pod seen before its node
    change_pod(cache, None, early)
    add_node(cache, node("n", "ce", cpu="4"))
    assert used(cache, "n") == 1000
    pending = pod("later", "q", cpu="2")
    change_pod(cache, None, pending)
    assert used(cache, "n") == 1000  # pending pods hold nothing
    bound = pod("later", "q", cpu="2", node_name="n")
    change_pod(cache, pending, bound)
    assert used(cache, "n") == 3000
    change_pod(cache, bound, None)
    change_pod(cache, early, None)
    assert used(cache, "n") == 0
    assert cache.nodes["n"].free.cpu_milli == 4000
    info = cache.nodes["n"].info
    cache.on_node(Event(EventType.DELETED, "n", info, None))
    assert "n" not in cache.nodes


def test_an_assumed_pod_counts_once_until_the_watch_shows_it() -> None:
    cache = PlacementCache()
    add_node(cache, node("n", "ce", cpu="4"))
    pending = pod("p", "q", cpu="3")
    change_pod(cache, None, pending)
    cache.assume(pending.uid, pending.requests, "n", expires=100.0)
    assert used(cache, "n") == 3000
    assert cache.assumed_pods == 1
    change_pod(cache, pending, pod("p", "q", cpu="3", node_name="n"))  # the watch catches up
    assert used(cache, "n") == 3000
    assert cache.assumed_pods == 0


def test_an_assumed_pod_goes_when_deleted_forgotten_or_expired() -> None:
    cache = PlacementCache()
    add_node(cache, node("n", "ce", cpu="8"))
    doomed, failed, slow = pod("doomed", "q"), pod("failed", "q"), pod("slow", "q")
    cache.assume(doomed.uid, CPU, "n", expires=10.0)
    cache.assume(failed.uid, CPU, "n", expires=11.0)
    cache.assume(slow.uid, CPU, "n", expires=12.0)
    assert used(cache, "n") == 3000
    change_pod(cache, doomed, None)  # deleted before the watch showed it bound
    cache.forget(failed.uid)  # its binding failed
    assert used(cache, "n") == 1000
    assert cache.expire(now=11.5) == 0
    assert cache.expire(now=12.0) == 1
    assert used(cache, "n") == 0
    assert cache.assumed_pods == 0


def test_two_pods_in_flight_do_not_both_get_the_last_slot() -> None:
    cache = PlacementCache()
    add_node(cache, node("n", "ce", cpu="4"))
    queues, environments = {"q": queue("q", "ce")}, {"ce": environment("ce")}
    first, second = pod("first", "q", cpu="3"), pod("second", "q", cpu="3")
    for p in (first, second):
        assert filter_nodes(p, ["n"], cache.nodes, queues, environments).kept == ["n"]
    cache.assume(first.uid, first.requests, "n", expires=30.0)  # first is bound; no watch yet
    verdict = filter_nodes(second, ["n"], cache.nodes, queues, environments)
    assert verdict.kept == []
    assert verdict.failed == {"n": "cpu: need 3, free 1"}
