"""Nodes, pods, queues and compute environments for placement tests, built the way the
daemon builds them: raw API objects through the model's `*_from_raw`."""

from __future__ import annotations

from typing import Any

from ebb import keys
from ebb.model import (
    ComputeEnvironment,
    JobQueue,
    NodeInfo,
    PodInfo,
    compute_environment_from_raw,
    job_queue_from_raw,
    node_from_raw,
    pod_from_raw,
)


def raw_node(
    name: str,
    ce: str | None = None,
    *,
    cpu: str = "4",
    memory: str = "16Gi",
    gpu: int = 0,
    capacity_type: str | None = None,
    unschedulable: bool = False,
    draining: bool = False,
) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name}
    if ce is not None:
        labels[keys.COMPUTE_ENVIRONMENT_LABEL] = ce
    if capacity_type is not None:
        labels[keys.CAPACITY_TYPE_LABEL] = capacity_type
    taints = [{"key": keys.BATCH_NODE_TAINT, "effect": "NoSchedule"}] if ce else []
    if draining:
        taints.append({"key": keys.DRAINING_TAINT, "effect": "NoSchedule"})
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110"}
    if gpu:
        allocatable[keys.GPU_RESOURCE] = str(gpu)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints, "unschedulable": unschedulable},
        "status": {
            "allocatable": allocatable,
            "capacity": allocatable,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def node(name: str, ce: str | None = None, **kwargs: Any) -> NodeInfo:
    return node_from_raw(raw_node(name, ce, **kwargs))


def raw_pod(
    name: str,
    queue: str | None = None,
    *,
    cpu: str | None = "1",
    memory: str | None = None,
    gpu: int = 0,
    node_name: str | None = None,
    capacity_type: str | None = None,
    namespace: str = "default",
    uid: str | None = None,
) -> dict[str, Any]:
    requests: dict[str, str] = {}
    if cpu is not None:
        requests["cpu"] = cpu
    if memory is not None:
        requests["memory"] = memory
    if gpu:
        requests[keys.GPU_RESOURCE] = str(gpu)
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "busybox", "resources": {"requests": requests}}],
        "tolerations": [keys.BATCH_TOLERATION],
    }
    if node_name is not None:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{name}",
            "labels": {keys.QUEUE_LABEL: queue} if queue else {},
            "annotations": {keys.CAPACITY_TYPE_PREFERENCE: capacity_type} if capacity_type else {},
        },
        "spec": spec,
        "status": {"phase": "Running" if node_name else "Pending"},
    }


def pod(name: str, queue: str | None = None, **kwargs: Any) -> PodInfo:
    return pod_from_raw(raw_pod(name, queue, **kwargs))


def environment(name: str, *, spot: bool = False, enabled: bool = True) -> ComputeEnvironment:
    return compute_environment_from_raw(
        {
            "metadata": {"name": name},
            "spec": {
                "type": "SPOT" if spot else "EC2",
                "state": "ENABLED" if enabled else "DISABLED",
                "maxvCpus": 256,
                "instanceTypes": ["optimal"],
            },
        }
    )


def queue(name: str, *order: str) -> JobQueue:
    return job_queue_from_raw(
        {
            "metadata": {"name": name},
            "spec": {
                "priority": 1,
                "computeEnvironmentOrder": [
                    {"order": i, "computeEnvironment": ce} for i, ce in enumerate(order)
                ],
            },
        }
    )


async def no_failures(namespace: str, name: str) -> int:
    """A Binding's job_failures where every Job has failed no pod yet."""
    return 0
