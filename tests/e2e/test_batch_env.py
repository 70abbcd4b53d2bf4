"""AWS Batch's environment variables on Ebb's pods, on the real control plane. KWOK runs
no containers, so the tests read what the kubelet would resolve: the env in the pod's
spec and the pod annotations its downward-API entries name."""

from __future__ import annotations

from typing import Any

import pytest

from ebb import keys, kube
from local_stack import builders
from local_stack.batch import batch_env, unique, wait_state

pytestmark = pytest.mark.usefixtures("scheduler_daemon")


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    """The main container's AWS_BATCH_* variables: a value, or the fieldPath read."""
    out: dict[str, Any] = {}
    for var in pod["spec"]["containers"][0].get("env") or ():
        if var["name"].startswith("AWS_BATCH"):
            field = (var.get("valueFrom") or {}).get("fieldRef") or {}
            out[var["name"]] = var.get("value", {"fieldPath": field.get("fieldPath")})
    return out


async def job_pods(client: kube.KubeClient, namespace: str, job: str) -> list[dict[str, Any]]:
    listed = await client.list(
        kube.PODS, namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
    )
    return sorted(listed.items, key=lambda p: p["metadata"]["creationTimestamp"])


async def test_the_third_attempt_is_attempt_3_and_runs_in_its_environment(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        body = builders.job(
            "flaky",
            q,
            annotations={keys.RETRY_STRATEGY: '{"attempts": 3}'},
            # KWOK fails attempts 1 and 2 (by the attempt Ebb stamped), 3 succeeds.
            pod_annotations={
                "kwok.ebb.dev/exit-code-attempt-1": "1",
                "kwok.ebb.dev/exit-code-attempt-2": "1",
            },
        )
        await kube_client.create(kube.JOBS, body, namespace)
        done = await wait_state(kube_client, namespace, "flaky", "SUCCEEDED", timeout=150)
        assert done["status"]["failed"] == 2
        pods = await job_pods(kube_client, namespace, "flaky")
        annotations = [p["metadata"]["annotations"] for p in pods]
        assert [a[keys.POD_ATTEMPT] for a in annotations] == ["1", "2", "3"]
        assert [p["status"]["phase"] for p in pods] == ["Failed", "Failed", "Succeeded"]
        assert {a[keys.POD_COMPUTE_ENVIRONMENT] for a in annotations} == {ce}
        assert {p["spec"]["nodeName"] for p in pods} == {f"{ce}-node-0"}
        assert env_of(pods[2]) == {
            "AWS_BATCH_JQ_NAME": q,
            "AWS_BATCH_CE_NAME": {
                "fieldPath": "metadata.annotations['ebb.dev/compute-environment']"
            },
            "AWS_BATCH_JOB_ATTEMPT": {"fieldPath": "metadata.annotations['ebb.dev/attempt']"},
            "AWS_BATCH_JOB_ID": "flaky",
        }


async def test_an_array_childs_variables_and_attempt(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        body = builders.job("arr", q, completions=3, parallelism=3, indexed=True)
        await kube_client.create(kube.JOBS, body, namespace)
        await wait_state(kube_client, namespace, "arr", "SUCCEEDED", timeout=90)
        pods = await job_pods(kube_client, namespace, "arr")
        assert len(pods) == 3
        for pod in pods:
            assert pod["metadata"]["annotations"][keys.POD_ATTEMPT] == "1"
            assert pod["metadata"]["annotations"][keys.POD_COMPUTE_ENVIRONMENT] == ce
            variables = env_of(pod)
            assert variables["AWS_BATCH_JQ_NAME"] == q
            assert variables["AWS_BATCH_JOB_ARRAY_SIZE"] == "3"
            # AWS names a child <parent>:<index>; the kubelet expands the index.
            assert variables["AWS_BATCH_JOB_ID"] == "arr:$(AWS_BATCH_JOB_ARRAY_INDEX)"
            names = [v["name"] for v in pod["spec"]["containers"][0]["env"]]
            assert names.index("AWS_BATCH_JOB_ARRAY_INDEX") < names.index("AWS_BATCH_JOB_ID")


async def test_a_user_aws_batch_variable_is_refused_naming_container_and_variable(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        body = builders.job("mine", q)
        body["spec"]["template"]["spec"]["containers"][0]["env"] = [
            {"name": "AWS_BATCH_FOO", "value": "x"}
        ]
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(kube.JOBS, body, namespace)
        assert info.value.status == 422, info.value
        assert "spec.template.spec.containers[main].env[AWS_BATCH_FOO]" in info.value.message
        listed = await kube_client.list(kube.JOBS, namespace)
        assert listed.items == []
