"""Admission and the webhook count what the nodes a compute environment may have can
hold: maxvCpus counts instance vCPUs (as in AWS Batch), pods request what is left of an
instance after the node overhead."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ebb import keys
from ebb.catalog import NodeOverheadSettings, shipped_catalog
from ebb.model import ComputeEnvironment, JobQueue, PodInfo, StateTimeLimitAction
from ebb.resources import Resources
from extender.jobs.admission import CapacityLimit, Demand, QueueView, admit
from extender.jobs.capacity import capacity_limits
from extender.jobs.lifecycle import Code, State
from extender.jobs.reconcile import Snapshot, reconcile
from extender.jobs.snapshot import JobInfo
from extender.webhook.context import WebhookContext
from extender.webhook.review import review as admission_review
from tests.unit.jobs.factories import job, pod, raw_job

GIB = 2**30
OVERHEAD = NodeOverheadSettings().node_overhead()  # what the daemons use by default


def limits(*ces: ComputeEnvironment) -> dict[str, CapacityLimit]:
    return capacity_limits(ces, shipped_catalog(), OVERHEAD)


def ec2(
    name: str, max_vcpus: int, types: tuple[str, ...] = ("c6i",), **kw: Any
) -> ComputeEnvironment:
    return ComputeEnvironment(
        name=name, type="EC2", max_vcpus=max_vcpus, instance_types=types, **kw
    )


def one_vcpu(key: str, queue: str, t: float, **kw: Any) -> Demand:
    return Demand(key=key, queue=queue, request=Resources(1000, GIB, 0), want=1, submitted=t, **kw)


def test_max_vcpus_4_admits_the_three_1_vcpu_pods_its_instances_hold() -> None:
    # c6i.xlarge (4 vCPUs) leaves 3.77 for pods; two c6i.large (2 vCPUs) 1.77 each.
    capacity = limits(ec2("ce", 4))
    queues = {"low": QueueView("low", 1, ("ce",)), "high": QueueView("high", 100, ("ce",))}
    lows = [one_vcpu(f"low{i}", "low", i) for i in range(8)]
    result = admit(queues, capacity, lows, now=0)
    assert set(result.grants) == {"low0", "low1", "low2"}
    reason = result.waiting["low3"].detail
    assert "ce 3/4 vCPUs in use (node overhead included" in reason
    # Three run (bound to a node of "ce"); the high-priority jobs arrive: nothing fits.
    running = [one_vcpu(f"low{i}", "low", i, granted=1, bound={"ce": 1}) for i in range(3)]
    waiting = lows[3:] + [one_vcpu(f"high{i}", "high", 10 + i) for i in range(4)]
    assert admit(queues, capacity, running + waiting, now=0).grants == {}
    # One low job finishes: the high queue gets the slot, not the next low job.
    result = admit(queues, capacity, running[1:] + waiting, now=0)
    assert result.grants == {"high0": 1}


def test_a_pod_no_instance_within_max_vcpus_holds_waits_with_the_largest_node_named() -> None:
    # (m6i.4xlarge: as many vCPUs as c6i.4xlarge and more memory: the largest.)
    capacity = limits(ec2("ce", 16, ("c6i", "m6i")))
    queues = {"q": QueueView("q", 1, ("ce",))}
    big = Demand(key="big", queue="q", request=Resources(16_000, GIB, 0), want=1, submitted=0)
    result = admit(queues, capacity, [big, one_vcpu("small", "q", 1)], now=0)
    waiting = result.waiting["big"]
    assert waiting.state is State.RUNNABLE
    assert waiting.code is Code.JOB_RESOURCE_REQUIREMENT
    assert (
        "requests.cpu 16 vCPUs exceeds what any node of compute environment ce within "
        "maxvCpus 16 can hold: m6i.4xlarge has 15.74 vCPUs usable"
    ) in waiting.detail
    assert result.grants == {"small": 1}


SHRUNK = limits(ec2("ce", 16, ("c6i", "m6i")))  # holds no 16-vCPU pod
NOW = 1_767_225_660.0  # 2026-01-01T00:01:00Z


def shrunk(*jobs: JobInfo, pods: Sequence[PodInfo] = (), **queue: Any) -> Snapshot:
    """Jobs of queue q, whose environment no longer holds the 16-vCPU job "big"'s pods."""
    return Snapshot(
        now=NOW,
        jobs={j.key: j for j in jobs},
        pods_by_job={"ns/big": list(pods)} if pods else {},
        queues={"q": JobQueue("q", 1, ("ce",), **queue)},
        policies={},
        capacity=SHRUNK,
        node_compute_environment={"node-1": "ce"},
    )


def big(**kw: Any) -> JobInfo:
    """Admitted (with 16 vCPUs per pod) before its environment shrank."""
    return job("big", cpu="16", suspend=False, **kw)


def test_an_admitted_job_no_node_can_hold_goes_back_to_its_queue_and_says_why() -> None:
    small = job("small", created="2026-01-01T00:00:01Z")
    unplaced = pod("big", "big-1", phase="Pending", node=None, cpu="16", unschedulable=True)
    for pods in ((), (unplaced,)):  # its pod not created yet, or found no node
        decisions = reconcile(shrunk(big(status={"active": len(pods)}), small, pods=pods))
        assert decisions.admit == {small.key: 1}  # the 16 vCPUs are not held by "big"
        status = decisions.requeue["ns/big"]
        assert decisions.statuses["ns/big"] is status
        assert (status.state, status.code) == (State.RUNNABLE, Code.JOB_RESOURCE_REQUIREMENT)
        assert status.reason == (
            "position 1 in queue q: needs cpu=16 memory=1Gi per pod but requests.cpu 16 vCPUs "
            "exceeds what any node of compute environment ce within maxvCpus 16 can hold: "
            "m6i.4xlarge has 15.74 vCPUs usable; it can never run"
        )


def test_a_job_with_a_bound_or_running_pod_is_never_put_back() -> None:
    for phase in ("Pending", "Running"):
        bound = pod("big", "big-1", phase=phase, node="node-1", cpu="16")
        decisions = reconcile(shrunk(big(status={"active": 1}), pods=[bound]))
        assert not decisions.requeue
        assert "ns/big" not in decisions.admit
    # Bound, not running yet: it says why it may never run, and holds no capacity.
    status = reconcile(
        shrunk(big(status={"active": 1}), pods=[pod("big", "b", phase="Pending", cpu="16")])
    ).statuses["ns/big"]
    assert (status.state, status.code) == (State.STARTING, Code.JOB_RESOURCE_REQUIREMENT)


def test_a_job_whose_pods_the_scheduler_has_not_tried_or_not_seen_waits_a_pass() -> None:
    untried = pod("big", "big-1", phase="Pending", node=None, cpu="16")
    unplaced = pod("big", "big-1", phase="Pending", node=None, cpu="16", unschedulable=True)
    for j, pods in (
        (big(status={"active": 1}), [untried]),  # kube-scheduler may still bind it
        (big(status={"active": 2}), [unplaced]),  # one pod not in view
    ):
        decisions = reconcile(shrunk(j, pods=pods))
        assert not decisions.requeue
        assert decisions.statuses["ns/big"].state is State.STARTING


def test_a_job_put_back_is_cancelled_by_its_queues_state_time_limit_or_on_request() -> None:
    # Suspended again (its startTime stays), RUNNABLE for the misconfiguration since 00:00.
    waited = {
        keys.STATE: "RUNNABLE",
        keys.REASON_CODE: Code.JOB_RESOURCE_REQUIREMENT.value,
        keys.STATE_SINCE: "2026-01-01T00:00:00Z",
    }
    ran = {"startTime": "2025-12-31T23:59:00Z"}
    back = job("big", cpu="16", annotations=waited, status=ran)
    limit = StateTimeLimitAction(Code.JOB_RESOURCE_REQUIREMENT.value, "RUNNABLE", 60, "CANCEL")
    failure = reconcile(shrunk(back, state_time_limit_actions=(limit,))).fail["ns/big"]
    assert failure.code is Code.STATE_TIME_LIMIT
    assert failure.message == (
        "cancelled by queue q: RUNNABLE for MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT longer "
        "than 60 s"
    )
    # AWS Batch cancels a RUNNABLE job; its pods are gone, so it fails outright.
    cancel = {**waited, keys.CANCEL: "not needed"}
    cancelled = job("big", cpu="16", annotations=cancel, status=ran)
    assert reconcile(shrunk(cancelled)).fail["ns/big"].code is Code.CANCELLED


def test_managed_environments_have_only_types_within_max_vcpus_unmanaged_all() -> None:
    unmanaged = ComputeEnvironment(name="u", type="UNMANAGED", max_vcpus=2, instance_types=("c6i",))
    capacity = limits(ec2("m", 16), unmanaged)
    assert capacity["m"].nodes is not None and capacity["u"].nodes is not None
    assert max(n.vcpus for n in capacity["m"].nodes) == 16
    assert max(n.vcpus for n in capacity["u"].nodes) == 128
    # Unmanaged: its owner brings the nodes; maxvCpus counts pod requests as before.
    assert capacity["u"].pod_cost(Resources(1000, GIB, 0)) == (1000, 0)
    assert capacity["m"].pod_cost(Resources(1000, GIB, 0)) == (16_000 // 15, 0)


def test_what_whole_instances_cannot_hold_is_not_admitted() -> None:
    # maxvCpus 7 of c6i: a c6i.xlarge (3 pods) and a c6i.large (1 pod), not 7/4 x 3 = 5.
    capacity = limits(ec2("ce", 7))
    queues = {"q": QueueView("q", 1, ("ce",))}
    result = admit(queues, capacity, [one_vcpu(f"j{i}", "q", i) for i in range(8)], now=0)
    assert len(result.grants) == 4


TYPES = ("c6i", "m6i", "r6i", "c6i.xlarge", "m6i.2xlarge", "r6i.large")


@settings(max_examples=150, deadline=None)
@given(
    max_vcpus=st.integers(1, 40),
    types=st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True),
    cpu=st.sampled_from([250, 500, 1000, 1500, 2000, 3000, 5000, 7000]),
    memory_gib=st.sampled_from([1, 2, 4, 8, 16, 30]),
)
def test_pods_of_one_shape_never_outnumber_what_instances_within_max_vcpus_hold(
    max_vcpus: int, types: list[str], cpu: int, memory_gib: int
) -> None:
    capacity = limits(ec2("ce", max_vcpus, tuple(types)))
    request = Resources(cpu, memory_gib * GIB, 0)
    nodes = capacity["ce"].nodes or ()
    # The most pods any set of instances whose vCPUs sum to <= maxvCpus holds (exact).
    best = [0] * (max_vcpus + 1)
    for v in range(1, max_vcpus + 1):
        best[v] = max(
            [best[v - 1]] + [best[v - n.vcpus] + n.holds(request) for n in nodes if n.vcpus <= v]
        )
    queues = {"q": QueueView("q", 1, ("ce",))}
    demands = [
        Demand(key=f"j{i}", queue="q", request=request, want=1, submitted=i) for i in range(60)
    ]
    granted = len(admit(queues, capacity, demands, now=0).grants)
    assert granted <= best[max_vcpus]
    if best[max_vcpus] == 0:  # and it says it is misconfigured, not waiting
        waiting = admit(queues, capacity, demands, now=0).waiting.values()
        assert {w.code for w in waiting} <= {Code.JOB_RESOURCE_REQUIREMENT, Code.MAX_RESOURCE}


# --- the webhook ---------------------------------------------------------------------


async def _nothing(*_: str) -> None:
    return None


def context(capacity: dict[str, CapacityLimit]) -> WebhookContext:
    queues = {"q": JobQueue("q", 1, tuple(capacity))}
    return WebhookContext(
        queue=queues.get,
        queue_names=lambda: list(queues),
        refresh_queue=_nothing,
        refresh_job=_nothing,
        refresh_compute_environment=_nothing,
        job=lambda namespace, name: None,
        capacity=lambda: capacity,
        admitter=lambda: "ebb",
    )


def review(ctx: WebhookContext, obj: dict[str, Any], **request: Any) -> dict[str, Any]:
    body = {"request": {"uid": "u", "operation": "CREATE", "object": obj, **request}}
    response: dict[str, Any] = admission_review(body, ctx, mutating=True)["response"]
    return response


def new_job(cpu: str = "1", memory: str = "1Gi", **kw: Any) -> dict[str, Any]:
    raw = raw_job("j", cpu=cpu, suspend=False, **kw)
    raw["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] = memory
    return raw


def test_webhook_names_the_resource_that_does_not_fit_and_the_largest_node() -> None:
    ctx = context(limits(ec2("ce", 16, ("c6i", "m6i"))))
    too_wide = review(ctx, new_job(cpu="16"))
    assert not too_wide["allowed"]
    assert (
        "spec.template.spec.containers[].resources.requests.cpu 16 vCPUs exceeds what any node "
        "of compute environment ce within maxvCpus 16 can hold: m6i.4xlarge has 15.74 vCPUs usable"
    ) in too_wide["status"]["message"]
    too_big = review(ctx, new_job(memory="2Ti"))
    message = too_big["status"]["message"]
    assert "requests.memory 2048Gi of memory exceeds what any node" in message, message
    assert "m6i.4xlarge has" in message and "requests.cpu" not in message
    assert review(ctx, new_job(cpu="15"))["allowed"]


def test_webhook_warns_about_unknown_ebb_keys_naming_the_closest_known_one() -> None:
    ctx = context(limits(ec2("ce", 16)))
    response = review(
        ctx,
        new_job(
            annotations={
                "ebb.dev/retry-stratgy": '{"attempts": 3}',
                keys.STATE: "RUNNABLE",  # Ebb's own: known
                keys.QUEUE_LABEL: "q",  # a label, written as an annotation
                "example.com/other": "x",  # not Ebb's: none of its business
            }
        ),
    )
    assert response["allowed"]
    assert response["warnings"] == [
        "metadata.annotations[ebb.dev/queue]: Ebb reads ebb.dev/queue as a label, not here; "
        "ignored",
        "metadata.annotations[ebb.dev/retry-stratgy]: not a key Ebb knows; ignored "
        "(did you mean ebb.dev/retry-strategy?)",
    ]
    assert "warnings" not in review(ctx, new_job())
    # An update adding a misspelt key is warned about too; keys already there are not.
    old = new_job(annotations={"ebb.dev/cancle": "x"})
    updated = new_job(annotations={"ebb.dev/cancle": "x", "ebb.dev/terminat": "y"})
    body = {"request": {"uid": "u", "operation": "UPDATE", "object": updated, "oldObject": old}}
    answer = admission_review(body, ctx, mutating=False)["response"]
    assert answer["warnings"] == [
        "metadata.annotations[ebb.dev/terminat]: not a key Ebb knows; ignored "
        "(did you mean ebb.dev/terminate?)"
    ]
