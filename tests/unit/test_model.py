from __future__ import annotations

from ebb.model import (
    SchedulingPolicy,
    ShareWeight,
    compute_environment_from_raw,
    job_queue_from_raw,
    node_from_raw,
    pod_from_raw,
)
from ebb.resources import Resources


def test_queue_orders_compute_environments_by_order() -> None:
    q = job_queue_from_raw(
        {
            "metadata": {"name": "q"},
            "spec": {
                "priority": 5,
                "computeEnvironmentOrder": [
                    {"order": 2, "computeEnvironment": "b"},
                    {"order": 1, "computeEnvironment": "a"},
                ],
            },
        }
    )
    assert q.compute_environments == ("a", "b")
    assert q.enabled and q.priority == 5


def test_compute_environment_capacity_type() -> None:
    ce = compute_environment_from_raw(
        {
            "metadata": {"name": "s"},
            "spec": {"type": "SPOT", "maxvCpus": 8, "instanceTypes": ["c6i"]},
        }
    )
    assert ce.capacity_type == "spot"
    assert ce.instance_types == ("c6i",)


def test_share_weights_exact_beats_longest_wildcard_beats_default() -> None:
    policy = SchedulingPolicy(
        "p",
        shares=(
            ShareWeight("team*", 2.0),
            ShareWeight("team-a*", 3.0),
            ShareWeight("team-a1", 0.5),
        ),
    )
    assert policy.weight_for("team-a1") == 0.5
    assert policy.weight_for("team-a2") == 3.0
    assert policy.weight_for("team-b") == 2.0
    assert policy.weight_for("other") == 1.0


def test_node_projection() -> None:
    node = node_from_raw(
        {
            "metadata": {
                "name": "n",
                "labels": {"ebb.dev/compute-environment": "ce1", "ebb.dev/capacity-type": "spot"},
            },
            "spec": {
                "providerID": "aws:///us-east-1a/i-0abc",
                "unschedulable": True,
                "taints": [{"key": "ebb.dev/draining", "effect": "NoSchedule"}],
            },
            "status": {
                "allocatable": {"cpu": "4", "memory": "8Gi"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    assert node.compute_environment == "ce1"
    assert node.instance_id == "i-0abc"
    assert node.allocatable == Resources(4000, 8 * 2**30, 0)
    assert node.unschedulable and node.draining and node.ready


def test_pod_projection_reads_exit_codes_and_disruption() -> None:
    pod = pod_from_raw(
        {
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "labels": {"ebb.dev/queue": "q"},
                "annotations": {"batch.kubernetes.io/job-completion-index": "7"},
                "ownerReferences": [{"kind": "Job", "name": "j", "uid": "u1"}],
            },
            "spec": {
                "nodeName": "n",
                "containers": [{"resources": {"requests": {"cpu": "1"}}}],
                "tolerations": [{"key": "ebb.dev/batch-node", "operator": "Exists"}],
            },
            "status": {
                "phase": "Failed",
                "conditions": [
                    {"type": "DisruptionTarget", "status": "True", "message": "node gone"}
                ],
                "containerStatuses": [
                    {
                        "name": "main",
                        "state": {
                            "terminated": {
                                "exitCode": 137,
                                "reason": "Error",
                                "finishedAt": "2026-01-01T00:00:00Z",
                            }
                        },
                    }
                ],
            },
        }
    )
    assert pod.queue == "q" and pod.job_name == "j" and pod.completion_index == 7
    assert pod.disrupted and pod.exit_code == 137 and pod.tolerates_batch_taint
    assert not pod.active
