"""The foundation: Ebb's CRDs on a real API server, and Jobs on KWOK nodes."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ebb import kube
from local_stack import builders
from local_stack.harness import LocalCluster, cluster_args, create_node, wait_for


async def test_crds_are_established(kube_client: kube.KubeClient) -> None:
    for plural in ("computeenvironments", "jobqueues", "schedulingpolicies"):
        crd = await kube_client.get(kube.CUSTOM_RESOURCE_DEFINITIONS, f"{plural}.ebb.dev")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"minvCpus": 128, "maxvCpus": 64},
            "spec.minvCpus: Invalid value: minvCpus must be less than or equal to maxvCpus",
        ),
        ({"type": "FARGATE"}, 'spec.type: Unsupported value: "FARGATE"'),
        ({"maxvCpus": 0}, "spec.maxvCpus: Invalid value: 0"),
        (
            {"type": "EC2", "allocationStrategy": "SPOT_CAPACITY_OPTIMIZED"},
            "spec.allocationStrategy: Invalid value: allocationStrategy "
            "SPOT_CAPACITY_OPTIMIZED and SPOT_PRICE_CAPACITY_OPTIMIZED need type SPOT",
        ),
        ({"instanceTypes": []}, "spec.instanceTypes: Invalid value"),
        ({"subnets": ["not-a-subnet"]}, "spec.subnets[0]: Invalid value"),
    ],
)
async def test_api_server_rejects_invalid_compute_environment(
    kube_client: kube.KubeClient, spec: dict[str, Any], message: str
) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    with pytest.raises(kube.ApiError) as info:
        await kube_client.create(
            kube.COMPUTE_ENVIRONMENTS, builders.compute_environment(name, **spec)
        )
    assert info.value.status == 422
    assert message in info.value.message


async def test_api_server_accepts_valid_compute_environment_with_defaults(
    kube_client: kube.KubeClient,
) -> None:
    name = f"ok-{uuid.uuid4().hex[:6]}"
    created = await kube_client.create(
        kube.COMPUTE_ENVIRONMENTS, builders.compute_environment(name)
    )
    try:
        assert created["spec"]["state"] == "ENABLED"
        assert created["spec"]["minvCpus"] == 0
        assert created["spec"]["allocationStrategy"] == "BEST_FIT_PROGRESSIVE"
    finally:
        await kube_client.delete(kube.COMPUTE_ENVIRONMENTS, name)


async def test_api_server_rejects_duplicate_queue_order(kube_client: kube.KubeClient) -> None:
    body = builders.job_queue(
        f"q-{uuid.uuid4().hex[:6]}",
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": "a"},
            {"order": 1, "computeEnvironment": "b"},
        ],
    )
    with pytest.raises(kube.ApiError) as info:
        await kube_client.create(kube.JOB_QUEUES, body)
    assert (
        "spec.computeEnvironmentOrder: Invalid value: each order value must be unique"
        in info.value.message
    )


def job(name: str, annotations: dict[str, str], backoff_limit: int = 0) -> dict[str, Any]:
    """A Job of no queue: the Job controller runs it as it is."""
    return builders.job(
        name,
        pod_annotations=annotations,
        backoff_limit=backoff_limit,
        cpu="500m",
        memory="128Mi",
    )


@pytest.fixture(scope="module")
async def plain_node(kube_client: kube.KubeClient) -> AsyncIterator[str]:
    name = f"plain-{uuid.uuid4().hex[:6]}"
    await create_node(kube_client, name)
    yield name
    await kube_client.delete(kube.NODES, name)


def _condition(obj: dict[str, Any], kind: str) -> bool:
    return any(
        c["type"] == kind and c["status"] == "True"
        for c in obj.get("status", {}).get("conditions") or ()
    )


@pytest.mark.usefixtures("scheduler_daemon")
async def test_job_runs_to_complete_on_kwok_node(
    kube_client: kube.KubeClient, namespace: str, plain_node: str
) -> None:
    await kube_client.create(kube.JOBS, job("hello", {"kwok.ebb.dev/run-seconds": "1"}), namespace)

    async def complete() -> dict[str, Any] | None:
        obj = await kube_client.get(kube.JOBS, "hello", namespace)
        return obj if _condition(obj, "Complete") else None

    done = await wait_for(complete, 60, message="Job hello Complete")
    assert done["status"]["succeeded"] == 1
    pods = await kube_client.list(kube.PODS, namespace, label_selector="job-name=hello")
    assert [p["spec"]["nodeName"] for p in pods.items] == [plain_node]


@pytest.mark.usefixtures("scheduler_daemon")
async def test_job_exit_code_3_fails_and_pod_shows_it(
    kube_client: kube.KubeClient, namespace: str, plain_node: str
) -> None:
    annotations = {"kwok.ebb.dev/run-seconds": "1", "kwok.ebb.dev/exit-code": "3"}
    await kube_client.create(kube.JOBS, job("exit3", annotations), namespace)

    async def failed() -> dict[str, Any] | None:
        obj = await kube_client.get(kube.JOBS, "exit3", namespace)
        return obj if _condition(obj, "Failed") else None

    done = await wait_for(failed, 60, message="Job exit3 Failed")
    assert done["status"]["failed"] == 1
    pods = await kube_client.list(kube.PODS, namespace, label_selector="job-name=exit3")
    (pod,) = pods.items
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3


def test_kubectl_sees_ebb_resources(cluster: LocalCluster) -> None:
    out = cluster.kubectl("api-resources", "--api-group=ebb.dev", "-o", "name")
    assert set(out.split()) == {
        "computeenvironments.ebb.dev",
        "jobdefinitions.ebb.dev",
        "jobqueues.ebb.dev",
        "schedulingpolicies.ebb.dev",
    }


def test_cluster_status_reports_every_component(cluster: LocalCluster) -> None:
    proc = subprocess.run(
        cluster_args(
            "status", cluster.state_dir, cluster.port_base, f"--bin-path={cluster.bin_path}"
        ),
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    for component in (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    ):
        assert f"{component}" in proc.stdout and "running" in proc.stdout
