"""What the e2e tests of Ebb's job scheduling set up and read: environments of KWOK
batch nodes, queues and policies over them, and the state of Jobs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ebb import keys, kube
from local_stack import builders
from local_stack.harness import create_node, wait_for


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass
class BatchEnv:
    """Compute environments with KWOK batch nodes, and queues over them."""

    client: kube.KubeClient
    created: list[tuple[kube.Resource, str]]

    async def compute_environment(
        self,
        name: str,
        *,
        max_vcpus: int = 8,
        nodes: int = 1,
        node_cpu: str = "4",
        state: str = "ENABLED",
        ce_type: str = "UNMANAGED",
        instance_types: tuple[str, ...] = ("c6i",),
    ) -> str:
        body = builders.compute_environment(
            name, ce_type=ce_type, max_vcpus=max_vcpus, instance_types=instance_types, state=state
        )
        await self.create(kube.COMPUTE_ENVIRONMENTS, body)
        capacity = "spot" if ce_type == "SPOT" else "on-demand"
        for i in range(nodes):
            node = f"{name}-node-{i}"
            await create_node(
                self.client,
                node,
                cpu=node_cpu,
                memory="64Gi",
                labels={
                    keys.COMPUTE_ENVIRONMENT_LABEL: name,
                    keys.CAPACITY_TYPE_LABEL: capacity,
                    keys.INSTANCE_TYPE_LABEL: "c6i.xlarge",
                },
                taints=[builders.BATCH_TAINT],
            )
            self.created.append((kube.NODES, node))
        return name

    async def queue(
        self,
        name: str,
        compute_environments: list[str],
        *,
        priority: int = 1,
        policy: str | None = None,
        state: str = "ENABLED",
        time_limits: list[dict[str, Any]] | None = None,
    ) -> str:
        spec: dict[str, Any] = {"state": state}
        if policy:
            spec["schedulingPolicy"] = policy
        if time_limits:
            spec["jobStateTimeLimitActions"] = time_limits
        body = builders.job_queue(name, *compute_environments, priority=priority, **spec)
        await self.create(kube.JOB_QUEUES, body)
        return name

    async def policy(
        self, name: str, shares: dict[str, float], *, decay: int = 0, reservation: int = 0
    ) -> str:
        body = builders.scheduling_policy(
            name,
            builders.weighted_shares(shares),
            shareDecaySeconds=decay,
            computeReservation=reservation,
        )
        await self.create(kube.SCHEDULING_POLICIES, body)
        return name

    async def create(self, resource: kube.Resource, body: dict[str, Any]) -> None:
        """Create a cluster-scoped object, deleted again by `cleanup`."""
        await self.client.create(resource, body)
        self.created.append((resource, body["metadata"]["name"]))

    async def cleanup(self) -> None:
        for resource, name in reversed(self.created):
            await self.client.delete(resource, name)


@asynccontextmanager
async def batch_env(client: kube.KubeClient) -> AsyncIterator[BatchEnv]:
    env = BatchEnv(client, [])
    try:
        yield env
    finally:
        await env.cleanup()


async def job_state(client: kube.KubeClient, namespace: str, name: str) -> str | None:
    raw = await client.get(kube.JOBS, name, namespace)
    return (raw["metadata"].get("annotations") or {}).get(keys.STATE)


async def wait_state(
    client: kube.KubeClient, namespace: str, name: str, *states: str, timeout: float = 60
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        raw = await client.get(kube.JOBS, name, namespace)
        state = (raw["metadata"].get("annotations") or {}).get(keys.STATE)
        return raw if state in states else None

    return await wait_for(reached, timeout, message=f"job {name} in {'/'.join(states)}")


def annotation(raw: dict[str, Any], key: str) -> str:
    return str((raw["metadata"].get("annotations") or {}).get(key, ""))
