"""Ending the pods of a lost node, as Kubernetes' pod garbage collector (PodGC) does:
failed with the DisruptionTarget condition of ebb/nodeloss.py, then deleted."""

from __future__ import annotations

from ebb import kube
from ebb.model import PodInfo
from ebb.nodeloss import failed_status

_FINISHED = ("Succeeded", "Failed")
_TRIES = 3


async def end_lost_pod(client: kube.KubeClient, pod: PodInfo, message: str, at: str) -> bool:
    """Fail, then delete (no grace: nothing is left to stop it) a pod of a lost node, as
    PodGC does. The pod is read afresh and failed only if it has not finished: the API
    server lets a Succeeded pod be patched to Failed, and a cache a moment behind would
    turn a success into a lost attempt (and, with the Job controller yet to count it, a
    second run). False when there was nothing to end: the pod is gone, replaced, or
    finished before it was lost."""
    for _ in range(_TRIES):
        raw = await client.get_or_none(kube.PODS, pod.name, pod.namespace)
        meta = (raw or {}).get("metadata") or {}
        if raw is None or meta.get("uid") != pod.uid:
            return False
        if (raw.get("status") or {}).get("phase") in _FINISHED:
            return False
        body = failed_status(pod.uid, meta["resourceVersion"], message, at)
        try:
            await client.patch(
                kube.PODS,
                pod.name,
                body,
                pod.namespace,
                patch_type="strategic",
                subresource="status",
            )
        except kube.ApiError as exc:
            if exc.not_found:
                return False
            if exc.conflict:
                continue  # it changed since it was read: read it again
            raise
        try:
            await client.delete(
                kube.PODS, pod.name, pod.namespace, grace_period_seconds=0, uid=pod.uid
            )
        except kube.ApiError as exc:
            if not (exc.not_found or exc.conflict):
                raise
        return True
    raise kube.ApiError(409, "Conflict", f"pod {pod.key} kept changing while it was being ended")
