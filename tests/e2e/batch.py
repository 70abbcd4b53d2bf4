"""Helpers for e2e tests of Ebb's job scheduling: environments, queues, Jobs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ebb import keys, kube
from tests.e2e.cluster import create_node, wait_for


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
        body = {
            "apiVersion": "ebb.dev/v1alpha1",
            "kind": "ComputeEnvironment",
            "metadata": {"name": name},
            "spec": {
                "type": ce_type,
                "maxvCpus": max_vcpus,
                "instanceTypes": list(instance_types),
                "state": state,
            },
        }
        await self.client.create(kube.COMPUTE_ENVIRONMENTS, body)
        self.created.append((kube.COMPUTE_ENVIRONMENTS, name))
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
                taints=[{"key": keys.BATCH_NODE_TAINT, "effect": "NoSchedule"}],
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
        spec: dict[str, Any] = {
            "priority": priority,
            "state": state,
            "computeEnvironmentOrder": [
                {"order": i, "computeEnvironment": ce} for i, ce in enumerate(compute_environments)
            ],
        }
        if policy:
            spec["schedulingPolicy"] = policy
        if time_limits:
            spec["jobStateTimeLimitActions"] = time_limits
        await self.client.create(
            kube.JOB_QUEUES,
            {
                "apiVersion": "ebb.dev/v1alpha1",
                "kind": "JobQueue",
                "metadata": {"name": name},
                "spec": spec,
            },
        )
        self.created.append((kube.JOB_QUEUES, name))
        return name

    async def policy(
        self, name: str, shares: dict[str, float], *, decay: int = 0, reservation: int = 0
    ) -> str:
        await self.client.create(
            kube.SCHEDULING_POLICIES,
            {
                "apiVersion": "ebb.dev/v1alpha1",
                "kind": "SchedulingPolicy",
                "metadata": {"name": name},
                "spec": {
                    "fairsharePolicy": {
                        "shareDecaySeconds": decay,
                        "computeReservation": reservation,
                        "shareDistribution": [
                            {"shareIdentifier": s, "weightFactor": w} for s, w in shares.items()
                        ],
                    }
                },
            },
        )
        self.created.append((kube.SCHEDULING_POLICIES, name))
        return name

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


def job_body(
    name: str,
    queue: str,
    *,
    cpu: str = "1",
    run_seconds: float = 1,
    exit_code: int | None = None,
    annotations: dict[str, str] | None = None,
    share: str | None = None,
    completions: int | None = None,
    parallelism: int | None = None,
    indexed: bool = False,
    suspend: bool | None = None,
    labels: dict[str, str] | None = None,
    pod_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    job_labels = {keys.QUEUE_LABEL: queue, **(labels or {})}
    if share:
        job_labels[keys.SHARE_LABEL] = share
    template_annotations = {"kwok.ebb.dev/run-seconds": str(run_seconds), **(pod_annotations or {})}
    if exit_code is not None:
        template_annotations["kwok.ebb.dev/exit-code"] = str(exit_code)
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"annotations": template_annotations},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}},
                    }
                ],
            },
        },
    }
    if completions is not None:
        spec["completions"] = completions
    if parallelism is not None:
        spec["parallelism"] = parallelism
    if indexed:
        spec["completionMode"] = "Indexed"
    if suspend is not None:
        spec["suspend"] = suspend
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": job_labels, "annotations": annotations or {}},
        "spec": spec,
    }


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
