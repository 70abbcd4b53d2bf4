"""The pods of a lost node, recorded as Kubernetes records a node loss.

When a node's machine is gone its kubelet cannot end its pods, so something else must:
Kubernetes' pod garbage collector (PodGC) does it for pods bound to a node that no
longer exists — it sets phase Failed with the `DisruptionTarget` condition (reason
`DeletionByPodGC`), then deletes the pod with no grace period. The Job controller then
counts the attempt as failed and a podFailurePolicy's `DisruptionTarget` rule applies.
PodGC waits 40 s before it acts; Ebb's autoscaler, which hears from EC2 the moment an
instance goes, does the same at once, and names the instance in the condition's
message so that the attempt can still be reported as `Host EC2 (instance i-…)
terminated.` after the node is gone.

This module is the record (pure); ebb/podgc.py writes it.
"""

from __future__ import annotations

import re
from typing import Any

DISRUPTION_REASON = "DeletionByPodGC"  # the reason Kubernetes records for a lost node's pods
_INSTANCE_ID = re.compile(r"\bi-[0-9a-f]{8,17}\b")


def lost_message(instance_id: str, node: str, state: str) -> str:
    """The DisruptionTarget message: names the instance (see `instance_in`)."""
    return f"EC2 instance {instance_id} of node {node} is {state}; its pods are lost"


def instance_in(message: str) -> str | None:
    """The EC2 instance id a DisruptionTarget message names, if any."""
    match = _INSTANCE_ID.search(message)
    return match.group(0) if match else None


def failed_status(uid: str, resource_version: str, message: str, at: str) -> dict[str, Any]:
    """The pods/status patch (strategic merge; conditions merge by type) that ends a lost
    pod: phase Failed, DisruptionTarget=True since `at` (RFC 3339). The uid and
    resourceVersion make it fail on a newer pod of the same name, or on a pod that
    changed since it was read (it may have finished meanwhile)."""
    condition = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": DISRUPTION_REASON,
        "message": message,
        "lastTransitionTime": at,
    }
    return {
        "metadata": {"uid": uid, "resourceVersion": resource_version},
        "status": {"phase": "Failed", "conditions": [condition]},
    }
