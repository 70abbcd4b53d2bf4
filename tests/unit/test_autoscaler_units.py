"""The autoscaler's pure units: the batch window, the view of pending pods, room and
launches in flight, the next wake time, and the status document."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from autoscaler.batch_window import BatchWindow
from autoscaler.environments import Unavailable, environment
from autoscaler.launch_intent import LaunchIntent, intent_from_raw
from autoscaler.pending import pending_pods
from autoscaler.planner import (
    INSUFFICIENT_CAPACITY,
    MAX_VCPUS_REACHED,
    Environment,
    PendingPod,
    Room,
)
from autoscaler.room import Coming, NodeRoom, in_flight, room
from autoscaler.scaledown import NodeSeen, NodeState, next_scale_down, track_nodes
from autoscaler.status import LaunchFailure, environment_status, unmanaged_status
from autoscaler.wake import next_wake
from ebb.catalog import NodeOverheadSettings, shipped_catalog
from ebb.model import ComputeEnvironment, JobQueue, PodInfo
from ebb.resources import Resources

CATALOG = shipped_catalog()
OVERHEAD = NodeOverheadSettings().node_overhead()
CE = ComputeEnvironment(
    name="ce",
    type="SPOT",
    max_vcpus=64,
    instance_types=("c6i.large",),
    subnets=("s-1",),
    security_group_ids=("sg-1",),
    instance_role="ebb-node",
)

# --- the batch window ------------------------------------------------------------------------


def test_a_window_closes_once_no_pod_arrived_for_the_idle_window() -> None:
    w = BatchWindow(1.0, 10.0).arrived(100.0)
    assert not w.ready(100.5)
    w = w.arrived(100.5)  # a new arrival extends the idle part
    assert w.closes_at() == 101.5
    assert not w.ready(101.4)
    assert w.ready(101.5)


def test_a_window_closes_at_the_maximum_however_fast_pods_arrive() -> None:
    w = BatchWindow(1.0, 10.0)
    for t in range(100, 111):
        w = w.arrived(float(t) * 0.999 + 0.1)  # a new pod every ~1 s, just within idle
    assert w.closes_at() == 110.0
    assert w.ready(110.0)


def test_no_open_window_means_a_plan_is_due_and_closing_forgets_the_window() -> None:
    w = BatchWindow(1.0, 10.0)
    assert w.ready(0.0) and w.closes_at() is None
    w = w.arrived(5.0).closed()
    assert w.ready(5.0) and w.closes_at() is None
    assert w.arrived(7.0).closes_at() == 8.0  # the next arrival opens a new one


def test_only_pods_not_seen_before_are_arrivals() -> None:
    w = BatchWindow(1.0, 10.0).observe(["a"], 0.0)
    assert w.closes_at() == 1.0
    w = w.observe(["a"], 0.9)  # the same pod, still pending: no arrival
    assert w.closes_at() == 1.0
    w = w.observe([], 0.95).observe(["a"], 0.99)  # gone and back: an arrival again
    assert w.closes_at() == 1.99


@given(st.lists(st.floats(0, 100), min_size=1, max_size=30))
def test_a_window_never_outlasts_the_maximum_nor_closes_before_the_idle_window(
    gaps: list[float],
) -> None:
    w, t = BatchWindow(1.0, 10.0), 0.0
    opened = None
    for gap in gaps:
        if w.ready(t):
            w, opened = w.closed(), None
        w = w.arrived(t)
        opened = t if opened is None else opened
        closes = w.closes_at()
        assert closes is not None
        assert closes <= opened + 10.0
        assert closes <= t + 1.0
        t += gap


# --- pending pods ---------------------------------------------------------------------------


def pod(name: str, **kw: object) -> PodInfo:
    base = PodInfo(
        namespace="ns",
        name=name,
        uid=name,
        node_name=None,
        phase="Pending",
        requests=Resources(1000, 2**30, 0),
        queue="q",
        job_name="j",
        job_uid="u",
        completion_index=0,
        unschedulable=True,
        scheduling_message="",
        scheduling_gated=False,
        terminating=False,
        disrupted=False,
        disruption_message="",
        created="2030-01-01T00:00:00Z",
        started=None,
        finished=None,
        reason="",
        tolerates_batch_taint=True,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_only_unschedulable_batch_pods_that_new_capacity_could_take_are_pending() -> None:
    queues = {"q": JobQueue("q", 7, ("ce", "other"))}
    pods = [
        pod("waits"),
        pod("no-queue", queue=None),
        pod("bound", node_name="n"),
        pod("not-tried-yet", unschedulable=False),
        pod("gated", scheduling_gated=True),
        pod("going", terminating=True),
        pod("no-toleration", tolerates_batch_taint=False),
        pod("running", phase="Running"),
        pod("gang", gang_size=2),
    ]
    size, created = Resources(1000, 2**30, 0), pods[0].created
    assert pending_pods(pods, queues) == [
        PendingPod("ns/waits", size, ("ce", "other"), 7, created, job="ns/j"),
        PendingPod("ns/gang", size, ("ce", "other"), 7, created, exclusive=True, job="ns/j"),
    ]


def test_a_gang_with_a_pod_bound_is_being_bound_whole_and_waits_for_no_capacity() -> None:
    queues = {"q": JobQueue("q", 7, ("ce",))}
    gang = [pod("g0", gang_size=2, node_name="n1", unschedulable=False), pod("g1", gang_size=2)]
    assert pending_pods(gang, queues) == []
    # Its pods going away (an attempt ended) hold nothing back; nor do other Jobs' pods.
    leaving = dataclasses.replace(gang[0], terminating=True)
    assert [p.key for p in pending_pods([leaving, gang[1]], queues)] == ["ns/g1"]
    other = pod("other", gang_size=2, job_uid="v", node_name="n2", unschedulable=False)
    assert [p.key for p in pending_pods([other, gang[1]], queues)] == ["ns/g1"]


def test_a_pod_of_a_deleted_queue_is_pending_with_nowhere_to_go() -> None:
    (p,) = pending_pods([pod("a", queue="gone")], {})
    assert (p.environments, p.priority) == ((), 0)


# --- room and launches in flight --------------------------------------------------------------


def intent(token: str, count: int = 2, instance_type: str = "c6i.large") -> LaunchIntent:
    return LaunchIntent(token, instance_type, count, "s-1", "pending-pods")


def test_a_launch_counts_as_in_flight_until_ec2_shows_its_token() -> None:
    intents = {"ce": [intent("t1"), intent("t2", 1, "no-such-type")]}
    t = CATALOG.get("c6i.large")
    zones = {"s-1": "us-east-1a"}
    assert in_flight(intents, [], CATALOG, zones) == [Coming("ce", t, "us-east-1a")] * 2
    assert in_flight(intents, ["t1"], CATALOG, zones) == []


def test_room_is_free_room_on_nodes_then_whole_instances_on_their_way() -> None:
    t = CATALOG.get("c6i.large")
    assert t is not None
    size, used = Resources(2000, 4 * 2**30, 0), Resources(500, 2**30, 0)
    nodes = [
        NodeRoom("n1", "ce", size, used, 3, job_pods=1),
        NodeRoom("no-job-pods", "ce", size, used, 3),
        NodeRoom("gang", "ce", size, used, 3, job_pods=1, exclusive=True),  # none beside it
    ]
    overhead = NodeOverheadSettings(max_pods=10, daemonset_pods=2).node_overhead()
    coming = [Coming("ce", t, "us-east-1b"), Coming("ce", None, ""), Coming("", t, "")]
    out = room(nodes, coming, overhead)
    assert out == [
        Room("ce", Resources(1500, 3 * 2**30, 0), 7, "n1"),
        Room("ce", Resources(1500, 3 * 2**30, 0), 7, "no-job-pods", empty=True),
        Room("ce", overhead.usable(t), 8, empty=True, zone="us-east-1b"),
    ]


def test_a_launch_intent_reads_back_as_it_was_written() -> None:
    written = LaunchIntent("tok", "c6i.large", 3, "s-1", "min-vcpus", "2030-01-01T00:00:00Z")
    assert intent_from_raw(written.to_raw()) == written
    assert intent_from_raw({"token": "t"}) == LaunchIntent("t", "", 0, "", "", "")


# --- the next wake time ----------------------------------------------------------------------


def state(name: str, *, idle: float | None = None, draining: str | None = None) -> NodeState:
    return NodeState(name, "ce", 2, 0.1, 0 if idle is not None else 1, idle, draining, 0.0)


def test_the_next_scale_down_is_due_when_the_next_idle_node_delay_is_over() -> None:
    spec = dataclasses.replace(CE, scale_down_delay_seconds=60)
    envs = {"ce": spec}
    nodes = [state("a", idle=100.0), state("b", idle=130.0), state("busy")]
    assert next_scale_down(nodes, envs, 150.0, orphan_delay_seconds=300) == 160.0
    # Past due and still there (minvCpus keeps it): no time from it.
    assert next_scale_down(nodes, envs, 170.0, orphan_delay_seconds=300) == 190.0
    assert next_scale_down([state("busy")], envs, 0.0, orphan_delay_seconds=300) is None
    # A node of a deleted environment waits for the orphan delay.
    assert next_scale_down([state("a", idle=0.0)], {}, 1.0, orphan_delay_seconds=300) == 300.0


def test_a_draining_node_is_looked_at_again_soon() -> None:
    nodes = [state("a", idle=0.0, draining="idle")]
    assert next_scale_down(nodes, {"ce": CE}, 50.0, orphan_delay_seconds=300) == 51.0


def test_the_loop_sleeps_until_the_first_due_time_within_bounds() -> None:
    assert next_wake(resync_seconds=10, batch_closes_in=None, scale_down_in=None) == 5.0
    assert next_wake(resync_seconds=3, batch_closes_in=None, scale_down_in=None) == 3.0
    assert next_wake(resync_seconds=10, batch_closes_in=0.7, scale_down_in=2.0) == 0.7
    assert next_wake(resync_seconds=10, batch_closes_in=4.0, scale_down_in=2.0) == 2.0
    assert next_wake(resync_seconds=10, batch_closes_in=0.01, scale_down_in=None) == 0.2


# --- the status document ---------------------------------------------------------------------


def test_the_status_document_of_an_environment() -> None:
    view = environment(CE, CATALOG, OVERHEAD, {"s-1": "us-east-1a"}, (), vcpus=6, gpus=0)
    unavailable = [
        Unavailable("c6i.large", "us-east-1a", "spot"),
        Unavailable("c6i.large", "us-east-1b", "on-demand"),  # not this capacity type
        Unavailable("m5.large", "us-east-1a", "spot"),  # not one of its types
    ]
    status = environment_status(
        view,
        CATALOG,
        node_types=["c6i.large", None],
        pending_pods=4,
        unavailable=unavailable,
        launch_failure=None,
        blocked=None,
        previous=(),
        now="T",
    )
    conditions = status.pop("conditions")
    assert status == {
        "status": "VALID",
        "statusReason": "",
        "desiredvCpus": 6,
        "currentvCpus": 2,
        "nodes": 2,
        "pendingPods": 4,
        "observedGeneration": CE.generation,
        "unavailableOfferings": [str(unavailable[0])],
        "lastLaunchError": "",
    }
    assert [(c["type"], c["status"], c["reason"]) for c in conditions] == [
        ("Ready", "True", "Ready"),
        ("CapacityAvailable", "True", "CapacityAvailable"),
    ]
    assert conditions[1]["message"] == f"6 of maxvCpus {CE.max_vcpus} running or launching"


def _conditions(view: Environment, **kw: Any) -> dict[str, tuple[str, str, str]]:
    args: dict[str, Any] = {
        "launch_failure": None,
        "blocked": None,
        "previous": (),
        "now": "T",
        "pending_pods": 0,
    }
    status = environment_status(view, CATALOG, node_types=[], unavailable=[], **{**args, **kw})
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


def test_an_invalid_environment_says_why() -> None:
    view = environment(CE, CATALOG, OVERHEAD, {}, (), vcpus=0, gpus=0)  # its subnet is unknown
    failure = LaunchFailure("T0", "LaunchFailed", "x")
    status = environment_status(
        view,
        CATALOG,
        node_types=[],
        pending_pods=0,
        unavailable=[],
        launch_failure=failure,
        blocked=None,
        previous=(),
        now="T",
    )
    assert status["status"] == "INVALID"
    assert status["statusReason"] == view.problem and view.problem
    assert status["lastLaunchError"] == "T0 LaunchFailed: x"
    conditions = _conditions(view)
    assert conditions["Ready"] == ("False", "Invalid", f"INVALID: {view.problem}")
    assert conditions["CapacityAvailable"][:2] == ("False", "Invalid")


def test_capacity_available_says_why_pods_wait() -> None:
    subnets = {"s-1": "us-east-1a"}
    view = environment(CE, CATALOG, OVERHEAD, subnets, (), vcpus=CE.max_vcpus, gpus=0)
    assert _conditions(view, blocked=MAX_VCPUS_REACHED)["CapacityAvailable"] == (
        "False",
        "MaxvCpusReached",
        f"pods wait: maxvCpus {CE.max_vcpus} reached ({CE.max_vcpus} vCPUs running or launching)",
    )
    failure = LaunchFailure("T0", "InsufficientCapacity", "c6i.large/us-east-1a/spot: no")
    assert _conditions(view, launch_failure=failure, pending_pods=1)["CapacityAvailable"] == (
        "False",
        "InsufficientCapacity",
        "c6i.large/us-east-1a/spot: no",
    )
    # Once nothing waits for capacity, an old failure no longer says it is short.
    assert _conditions(view, launch_failure=failure)["CapacityAvailable"][0] == "True"
    short = _conditions(view, blocked=INSUFFICIENT_CAPACITY)["CapacityAvailable"]
    assert short[:2] == ("False", "InsufficientCapacity")
    disabled = environment(
        dataclasses.replace(CE, state="DISABLED"), CATALOG, OVERHEAD, subnets, (), vcpus=0, gpus=0
    )
    assert _conditions(disabled)["Ready"][:2] == ("False", "Disabled")
    assert _conditions(disabled)["CapacityAvailable"][:2] == ("False", "Disabled")


def test_an_unmanaged_environment_is_valid_with_only_its_ready_condition() -> None:
    spec = ComputeEnvironment("u", "UNMANAGED", 8, (), generation=3)
    status = unmanaged_status(spec, (), "T")
    assert (status["status"], status["observedGeneration"]) == ("VALID", 3)
    ((ready,),) = [status["conditions"]]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Ready")
    assert "ebb.dev/compute-environment=u" in ready["message"]
    off = unmanaged_status(dataclasses.replace(spec, state="DISABLED"), (), "T")
    assert off["conditions"][0]["reason"] == "Disabled"


# --- since when nodes are idle and draining --------------------------------------------------


def test_a_node_is_idle_from_the_pass_that_first_saw_it_without_batch_pods() -> None:
    seen = [
        NodeSeen("new-idle", "ce", 2, 0.1, 0, False, None),
        NodeSeen("still-idle", "ce", 2, 0.1, 0, False, None),
        NodeSeen("busy", "ce", 2, 0.1, 1, False, None),
        NodeSeen("awaited", "ce", 2, 0.1, 0, True, None),  # pods are on their way to it
        NodeSeen("draining", "ce", 2, 0.1, 0, False, "idle"),
    ]
    idle = {"still-idle": 10.0, "busy": 10.0, "awaited": 10.0}
    states = {s.name: s for s in track_nodes(seen, idle, {"draining": 40.0}, 50.0)}
    assert {n: s.idle_since for n, s in states.items()} == {
        "new-idle": 50.0,
        "still-idle": 10.0,
        "busy": None,
        "awaited": None,
        "draining": 50.0,
    }
    assert {n: s.draining_since for n, s in states.items() if s.draining} == {"draining": 40.0}
    assert states["new-idle"].draining_since is None
