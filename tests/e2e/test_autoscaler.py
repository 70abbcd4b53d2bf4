"""The autoscaler end to end: the real control plane, the local AWS (moto) and the
instance-boot bridge, with the daemon as a real subprocess."""

from __future__ import annotations

import asyncio
import datetime
from functools import partial
from typing import Any

import orjson
import pytest

from ebb import catalog, keys, kube
from local_stack.aws import (
    CLUSTER_NAME,
    LocalAws,
    as_async,
    batch_job,
    compute_environment,
    environment_nodes,
    event_reasons,
    events_of,
    has_event,
    insufficient_capacity,
    job_succeeded,
    launch_token,
    launched_type,
    metric,
    name,
    pods_of,
    scaled_to_zero,
    status_is,
)
from local_stack.batch import annotation, wait_state
from local_stack.builders import job_queue
from local_stack.harness import Process, wait_for

CATALOG = catalog.shipped_catalog()


async def test_scale_from_zero_for_cpu_and_gpu_jobs_and_back_to_zero(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    cpu_ce, gpu_ce = name("cpu"), name("gpu")
    await setup(kube.COMPUTE_ENVIRONMENTS, compute_environment(cpu_ce, local_aws))
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(gpu_ce, local_aws, type="EC2", instanceTypes=["g4dn", "g5", "c6i"]),
    )
    await setup(kube.JOB_QUEUES, job_queue(f"{cpu_ce}-q", cpu_ce))
    await setup(kube.JOB_QUEUES, job_queue(f"{gpu_ce}-q", gpu_ce))
    assert not local_aws.live(cpu_ce) and not local_aws.live(gpu_ce)
    await kube_client.create(kube.JOBS, batch_job("cpu", f"{cpu_ce}-q", pods=6), namespace)
    await kube_client.create(
        kube.JOBS, batch_job("gpu", f"{gpu_ce}-q", pods=2, cpu="2", memory="8Gi", gpu=1), namespace
    )
    for job in ("cpu", "gpu"):
        await wait_for(partial(job_succeeded, kube_client, namespace, job), 90, message=job)

    nodes = [n for ce in (cpu_ce, gpu_ce) for n in await environment_nodes(kube_client, ce)]
    node_types = {
        n["metadata"]["name"]: n["metadata"]["labels"][keys.INSTANCE_TYPE_LABEL] for n in nodes
    }
    for n in nodes:  # registered as the user data told the kubelet to
        assert {"key": keys.BATCH_NODE_TAINT, "value": "", "effect": "NoSchedule"} in [
            {k: t.get(k, "") for k in ("key", "value", "effect")} for t in n["spec"]["taints"]
        ]
        assert n["spec"]["providerID"].startswith("aws:///us-east-1")
    for job, wants_gpu in (("cpu", False), ("gpu", True)):
        for pod in await pods_of(kube_client, namespace, job):
            t = CATALOG.get(node_types.get(pod["spec"]["nodeName"], ""))
            assert t is not None, f"{pod['metadata']['name']} ran on a node Ebb did not launch"
            assert (t.nvidia_gpus > 0) == wants_gpu, (job, t.name)
    for instance in local_aws.instances(gpu_ce):
        assert launched_type(instance["InstanceType"]).gpus
        assert "InstanceLifecycle" not in instance  # EC2 = On-Demand
    assert all(i.get("InstanceLifecycle") == "spot" for i in local_aws.instances(cpu_ce))

    # Idle: every node goes after scaleDownDelaySeconds (3 s), then zero instances.
    for ce in (cpu_ce, gpu_ce):
        await wait_for(partial(scaled_to_zero, kube_client, local_aws, ce), 60, message=ce)
    status = (await kube_client.get(kube.COMPUTE_ENVIRONMENTS, cpu_ce))["status"]
    assert status["status"] == "VALID"
    await wait_for(
        lambda: status_is(kube_client, cpu_ce, desiredvCpus=0, nodes=0), 20, message="status"
    )


async def test_max_vcpus_is_never_exceeded(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = name("capped")
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(ce, local_aws, maxvCpus=8, instanceTypes=["c6i"]),
    )
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    await kube_client.create(
        kube.JOBS, batch_job("many", f"{ce}-q", pods=20, run_seconds=3), namespace
    )
    peak = 0

    async def done() -> bool:
        nonlocal peak
        vcpus = sum(launched_type(i["InstanceType"]).vcpus for i in local_aws.live(ce))
        peak = max(peak, vcpus)
        return await job_succeeded(kube_client, namespace, "many")

    await wait_for(done, 120, interval=0.3, message="20 pods through an 8-vCPU environment")
    assert 0 < peak <= 8


async def test_min_vcpus_are_kept_warm_then_released(
    kube_client: kube.KubeClient, local_aws: LocalAws, setup: Any
) -> None:
    ce = name("warm")
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(ce, local_aws, minvCpus=2, instanceTypes=["c6i", "m6i"]),
    )
    (instance,) = await wait_for(lambda: as_async(local_aws.live(ce)), 30, message="warm")
    assert instance["InstanceType"] == "c6i.large"  # the cheapest 2 vCPUs
    await wait_for(lambda: status_is(kube_client, ce, desiredvCpus=2, nodes=1), 20)
    await asyncio.sleep(8)  # idle past scaleDownDelaySeconds (3 s) and the drain grace
    assert [i["InstanceId"] for i in local_aws.live(ce)] == [instance["InstanceId"]]
    await kube_client.patch(kube.COMPUTE_ENVIRONMENTS, ce, {"spec": {"minvCpus": 0}})
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 30, message="to zero")


async def test_disabled_environment_launches_nothing_until_enabled(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = name("off")
    await setup(kube.COMPUTE_ENVIRONMENTS, compute_environment(ce, local_aws, state="DISABLED"))
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    await kube_client.create(kube.JOBS, batch_job("waits", f"{ce}-q"), namespace)
    # Admission holds the job back (no pod exists), and nothing is launched for it.
    waiting = await wait_state(kube_client, namespace, "waits", "RUNNABLE")
    assert (
        annotation(waiting, keys.REASON_CODE) == "MISCONFIGURATION:COMPUTE_ENVIRONMENT_UNAVAILABLE"
    )
    assert f"{ce} is DISABLED" in annotation(waiting, keys.REASON)
    await asyncio.sleep(3)
    assert local_aws.instances(ce) == []
    await kube_client.patch(kube.COMPUTE_ENVIRONMENTS, ce, {"spec": {"state": "ENABLED"}})
    await wait_for(lambda: job_succeeded(kube_client, namespace, "waits"), 60)


async def test_insufficient_capacity_on_the_first_type_falls_back(
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    autoscaler: Process,
    setup: Any,
) -> None:
    ce = name("ice")
    local_aws.faults(
        [
            insufficient_capacity("c6i.large"),
            # ...and EC2 throttles the next two launch requests.
            {"action": "RunInstances", "error": "RequestLimitExceeded", "status": 503, "times": 2},
        ]
    )
    retries = metric(
        autoscaler.ops_url, 'ebb_autoscaler_ec2_retries_total{operation="RunInstances"'
    )
    failures = metric(
        autoscaler.ops_url, f'ebb_autoscaler_launch_failures_total{{compute_environment="{ce}"'
    )
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(ce, local_aws, type="EC2", instanceTypes=["c6i.large", "m6i.large"]),
    )
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    await kube_client.create(
        kube.JOBS, batch_job("fallback", f"{ce}-q", cpu="500m", memory="1Gi"), namespace
    )
    await wait_for(lambda: job_succeeded(kube_client, namespace, "fallback"), 90)
    types = {i["InstanceType"] for i in local_aws.instances(ce)}
    assert types == {"m6i.large"}
    status = (await kube_client.get(kube.COMPUTE_ENVIRONMENTS, ce))["status"]
    assert any(o.startswith("c6i.large/") for o in status["unavailableOfferings"])
    assert {"InsufficientCapacity", "Launched"} <= await event_reasons(kube_client, ce)
    runs = 'ebb_autoscaler_ec2_retries_total{operation="RunInstances"'
    assert metric(autoscaler.ops_url, runs) - retries == 2  # throttling retried with backoff
    # One refusal per zone tried: three subnets, three zones.
    assert (
        metric(
            autoscaler.ops_url, f'ebb_autoscaler_launch_failures_total{{compute_environment="{ce}"'
        )
        - failures
        == 3
    )


# The seed's Spot-only retry strategy: retry host terminations, fail on anything else.
SPOT_ONLY = orjson.dumps(
    {
        "attempts": 3,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }
).decode()


async def test_a_reclaimed_spot_instance_ends_the_attempt_at_once_and_the_job_is_retried(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = name("spot")
    await setup(
        kube.COMPUTE_ENVIRONMENTS, compute_environment(ce, local_aws, instanceTypes=["c6i"])
    )
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    strategy = {keys.RETRY_STRATEGY: SPOT_ONLY}
    # Under the same strategy, a container that exits 1 is not retried.
    await kube_client.create(
        kube.JOBS,
        batch_job("exits", f"{ce}-q", run_seconds=1, exit_code=1, annotations=strategy),
        namespace,
    )
    exits = await wait_state(kube_client, namespace, "exits", "FAILED", timeout=120)
    assert exits["status"]["failed"] == 1
    assert annotation(exits, keys.REASON_CODE) == "FAILED:EXIT_RULE"
    (only,) = orjson.loads(annotation(exits, keys.ATTEMPTS))
    assert (only["exitCode"], only["statusReason"]) == (1, "Essential container in task exited")

    # KWOK would complete the pod after 40 s: only a prompt end of the attempt retries it.
    await kube_client.create(
        kube.JOBS,
        batch_job("interrupted", f"{ce}-q", run_seconds=40, annotations=strategy),
        namespace,
    )

    async def running_pod() -> dict[str, Any] | None:
        pods = await pods_of(kube_client, namespace, "interrupted")
        return next((p for p in pods if p["status"].get("phase") == "Running"), None)

    pod = await wait_for(running_pod, 60, message="the job's pod running")
    node = await kube_client.get(kube.NODES, pod["spec"]["nodeName"])
    instance_id = node["spec"]["providerID"].rsplit("/", 1)[-1]
    interrupt = await local_aws.interrupt(instance_id, notice_seconds=3)

    async def cordoned() -> bool:
        n = await kube_client.get(kube.NODES, node["metadata"]["name"])
        taints = {t["key"]: t.get("value") for t in n["spec"].get("taints") or ()}
        return (
            bool(n["spec"].get("unschedulable"))
            and taints.get(keys.DRAINING_TAINT) == "spot-interruption"
        )

    await wait_for(cordoned, 10, message="node cordoned on the interruption warning")
    assert await asyncio.wait_for(interrupt.wait(), 30) == 0
    done = await wait_state(kube_client, namespace, "interrupted", "SUCCEEDED", timeout=120)
    assert annotation(done, keys.REASON) == "succeeded after 2 attempt(s)"
    assert (done["status"].get("failed"), done["status"].get("succeeded")) == (1, 1)
    lost, retried = orjson.loads(annotation(done, keys.ATTEMPTS))
    assert lost["pod"] == pod["metadata"]["name"]
    assert lost["statusReason"] == f"Host EC2 (instance {instance_id}) terminated."
    assert lost["exitCode"] is None  # a host termination has none (nor has it on AWS)
    assert lost["stoppedAt"]
    # Ended before KWOK would have completed it (the autoscaler acts on EC2's notice).
    assert _epoch(lost["stoppedAt"]) < _epoch(lost["startedAt"]) + 40
    assert (retried["exitCode"], retried["statusReason"]) == (
        0,
        "Essential container in task exited",
    )
    assert retried["node"] != node["metadata"]["name"]
    # The autoscaler ended it (the bridge's stand-in for PodGC names no instance).
    events = await events_of(kube_client, ce)
    assert any(e["reason"] == "PodsLost" and instance_id in e["message"] for e in events), [
        (e["reason"], e["message"]) for e in events
    ]
    assert not [
        p
        for p in await pods_of(kube_client, namespace, "interrupted")
        if p["spec"].get("nodeName") == node["metadata"]["name"]
    ]
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 60, message="to zero")


def _epoch(timestamp: str) -> float:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


KILL_MOMENTS = {
    # EC2 launched the instances, but the daemon dies before it hears so.
    "answer-lost": {"action": "RunInstances", "delay_after": 30},
    # The daemon wrote its intent and sent the launch, which never reached EC2.
    "request-lost": {
        "action": "RunInstances",
        "delay_before": 30,
        "error": "ServiceUnavailable",
        "status": 503,
    },
}


@pytest.fixture(params=sorted(KILL_MOMENTS))
def kill_moment(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_killing_the_daemon_mid_scale_up_leaves_no_orphan_and_no_duplicate(
    kube_client: kube.KubeClient,
    namespace: str,
    *,
    local_aws: LocalAws,
    autoscaler: Process,
    setup: Any,
    kill_moment: str,
) -> None:
    moment = kill_moment
    ce = name("crash")
    await setup(
        kube.COMPUTE_ENVIRONMENTS, compute_environment(ce, local_aws, instanceTypes=["c6i.xlarge"])
    )
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    local_aws.faults([KILL_MOMENTS[moment]])
    await kube_client.create(
        kube.JOBS, batch_job("crash", f"{ce}-q", pods=6, run_seconds=2), namespace
    )

    async def intents() -> list[dict[str, Any]]:
        status = (await kube_client.get(kube.COMPUTE_ENVIRONMENTS, ce)).get("status") or {}
        return list(status.get("launches") or [])

    await wait_for(intents, 60, message="a launch intent")
    if moment == "answer-lost":
        await wait_for(lambda: as_async(local_aws.instances(ce)), 30, message="instances")
    else:
        await asyncio.sleep(2)  # the request is in the air, held before EC2
        assert local_aws.instances(ce) == []
    written = await intents()
    autoscaler.kill()
    local_aws.faults([])
    await asyncio.to_thread(autoscaler.start)  # returns once it is ready again
    await wait_for(lambda: job_succeeded(kube_client, namespace, "crash"), 120)
    instances = local_aws.instances(ce)
    # No duplicate: every instance comes from the intents written before the kill, with
    # exactly the count each asked for.
    for intent in written:
        mine = [i for i in instances if launch_token(i) == intent["token"]]
        assert len(mine) == intent["count"]
    assert {launch_token(i) for i in instances} == {i["token"] for i in written}
    await wait_for(lambda: status_is(kube_client, ce, launches=[]), 20, message="crossed out")
    for instance in local_aws.live(ce):  # no orphan: each live instance is a node
        nodes = await environment_nodes(kube_client, ce)
        assert any(n["spec"]["providerID"].endswith(instance["InstanceId"]) for n in nodes)
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 60, message="to zero")


async def test_invalid_compute_environment_says_why(
    kube_client: kube.KubeClient, local_aws: LocalAws, setup: Any
) -> None:
    cases = {
        name("typo"): (
            {"instanceTypes": ["c9z"]},
            "instanceTypes: unknown instance type or family: c9z",
        ),
        name("nosubnet"): (
            {"subnets": ["subnet-0badc0de"]},
            "subnets: not found in EC2: subnet-0badc0de",
        ),
    }
    for ce, (spec, _) in cases.items():
        await setup(kube.COMPUTE_ENVIRONMENTS, compute_environment(ce, local_aws, **spec))
    for ce, (_, reason) in cases.items():
        await wait_for(
            partial(status_is, kube_client, ce, status="INVALID", statusReason=reason),
            20,
            message=f"{ce} INVALID",
        )
        await wait_for(partial(has_event, kube_client, ce, "Invalid"), 10, message="event")


async def test_an_instance_that_never_becomes_a_node_is_terminated(
    local_aws: LocalAws, autoscaler: Process
) -> None:
    ec2 = local_aws.client("ec2")
    tags = [
        {"Key": keys.TAG_CLUSTER, "Value": CLUSTER_NAME},
        {"Key": keys.TAG_COMPUTE_ENVIRONMENT, "Value": "lost"},
    ]
    # A type the bridge does not know, so it never boots into a node.
    (instance,) = ec2.run_instances(
        ImageId="ami-0123456789abcdef0",
        InstanceType="x9.unbootable",
        MinCount=1,
        MaxCount=1,
        SubnetId=local_aws.info["subnets"][0],
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"]
    label = (
        'ebb_autoscaler_terminations_total{compute_environment="lost",'
        'reason="registration-timeout"}'
    )
    before = metric(autoscaler.ops_url, label)

    async def terminated() -> bool:
        state = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])
        instance_state: str = state["Reservations"][0]["Instances"][0]["State"]["Name"]
        return instance_state != "running"

    await wait_for(terminated, 40, message="the registration timeout (15 s)")
    assert metric(autoscaler.ops_url, label) - before == 1
