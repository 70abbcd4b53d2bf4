"""The pod template Ebb runs a Job's pods with. Pure.

Two paths stamp it and both call `stamp_pod_template`, so their pods are the same: the
mutating webhook (a Job being created) and the scheduler, before it admits a suspended
Job created without the webhook (a Job that never ran may have its template's labels,
tolerations, scheduling gates and, from Kubernetes 1.36 (MutablePodResourcesForSuspendedJobs),
its containers' resources changed, and only those: `SUSPENDED_MUTABLE`).
"""

from __future__ import annotations

import copy
from typing import Any, Final

from ebb import keys
from ebb.jobspec import DependencyType, JobSpec

Json = dict[str, Any]
# What the API server lets change in the pod template of a suspended Job that never ran
# (Kubernetes' mutable scheduling directives): labels under metadata, these under spec.
SUSPENDED_MUTABLE: Final = ("tolerations", "schedulingGates", "containers")
_LABEL_VALUE_MAX = 63


def job_id(name: str) -> str:
    """The `ebb.dev/job-id` label of a Job named `name`: a label value holds 63
    characters, a Job's name up to 253 (with a manual selector)."""
    return name[:_LABEL_VALUE_MAX].rstrip("-.")


def stamp_pod_template(
    template: Json,
    *,
    name: str,
    queue: str,
    share: str,
    job_spec: JobSpec,
    scheduler_name: str = "",
) -> Json:
    """A copy of the Job's pod template as Ebb runs it: labelled with its queue, share
    and job id (and node count, for a multi-node job), tolerating the batch taint,
    marked a batch pod (`mark_batch_pod`), gated while an n_to_n dependency holds it,
    and sent to `scheduler_name` (the kube-scheduler configured with Ebb's extender;
    "": the default)."""
    out = copy.deepcopy(template)
    labels = out.setdefault("metadata", {}).setdefault("labels", {})
    labels[keys.QUEUE_LABEL] = queue
    if share:
        labels[keys.SHARE_LABEL] = share
    if name:  # generateName: the Job controller's job-name label has it
        labels[keys.JOB_ID_LABEL] = job_id(name)
    if job_spec.multi_node is not None:
        labels[keys.NODES] = str(job_spec.multi_node.nodes)
    pod = out.setdefault("spec", {})
    if scheduler_name:
        pod["schedulerName"] = scheduler_name
    tolerations = pod.setdefault("tolerations", [])
    if keys.BATCH_TOLERATION not in tolerations:
        tolerations.append(dict(keys.BATCH_TOLERATION))
    mark_batch_pod(pod)
    if any(d.type is DependencyType.N_TO_N for d in job_spec.depends_on):
        gates = pod.setdefault("schedulingGates", [])
        if {"name": keys.N_TO_N_GATE} not in gates:
            gates.append({"name": keys.N_TO_N_GATE})
    return out


def mark_batch_pod(pod: Json) -> None:
    """Give a pod spec's first container one `ebb.dev/batch-pod` (requests and limits: an
    extended resource's must be equal): the extender stanza's managedResources send
    kube-scheduler's filter and bind calls for such pods, and only them, to Ebb."""
    containers = pod.get("containers") or []
    if not containers:
        return
    resources = containers[0]["resources"] = containers[0].get("resources") or {}
    for part in ("requests", "limits"):
        resources[part] = {**(resources.get(part) or {}), keys.BATCH_POD_RESOURCE: "1"}
