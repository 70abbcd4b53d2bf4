"""Multi-node parallel jobs (gangs) end to end: the real control plane, the local EC2,
the bridge's KWOK nodes and Ebb's daemons. A gang is admitted, placed and bound all or
nothing, one pod per node, with AWS Batch's multi-node variables."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import orjson
import pytest

from ebb import keys, kube
from local_stack.aws import (
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
    pods_of,
    scaled_to_zero,
)
from local_stack.batch import annotation, wait_state
from local_stack.builders import job_queue
from local_stack.harness import LocalCluster, Process, wait_for
from tests.e2e.test_kubectl_plugin import kubectl_ebb

# One gang pod (3 vCPUs) per c6i.xlarge (4 vCPUs): the autoscaler launches a node per pod.
GANG_CPU = "3"


def gang_job(
    job: str, queue: str, nodes: int, cpu: str = GANG_CPU, **kwargs: Any
) -> dict[str, Any]:
    body = batch_job(job, queue, pods=nodes, cpu=cpu, memory="2Gi", **kwargs)
    body["metadata"]["annotations"][keys.NODES] = str(nodes)
    body["spec"]["completionMode"] = "Indexed"
    return body


def environment(
    local_aws: LocalAws, ce: str, max_vcpus: int, instance_type: str = "c6i.xlarge"
) -> dict[str, Any]:
    return compute_environment(ce, local_aws, maxvCpus=max_vcpus, instanceTypes=[instance_type])


async def environment_and_queue(
    setup: Any, local_aws: LocalAws, prefix: str, max_vcpus: int, instance_type: str = "c6i.xlarge"
) -> str:
    """A Spot environment of `max_vcpus` of one instance type and its queue `<ce>-q`; the
    environment's name."""
    ce = name(prefix)
    await setup(kube.COMPUTE_ENVIRONMENTS, environment(local_aws, ce, max_vcpus, instance_type))
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    return ce


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
    """A 4-node training gang, a GPU each, on GPU Spot capacity from zero."""
    ce = await environment_and_queue(setup, local_aws, "gang", 16, "g4dn.xlarge")
    job = "train"
    body = gang_job(job, f"{ce}-q", 4, run_seconds=3, gpu=1)
    body["metadata"]["annotations"][keys.MAIN_NODE_INDEX] = "1"
    async with pod_log(kube_client, namespace) as log:
        await kube_client.create(kube.JOBS, body, namespace)
        await wait_for(lambda: job_succeeded(kube_client, namespace, job), 120, message=job)
    pods = {p for j, p, _, _ in log.events if j == job}
    assert len(pods) == 4  # one attempt, four pods
    # All or nothing: no pod of the gang ran while another had no node.
    first_bound: dict[str, int] = {}
    first_running = None
    for i, (_, pod_name, node, phase) in enumerate(log.events):
        if node and pod_name not in first_bound:
            first_bound[pod_name] = i
        if phase == "Running" and first_running is None:
            first_running = i
    assert first_running is not None
    assert max(first_bound.values()) < first_running, log.events
    # One pod per node: four g4dn.xlarge Spot instances.
    nodes = {node for _, _, node, _ in log.events if node}
    assert len(nodes) == 4
    instances = local_aws.instances(ce)
    assert len(instances) == 4, instances
    assert {i["InstanceType"] for i in instances} == {"g4dn.xlarge"}
    assert all(i.get("InstanceLifecycle") == "spot" for i in instances)
    assert {i["PrivateDnsName"] for i in instances} == nodes
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
    ce = await environment_and_queue(setup, local_aws, "excl", 24)
    async with pod_log(kube_client, namespace) as log:
        await kube_client.create(
            kube.JOBS, gang_job("gang", f"{ce}-q", 2, run_seconds=8), namespace
        )
        # Half a vCPU each: they would fit beside a gang pod (3 of c6i.xlarge's 4).
        plain = batch_job("plain", f"{ce}-q", pods=8, cpu="500m", memory="256Mi", run_seconds=6)
        await kube_client.create(kube.JOBS, plain, namespace)
        for job in ("gang", "plain"):
            await wait_for(partial(job_succeeded, kube_client, namespace, job), 150, message=job)
    for active in log.alive_at():
        gang_nodes = {node for job, node in active.values() if job == "gang"}
        others = [node for job, node in active.values() if job != "gang"]
        assert not gang_nodes & set(others), active


async def test_two_gangs_over_max_vcpus_run_one_after_the_other(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = await environment_and_queue(setup, local_aws, "two", 16)
    async with pod_log(kube_client, namespace) as log:
        for job in ("first", "second"):  # 3 nodes of 4 vCPUs each: 12 of 16
            await kube_client.create(
                kube.JOBS, gang_job(job, f"{ce}-q", 3, run_seconds=4), namespace
            )
        for job in ("first", "second"):
            await wait_for(partial(job_succeeded, kube_client, namespace, job), 180, message=job)
    assert {j for j, _, _, _ in log.events} == {"first", "second"}
    # Never admitted side by side: no pod of one exists (even unbound) while one of the
    # other is unfinished.
    for alive in log.alive_at(bound_only=False):
        assert len({job for job, _ in alive.values()}) <= 1, alive


async def test_a_gang_larger_than_its_environment_is_refused_naming_the_limit(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = await environment_and_queue(setup, local_aws, "small", 8)
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
            await wait_for(partial(job_succeeded, kube_client, namespace, job), 120, message=job)
    used = {
        job: {node for j, _, node, _ in log.events if j == job and node}
        for job in ("first", "second")
    }
    assert used["first"] < used["second"], used  # the empty nodes were taken
    instances = local_aws.instances(ce)
    assert len(instances) == 3, [i["InstanceType"] for i in instances]
    zones = {i["Placement"]["AvailabilityZone"] for i in instances}
    assert len(zones) == 1, zones


def two_environments_gang(job: str, queue: str, nodes: int) -> dict[str, Any]:
    """A gang free to go anywhere its queue's environments are (no test-only selector)."""
    body = gang_job(job, queue, nodes)
    del body["spec"]["template"]["spec"]["nodeSelector"]
    return body


async def test_a_gang_never_spans_two_environments_of_its_queue(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    setup: Any,
) -> None:
    """A queue on environments A then B, with empty nodes EC2 cannot add to (c5.xlarge:
    5 left, and warm-up gangs take them: 2 in A, 3 in B, each gang in one zone). A gang
    of 3 takes B's three, not A's two and one of B's; a gang of 4, which neither holds
    alone, waits although the 5 empty nodes together would hold it, and `kubectl ebb
    why` says why. (c5.xlarge: no other test uses it, as the autoscaler then avoids it.)"""
    a, b = name("one-a"), name("one-b")
    local_aws.faults(
        [
            {
                "action": "RunInstances",
                "match": {"InstanceType": "c5.xlarge"},
                "capacity": 5,
                "error": "InsufficientInstanceCapacity",
                "status": 500,
            }
        ]
    )
    for ce in (a, b):
        body = compute_environment(ce, local_aws, maxvCpus=24, instanceTypes=["c5.xlarge"])
        body["spec"]["scaleDownDelaySeconds"] = 120  # the warm-up's nodes stay, empty
        await setup(kube.COMPUTE_ENVIRONMENTS, body)
        await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    queue = f"{a}-both-q"
    await setup(kube.JOB_QUEUES, job_queue(queue, a, b))
    for job, ce, nodes in (("warm-a", a, 2), ("warm-b", b, 3)):
        await kube_client.create(kube.JOBS, gang_job(job, f"{ce}-q", nodes), namespace)
    for job in ("warm-a", "warm-b"):
        await wait_for(partial(job_succeeded, kube_client, namespace, job), 120, message=job)
    async with pod_log(kube_client, namespace) as log:
        await kube_client.create(kube.JOBS, two_environments_gang("fits", queue, 3), namespace)
        await wait_for(lambda: job_succeeded(kube_client, namespace, "fits"), 60, message="fits")
    listed = await kube_client.list(kube.NODES)
    group_of = {
        node["metadata"]["name"]: (
            node["metadata"]["labels"].get(keys.COMPUTE_ENVIRONMENT_LABEL),
            node["metadata"]["labels"].get(keys.ZONE_LABEL),
        )
        for node in listed.items
    }
    groups = {group_of[node] for j, _, node, _ in log.events if j == "fits" and node}
    assert len(groups) == 1 and next(iter(groups))[0] == b, groups
    # The gang of 4: admitted, its launches refused (nothing left), never bound in part.
    await kube_client.create(kube.JOBS, two_environments_gang("wide", queue, 4), namespace)
    gang = f"multi-node job {namespace}/wide"

    async def refused() -> bool:
        events = [*await events_of(kube_client, a), *await events_of(kube_client, b)]
        return any(e["reason"] == "InsufficientCapacity" and gang in e["message"] for e in events)

    await wait_for(refused, 60, message="the gang's launches refused")

    async def why_it_waits() -> str | None:
        why = kubectl_ebb(cluster, "why", "wide", "-n", namespace)
        return why if "in one compute environment and zone" in why else None

    why = await wait_for(why_it_waits, 60, message="why names the one (CE, zone) rule")
    assert "4 of 4 pods created, 0 bound to a node" in why, why
    assert (
        "multi-node job needs 4 empty nodes in one compute environment and zone for its 4 "
        f"unplaced pods; 5 empty nodes fit, at most 3 in one (ce {b}, zone"
    ) in why, why
    assert not [
        p for p in await pods_of(kube_client, namespace, "wide") if p["spec"].get("nodeName")
    ]
    assert len(local_aws.instances(a)) == 2 and len(local_aws.instances(b)) == 3
    await kube_client.delete(kube.JOBS, "wide", namespace)
    for ce in (a, b):
        await kube_client.patch(
            kube.COMPUTE_ENVIRONMENTS, ce, {"spec": {"scaleDownDelaySeconds": 1}}
        )
    for ce in (a, b):
        await wait_for(partial(scaled_to_zero, kube_client, local_aws, ce), 60, message="to zero")


async def test_a_gang_passes_over_an_environment_that_cannot_hold_it_whole(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    setup: Any,
) -> None:
    """A queue on environments A then B. A keeps one c6i.xlarge warm (minvCpus = maxvCpus
    = 4): an empty node one pod of the gang would fit, and nothing more to launch. B can
    launch the whole gang of 2, and it runs there, whole (AWS Batch runs a multi-node
    job in one environment, the first of its queue's that can run it); A's warm node is
    left alone and A is never said to be out of vCPUs for it."""
    a, b = name("warm-a"), name("then-b")
    warm = environment(local_aws, a, 4)
    warm["spec"]["minvCpus"] = 4
    await setup(kube.COMPUTE_ENVIRONMENTS, warm)
    await setup(kube.COMPUTE_ENVIRONMENTS, environment(local_aws, b, 16))
    queue = f"{a}-both-q"
    await setup(kube.JOB_QUEUES, job_queue(queue, a, b))

    async def warm_node() -> str | None:
        nodes = await environment_nodes(kube_client, a)
        return nodes[0]["metadata"]["name"] if len(nodes) == 1 else None

    warm_name = await wait_for(warm_node, 60, message=f"{a}'s warm node (minvCpus)")
    (warm_instance,) = [i["InstanceId"] for i in local_aws.instances(a)]
    body = gang_job("mpi", queue, 2, run_seconds=20)
    del body["spec"]["template"]["spec"]["nodeSelector"]  # free to go to A or B
    await kube_client.create(kube.JOBS, body, namespace)
    await wait_state(kube_client, namespace, "mpi", "RUNNING", timeout=90)
    b_nodes = {n["metadata"]["name"] for n in await environment_nodes(kube_client, b)}
    pods = await pods_of(kube_client, namespace, "mpi")
    assert {p["spec"].get("nodeName") for p in pods} == b_nodes and len(b_nodes) == 2, pods
    why = kubectl_ebb(cluster, "why", "mpi", "-n", namespace)
    for node in b_nodes:
        assert f"Running on {node}" in why, why
    assert warm_name not in why, why
    gang = f"multi-node job {namespace}/mpi"
    launched = [e["message"] for e in await events_of(kube_client, b) if e["reason"] == "Launched"]
    assert [m for m in launched if gang in m and m.startswith("launched 2 x c6i.xlarge")], launched
    assert not [e for e in await events_of(kube_client, a) if gang in e["message"]]

    async def a_available() -> dict[str, Any] | None:
        status = (await kube_client.get(kube.COMPUTE_ENVIRONMENTS, a)).get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or ()}
        capacity: dict[str, Any] | None = conditions.get("CapacityAvailable")
        return capacity if status.get("pendingPods") == 0 else None

    capacity = await wait_for(a_available, 30, message=f"{a}'s status recounted")
    assert capacity["status"] == "True", capacity  # not MaxvCpusReached: nothing waits on A
    await wait_for(lambda: job_succeeded(kube_client, namespace, "mpi"), 60, message="mpi")
    await wait_for(partial(scaled_to_zero, kube_client, local_aws, b), 60, message="B to zero")
    # A as it was: its one warm instance and node, nothing launched or taken for the gang.
    assert [i["InstanceId"] for i in local_aws.instances(a)] == [warm_instance]
    assert [n["metadata"]["name"] for n in await environment_nodes(kube_client, a)] == [warm_name]


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
    local_aws.faults([insufficient_capacity("c6i.xlarge", capacity=2)])
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


SPOT_IDIOM = orjson.dumps(
    {
        "attempts": 3,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }
).decode()


async def _pod_of_index(
    client: kube.KubeClient, namespace: str, job: str, index: int, phase: str | None = None
) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        for pod in await pods_of(client, namespace, job):
            annotations = pod["metadata"].get("annotations") or {}
            if annotations.get("batch.kubernetes.io/job-completion-index") == str(index) and (
                phase is None or pod["status"].get("phase") == phase
            ):
                return pod
        return None

    return await wait_for(found, 90, message=f"{job}'s pod of index {index}")


async def _set_run(client: kube.KubeClient, pod: dict[str, Any], **annotations: str) -> None:
    """Changes how KWOK runs one pod of the gang (before it runs: its pods wait unbound
    until every one has a node)."""
    assert pod["status"].get("phase") == "Pending", pod["status"]
    patch = {"metadata": {"annotations": {f"kwok.ebb.dev/{k}": v for k, v in annotations.items()}}}
    await client.patch(kube.PODS, pod["metadata"]["name"], patch, pod["metadata"]["namespace"])


def _attempts(raw: dict[str, Any]) -> dict[int, dict[int, dict[str, Any]]]:
    """The published record: attempt -> node index -> entry."""
    out: dict[int, dict[int, dict[str, Any]]] = {}
    for entry in orjson.loads(annotation(raw, keys.ATTEMPTS)):
        out.setdefault(entry["attempt"], {})[entry["index"]] = entry
    return out


def _succeeded_in_two_attempts(done: dict[str, Any]) -> dict[int, dict[int, dict[str, Any]]]:
    """A gang retried once as a whole and SUCCEEDED; its published attempt record."""
    assert annotation(done, keys.STATE) == "SUCCEEDED", annotation(done, keys.REASON)
    assert annotation(done, keys.GANG_ATTEMPT) == "2"
    record = _attempts(done)
    assert set(record) == {1, 2}, record
    return record


async def test_the_main_nodes_success_is_the_gangs(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = await environment_and_queue(setup, local_aws, "main", 12)
    # The other nodes would run 300 s: the job ends when the main node (index 1) exits 0.
    body = gang_job("lead", f"{ce}-q", 3, run_seconds=300)
    body["metadata"]["annotations"][keys.MAIN_NODE_INDEX] = "1"
    await kube_client.create(kube.JOBS, body, namespace)
    main = await _pod_of_index(kube_client, namespace, "lead", 1)
    await _set_run(kube_client, main, **{"run-seconds": "2"})
    done = await wait_state(kube_client, namespace, "lead", "SUCCEEDED", timeout=90)
    conditions = {c["type"] for c in done["status"]["conditions"] if c["status"] == "True"}
    assert "Complete" in conditions and "SuccessCriteriaMet" in conditions, conditions
    assert done["status"]["succeeded"] == 1  # the main node alone; the others were stopped
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 90, message="to zero")


async def test_a_failed_node_retries_the_whole_gang(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    setup: Any,
) -> None:
    ce = await environment_and_queue(setup, local_aws, "fail", 12)
    strategy = {keys.RETRY_STRATEGY: orjson.dumps({"attempts": 2}).decode()}
    await kube_client.create(
        kube.JOBS, gang_job("mpi", f"{ce}-q", 3, run_seconds=8, annotations=strategy), namespace
    )
    # In attempt 1 node index 2 (not the main node) fails at once with exit code 3.
    worker = await _pod_of_index(kube_client, namespace, "mpi", 2)
    await _set_run(kube_client, worker, **{"run-seconds": "1", "exit-code": "3"})
    done = await wait_state(kube_client, namespace, "mpi", "SUCCEEDED", "FAILED", timeout=180)
    record = _succeeded_in_two_attempts(done)
    assert set(record[1]) == {0, 1, 2}, record
    failed = record[1][2]
    assert (failed["pod"], failed["exitCode"]) == (worker["metadata"]["name"], 3), failed
    assert failed["statusReason"] == "Essential container in task exited"
    for index in (0, 1):  # stopped when node index 2 failed
        assert record[1][index]["reason"] in ("GangAttemptEnded", "Error"), record[1][index]
    # Attempt 2 ran every node anew.
    assert not {e["pod"] for e in record[1].values()} & {e["pod"] for e in record[2].values()}
    assert record[2][0]["exitCode"] == 0, record[2]  # the main node succeeded
    assert done["status"].get("failed", 0) == 0  # the Job controller counted no attempt
    # AWS_BATCH_JOB_ATTEMPT of the second attempt's pods (the kubelet reads it from here).
    second = {e["pod"] for e in record[2].values()}
    pods = (await kube_client.list(kube.PODS, namespace)).items
    attempts = {
        p["metadata"]["name"]: p["metadata"]["annotations"].get(keys.POD_ATTEMPT)
        for p in pods
        if p["metadata"]["name"] in second
    }
    assert attempts and set(attempts.values()) == {"2"}, attempts
    # What a user reads: two attempts, a row per node of each.
    described = kubectl_ebb(cluster, "describe", "mpi", "-n", namespace)
    assert "Attempts: 2" in described and "Nodes:    3 (main node index 0)" in described
    rows = [line.split() for line in described.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert {r[2] for r in rows if r[0] == "1"} == {"0", "1", "2"}, described
    assert "0" in {r[2] for r in rows if r[0] == "2"}, described
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 90, message="to zero")


async def test_a_spot_reclaim_of_one_node_retries_the_gang_once(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    ce = await environment_and_queue(setup, local_aws, "spotgang", 12)
    body = gang_job(
        "ddp", f"{ce}-q", 3, run_seconds=30, annotations={keys.RETRY_STRATEGY: SPOT_IDIOM}
    )
    await kube_client.create(kube.JOBS, body, namespace)
    worker = await _pod_of_index(kube_client, namespace, "ddp", 1, phase="Running")
    node = await kube_client.get(kube.NODES, worker["spec"]["nodeName"])
    instance_id = node["spec"]["providerID"].rsplit("/", 1)[-1]
    interrupt = await local_aws.interrupt(instance_id, notice_seconds=2)
    assert await asyncio.wait_for(interrupt.wait(), 30) == 0
    done = await wait_state(kube_client, namespace, "ddp", "SUCCEEDED", "FAILED", timeout=180)
    record = _succeeded_in_two_attempts(done)
    assert set(record[2]) == {0, 1, 2}, record
    lost = record[1][1]
    assert lost["statusReason"] == f"Host EC2 (instance {instance_id}) terminated.", lost
    assert lost["exitCode"] is None
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 120, message="to zero")


async def test_why_says_what_a_waiting_gang_waits_for(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    setup: Any,
) -> None:
    """EC2 has only 2 r6i.xlarge: a gang of 3 is admitted but its launch is refused in
    every zone, so it waits for its nodes; a second gang waits over maxvCpus. `kubectl
    ebb why` says what each waits for. (r6i.xlarge: no other test here uses it, as the
    autoscaler then avoids it for a while.)"""
    ce = name("why")
    local_aws.faults([insufficient_capacity("r6i.xlarge", capacity=2)])
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(ce, local_aws, maxvCpus=16, instanceTypes=["r6i.xlarge"]),
    )
    await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
    await kube_client.create(kube.JOBS, gang_job("wide", f"{ce}-q", 3), namespace)
    await wait_state(kube_client, namespace, "wide", "STARTING")
    await kube_client.create(kube.JOBS, gang_job("next", f"{ce}-q", 2), namespace)
    await wait_state(kube_client, namespace, "next", "RUNNABLE")
    gang = f"multi-node job {namespace}/wide"

    async def refused() -> bool:
        events = await events_of(kube_client, ce)
        return any(e["reason"] == "InsufficientCapacity" and gang in e["message"] for e in events)

    await wait_for(refused, 60, message="the gang's launch refused")
    why = kubectl_ebb(cluster, "why", "wide", "-n", namespace)
    assert "multi-node job: 3 nodes, one pod each (main node index 0), all or nothing" in why, why
    assert "3 of 3 pods created, 0 bound to a node, 0 running; none is bound until all 3" in why
    assert f"{ce}: InsufficientCapacity: r6i.xlarge/us-east-1" in why, why
    assert f"none of 3 launched ({gang})" in why, why
    # The second gang: over maxvCpus, naming the nodes it takes.
    why = kubectl_ebb(cluster, "why", "next", "-n", namespace)
    assert "needs 2 nodes in one compute environment" in why, why
    assert "(multi-node job, all or nothing)" in why, why
    assert f"{ce}: it takes 2 x r6i.xlarge, 8 vCPUs of maxvCpus 16; 12 taken" in why, why
    assert "2 of 2 pods created" not in why and "0 of 2 pods created" in why, why
    for job in ("wide", "next"):
        await kube_client.delete(kube.JOBS, job, namespace)
    assert not local_aws.instances(ce)  # nothing partial was launched


def _runs_per_index(log: PodLog, job: str) -> dict[int, int]:
    """How many pods each node index of `job` had (an Indexed Job's pod is named
    <job>-<index>-<suffix>)."""
    pods = {pod for j, pod, _, _ in log.events if j == job}
    runs: dict[int, int] = {}
    for pod in pods:
        index = int(pod.removeprefix(f"{job}-").split("-", 1)[0])
        runs[index] = runs.get(index, 0) + 1
    return runs


async def test_a_worker_done_before_the_main_node_is_not_run_again(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    """Node index 2 exits 0 long before the main node: its slot is done (not run again),
    the gang goes on, and the main node's exit decides the job."""
    ce = await environment_and_queue(setup, local_aws, "early", 12)
    async with pod_log(kube_client, namespace) as log:
        # Node index 1 would run 300 s: stopped when the main node (index 0) succeeds.
        await kube_client.create(
            kube.JOBS, gang_job("early", f"{ce}-q", 3, run_seconds=300), namespace
        )
        main = await _pod_of_index(kube_client, namespace, "early", 0)
        await _set_run(kube_client, main, **{"run-seconds": "8"})
        worker = await _pod_of_index(kube_client, namespace, "early", 2)
        await _set_run(kube_client, worker, **{"run-seconds": "1"})
        done = await wait_state(kube_client, namespace, "early", "SUCCEEDED", "FAILED", timeout=120)
    assert annotation(done, keys.STATE) == "SUCCEEDED", annotation(done, keys.REASON)
    assert annotation(done, keys.GANG_ATTEMPT) in ("", "1")
    assert _runs_per_index(log, "early") == {0: 1, 1: 1, 2: 1}, log.events
    assert done["status"]["completedIndexes"] == "0,2"
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 90, message="to zero")


async def test_a_retried_gang_runs_every_node_again_once_per_attempt(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    """Node index 2 exits 0, then node index 1 fails: the attempt ends and the gang is
    retried as a whole (AWS Batch: a new attempt for every node), so index 2 runs again
    in attempt 2 — once, as every other node — and the main node decides."""
    ce = await environment_and_queue(setup, local_aws, "redo", 12)
    strategy = {keys.RETRY_STRATEGY: orjson.dumps({"attempts": 2}).decode()}
    body = gang_job("redo", f"{ce}-q", 3, run_seconds=10, annotations=strategy)
    async with pod_log(kube_client, namespace) as log:
        await kube_client.create(kube.JOBS, body, namespace)
        done_early = await _pod_of_index(kube_client, namespace, "redo", 2)
        await _set_run(kube_client, done_early, **{"run-seconds": "1"})
        failing = await _pod_of_index(kube_client, namespace, "redo", 1)
        await _set_run(kube_client, failing, **{"run-seconds": "4", "exit-code": "3"})
        done = await wait_state(kube_client, namespace, "redo", "SUCCEEDED", "FAILED", timeout=180)
    record = _succeeded_in_two_attempts(done)
    assert set(record[2]) == {0, 1, 2}, record
    assert record[1][2]["exitCode"] == 0 and record[1][1]["exitCode"] == 3, record[1]
    assert _runs_per_index(log, "redo") == {0: 2, 1: 2, 2: 2}, log.events
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 90, message="to zero")
