"""status.conditions on the real control plane, read as users read them: `kubectl wait
--for=condition=...` and `kubectl explain`. The autoscaler writes the environments', the
scheduler the queues' and policies'."""

from __future__ import annotations

import asyncio
from typing import Any

from ebb import kube
from local_stack import builders
from local_stack.aws import (
    LocalAws,
    batch_job,
    compute_environment,
    insufficient_capacity,
    job_succeeded,
    name,
    status_is,
)
from local_stack.builders import job_queue, scheduling_policy, share
from local_stack.harness import LocalCluster, wait_for

CE, JQ, SP = kube.COMPUTE_ENVIRONMENTS, kube.JOB_QUEUES, kube.SCHEDULING_POLICIES
KIND = {CE: "computeenvironment", JQ: "jobqueue", SP: "schedulingpolicy"}


async def kubectl_wait(cluster: LocalCluster, resource: kube.Resource, obj: str, cond: str) -> None:
    """`kubectl wait --for=condition=COND`, as a user (or a CI pipeline) waits."""
    await asyncio.to_thread(
        cluster.kubectl,
        "wait",
        f"--for=condition={cond}",
        f"{KIND[resource]}/{obj}",
        "--timeout=60s",
    )


async def condition(
    client: kube.KubeClient, resource: kube.Resource, obj: str, kind: str = "Ready"
) -> tuple[dict[str, Any], int]:
    """The condition, and the object's metadata.generation."""
    body = await client.get(resource, obj)
    found = [c for c in body.get("status", {}).get("conditions") or () if c["type"] == kind]
    return (found[0] if found else {}), int(body["metadata"]["generation"])


async def reads(
    client: kube.KubeClient, resource: kube.Resource, obj: str, kind: str, *expected: str
) -> bool:
    """The condition has the expected (status, reason), computed from the current spec."""
    cond, generation = await condition(client, resource, obj, kind)
    seen = (cond.get("status"), cond.get("reason"), cond.get("observedGeneration"))
    return seen == (*expected, generation)


async def ready_says(client: kube.KubeClient, resource: kube.Resource, obj: str, text: str) -> bool:
    """The Ready condition's message says `text`."""
    return text in (await condition(client, resource, obj))[0].get("message", "")


async def test_ready_follows_environments_queues_and_policies(
    cluster: LocalCluster, kube_client: kube.KubeClient, local_aws: LocalAws, setup: Any
) -> None:
    ce = name("cond")
    q, sp = f"{ce}-q", f"{ce}-sp"
    await setup(CE, compute_environment(ce, local_aws))
    await setup(SP, scheduling_policy(sp, [share("a")]))
    await setup(JQ, job_queue(q, ce, schedulingPolicy=sp))
    for resource, obj in ((CE, ce), (JQ, q), (SP, sp)):
        await kubectl_wait(cluster, resource, obj, "Ready")
        ready, generation = await condition(kube_client, resource, obj)
        assert ready["observedGeneration"] == generation
        assert ready["reason"] and ready["message"] and ready["lastTransitionTime"]
    assert (await condition(kube_client, CE, ce, "CapacityAvailable"))[0]["status"] == "True"
    assert (await condition(kube_client, JQ, q, "NamespacesSelected"))[0]["status"] == "True"
    assert (
        f"compute environment(s) {ce} can run its jobs"
        in (await condition(kube_client, JQ, q))[0]["message"]
    )

    # An UNMANAGED environment (your nodes) is Ready too, and VALID as in AWS Batch.
    unmanaged = f"{ce}-own"
    await setup(CE, builders.compute_environment(unmanaged, ce_type="UNMANAGED"))
    await kubectl_wait(cluster, CE, unmanaged, "Ready")
    assert (await kube_client.get(CE, unmanaged))["status"]["status"] == "VALID"

    # DISABLED: the environment says so, and its queue has no environment left.
    await kube_client.patch(CE, ce, {"spec": {"state": "DISABLED"}})
    await kubectl_wait(cluster, CE, ce, "Ready=false")
    await wait_for(lambda: reads(kube_client, CE, ce, "Ready", "False", "Disabled"), 30)
    await kubectl_wait(cluster, JQ, q, "Ready=false")
    ready, _ = await condition(kube_client, JQ, q)
    assert ready["reason"] == "NoUsableComputeEnvironment"
    assert f"{ce} is DISABLED" in ready["message"]

    # ENABLED again but INVALID (a subnet EC2 does not have): the reason names the field.
    await kube_client.patch(CE, ce, {"spec": {"state": "ENABLED", "subnets": ["subnet-0000dead"]}})
    await wait_for(lambda: reads(kube_client, CE, ce, "Ready", "False", "Invalid"), 30)
    ready, _ = await condition(kube_client, CE, ce)
    assert "subnets: not found in EC2: subnet-0000dead" in ready["message"]
    # It went False (lastTransitionTime has whole seconds: it can equal the earlier one when Ready
    # went True and then False within one second, so the time is not compared here; the
    # unit tests of ebb/conditions.py check when it moves).
    assert (await condition(kube_client, CE, ce, "CapacityAvailable"))[0]["status"] == "False"
    await wait_for(
        lambda: ready_says(kube_client, JQ, q, f"{ce} is INVALID (subnets: not found in EC2"), 30
    )
    # The printer columns say the same as before: INVALID, with the reason.
    row = await asyncio.to_thread(cluster.kubectl, "get", "ce", ce, "-o", "wide", "--no-headers")
    assert "INVALID" in row.split() and "subnets:" in row

    # Fixed: Ready again, at the new generation.
    await kube_client.patch(CE, ce, {"spec": {"subnets": local_aws.info["subnets"]}})
    await wait_for(lambda: reads(kube_client, CE, ce, "Ready", "True", "Ready"), 30)
    await kubectl_wait(cluster, JQ, q, "Ready")

    # The queue's own state.
    await kube_client.patch(JQ, q, {"spec": {"state": "DISABLED"}})
    await wait_for(lambda: reads(kube_client, JQ, q, "Ready", "False", "Disabled"), 30)

    # A spec change that keeps the policy valid: the condition follows the generation, its
    # transition time stays.
    before, generation = await condition(kube_client, SP, sp)
    await kube_client.patch(SP, sp, {"spec": {"fairsharePolicy": {"shareDecaySeconds": 60}}})
    await wait_for(lambda: reads(kube_client, SP, sp, "Ready", "True", "Valid"), 30)
    after, new_generation = await condition(kube_client, SP, sp)
    assert new_generation == generation + 1
    assert after["lastTransitionTime"] == before["lastTransitionTime"]


async def test_capacity_available_says_maxvcpus_is_reached(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    setup: Any,
) -> None:
    """A warm c6i.large (minvCpus) fills maxvCpus; a job only an m6i.large holds (5 GiB)
    is admitted (it fits within maxvCpus) but no instance can be launched for it."""
    ce = name("full")
    spec = {
        "type": "EC2",
        "minvCpus": 2,
        "maxvCpus": 2,
        "instanceTypes": ["c6i.large", "m6i.large"],
    }
    await setup(CE, compute_environment(ce, local_aws, **spec))
    await setup(JQ, job_queue(f"{ce}-q", ce))
    await wait_for(lambda: status_is(kube_client, ce, desiredvCpus=2, nodes=1), 30)
    await kube_client.create(kube.JOBS, batch_job("big", f"{ce}-q", memory="5Gi"), namespace)
    await kubectl_wait(cluster, CE, ce, "CapacityAvailable=false")
    capacity, _ = await condition(kube_client, CE, ce, "CapacityAvailable")
    assert capacity["reason"] == "MaxvCpusReached"
    assert capacity["message"] == "pods wait: maxvCpus 2 reached (2 vCPUs running or launching)"
    assert (await condition(kube_client, CE, ce))[0]["status"] == "True"  # a limit, not a fault

    await kube_client.patch(CE, ce, {"spec": {"maxvCpus": 4}})
    await wait_for(lambda: job_succeeded(kube_client, namespace, "big"), 90)
    await wait_for(
        lambda: reads(kube_client, CE, ce, "CapacityAvailable", "True", "CapacityAvailable"), 30
    )


async def test_capacity_available_says_ec2_has_no_capacity(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    setup: Any,
) -> None:
    ce = name("short")
    local_aws.faults([insufficient_capacity("c6i.large")])
    await setup(CE, compute_environment(ce, local_aws, type="EC2", instanceTypes=["c6i.large"]))
    await setup(JQ, job_queue(f"{ce}-q", ce))
    await kube_client.create(
        kube.JOBS, batch_job("waits", f"{ce}-q", cpu="500m", memory="1Gi"), namespace
    )
    await kubectl_wait(cluster, CE, ce, "CapacityAvailable=false")
    capacity, _ = await condition(kube_client, CE, ce, "CapacityAvailable")
    assert capacity["reason"] == "InsufficientCapacity"
    assert "c6i.large" in capacity["message"]
    assert (await condition(kube_client, CE, ce))[0]["status"] == "True"


async def test_kubectl_explain_describes_every_field(cluster: LocalCluster) -> None:
    text = await asyncio.to_thread(
        cluster.kubectl, "explain", "jobqueue.spec.computeEnvironmentOrder"
    )
    assert "<no description>" not in text
    assert "tried in ascending order" in " ".join(text.split())  # as kubectl wraps it
    text = await asyncio.to_thread(
        cluster.kubectl, "explain", "computeenvironment.status.conditions", "--recursive"
    )
    assert "observedGeneration" in text and "lastTransitionTime" in text
