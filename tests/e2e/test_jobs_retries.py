"""Retry strategies, timeouts, cancel and terminate on the real control plane."""

from __future__ import annotations

import orjson
import pytest

from ebb import keys, kube
from tests.e2e.batch import annotation, batch_env, job_body, unique, wait_state
from tests.e2e.cluster import wait_for

pytestmark = pytest.mark.usefixtures("scheduler_daemon")

RETRY_1_NOT_2 = orjson.dumps(
    {
        "attempts": 3,
        "evaluateOnExit": [
            {"onExitCode": "1", "action": "RETRY"},
            {"onExitCode": "*", "action": "EXIT"},
        ],
    }
).decode()


async def test_retries_exit_code_1_twice_but_not_exit_code_2(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        for name, code in (("exit1", 1), ("exit2", 2)):
            await kube_client.create(
                kube.JOBS,
                job_body(name, q, exit_code=code, annotations={keys.RETRY_STRATEGY: RETRY_1_NOT_2}),
                namespace,
            )
        one = await wait_state(kube_client, namespace, "exit1", "FAILED", timeout=90)
        two = await wait_state(kube_client, namespace, "exit2", "FAILED", timeout=90)
        assert one["spec"]["backoffLimit"] == 2
        assert one["status"]["failed"] == 3  # 1 attempt + 2 retries
        assert annotation(one, keys.REASON_CODE) == "FAILED:ATTEMPTS_EXHAUSTED"
        assert len(orjson.loads(annotation(one, keys.ATTEMPTS))) == 3
        assert two["status"]["failed"] == 1  # EXIT: no retry
        assert annotation(two, keys.REASON_CODE) == "FAILED:EXIT_RULE"
        assert "exit code 2" in annotation(two, keys.REASON)


async def test_timeout_stops_the_attempt_and_is_not_retried(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        body = job_body(
            "slow",
            q,
            run_seconds=300,
            annotations={keys.TIMEOUT_SECONDS: "60", keys.RETRY_STRATEGY: '{"attempts": 3}'},
        )
        created = await kube_client.create(kube.JOBS, body, namespace)
        assert created["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 60
        done = await wait_state(kube_client, namespace, "slow", "FAILED", timeout=120)
        assert annotation(done, keys.REASON_CODE) == "FAILED:TIMEOUT"
        assert "Job attempt duration exceeded timeout" in annotation(done, keys.REASON)
        attempts = orjson.loads(annotation(done, keys.ATTEMPTS))
        timed_out = [a for a in attempts if a["reason"] == "DeadlineExceeded"]
        assert len(timed_out) == 1


async def test_cancel_fails_a_waiting_job_and_its_afterok_dependents(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=1)
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(kube.JOBS, job_body("busy", q, run_seconds=30), namespace)
        await wait_state(kube_client, namespace, "busy", "RUNNING", "STARTING")
        await kube_client.create(kube.JOBS, job_body("waiting", q), namespace)
        await kube_client.create(
            kube.JOBS, job_body("after", q, annotations={keys.DEPENDS_ON: "waiting"}), namespace
        )
        await wait_state(kube_client, namespace, "waiting", "RUNNABLE")
        await kube_client.patch(
            kube.JOBS,
            "waiting",
            {"metadata": {"annotations": {keys.CANCEL: "not needed any more"}}},
            namespace,
        )
        cancelled = await wait_state(kube_client, namespace, "waiting", "FAILED")
        assert annotation(cancelled, keys.REASON) == "cancelled: not needed any more"
        after = await wait_state(kube_client, namespace, "after", "FAILED")
        assert annotation(after, keys.REASON) == "dependency waiting failed"
        # Cancelling a job that already started does nothing (AWS Batch semantics).
        await kube_client.patch(
            kube.JOBS, "busy", {"metadata": {"annotations": {keys.CANCEL: "too late"}}}, namespace
        )
        busy = await kube_client.get(kube.JOBS, "busy", namespace)
        assert annotation(busy, keys.STATE) in ("RUNNING", "STARTING")


async def test_terminate_stops_a_running_job(kube_client: kube.KubeClient, namespace: str) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(kube.JOBS, job_body("long", q, run_seconds=300), namespace)
        await wait_state(kube_client, namespace, "long", "RUNNING")
        await kube_client.patch(
            kube.JOBS,
            "long",
            {"metadata": {"annotations": {keys.TERMINATE: "wrong input"}}},
            namespace,
        )
        done = await wait_state(kube_client, namespace, "long", "FAILED")
        assert annotation(done, keys.REASON) == "terminated: wrong input"

        async def pods_gone() -> bool:
            pods = await kube_client.list(kube.PODS, namespace, label_selector="job-name=long")
            return all(p["status"].get("phase") in ("Failed", "Succeeded") for p in pods.items)

        await wait_for(pods_gone, 30, message="the running pod stopped")


async def test_a_suspended_job_the_webhook_never_saw_is_managed(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        # Created suspended with no queue label (the webhook does not see it), then put
        # in a queue: no toleration, no labels on its pod template.
        body = job_body("plain", q, suspend=True)
        del body["metadata"]["labels"][keys.QUEUE_LABEL]
        await kube_client.create(kube.JOBS, body, namespace)
        await kube_client.patch(
            kube.JOBS, "plain", {"metadata": {"labels": {keys.QUEUE_LABEL: q}}}, namespace
        )
        done = await wait_state(kube_client, namespace, "plain", "SUCCEEDED")
        template = done["spec"]["template"]
        assert template["metadata"]["labels"][keys.QUEUE_LABEL] == q
        assert keys.BATCH_TOLERATION in template["spec"]["tolerations"]
