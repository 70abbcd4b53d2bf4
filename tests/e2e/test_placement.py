"""Ebb's placement through the real kube-scheduler and Ebb's scheduler daemon: queues keep
to their compute environments, prefer the first and overflow to the next, never
overfill a node; batch nodes are taint-isolated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ebb import keys, kube
from local_stack import builders
from local_stack.harness import Process, create_node, wait_for
from local_stack.placement import (
    batch_pod,
    create_batch_node,
    create_environment,
    create_queue,
    node_of,
    unschedulable,
    wait_schedulable,
)

pytestmark = pytest.mark.usefixtures("scheduler_daemon")
DAEMON_SETS = kube.Resource("apps", "v1", "daemonsets", "DaemonSet", True)


@pytest.fixture
async def nodes(kube_client: kube.KubeClient) -> AsyncIterator[list[str]]:
    """Names of the nodes a test creates, deleted after it (other tests share the cluster)."""
    created: list[str] = []
    yield created
    for name in created:
        await kube_client.delete(kube.NODES, name)


@pytest.fixture
async def ebb_objects(
    kube_client: kube.KubeClient,
) -> AsyncIterator[list[tuple[kube.Resource, str]]]:
    """(resource, name) of the compute environments and queues a test creates."""
    created: list[tuple[kube.Resource, str]] = []
    yield created
    for resource, name in created:
        await kube_client.delete(resource, name)


async def test_queue_pods_never_land_outside_the_queues_environments(
    kube_client: kube.KubeClient,
    namespace: str,
    nodes: list[str],
    ebb_objects: list[tuple[kube.Resource, str]],
) -> None:
    inside, outside, queue = f"{namespace}-in", f"{namespace}-out", f"{namespace}-q"
    for ce in (inside, outside):
        await create_environment(kube_client, ce)
        ebb_objects.append((kube.COMPUTE_ENVIRONMENTS, ce))
    await create_queue(kube_client, queue, inside)
    ebb_objects.append((kube.JOB_QUEUES, queue))
    nodes += [f"{namespace}-small-in", f"{namespace}-big-out"]
    await create_batch_node(kube_client, nodes[0], inside, cpu="2")
    await create_batch_node(kube_client, nodes[1], outside, cpu="32")
    names = [f"job-{i}" for i in range(4)]
    for name in names:
        await kube_client.create(kube.PODS, batch_pod(name, queue), namespace)
    placed = [await node_of(kube_client, namespace, name) for name in names[:2]]
    assert placed == [nodes[0], nodes[0]]
    # The other two wait, although a big node sits idle: it is not the queue's.
    for name in names[2:]:
        await unschedulable(
            kube_client, namespace, name, containing=f"ce {outside} not in queue {queue}"
        )
    await asyncio.sleep(2)
    pods = await kube_client.list(kube.PODS, namespace)
    assert sorted(p["spec"].get("nodeName") or "" for p in pods.items) == [
        "",
        "",
        nodes[0],
        nodes[0],
    ]


async def test_first_environment_in_order_fills_before_the_next(
    kube_client: kube.KubeClient,
    namespace: str,
    nodes: list[str],
    ebb_objects: list[tuple[kube.Resource, str]],
) -> None:
    first, second, queue = f"{namespace}-first", f"{namespace}-second", f"{namespace}-q"
    await create_environment(kube_client, first, spot=True)
    await create_environment(kube_client, second)
    await create_queue(kube_client, queue, first, second)
    ebb_objects += [
        (kube.COMPUTE_ENVIRONMENTS, first),
        (kube.COMPUTE_ENVIRONMENTS, second),
        (kube.JOB_QUEUES, queue),
    ]
    nodes += [f"{namespace}-n-second", f"{namespace}-n-first"]
    await create_batch_node(kube_client, nodes[0], second, cpu="2")
    await create_batch_node(kube_client, nodes[1], first, cpu="2", spot=True)
    placed = []
    for i in range(4):  # one by one: each sees where the ones before it went
        await kube_client.create(kube.PODS, batch_pod(f"job-{i}", queue), namespace)
        placed.append(await node_of(kube_client, namespace, f"job-{i}"))
    assert placed == [nodes[1], nodes[1], nodes[0], nodes[0]]


async def test_two_pods_that_fit_alone_do_not_share_a_node_with_room_for_one(
    kube_client: kube.KubeClient,
    namespace: str,
    nodes: list[str],
    ebb_objects: list[tuple[kube.Resource, str]],
) -> None:
    ce, queue = f"{namespace}-ce", f"{namespace}-q"
    await create_environment(kube_client, ce)
    await create_queue(kube_client, queue, ce)
    ebb_objects += [(kube.COMPUTE_ENVIRONMENTS, ce), (kube.JOB_QUEUES, queue)]
    nodes.append(f"{namespace}-n")
    await create_batch_node(kube_client, nodes[0], ce, cpu="4")
    await asyncio.gather(
        *(
            kube_client.create(kube.PODS, batch_pod(name, queue, cpu="3"), namespace)
            for name in ("a", "b")
        )
    )

    async def outcome() -> list[str] | None:
        pods = (await kube_client.list(kube.PODS, namespace)).items
        bound = [p["spec"].get("nodeName") for p in pods if p["spec"].get("nodeName")]
        return [str(n) for n in bound] if bound else None

    assert await wait_for(outcome, 60, message="one pod bound") == [nodes[0]]
    pods = (await kube_client.list(kube.PODS, namespace)).items
    (waiting,) = [p["metadata"]["name"] for p in pods if not p["spec"].get("nodeName")]
    assert "cpu" in await unschedulable(kube_client, namespace, waiting)
    await asyncio.sleep(2)
    assert await outcome() == [nodes[0]]


async def extender_calls(daemon: Process) -> dict[str, float]:
    """Requests Ebb's extender has served so far, by verb, from the daemon's /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{daemon.ops_url}/metrics") as resp,
    ):
        text = await resp.text()
    calls = dict.fromkeys(("filter", "prioritize", "bind"), 0.0)
    for line in text.splitlines():
        if line.startswith("ebb_extender_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            verb = labels.split('verb="', 1)[1].split('"', 1)[0]
            calls[verb] += float(value)
    return calls


async def test_only_batch_pods_reach_the_extender_and_once_each(
    kube_client: kube.KubeClient,
    namespace: str,
    nodes: list[str],
    ebb_objects: list[tuple[kube.Resource, str]],
    scheduler_daemon: Process,
) -> None:
    """kube-scheduler sends Ebb's extender only batch pods (their batch-pod resource is the
    stanza's managed resource, which no node has and kube-scheduler's fit check skips),
    and for each one filter and bind, no prioritize: filter keeps only the fullest of
    two equal nodes. (Filter calls are not counted: other tests' pods, still waiting
    while their namespaces go, are filtered meanwhile; they never bind.)"""
    group = {"isolation.ebb.dev/group": namespace}
    ce, queue = f"{namespace}-ce", f"{namespace}-q"
    await create_environment(kube_client, ce)
    await create_queue(kube_client, queue, ce)
    ebb_objects += [(kube.COMPUTE_ENVIRONMENTS, ce), (kube.JOB_QUEUES, queue)]
    batch = [f"{namespace}-batch-{i}" for i in range(2)]
    regular = f"{namespace}-regular"
    nodes += [*batch, regular]
    for name in batch:
        await create_batch_node(kube_client, name, ce, cpu="4")
    await create_node(kube_client, regular, cpu="2", labels=group)
    await wait_schedulable(kube_client, regular)
    before = await extender_calls(scheduler_daemon)
    for i in range(3):
        await kube_client.create(kube.PODS, plain_pod(f"web-{i}", group), namespace)
    assert [await node_of(kube_client, namespace, f"web-{i}") for i in range(3)] == [regular] * 3
    after_plain = await extender_calls(scheduler_daemon)
    assert (after_plain["bind"], after_plain["prioritize"]) == (
        before["bind"],
        before["prioritize"],
    )
    placed = []
    for i in range(2):  # one by one: the second sees where the first went
        await kube_client.create(kube.PODS, batch_pod(f"job-{i}", queue), namespace)
        placed.append(await node_of(kube_client, namespace, f"job-{i}"))
    assert placed[0] in batch
    assert placed[1] == placed[0], "the fuller of two equal nodes"
    after = await extender_calls(scheduler_daemon)
    assert after["bind"] - before["bind"] == 2
    assert after["prioritize"] == before["prioritize"]


def daemon_set(name: str, group: str, tolerations: list[dict[str, str]]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"isolation.ebb.dev/group": group},
                    "tolerations": tolerations,
                    "containers": [{"name": "agent", "image": "busybox"}],
                },
            },
        },
    }


def plain_pod(name: str, node_selector: dict[str, str]) -> dict[str, Any]:
    web = builders.container(None, None, name="web")
    return builders.pod(name, [web], nodeSelector=node_selector)


async def test_batch_nodes_take_only_pods_that_tolerate_their_taint(
    kube_client: kube.KubeClient, namespace: str, nodes: list[str]
) -> None:
    group = {"isolation.ebb.dev/group": namespace}
    batch, regular = f"{namespace}-batch", f"{namespace}-regular"
    nodes += [batch, regular]
    await create_node(
        kube_client,
        batch,
        cpu="32",
        labels={**group, keys.COMPUTE_ENVIRONMENT_LABEL: f"{namespace}-ce"},
        taints=[{"key": keys.BATCH_NODE_TAINT, "effect": "NoSchedule"}],
    )
    await create_node(kube_client, regular, cpu="2", labels=group)
    for name in (batch, regular):
        await wait_schedulable(kube_client, name)
    # Ordinary pods: the roomy batch node is never used, however many there are.
    for i in range(3):
        await kube_client.create(kube.PODS, plain_pod(f"web-{i}", group), namespace)
    assert [await node_of(kube_client, namespace, f"web-{i}") for i in range(3)] == [regular] * 3
    pinned = plain_pod("pinned", {"kubernetes.io/hostname": batch})
    await kube_client.create(kube.PODS, pinned, namespace)
    message = await unschedulable(kube_client, namespace, "pinned")
    assert "node(s) had untolerated taint(s)" in message
    # A DaemonSet that tolerates the taint runs on batch nodes too; one that does not, not.
    await kube_client.create(
        DAEMON_SETS, daemon_set("agent", namespace, [keys.BATCH_TOLERATION]), namespace
    )
    await kube_client.create(DAEMON_SETS, daemon_set("picky", namespace, []), namespace)

    async def placements(app: str, count: int) -> list[str] | None:
        pods = await kube_client.list(kube.PODS, namespace, label_selector=f"app={app}")
        where = sorted(p["spec"].get("nodeName") or "" for p in pods.items)
        return where if len(where) == count and all(where) else None

    assert await wait_for(
        lambda: placements("agent", 2), 60, message="agent on both nodes"
    ) == sorted([batch, regular])
    assert await wait_for(lambda: placements("picky", 1), 60, message="picky on one node") == [
        regular
    ]
    await asyncio.sleep(2)
    assert await placements("picky", 1) == [regular]
