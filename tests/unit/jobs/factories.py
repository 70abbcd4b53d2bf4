"""Raw Jobs and Pods for the pure scheduling code's tests."""

from __future__ import annotations

from typing import Any

from ebb.model import PodInfo, pod_from_raw
from extender.jobs.snapshot import JobInfo, job_from_raw


def raw_job(
    name: str,
    *,
    namespace: str = "ns",
    queue: str = "q",
    share: str | None = None,
    annotations: dict[str, str] | None = None,
    cpu: str = "1",
    gpu: int = 0,
    suspend: bool = True,
    completions: int | None = 1,
    parallelism: int = 1,
    indexed: bool = False,
    created: str = "2026-01-01T00:00:00Z",
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    labels = {"ebb.dev/queue": queue}
    if share:
        labels["ebb.dev/share"] = share
    limits = {"nvidia.com/gpu": str(gpu)} if gpu else {}
    spec: dict[str, Any] = {
        "suspend": suspend,
        "parallelism": parallelism,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}, "limits": limits},
                    }
                ]
            }
        },
    }
    if completions is not None:
        spec["completions"] = completions
    if indexed:
        spec["completionMode"] = "Indexed"
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "labels": labels,
            "annotations": annotations or {},
            "creationTimestamp": created,
        },
        "spec": spec,
        "status": status or {},
    }


def job(name: str, **kwargs: Any) -> JobInfo:
    info = job_from_raw(raw_job(name, **kwargs))
    assert info is not None
    return info


def pod(
    job_name: str,
    name: str,
    *,
    namespace: str = "ns",
    phase: str = "Running",
    node: str | None = "node-1",
    index: int | None = None,
    exit_code: int | None = None,
    reason: str = "",
    disrupted: bool = False,
    gated: bool = False,
    unschedulable: bool = False,
    cpu: str = "1",
    tracked: bool = False,
    created: str = "2026-01-01T00:01:00Z",
) -> PodInfo:
    annotations = {} if index is None else {"batch.kubernetes.io/job-completion-index": str(index)}
    status: dict[str, Any] = {"phase": phase, "reason": reason, "startTime": "2026-01-01T00:01:00Z"}
    if exit_code is not None:
        status["containerStatuses"] = [
            {
                "name": "main",
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Error" if exit_code else "Completed",
                        "finishedAt": "2026-01-01T00:02:00Z",
                    }
                },
            }
        ]
    conditions = status.setdefault("conditions", [])
    if disrupted:
        conditions.append({"type": "DisruptionTarget", "status": "True"})
    if unschedulable:  # as kube-scheduler marks a pod it found no node for
        conditions.append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "x"}
        )
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "resources": {"requests": {"cpu": cpu}}}]
    }
    if node:
        spec["nodeName"] = node
    if gated:
        spec["schedulingGates"] = [{"name": "ebb.dev/n-to-n"}]
    return pod_from_raw(
        {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{name}",
                "creationTimestamp": created,
                "labels": {"ebb.dev/queue": "q"},
                "annotations": annotations,
                "ownerReferences": [{"kind": "Job", "name": job_name, "uid": "u"}],
                "finalizers": ["batch.kubernetes.io/job-tracking"] if tracked else [],
            },
            "spec": spec,
            "status": status,
        }
    )
