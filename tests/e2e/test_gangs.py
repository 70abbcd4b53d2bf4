"""Multi-node parallel jobs (gangs) end to end: the real control plane, the local EC2,
the bridge's KWOK nodes and Ebb's daemons. A gang is admitted, placed and bound all or
nothing, one pod per node, with AWS Batch's multi-node variables."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from ebb import keys, kube
from tests.e2e.autoscaling import (
    LocalAws,
    Process,
    batch_job,
    compute_environment,
    events_of,
    job_queue,
    job_succeeded,
    launch_token,
    metric,
    name,
    scaled_to_zero,
)
from tests.e2e.cluster import wait_for

# One gang pod (3 vCPUs) per c6i.xlarge (4 vCPUs): the autoscaler launches a node per pod.
GANG_CPU = "3"


def gang_job(
    job: str, queue: str, nodes: int, cpu: str = GANG_CPU, **kwargs: Any
) -> dict[str, Any]:
    body = batch_job(job, queue, pods=nodes, cpu=cpu, memory="2Gi", **kwargs)
    body["metadata"]["annotations"][keys.NODES] = str(nodes)
    body["spec"]["completionMode"] = "Indexed"
    return body


def environment(local_aws: LocalAws, ce: str, max_vcpus: int) -> dict[str, Any]:
    return compute_environment(ce, local_aws, maxvCpus=max_vcpus, instanceTypes=["c6i.xlarge"])


class PodLog:
    """Every pod event of a namespace, in the API server's order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None, str]] = []  # (job, pod, node, phase)

    def alive_at(self, *, bound_only: bool = True) -> list[dict[str, tuple[str, str]]]:
        """After each event: pod -> (job, node) of the pods not finished (and bound)."""
        states: dict[str, tuple[str, str]] = {}
        out = []
        for job, pod, node, phase in self.events:
            if (node or not bound_only) and phase not in ("Succeeded", "Failed", "Deleted"):
                states[pod] = (job, node or "")
            else:
                states.pop(pod, None)
            out.append(dict(states))
        return out


@contextlib.asynccontextmanager
async def pod_log(client: kube.KubeClient, namespace: str) -> AsyncIterator[PodLog]:
    log = PodLog()

    async def watch() -> None:
        async with client.stream(kube.PODS.path(namespace), {"watch": "1"}) as content:
            async for line in content:
                event = orjson.loads(line)
                pod = event["object"]
                deleted = event["type"] == "DELETED"
                log.events.append(
                    (
                        pod["metadata"].get("labels", {}).get("batch.kubernetes.io/job-name", ""),
                        pod["metadata"]["name"],
                        None if deleted else pod["spec"].get("nodeName"),
                        "Deleted" if deleted else pod.get("status", {}).get("phase", ""),
                    )
                )

    task = asyncio.create_task(watch())
    try:
        await asyncio.sleep(0.5)  # the watch is open before anything is created
        yield log
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    env = pod["spec"]["containers"][0]["env"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in env}


async def test_gang_from_zero_is_bound_together_with_its_variables_and_service(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = name("gang")
    await setup(kube.COMPUTE_ENVIRONMENTS, environment(local_aws, ce, 16))
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    job = "train"
    body = gang_job(job, f"{ce}-q", 4, run_seconds=3)
    body["metadata"]["annotations"][keys.MAIN_NODE_INDEX] = "1"
    async with pod_log(kube_client, namespace) as log:
        await kube_client.create(kube.JOBS, body, namespace)
        await wait_for(lambda: job_succeeded(kube_client, namespace, job), 120, message=job)
    pods = {p for j, p, _, _ in log.events if j == job}
    assert len(pods) == 4  # one attempt, four pods
    # All or nothing: no pod of the gang ran while another had no node.
    first_bound: dict[str, int] = {}
    first_running = None
    for i, (_, pod, node, phase) in enumerate(log.events):
        if node and pod not in first_bound:
            first_bound[pod] = i
        if phase == "Running" and first_running is None:
            first_running = i
    assert first_running is not None
    assert max(first_bound.values()) < first_running, log.events
    # One pod per node.
    nodes = {node for _, _, node, _ in log.events if node}
    assert len(nodes) == 4
    listed = await kube_client.list(
        kube.PODS, namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
    )
    for pod in listed.items:
        env = env_of(pod)
        assert env["AWS_BATCH_JOB_NUM_NODES"] == "4"
        assert env["AWS_BATCH_JOB_MAIN_NODE_INDEX"] == "1"
        assert env["AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"] == (
            f"{job}-1.{job}.{namespace}.svc"
        )
        index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        assert env["AWS_BATCH_JOB_NODE_INDEX"]["fieldRef"]["fieldPath"] == index
        assert "AWS_BATCH_JOB_ARRAY_INDEX" not in env  # not an array job
        assert pod["spec"]["subdomain"] == job
        assert (
            pod["spec"]["hostname"]
            == f"{job}-{pod['metadata']['annotations']['batch.kubernetes.io/job-completion-index']}"
        )
    service = await kube_client.get(kube.SERVICES, job, namespace)
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["kind"] == "Job"
    # Removed with its Job (by the garbage collector).
    await kube_client.delete(kube.JOBS, job, namespace)

    async def service_gone() -> bool:
        return await kube_client.get_or_none(kube.SERVICES, job, namespace) is None

    await wait_for(service_gone, 60, message="the gang's Service is deleted with its Job")


async def test_a_gang_of_small_pods_gets_a_new_instance_per_pod_then_scales_to_zero(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    # c6i and m6i: the cheapest types that hold one of these pods hold several, so a
    # plan that packed them would launch too few nodes and the gang would wait forever.
    ce = name("small")
    await setup(kube.COMPUTE_ENVIRONMENTS, compute_environment(ce, local_aws, maxvCpus=64))
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    job = "sweep"
    async with pod_log(kube_client, namespace) as log:
        await kube_client.create(kube.JOBS, gang_job(job, f"{ce}-q", 4, cpu="1"), namespace)
        await wait_for(lambda: job_succeeded(kube_client, namespace, job), 120, message=job)
    assert len(local_aws.instances(ce)) == 4  # one instance per pod, nothing more
    first_running = next(i for i, e in enumerate(log.events) if e[3] == "Running")
    bound = {pod: node for _, pod, node, _ in log.events[:first_running] if node}
    # All four bound before any runs, each on a node of its own.
    assert len(bound) == len(set(bound.values())) == 4, log.events
    launched = [e["message"] for e in await events_of(kube_client, ce) if e["reason"] == "Launched"]
    assert launched and all(f"multi-node job {namespace}/{job}" in m for m in launched), launched
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 60, message="to zero")


async def test_no_other_pod_shares_a_node_with_a_gang_pod(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = name("excl")
    await setup(kube.COMPUTE_ENVIRONMENTS, environment(local_aws, ce, 24))
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    async with pod_log(kube_client, namespace) as log:
        await kube_client.create(
            kube.JOBS, gang_job("gang", f"{ce}-q", 2, run_seconds=8), namespace
        )
        # Half a vCPU each: they would fit beside a gang pod (3 of c6i.xlarge's 4).
        plain = batch_job("plain", f"{ce}-q", pods=8, cpu="500m", memory="256Mi", run_seconds=6)
        await kube_client.create(kube.JOBS, plain, namespace)
        for job in ("gang", "plain"):
            await wait_for(lambda j=job: job_succeeded(kube_client, namespace, j), 150, message=job)
    for active in log.alive_at():
        gang_nodes = {node for job, node in active.values() if job == "gang"}
        others = [node for job, node in active.values() if job != "gang"]
        assert not gang_nodes & set(others), active


async def test_two_gangs_over_max_vcpus_run_one_after_the_other(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = name("two")
    await setup(kube.COMPUTE_ENVIRONMENTS, environment(local_aws, ce, 16))
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    async with pod_log(kube_client, namespace) as log:
        for job in ("first", "second"):  # 3 nodes of 4 vCPUs each: 12 of 16
            await kube_client.create(
                kube.JOBS, gang_job(job, f"{ce}-q", 3, run_seconds=4), namespace
            )
        for job in ("first", "second"):
            await wait_for(lambda j=job: job_succeeded(kube_client, namespace, j), 180, message=job)
    assert {j for j, _, _, _ in log.events} == {"first", "second"}
    # Never admitted side by side: no pod of one exists (even unbound) while one of the
    # other is unfinished.
    for alive in log.alive_at(bound_only=False):
        assert len({job for job, _ in alive.values()}) <= 1, alive


async def test_a_gang_larger_than_its_environment_is_refused_naming_the_limit(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = name("small")
    await setup(kube.COMPUTE_ENVIRONMENTS, environment(local_aws, ce, 8))
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    with pytest.raises(kube.ApiError) as refused:
        await kube_client.create(kube.JOBS, gang_job("big", f"{ce}-q", 4), namespace)
    message = refused.value.message
    assert f"metadata.annotations[{keys.NODES}]" in message, message
    assert f"compute environment {ce}" in message and "at most 2 nodes" in message, message
    assert "maxvCpus 8" in message, message


async def test_a_gang_beside_its_environments_empty_nodes_gets_the_rest_in_their_zone(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    """A gang takes empty nodes in one zone and launches what it still needs there: a
    gang never spans zones. (Before the refusal test below: it marks c6i.xlarge
    unavailable in every zone for a while.)"""
    ce = name("zone")
    body = environment(local_aws, ce, 24)
    body["spec"]["scaleDownDelaySeconds"] = 90  # the first gang's nodes stay, empty
    await setup(kube.COMPUTE_ENVIRONMENTS, body)
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    async with pod_log(kube_client, namespace) as log:
        for job, nodes in (("first", 2), ("second", 3)):
            await kube_client.create(kube.JOBS, gang_job(job, f"{ce}-q", nodes), namespace)
            await wait_for(lambda j=job: job_succeeded(kube_client, namespace, j), 120, message=job)
    used = {
        job: {node for j, _, node, _ in log.events if j == job and node}
        for job in ("first", "second")
    }
    assert used["first"] < used["second"], used  # the empty nodes were taken
    instances = local_aws.instances(ce)
    assert len(instances) == 3, [i["InstanceType"] for i in instances]
    zones = {i["Placement"]["AvailabilityZone"] for i in instances}
    assert len(zones) == 1, zones


async def test_a_gang_refused_for_lack_of_capacity_launches_nothing_partial_and_falls_back(
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    autoscaler: Process,
    setup: Any,
) -> None:
    """EC2 has only 2 c6i.xlarge left (in any zone): the gang's launch of 3 is refused
    whole in each zone (RunInstances with MinCount = MaxCount = 3, so EC2 launches
    none), and the whole gang falls back to the next type, in one launch, one zone."""
    ce = name("atomic")
    local_aws.faults(
        [
            {
                "action": "RunInstances",
                "match": {"InstanceType": "c6i.xlarge"},
                "capacity": 2,
                "error": "InsufficientInstanceCapacity",
                "status": 500,
            }
        ]
    )
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(
            ce, local_aws, type="EC2", maxvCpus=16, instanceTypes=["c6i.xlarge", "m6i.xlarge"]
        ),
    )
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    launches = (
        'ebb_autoscaler_launches_total{capacity_type="on-demand",'
        f'compute_environment="{ce}",reason="multi-node-job"}}'
    )
    job = "train"
    await kube_client.create(kube.JOBS, gang_job(job, f"{ce}-q", 3, run_seconds=2), namespace)
    await wait_for(lambda: job_succeeded(kube_client, namespace, job), 150, message=job)
    instances = local_aws.instances(ce)
    # Nothing partial: not one c6i.xlarge (two were to be had); the whole gang on the
    # next type, in one zone, from one request.
    assert sorted(i["InstanceType"] for i in instances) == ["m6i.xlarge"] * 3, instances
    assert len({i["Placement"]["AvailabilityZone"] for i in instances}) == 1
    assert len({launch_token(i) for i in instances}) == 1
    events = await events_of(kube_client, ce)
    refusals = [e["message"] for e in events if e["reason"] == "InsufficientCapacity"]
    assert len(refusals) == 3, refusals  # one per zone, then the next type
    gang = f"multi-node job {namespace}/{job}"
    for message in refusals:
        assert message.startswith("c6i.xlarge/us-east-1"), message
        assert message.endswith(f"none of 3 launched ({gang})"), message
    (launched,) = [e["message"] for e in events if e["reason"] == "Launched"]
    assert launched.startswith("launched 3 x m6i.xlarge (on-demand) in us-east-1")
    assert f"for multi-node-job ({gang})" in launched
    assert metric(autoscaler.ops_url, launches) == 3  # counted, with the gang's reason
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 60, message="to zero")
