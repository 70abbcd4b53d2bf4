"""What the scheduler daemon publishes on JobQueues and SchedulingPolicies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ebb.model import ComputeEnvironment, JobQueue, SchedulingPolicy, ShareWeight
from extender.jobs.lifecycle import State
from extender.jobs.status import (
    STATES,
    count_states,
    policy_status,
    queue_problem,
    queue_ready,
    queue_status,
    share_usage_status,
)

ZEROS = dict.fromkeys(STATES, 0)


def queue(name: str = "q", policy: str | None = None, *envs: str) -> JobQueue:
    return JobQueue(name, 1, envs or ("ce",), scheduling_policy=policy, generation=3)


def test_every_state_of_every_queue_is_counted_zero_included() -> None:
    counts = count_states(
        ["a", "idle"],
        [("a", State.RUNNING), ("a", State.RUNNING), ("a", State.FAILED), ("gone", State.RUNNABLE)],
    )
    assert counts["a"] == {**ZEROS, "RUNNING": 2, "FAILED": 1}
    assert counts["idle"] == ZEROS
    # A queue that only its Jobs name is still counted (the gauge shows them).
    assert counts["gone"] == {**ZEROS, "RUNNABLE": 1}
    assert list(counts["a"]) == [s.value for s in State]


def test_a_state_that_fell_to_zero_is_written_as_zero() -> None:
    """The status is a merge patch: a state left out would keep its last count."""
    status = queue_status(queue(), {"RUNNING": 1}, None)
    assert status == {
        "status": "VALID",
        "statusReason": "",
        "observedGeneration": 3,
        "jobs": {**ZEROS, "RUNNING": 1},
    }
    assert queue_status(queue(), {}, None)["jobs"] == ZEROS


def test_queue_problems_name_what_is_missing() -> None:
    assert queue_problem(queue("q", None, "a", "b"), {"a"}, set()) == (
        "computeEnvironmentOrder names missing environment(s): b"
    )
    assert (
        queue_problem(queue("q", "fair"), {"ce"}, set()) == "schedulingPolicy fair does not exist"
    )
    assert queue_problem(queue("q", "fair"), {"ce"}, {"fair"}) is None
    invalid = queue_status(queue(), {}, "schedulingPolicy fair does not exist")
    assert (invalid["status"], invalid["statusReason"]) == (
        "INVALID",
        "schedulingPolicy fair does not exist",
    )


def test_share_usage_that_decayed_away_is_removed() -> None:
    usage = share_usage_status(["old", "kept"], {"kept": 1.23456, "new": 2.0}, "T")
    assert usage == {"time": "T", "vcpuSeconds": {"old": None, "kept": 1.235, "new": 2.0}}
    assert share_usage_status([], {}, "T") is None


def test_policy_status_names_the_queues_that_use_it() -> None:
    policy = SchedulingPolicy("fair", shares=(ShareWeight("a", 1.0),), generation=2)
    queues = [queue("q2", "fair"), queue("q1", "fair"), queue("other", "other"), queue("fifo")]
    assert policy_status(policy, queues, (), "T") == {
        "status": "VALID",
        "statusReason": "used by queue(s) q1, q2",
        "observedGeneration": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Valid",
                "message": "VALID, used by queue(s) q1, q2",
                "lastTransitionTime": "T",
                "observedGeneration": 2,
            }
        ],
    }
    assert policy_status(policy, [], (), "T")["statusReason"] == "used by no queue"
    many = [queue(f"q{i:02}", "fair") for i in range(12)]
    assert policy_status(policy, many, (), "T")["statusReason"].endswith("q09 and 2 more")


def test_a_weight_outside_the_schema_bounds_makes_the_policy_invalid() -> None:
    # Stored before the schema's CEL rule existed: 0 would give the share everything.
    policy = SchedulingPolicy("fair", shares=(ShareWeight("a", 1.0), ShareWeight("b*", 0.0)))
    status = policy_status(policy, [queue("q", "fair")], (), "T")
    assert status["status"] == "INVALID"
    assert status["statusReason"] == (
        "shareDistribution[1].weightFactor (b*) is 0; allowed: 0.0001 to 999.9999"
    )
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "Invalid")
    assert ready["message"] == status["statusReason"]


def test_a_queue_is_ready_when_valid_enabled_and_one_environment_can_run_its_jobs() -> None:
    def ce(name: str, **kw: Any) -> ComputeEnvironment:
        return ComputeEnvironment(name, "EC2", 4, ("c6i",), **kw)

    q = queue("q", None, "a", "b", "c")
    envs = {"a": ce("a", state="DISABLED"), "b": ce("b", status="INVALID", status_reason="why")}
    ready = queue_ready(q, None, envs)
    assert (ready.status, ready.reason) == ("False", "NoUsableComputeEnvironment")
    assert ready.message == (
        "no compute environment can run its jobs: a is DISABLED; b is INVALID (why); "
        "c does not exist"
    )
    ready = queue_ready(q, None, {**envs, "c": ce("c", status="VALID")})
    assert (ready.status, ready.reason) == ("True", "Ready")
    assert "compute environment(s) c can run its jobs" in ready.message
    disabled = replace(q, state="DISABLED")
    assert queue_ready(disabled, None, {"c": ce("c")}).reason == "Disabled"
    assert queue_ready(q, "schedulingPolicy fair does not exist", {}).reason == "Invalid"
