"""EC2 misbehaving, injected through the local AWS (local_stack/ec2.py) in front of the
autoscaler's real boto3 calls: launches left unanswered past the daemon's timeout,
an offering with less capacity than a launch asks for, and throttling on every kind
of call. Whatever happens: no duplicate instances, no instance left without a node,
retries with backoff, and the ComputeEnvironment says what is wrong.

(Insufficient capacity on one type falling back to the next, RunInstances throttling,
and the daemon killed between writing a launch and hearing EC2's answer are in
test_autoscaler.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from ebb import kube
from local_stack.aws import (
    AWS_TIMEOUT_SECONDS,
    LocalAws,
    batch_job,
    compute_environment,
    environment_nodes,
    events_of,
    insufficient_capacity,
    job_succeeded,
    launch_token,
    metric,
    name,
    scaled_to_zero,
)
from local_stack.builders import job_queue
from local_stack.harness import Process, wait_for

UNANSWERED: dict[str, dict[str, Any]] = {
    # EC2 launches, but its answer comes after the daemon stopped waiting for it.
    "answer-lost": {"delay_after": 2 * AWS_TIMEOUT_SECONDS, "times": 1},
    # The request never takes effect, three times in a row; each send times out.
    "request-lost": {
        "delay_before": 2 * AWS_TIMEOUT_SECONDS,
        "error": "ServiceUnavailable",
        "status": 503,
        "times": 3,
    },
}


@pytest.fixture(params=sorted(UNANSWERED))
def unanswered(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def ce_status(client: kube.KubeClient, ce: str) -> dict[str, Any]:
    return dict((await client.get(kube.COMPUTE_ENVIRONMENTS, ce)).get("status") or {})


async def test_a_launch_left_unanswered_is_settled_by_its_token_without_a_duplicate(
    kube_client: kube.KubeClient,
    namespace: str,
    *,
    local_aws: LocalAws,
    autoscaler: Process,
    setup: Any,
    unanswered: str,
) -> None:
    ce = name("slow")
    await setup(
        kube.COMPUTE_ENVIRONMENTS, compute_environment(ce, local_aws, instanceTypes=["c6i.xlarge"])
    )
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    unknown = f'ebb_autoscaler_launch_failures_total{{compute_environment="{ce}",reason="outcome-'
    local_aws.faults(
        [
            {
                "action": "RunInstances",
                "match": {"InstanceType": "c6i.xlarge"},
                **UNANSWERED[unanswered],
            }
        ]
    )
    # Three pods that one c6i.xlarge holds: one launch is all it takes.
    await kube_client.create(
        kube.JOBS, batch_job("slow", f"{ce}-q", pods=3, memory="1Gi", run_seconds=2), namespace
    )

    async def intent_written() -> list[dict[str, Any]]:
        return list((await ce_status(kube_client, ce)).get("launches") or [])

    (intent,) = await wait_for(intent_written, 60, message="the launch written down")
    if unanswered == "request-lost":  # long enough to be seen: three timeouts in a row
        problem = await wait_for(
            lambda: _last_launch_error(kube_client, ce), 30, message="status.lastLaunchError"
        )
        assert "LaunchOutcomeUnknown: RunInstances for 1 x c6i.xlarge in us-east-1" in problem
        assert "no answer (Read timeout" in problem
    await wait_for(lambda: job_succeeded(kube_client, namespace, "slow"), 150, message="job")

    async def settled() -> bool:
        status = await ce_status(kube_client, ce)
        return status.get("launches") == [] and status.get("lastLaunchError") == ""

    await wait_for(settled, 20, message="the launch crossed out and the error cleared")

    instances = local_aws.instances(ce)
    assert len(instances) == 1, [(i["InstanceId"], launch_token(i)) for i in instances]
    # The instance is the launch written down first (sent again with the same token if
    # need be); no later plan launched for the same pods.
    assert launch_token(instances[0]) == intent["token"]
    expected_unknown = 1 if unanswered == "answer-lost" else 3
    assert metric(autoscaler.ops_url, unknown) == expected_unknown
    events = await events_of(kube_client, ce)
    unknowns = [e["message"] for e in events if e["reason"] == "LaunchOutcomeUnknown"]
    assert len(unknowns) == expected_unknown
    assert all(m.startswith("RunInstances for 1 x c6i.xlarge in us-east-1") for m in unknowns)
    (launched,) = [e["message"] for e in events if e["reason"] == "Launched"]
    how = "found by its client token" if unanswered == "answer-lost" else "EC2 answered"
    assert launched.endswith(f"for pending-pods ({how})")

    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 60, message="to zero")


async def test_an_offering_short_of_capacity_launches_nothing_partial(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    """Ebb launches all or nothing (RunInstances with MinCount = MaxCount): when EC2 has
    fewer c6i.xlarge than a launch asks for, it launches none and says so, and Ebb
    plans the pods again on what is left (another zone, then the next type); the one
    c6i.xlarge EC2 still has may be used by a smaller launch, never more."""
    ce = name("short")
    local_aws.faults([insufficient_capacity("c6i.xlarge", capacity=1)])
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(ce, local_aws, type="EC2", instanceTypes=["c6i.xlarge", "m6i.xlarge"]),
    )
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    # Six pods: two instances of either type.
    await kube_client.create(
        kube.JOBS, batch_job("short", f"{ce}-q", pods=6, memory="1Gi", run_seconds=3), namespace
    )
    await wait_for(lambda: job_succeeded(kube_client, namespace, "short"), 150, message="job")
    by_type: dict[str, int] = {}
    for instance in local_aws.instances(ce):
        by_type[instance["InstanceType"]] = by_type.get(instance["InstanceType"], 0) + 1
    assert by_type.get("c6i.xlarge", 0) <= 1, by_type
    assert by_type.get("m6i.xlarge", 0) >= 1, by_type
    refusals = [
        e["message"]
        for e in await events_of(kube_client, ce)
        if e["reason"] == "InsufficientCapacity"
    ]
    assert refusals, "no InsufficientCapacity event"
    assert all(m.startswith("c6i.xlarge/us-east-1") for m in refusals), refusals
    assert "InsufficientInstanceCapacity" in refusals[0]
    status = await ce_status(kube_client, ce)
    assert any(o.startswith("c6i.xlarge/") for o in status["unavailableOfferings"])
    for instance in local_aws.live(ce):  # every instance became a node
        nodes = await environment_nodes(kube_client, ce)
        assert any(n["spec"]["providerID"].endswith(instance["InstanceId"]) for n in nodes)
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 60, message="to zero")


THROTTLED = {"RunInstances": 2, "DescribeInstances": 3, "TerminateInstances": 2}


async def test_throttling_of_every_call_is_retried_with_backoff_and_leaks_nothing(
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    autoscaler: Process,
    setup: Any,
) -> None:
    """The autoscaler's own calls (its User-Agent says ebb-autoscaler) are throttled: the
    first launches, listings and terminations. Each is retried with backoff (the delays
    are unit-tested in tests/unit/test_aws.py) and counted; the job runs, every node
    goes, every instance is terminated."""
    ce = name("throttled")
    retries = 'ebb_autoscaler_ec2_retries_total{{operation="{}"}}'
    before = {op: metric(autoscaler.ops_url, retries.format(op)) for op in THROTTLED}
    await setup(
        kube.COMPUTE_ENVIRONMENTS, compute_environment(ce, local_aws, instanceTypes=["c6i.large"])
    )
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    local_aws.faults(
        [
            {
                "action": operation,
                "agent": "ebb-autoscaler",
                "error": "RequestLimitExceeded",
                "status": 503,
                "times": times,
            }
            for operation, times in THROTTLED.items()
        ]
    )
    await kube_client.create(
        kube.JOBS, batch_job("throttled", f"{ce}-q", pods=2, memory="1Gi"), namespace
    )
    await wait_for(lambda: job_succeeded(kube_client, namespace, "throttled"), 120, message="job")
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 60, message="to zero")
    assert all(
        i["State"]["Name"] in ("shutting-down", "terminated") for i in local_aws.instances(ce)
    )
    after = {op: metric(autoscaler.ops_url, retries.format(op)) for op in THROTTLED}
    assert {op: after[op] - before[op] for op in THROTTLED} == THROTTLED


async def _last_launch_error(client: kube.KubeClient, ce: str) -> str:
    return str((await ce_status(client, ce)).get("lastLaunchError", ""))
