"""The view of pending pods: which pods wait for capacity, as the planner sees them.
Pure code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from autoscaler.planner import PendingPod
from ebb.model import JobQueue, PodInfo


def waits_for_capacity(pod: PodInfo) -> bool:
    """A batch pod kube-scheduler found no node for, and that new capacity could take:
    not gated (not admitted yet), not going away."""
    return bool(
        pod.queue
        and pod.node_name is None
        and pod.phase == "Pending"
        and pod.unschedulable
        and pod.tolerates_batch_taint
        and not pod.scheduling_gated
        and not pod.terminating
    )


def pending_pods(pods: Iterable[PodInfo], queues: Mapping[str, JobQueue]) -> list[PendingPod]:
    """The pods that wait for capacity, each with its queue's compute environments and
    priority (none, for a queue that is gone); a multi-node job's pods are exclusive.
    A multi-node job with a pod bound is being bound whole (the extender binds a gang's
    pods together once each has a node), so its other pods wait for no capacity: in the
    watch they may still read unschedulable for a moment after their binds."""
    pods = list(pods)
    binding_gangs = {
        p.job_uid
        for p in pods
        if p.gang_size is not None and p.node_name is not None and not p.terminating
    }
    out = []
    for pod in pods:
        if not waits_for_capacity(pod):
            continue
        if pod.gang_size is not None and pod.job_uid in binding_gangs:
            continue
        queue = queues.get(pod.queue or "")
        envs = queue.compute_environments if queue is not None else ()
        priority = queue.priority if queue is not None else 0
        out.append(
            PendingPod(
                pod.key,
                pod.requests,
                envs,
                priority,
                pod.created,
                exclusive=pod.gang_size is not None,
                job=f"{pod.namespace}/{pod.job_name}" if pod.job_name else "",
            )
        )
    return out
