"""A synthetic batch cluster for the placement benchmarks: compute environments, queues,
and raw Node and Pod objects shaped like the ones a real cluster holds (EC2 names,
instance types, zones, the batch taint, a pod as kube-scheduler sends it)."""

from __future__ import annotations

import random
from typing import Any

from ebb import keys
from extender.jobs.stamp import mark_batch_pod
from local_stack import builders

# (compute environment, EC2 type "EC2"/"SPOT", share of the nodes, cpu, memory, gpus)
ENVIRONMENTS = (
    ("spot-general", "SPOT", 0.45, "16", "64Gi", 0),
    ("ondemand-general", "EC2", 0.30, "16", "64Gi", 0),
    ("gpu-spot", "SPOT", 0.10, "32", "244Gi", 4),
    ("other-team", "EC2", 0.05, "8", "32Gi", 0),
)
NON_BATCH_SHARE = 0.10  # system nodes without the batch taint
QUEUES = {
    "high": ("spot-general", "ondemand-general"),
    "gpu": ("gpu-spot",),
}
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")


def environment_objects() -> list[dict[str, Any]]:
    return [
        builders.compute_environment(
            name, ce_type=kind, max_vcpus=100000, instance_types=("optimal",)
        )
        for name, kind, *_ in ENVIRONMENTS
    ]


def queue_objects() -> list[dict[str, Any]]:
    return [builders.job_queue(name, *order, priority=10) for name, order in QUEUES.items()]


def node_name(i: int) -> str:
    return f"ip-10-{i // 65536 % 256}-{i // 256 % 256}-{i % 256}.ec2.internal"


def node_objects(count: int, *, kwok: bool = False) -> list[dict[str, Any]]:
    """`count` nodes: batch nodes of each environment by its share, the rest non-batch.
    With `kwok`, annotated for KWOK to play their kubelets."""
    kinds: list[tuple[str | None, str, str, str, int]] = []
    for name, kind, share, cpu, memory, gpus in ENVIRONMENTS:
        capacity = keys.CAPACITY_SPOT if kind == "SPOT" else keys.CAPACITY_ON_DEMAND
        kinds += [(name, capacity, cpu, memory, gpus)] * round(share * count)
    kinds += [(None, keys.CAPACITY_ON_DEMAND, "8", "32Gi", 0)] * (count - len(kinds))
    nodes = []
    for i, (ce, capacity, cpu, memory, gpus) in enumerate(kinds[:count]):
        name = node_name(i)
        labels = {
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            keys.INSTANCE_TYPE_LABEL: "p3.8xlarge" if gpus else "m6i.4xlarge",
            keys.ZONE_LABEL: ZONES[i % len(ZONES)],
        }
        taints = []
        if ce is not None:
            labels[keys.COMPUTE_ENVIRONMENT_LABEL] = ce
            labels[keys.CAPACITY_TYPE_LABEL] = capacity
            taints.append(builders.BATCH_TAINT)
        nodes.append(
            builders.node(
                name,
                builders.node_resources(cpu, memory, gpu=gpus, **{"ephemeral-storage": "100Gi"}),
                labels=labels,
                taints=taints,
                kwok=kwok,
                provider_id=f"aws:///{ZONES[i % len(ZONES)]}/i-{i:017x}",
                ready=True,
            )
        )
    return nodes


def pod_object(
    name: str,
    queue: str | None,
    *,
    cpu: str = "2",
    memory: str = "4Gi",
    node: str | None = None,
    namespace: str = "research",
    scheduler: str = "default-scheduler",
) -> dict[str, Any]:
    """A batch Job's pod with what the API server and webhook add to it."""
    labels = {"batch.kubernetes.io/job-name": name.rsplit("-", 1)[0], "job-name": name}
    if queue is not None:
        labels[keys.QUEUE_LABEL] = queue
    main = builders.container(
        cpu,
        memory,
        limits=True,
        image="public.ecr.aws/amazonlinux/amazonlinux:2",
        command=["python", "train.py", "--epochs", "10"],
        terminationMessagePath="/dev/termination-log",
        imagePullPolicy="IfNotPresent",
    )
    not_ready = {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }
    placed = {"nodeName": node} if node is not None else {}
    pod = builders.pod(
        name,
        [main],
        labels=labels,
        restartPolicy="Never",
        schedulerName=scheduler,
        serviceAccountName="default",
        terminationGracePeriodSeconds=30,
        dnsPolicy="ClusterFirst",
        tolerations=[keys.BATCH_TOLERATION, not_ready],
        **placed,
    )
    if queue is not None:
        mark_batch_pod(pod["spec"])
    pod["metadata"] |= {
        "namespace": namespace,
        "uid": f"{random.getrandbits(128):032x}",
        "annotations": builders.kwok_run(3600),
        "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Job", "name": labels["job-name"], "uid": "1"}
        ],
    }
    pod["status"] = {"phase": "Running" if node else "Pending", "qosClass": "Guaranteed"}
    return pod
