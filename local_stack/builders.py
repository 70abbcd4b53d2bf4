"""The bodies of the objects tests, benchmarks and the local stack create: Ebb's resources
(ComputeEnvironment, JobQueue, SchedulingPolicy, JobDefinition) and the Kubernetes ones
they act on (batch/v1 Job, Node, Pod), each as the API server takes it.

Keyword arguments in camelCase are spec fields, merged last so that a caller can set any
field, or a wrong value on purpose (tests of what the API server refuses)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ebb import keys

Body = dict[str, Any]
# KWOK plays the kubelet of nodes with this annotation (hack/kwok/stages.yaml), and runs
# their pods for the seconds and to the exit code their annotations say.
KWOK_NODE = {"kwok.x-k8s.io/node": "fake"}
RUN_SECONDS = "kwok.ebb.dev/run-seconds"
EXIT_CODE = "kwok.ebb.dev/exit-code"
BATCH_TAINT = {"key": keys.BATCH_NODE_TAINT, "effect": "NoSchedule"}


def _ebb_object(kind: str, name: str, spec: Body) -> Body:
    return {"apiVersion": keys.API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def compute_environment(
    name: str,
    *,
    ce_type: str = "SPOT",
    max_vcpus: int = 64,
    instance_types: Sequence[str] = ("c6i",),
    **spec: Any,
) -> Body:
    return _ebb_object(
        "ComputeEnvironment",
        name,
        {"type": ce_type, "maxvCpus": max_vcpus, "instanceTypes": list(instance_types), **spec},
    )


def ec2_networking(info: Mapping[str, Any]) -> Body:
    """The spec fields a managed environment needs to launch into the local AWS, from the
    ids its info file holds (local_stack.ec2)."""
    return {
        "subnets": info["subnets"],
        "securityGroupIds": [info["securityGroup"]],
        "instanceRole": info["instanceRole"],
    }


def job_queue(name: str, *environments: str, priority: int = 1, **spec: Any) -> Body:
    """A queue over `environments`, in that order."""
    order = [{"order": i + 1, "computeEnvironment": ce} for i, ce in enumerate(environments)]
    return _ebb_object(
        "JobQueue", name, {"priority": priority, "computeEnvironmentOrder": order, **spec}
    )


def share(identifier: str, weight: float | None = None, **fields: Any) -> Body:
    """One entry of a fair-share policy's shareDistribution."""
    entry: Body = {"shareIdentifier": identifier, **fields}
    if weight is not None:
        entry["weightFactor"] = weight
    return entry


def weighted_shares(weights: Mapping[str, float]) -> list[Body]:
    return [share(identifier, weight) for identifier, weight in weights.items()]


def scheduling_policy(name: str, shares: Sequence[Body], **fairshare: Any) -> Body:
    """A fair-share policy; `fairshare` sets its other fields (shareDecaySeconds, …)."""
    return _ebb_object(
        "SchedulingPolicy",
        name,
        {"fairsharePolicy": {"shareDistribution": list(shares), **fairshare}},
    )


def job_definition(name: str, spec: Mapping[str, Any]) -> Body:
    return _ebb_object("JobDefinition", name, dict(spec))


def container(
    cpu: str | None = "1",
    memory: str | None = "256Mi",
    *,
    gpu: int = 0,
    limits: bool = False,
    name: str = "main",
    image: str = "busybox",
    **fields: Any,
) -> Body:
    """A container requesting `cpu`, `memory` and `gpu` (none of them if None or 0); with
    `limits`, limited to the same."""
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    if gpu:
        requests[keys.GPU_RESOURCE] = str(gpu)
    resources: Body = {"requests": requests} if requests else {}
    if limits:
        resources["limits"] = dict(requests)
    body: Body = {"name": name, "image": image, **fields}
    if resources:
        body["resources"] = resources
    return body


def kwok_run(run_seconds: float, exit_code: int | None = None) -> dict[str, str]:
    """The pod annotations that tell KWOK how long a pod runs and how it ends."""
    annotations = {RUN_SECONDS: str(run_seconds)}
    if exit_code is not None:
        annotations[EXIT_CODE] = str(exit_code)
    return annotations


def job(
    name: str,
    queue: str | None = None,
    *,
    share: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    pod_labels: Mapping[str, str] | None = None,
    pod_annotations: Mapping[str, str] | None = None,
    run_seconds: float = 1,
    exit_code: int | None = None,
    completions: int | None = None,
    parallelism: int | None = None,
    indexed: bool = False,
    suspend: bool | None = None,
    backoff_limit: int = 0,
    cpu: str = "1",
    memory: str = "256Mi",
    containers: Sequence[Body] | None = None,
    **pod_spec: Any,
) -> Body:
    """A batch/v1 Job of `queue` (its label on the Job) and `share`, whose pods KWOK runs
    for `run_seconds` and ends with `exit_code`; `pod_spec` adds to its pod template's
    spec (tolerations, nodeSelector, …). One container requesting `cpu` and `memory`
    unless `containers` says otherwise."""
    job_labels = dict(labels or {})
    if queue is not None:
        job_labels[keys.QUEUE_LABEL] = queue
    if share is not None:
        job_labels[keys.SHARE_LABEL] = share
    template: Body = {
        "annotations": {**kwok_run(run_seconds, exit_code), **(pod_annotations or {})}
    }
    if pod_labels:
        template["labels"] = dict(pod_labels)
    spec: Body = {
        "backoffLimit": backoff_limit,
        "template": {
            "metadata": template,
            "spec": {
                "restartPolicy": "Never",
                "containers": list(containers or [container(cpu, memory)]),
                **pod_spec,
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
    metadata: Body = {"name": name, "labels": job_labels, "annotations": dict(annotations or {})}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def node_resources(cpu: str, memory: str, *, gpu: int = 0, **extra: str) -> dict[str, str]:
    """A node's capacity (or allocatable): `cpu`, `memory`, `gpu` GPUs and 110 pods."""
    resources = {"cpu": cpu, "memory": memory, "pods": "110", **extra}
    if gpu:
        resources[keys.GPU_RESOURCE] = str(gpu)
    return resources


def node(
    name: str,
    capacity: Mapping[str, str],
    *,
    allocatable: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, str]] = (),
    kwok: bool = True,
    provider_id: str | None = None,
    ready: bool = False,
) -> Body:
    """A Node named `name` (its hostname label too); with `kwok`, one KWOK plays the
    kubelet of (it then makes it Ready); with `ready`, Ready already (for code that reads
    nodes without a KWOK behind them)."""
    spec: Body = {"taints": [dict(t) for t in taints]}
    if provider_id is not None:
        spec["providerID"] = provider_id
    status: Body = {"capacity": dict(capacity), "allocatable": dict(allocatable or capacity)}
    if ready:
        status["conditions"] = [{"type": "Ready", "status": "True"}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": dict(KWOK_NODE) if kwok else {},
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
        },
        "spec": spec,
        "status": status,
    }


def pod(
    name: str,
    containers: Sequence[Body],
    *,
    labels: Mapping[str, str] | None = None,
    **spec: Any,
) -> Body:
    """A bare Pod; `spec` adds to its spec (tolerations, nodeSelector, schedulerName, …)."""
    metadata: Body = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": list(containers), **spec},
    }
