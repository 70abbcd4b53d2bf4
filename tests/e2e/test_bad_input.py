"""The bad-input matrix against the real API server and the real scheduler daemon: Ebb's
CRDs refused by the API server's OpenAPI schema and CEL rules with the field named, Jobs
with malformed Ebb annotations refused by the daemon's webhook (through the API server,
as `kubectl create` sees it) with the field named, and bodies over the daemon's limit
refused over TLS. After every row a good object of the same kind is accepted: the API
server and the daemon keep serving. (The pure code paths' rows are in
tests/unit/test_bad_input.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ebb import keys, kube
from ebb.server import MAX_BODY_BYTES
from extender.settings import SchedulerSettings
from local_stack import builders
from local_stack.batch import batch_env, unique
from local_stack.harness import LocalCluster

pytestmark = pytest.mark.usefixtures("scheduler_daemon")
HUGE = 10**12


def compute_environment(**spec: Any) -> dict[str, Any]:
    return builders.compute_environment(unique("bad-ce"), **spec)


def job_queue(**spec: Any) -> dict[str, Any]:
    return builders.job_queue(unique("bad-q"), "ce", **spec)


def policy(shares: list[dict[str, Any]] | None = None, **fairshare: Any) -> dict[str, Any]:
    shares = shares if shares is not None else [builders.share("a", 1)]
    return builders.scheduling_policy(unique("bad-sp"), shares, **fairshare)


CE, JQ, SP = kube.COMPUTE_ENVIRONMENTS, kube.JOB_QUEUES, kube.SCHEDULING_POLICIES
CRD_ROWS: list[tuple[str, kube.Resource, dict[str, Any], str]] = [
    ("ce-max-vcpus-a-string", CE, compute_environment(maxvCpus="64"), "spec.maxvCpus: Invalid"),
    ("ce-max-vcpus-huge", CE, compute_environment(maxvCpus=HUGE), "spec.maxvCpus: Invalid value"),
    (
        "ce-type-lowercase",
        CE,
        compute_environment(type="spot"),
        'spec.type: Unsupported value: "spot"',
    ),
    (
        "ce-instance-type-unicode",
        CE,
        compute_environment(instanceTypes=["c6ï.large"]),
        "spec.instanceTypes[0]: Invalid value",
    ),
    (
        "ce-too-many-instance-types",
        CE,
        compute_environment(instanceTypes=[f"c{i}" for i in range(101)]),
        "spec.instanceTypes: Too many",
    ),
    (
        "ce-bid-on-demand",
        CE,
        compute_environment(type="EC2", bidPercentage=50),
        "spec.bidPercentage: Forbidden: bidPercentage applies only to type SPOT",
    ),
    (
        "ce-launch-template-both",
        CE,
        compute_environment(
            launchTemplate={"launchTemplateId": "lt-0a", "launchTemplateName": "x"}
        ),
        "spec.launchTemplate: Invalid value",
    ),
    (
        "ce-managed-without-types",
        CE,
        {**compute_environment(), "spec": {"type": "EC2", "maxvCpus": 8}},
        "spec.instanceTypes: Required value: instanceTypes is required unless type is UNMANAGED",
    ),
    (
        "ce-security-group-glob",
        CE,
        compute_environment(securityGroupIds=["sg-*"]),
        "spec.securityGroupIds[0]: Invalid value",
    ),
    ("jq-priority-huge", JQ, job_queue(priority=HUGE), "spec.priority: Invalid value"),
    ("jq-priority-a-float", JQ, job_queue(priority=1.5), "spec.priority: Invalid value"),
    ("jq-state-unknown", JQ, job_queue(state="PAUSED"), 'spec.state: Unsupported value: "PAUSED"'),
    (
        "jq-empty-environment-name",
        JQ,
        job_queue(computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ""}]),
        "spec.computeEnvironmentOrder[0].computeEnvironment: Invalid value",
    ),
    (
        "jq-order-negative",
        JQ,
        job_queue(computeEnvironmentOrder=[{"order": -1, "computeEnvironment": "a"}]),
        "spec.computeEnvironmentOrder[0].order: Invalid value",
    ),
    (
        "jq-time-limit-too-short",
        JQ,
        job_queue(
            jobStateTimeLimitActions=[
                {"reason": "r", "state": "RUNNABLE", "maxTimeSeconds": 5, "action": "CANCEL"}
            ]
        ),
        "spec.jobStateTimeLimitActions[0].maxTimeSeconds: Invalid value",
    ),
    (
        "sp-share-invalid-glob",
        SP,
        policy([{"shareIdentifier": "a*b", "weightFactor": 1}]),
        "spec.fairsharePolicy.shareDistribution[0].shareIdentifier: Invalid value",
    ),
    (
        "sp-share-unicode",
        SP,
        policy([{"shareIdentifier": "équipe", "weightFactor": 1}]),
        "spec.fairsharePolicy.shareDistribution[0].shareIdentifier: Invalid value",
    ),
    (
        "sp-weight-zero",
        SP,
        policy([{"shareIdentifier": "a", "weightFactor": 0}]),
        "spec.fairsharePolicy.shareDistribution[0].weightFactor: Invalid value",
    ),
    (
        "sp-decay-huge",
        SP,
        policy(shareDecaySeconds=HUGE),
        "spec.fairsharePolicy.shareDecaySeconds: Invalid value",
    ),
    (
        "sp-reservation-100",
        SP,
        policy(computeReservation=100),
        "spec.fairsharePolicy.computeReservation: Invalid value",
    ),
]
GOOD = {CE: compute_environment, JQ: job_queue, SP: policy}


def test_kubectl_is_refused_an_unknown_field_naming_it(cluster: LocalCluster) -> None:
    """kubectl asks for strict field validation: a misspelt field is an error, not pruned."""
    body = compute_environment(maxVcpus=8)
    out = cluster.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
    assert 'unknown field "spec.maxVcpus"' in out, out
    good = compute_environment()
    cluster.kubectl("create", "-f", "-", input=json.dumps(good))
    cluster.kubectl("delete", "computeenvironment", good["metadata"]["name"])


@pytest.mark.parametrize(
    ("resource", "body", "error"), [r[1:] for r in CRD_ROWS], ids=[r[0] for r in CRD_ROWS]
)
async def test_the_api_server_refuses_a_bad_object_naming_the_field(
    kube_client: kube.KubeClient, resource: kube.Resource, body: dict[str, Any], error: str
) -> None:
    with pytest.raises(kube.ApiError) as info:
        await kube_client.create(resource, body)
    assert info.value.status == 422, info.value
    assert error in info.value.message
    good = GOOD[resource]()
    await kube_client.create(resource, good)
    await kube_client.delete(resource, good["metadata"]["name"])


# --- Jobs, through the API server to the scheduler daemon's webhook ---------------------


@pytest.fixture(scope="module")
async def queue(kube_client: kube.KubeClient) -> AsyncIterator[str]:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), nodes=0)
        yield await env.queue(unique("q"), [ce])


def annotated(queue: str, **annotations: str) -> dict[str, Any]:
    return builders.job(unique("bad"), queue, annotations=annotations)


JOB_ROWS: list[tuple[str, dict[str, str], str]] = [
    (
        "depends-on-glob",
        {keys.DEPENDS_ON: "prep-*"},
        f"metadata.annotations[{keys.DEPENDS_ON}]: 'prep-*' is not a Job name",
    ),
    (
        "retry-truncated-json",
        {keys.RETRY_STRATEGY: '{"attempts": 2, "evaluateOnExit": [{'},
        f"metadata.annotations[{keys.RETRY_STRATEGY}]: not valid JSON",
    ),
    (
        "retry-unicode-glob",
        {
            keys.RETRY_STRATEGY: json.dumps(
                {"attempts": 2, "evaluateOnExit": [{"onStatusReason": "Hôte*", "action": "EXIT"}]}
            )
        },
        f"metadata.annotations[{keys.RETRY_STRATEGY}].evaluateOnExit[0].onStatusReason",
    ),
    (
        "priority-huge",
        {keys.SCHEDULING_PRIORITY: str(10**40)},
        f"metadata.annotations[{keys.SCHEDULING_PRIORITY}]: {10**40} is out of range",
    ),
    (
        "timeout-a-duration",
        {keys.TIMEOUT_SECONDS: "1h"},
        f"metadata.annotations[{keys.TIMEOUT_SECONDS}]: '1h' is not a whole number",
    ),
]


@pytest.mark.parametrize(
    ("annotations", "error"), [r[1:] for r in JOB_ROWS], ids=[r[0] for r in JOB_ROWS]
)
async def test_the_webhook_refuses_a_bad_job_naming_the_field(
    kube_client: kube.KubeClient,
    namespace: str,
    queue: str,
    annotations: dict[str, str],
    error: str,
) -> None:
    with pytest.raises(kube.ApiError) as info:
        await kube_client.create(kube.JOBS, annotated(queue, **annotations), namespace)
    assert error in info.value.message, info.value
    assert "admission webhook" in info.value.message
    good = await kube_client.create(kube.JOBS, annotated(queue), namespace)
    assert good["spec"]["suspend"] is True  # the webhook made it Ebb's


async def test_a_cycle_through_jobs_created_a_moment_ago_is_refused(
    kube_client: kube.KubeClient, namespace: str, queue: str
) -> None:
    first, second, third = unique("c"), unique("c"), unique("c")
    for job_name, after in ((first, third), (second, first)):
        body = builders.job(job_name, queue, annotations={keys.DEPENDS_ON: after})
        await kube_client.create(kube.JOBS, body, namespace)
    body = builders.job(third, queue, annotations={keys.DEPENDS_ON: second})
    with pytest.raises(kube.ApiError) as info:
        await kube_client.create(kube.JOBS, body, namespace)
    assert (
        f"metadata.annotations[{keys.DEPENDS_ON}]: dependency cycle "
        f"{third} → {second} → {first} → {third}"
    ) in info.value.message


async def test_an_oversize_body_is_refused_and_the_daemon_goes_on(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str, queue: str
) -> None:
    base = f"https://localhost:{cluster.extender_port}"
    # The extender's limit is larger: without nodeCacheCapable, requests carry whole Nodes.
    extender_limit = SchedulerSettings().extender_max_body_bytes
    # path -> (limit, the caller that may call it)
    limits = {
        "/webhook/jobs/mutate": (MAX_BODY_BYTES, "ebb-webhook-client"),
        "/scheduler/filter": (extender_limit, "ebb-extender-client"),
    }
    for path, (limit, who) in limits.items():
        connector = aiohttp.TCPConnector(ssl=cluster.client_context(who))
        async with aiohttp.ClientSession(connector=connector) as session:
            oversize = b'{"request": "' + b"x" * limit + b'"}'
            async with session.post(base + path, data=oversize) as resp:
                assert resp.status == 413, await resp.text()
                assert "body" in (await resp.text()).lower()
            if path.startswith("/webhook/"):
                async with session.post(base + path, data=b'{"request": {"uid"') as resp:
                    assert resp.status == 400
                    assert (await resp.text()).startswith("body: not valid JSON")
    good = await kube_client.create(kube.JOBS, annotated(queue), namespace)
    assert good["spec"]["suspend"] is True


def test_the_matrix_rows_are_distinct() -> None:
    ids = [r[0] for r in CRD_ROWS] + [r[0] for r in JOB_ROWS]
    assert len(ids) == len(set(ids))
