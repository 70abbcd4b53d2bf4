"""Compute environments, queues, batch nodes and pods for placement's end-to-end tests."""

from __future__ import annotations

from typing import Any

from ebb import keys, kube
from extender.jobs.stamp import mark_batch_pod
from local_stack import builders
from local_stack.harness import create_node, wait_for


async def create_environment(client: kube.KubeClient, name: str, *, spot: bool = False) -> None:
    body = builders.compute_environment(
        name, ce_type="SPOT" if spot else "EC2", instance_types=("optimal",)
    )
    await client.create(kube.COMPUTE_ENVIRONMENTS, body)


async def create_queue(client: kube.KubeClient, name: str, *environments: str) -> None:
    await client.create(kube.JOB_QUEUES, builders.job_queue(name, *environments))


async def create_batch_node(
    client: kube.KubeClient, name: str, environment: str, *, cpu: str = "2", spot: bool = False
) -> None:
    capacity = keys.CAPACITY_SPOT if spot else keys.CAPACITY_ON_DEMAND
    labels = {keys.COMPUTE_ENVIRONMENT_LABEL: environment, keys.CAPACITY_TYPE_LABEL: capacity}
    await create_node(client, name, cpu=cpu, labels=labels, taints=[builders.BATCH_TAINT])
    await wait_schedulable(client, name)


async def wait_schedulable(client: kube.KubeClient, name: str) -> None:
    """Until KWOK has made the node Ready and its not-ready taint is gone: before that
    kube-scheduler rejects it for the taint, whatever Ebb says."""

    async def ready() -> bool:
        node = await client.get(kube.NODES, name)
        conditions = node.get("status", {}).get("conditions") or ()
        taints = node.get("spec", {}).get("taints") or ()
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and not any(
            t["key"].startswith("node.kubernetes.io/") for t in taints
        )

    await wait_for(ready, 60, message=f"node {name} Ready and untainted")


def batch_pod(name: str, queue: str, *, cpu: str = "1", **spec: Any) -> dict[str, Any]:
    """A pod as the webhook leaves a batch Job's pod: queue label, batch toleration and
    the batch-pod resource."""
    pod = builders.pod(
        name,
        [builders.container(cpu, "64Mi")],
        labels={keys.QUEUE_LABEL: queue},
        tolerations=[keys.BATCH_TOLERATION],
        **spec,
    )
    mark_batch_pod(pod["spec"])
    return pod


async def node_of(client: kube.KubeClient, namespace: str, name: str) -> str:
    async def bound() -> str | None:
        pod = await client.get(kube.PODS, name, namespace)
        return pod["spec"].get("nodeName") or None

    return await wait_for(bound, 60, message=f"pod {name} bound")


async def unschedulable(
    client: kube.KubeClient,
    namespace: str,
    name: str,
    reason: str = "Unschedulable",
    containing: str = "",
) -> str:
    """The message of the pod's PodScheduled=False condition with this reason, once it
    says `containing` (each scheduling attempt rewrites it)."""

    async def condition() -> str | None:
        pod = await client.get(kube.PODS, name, namespace)
        for c in pod.get("status", {}).get("conditions") or ():
            if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == reason:
                message = str(c.get("message", ""))
                return message if containing in message else None
        return None

    return await wait_for(condition, 60, message=f"pod {name} PodScheduled=False {reason}")
