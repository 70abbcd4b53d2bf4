"""The attempt record of a pod whose node was lost: instance, stop time, exit code."""

from __future__ import annotations

from typing import Any

import orjson

from ebb.model import PodInfo, pod_from_raw
from ebb.nodeloss import DISRUPTION_REASON, failed_status, instance_in, lost_message
from extender.jobs.attempts import from_pod, merge
from extender.jobs.reconcile import Snapshot, reconcile
from tests.unit.jobs.factories import job

LOST_AT = "2026-01-01T00:05:00Z"


def lost_pod(
    message: str, *, name: str = "j-1", node: str = "ip-10-20-1-7.ec2.internal"
) -> PodInfo:
    """A running pod, then what ending it as a lost node's pod makes of it (the status
    patch applied as the API server merges it)."""
    raw: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": {"ebb.dev/queue": "q"},
            "ownerReferences": [{"kind": "Job", "name": "j", "uid": "u"}],
        },
        "spec": {"nodeName": node, "containers": [{"name": "main"}]},
        "status": {
            "phase": "Running",
            "startTime": "2026-01-01T00:01:00Z",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "main", "state": {"running": {"startedAt": "2026-01-01T00:01:00Z"}}}
            ],
        },
    }
    patch = failed_status(f"uid-{name}", message, LOST_AT)["status"]
    raw["status"]["phase"] = patch["phase"]
    raw["status"]["conditions"] += patch["conditions"]
    return pod_from_raw(raw)


def test_the_lost_message_names_the_instance() -> None:
    message = lost_message("i-0123456789abcdef0", "ip-10-20-1-7.ec2.internal", "shutting-down")
    assert instance_in(message) == "i-0123456789abcdef0"
    assert instance_in("PodGC: node no longer exists") is None
    condition = failed_status("u", message, LOST_AT)["status"]["conditions"][0]
    assert condition["type"] == "DisruptionTarget" and condition["status"] == "True"
    assert condition["reason"] == DISRUPTION_REASON == "DeletionByPodGC"


def test_a_lost_pods_attempt_names_its_instance_after_the_node_is_gone() -> None:
    message = lost_message("i-0123456789abcdef0", "ip-10-20-1-7.ec2.internal", "shutting-down")
    attempt = from_pod(lost_pod(message), {})  # the node is no longer in the snapshot
    assert attempt is not None
    assert attempt.statusReason == "Host EC2 (instance i-0123456789abcdef0) terminated."
    assert attempt.stoppedAt == LOST_AT  # when it was disrupted
    assert attempt.exitCode is None  # its container never exited; AWS reports none either
    assert attempt.reason == "DisruptionTarget"
    assert attempt.startedAt == "2026-01-01T00:01:00Z"
    assert attempt.node == "ip-10-20-1-7.ec2.internal"


def test_the_nodes_instance_is_used_while_the_node_exists() -> None:
    attempt = from_pod(
        lost_pod("PodGC: node no longer exists"), {"ip-10-20-1-7.ec2.internal": "i-0abcdef01"}
    )
    assert attempt is not None
    assert attempt.statusReason == "Host EC2 (instance i-0abcdef01) terminated."


def test_without_an_instance_anywhere_the_node_is_named() -> None:
    # PodGC's own message names no instance, and the node (not EC2, or gone) gives none.
    attempt = from_pod(lost_pod("PodGC: node no longer exists"), {})
    assert attempt is not None
    assert attempt.statusReason == "Host EC2 (instance ip-10-20-1-7.ec2.internal) terminated."


def test_a_deleted_pods_attempt_is_recorded_from_its_last_state() -> None:
    message = lost_message("i-0123456789abcdef0", "ip-10-20-1-7.ec2.internal", "terminated")
    j = job("j", suspend=False, status={"active": 1, "failed": 1})
    snap = Snapshot(
        now=1_767_225_900.0,
        jobs={j.key: j},
        pods_by_job={},  # the pod is gone from the API
        queues={},
        policies={},
        capacity={},
        node_compute_environment={},
        departed_by_job={j.key: [lost_pod(message)]},
    )
    (attempt,) = orjson.loads(reconcile(snap).attempts[j.key])
    assert attempt["statusReason"] == "Host EC2 (instance i-0123456789abcdef0) terminated."
    assert attempt["stoppedAt"] == LOST_AT
    # Once published, the same pods change nothing: nothing to write.
    assert merge(orjson.dumps([attempt]).decode(), [lost_pod(message)], {}) is None
