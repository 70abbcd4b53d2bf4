"""Conformance with the real kube-scheduler: upstream's extender integration scenario
(kubernetes test/integration/scheduler/extender, TestSchedulerExtender) ported to pytest,
with the scripted extenders served through Ebb's own extender shell, protocol and
binding code; then an Error reply, a reply slower than httpTimeout, and
FailedAndUnresolvableNodes against FailedNodes as preemption sees them.

Each case runs its own kube-scheduler (the cluster's binary, a profile of its own) next
to the cluster's, on nodes tainted so that only these pods go there.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from ebb import kube
from local_stack import builders
from local_stack.extenders import ScriptedExtender, favour, kube_scheduler, only, serve_extenders
from local_stack.harness import LocalCluster, create_node
from local_stack.placement import node_of, unschedulable, wait_schedulable

TAINT = "conformance.ebb.dev/only"
EXTENDED_RESOURCE = "foo.com/bar"
PRIORITY_CLASSES = kube.Resource(
    "scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False
)


@dataclass(frozen=True)
class Setup:
    cluster: LocalCluster
    client: kube.KubeClient
    namespace: str
    machines: list[str]  # upstream's machine1..machine5, prefixed: the cluster is shared

    @contextlib.asynccontextmanager
    async def scheduling(
        self, scheduler: str, extenders: dict[str, ScriptedExtender], **stanza_extra: Any
    ) -> AsyncIterator[None]:
        """Serve the extenders, run a kube-scheduler for profile `scheduler` calling them
        (one stanza each, in order; `stanza_extra[key]` adds to extender `key`'s)."""
        base = self.cluster.port_base
        async with (
            serve_extenders(extenders, base + 790) as url,
            kube_scheduler(
                self.cluster,
                scheduler,
                [stanza(url, key, **stanza_extra.get(key, {})) for key in extenders],
                base + 791,
            ),
        ):
            yield


@pytest.fixture
async def setup(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> AsyncIterator[Setup]:
    names = [f"{namespace}-machine{i}" for i in range(1, 6)]
    for name in names:
        await create_node(
            kube_client,
            name,
            labels={"conformance.ebb.dev/group": namespace},
            taints=[{"key": TAINT, "effect": "NoSchedule"}],
        )
    for name in names:
        await wait_schedulable(kube_client, name)
    yield Setup(cluster, kube_client, namespace, names)
    for name in names:
        await kube_client.delete(kube.NODES, name)


def extender_pod(
    name: str, scheduler: str, *, extended_resource: bool = False, **spec: Any
) -> dict[str, Any]:
    """Upstream's pod; only its own scenario asks for the extended resource that extender2
    manages (elsewhere no node offers it)."""
    limits = {EXTENDED_RESOURCE: "1"} if extended_resource else {}
    pause = builders.container(
        None,
        None,
        name="container",
        image="registry.k8s.io/pause:3.10",
        resources={"limits": limits},
    )
    return builders.pod(
        name,
        [pause],
        schedulerName=scheduler,
        tolerations=[{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}],
        **spec,
    )


def stanza(url: str, prefix: str, **extra: Any) -> dict[str, Any]:
    return {
        "urlPrefix": f"{url}/{prefix}",
        "filterVerb": "filter",
        "prioritizeVerb": "prioritize",
        "weight": 1,
        "enableHTTPS": False,
        **extra,
    }


async def test_scheduler_extender(setup: Setup) -> None:
    """TestSchedulerExtender: three extenders filter {1,2,3} / {2,3,5} / {1,2,3} and favour
    machine2 x1, machine3 x1, machine2 x5 at weights 3 / 4 / 10; the second binds and
    manages an extended resource, the third is nodeCacheCapable. The pod must land on
    machine2."""
    m1, m2, m3, _m4, m5 = setup.machines
    client, namespace = setup.client, setup.namespace
    extender1 = ScriptedExtender("extender1", [only(m1, m2, m3)], [(favour(m2), 1)])
    extender2 = ScriptedExtender("extender2", [only(m2, m3, m5)], [(favour(m3), 1)], client=client)
    extender3 = ScriptedExtender("extender3", [only(m1, m2, m3)], [(favour(m2), 5)])
    managed = [{"name": EXTENDED_RESOURCE, "ignoredByScheduler": True}]
    async with setup.scheduling(
        f"ext-{namespace}",
        {"e1": extender1, "e2": extender2, "e3": extender3},
        e1={"weight": 3},
        e2={"weight": 4, "bindVerb": "bind", "managedResources": managed},
        e3={"weight": 10, "nodeCacheCapable": True},
    ):
        pod = extender_pod("extender-test-pod", f"ext-{namespace}", extended_resource=True)
        await client.create(kube.PODS, pod, namespace)
        assert await node_of(client, namespace, "extender-test-pod") == m2
    # Every verb really went over the wire, in both node-list shapes, and extender2 bound.
    assert extender1.calls["filter"] and extender1.calls["prioritize"]
    assert extender3.calls["filter"] and extender3.calls["prioritize"]
    assert extender2.calls["bind"] == 1
    assert extender1.calls["bind"] == extender3.calls["bind"] == 0
    await client.delete(kube.PODS, "extender-test-pod", namespace, grace_period_seconds=0)


async def test_error_reply_fails_the_scheduling_attempt(setup: Setup) -> None:
    client, namespace = setup.client, setup.namespace
    broken = ScriptedExtender("broken", error="scripted failure: cache not ready")
    async with setup.scheduling(f"err-{namespace}", {"broken": broken}):
        await client.create(kube.PODS, extender_pod("doomed", f"err-{namespace}"), namespace)
        message = await unschedulable(client, namespace, "doomed", "SchedulerError")
    assert "scripted failure: cache not ready" in message
    assert not (await client.get(kube.PODS, "doomed", namespace))["spec"].get("nodeName")


@pytest.mark.parametrize("ignorable", [False, True])
async def test_reply_slower_than_http_timeout(setup: Setup, ignorable: bool) -> None:
    """A filter that answers after httpTimeout is an error: the pod stays pending, unless
    the extender is ignorable, in which case the scheduler goes on without it."""
    client, namespace = setup.client, setup.namespace
    slow = ScriptedExtender("slow", [only(setup.machines[0])], delay=3.0)
    scheduler = f"slow-{'ign' if ignorable else 'req'}-{namespace}"
    group = {"conformance.ebb.dev/group": namespace}
    async with setup.scheduling(
        scheduler, {"slow": slow}, slow={"httpTimeout": "1s", "ignorable": ignorable}
    ):
        await client.create(
            kube.PODS, extender_pod("late", scheduler, nodeSelector=group), namespace
        )
        if ignorable:
            # Scheduled without the extender's verdict (which allowed machine1 only).
            assert await node_of(client, namespace, "late") in setup.machines
        else:
            message = await unschedulable(client, namespace, "late", "SchedulerError")
            assert "Client.Timeout exceeded" in message or "deadline exceeded" in message
            assert not (await client.get(kube.PODS, "late", namespace))["spec"].get("nodeName")
    assert slow.calls["filter"] >= 1


@pytest.fixture
async def high_priority(kube_client: kube.KubeClient) -> AsyncIterator[str]:
    name = f"conformance-high-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name},
        "value": 1000,
    }
    await kube_client.create(PRIORITY_CLASSES, body)
    yield name
    await kube_client.delete(PRIORITY_CLASSES, name)


@pytest.mark.parametrize("unresolvable", [True, False])
async def test_failed_and_unresolvable_nodes_are_not_preemption_candidates(
    setup: Setup, high_priority: str, unresolvable: bool
) -> None:
    """machine1 holds a low-priority pod and the extender rejects machine1 for a
    high-priority pod pinned there. Rejected in FailedNodes, machine1 is a preemption
    candidate: preemption dry-runs it (and finds no victim that would help, as the pod
    fits beside the resident). Rejected in FailedAndUnresolvableNodes, preemption skips it.
    Either way nothing is evicted."""
    client, namespace, machine1 = setup.client, setup.namespace, setup.machines[0]
    resident = extender_pod("resident", "unused", nodeName=machine1)
    await client.create(kube.PODS, resident, namespace)
    refuser = ScriptedExtender("refuser", [only()], unresolvable=unresolvable)
    scheduler = f"pre-{'u' if unresolvable else 'f'}-{namespace}"
    async with setup.scheduling(scheduler, {"refuser": refuser}):
        urgent = extender_pod(
            "urgent",
            scheduler,
            nodeSelector={"kubernetes.io/hostname": machine1},
            priorityClassName=high_priority,
        )
        await client.create(kube.PODS, urgent, namespace)
        message = await unschedulable(client, namespace, "urgent", "Unschedulable")
    assert "1 extender failed: refuser" in message
    tried_machine1 = f'preemption: expected at least one victim pod on node "{machine1}"'
    if unresolvable:
        assert tried_machine1 not in message
        assert "Preemption is not helpful for scheduling" in message
    else:
        assert tried_machine1 in message
    survivor = await client.get(kube.PODS, "resident", namespace)
    assert survivor["metadata"].get("deletionTimestamp") is None
