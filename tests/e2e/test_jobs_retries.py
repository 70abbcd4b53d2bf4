"""Retry strategies, timeouts, cancel and terminate on the real control plane."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import pytest

from ebb import keys, kube
from extender.jobs.lifecycle import State, allowed
from local_stack import builders
from local_stack.batch import annotation, batch_env, unique, wait_state
from local_stack.harness import LocalCluster, wait_for
from tests.e2e.test_kubectl_plugin import kubectl_ebb

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
                builders.job(
                    name, q, exit_code=code, annotations={keys.RETRY_STRATEGY: RETRY_1_NOT_2}
                ),
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
        body = builders.job(
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
        await kube_client.create(kube.JOBS, builders.job("busy", q, run_seconds=30), namespace)
        await wait_state(kube_client, namespace, "busy", "RUNNING", "STARTING")
        await kube_client.create(kube.JOBS, builders.job("waiting", q), namespace)
        await kube_client.create(
            kube.JOBS, builders.job("after", q, annotations={keys.DEPENDS_ON: "waiting"}), namespace
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
        await kube_client.create(kube.JOBS, builders.job("long", q, run_seconds=300), namespace)
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
        body = builders.job("plain", q, suspend=True)
        del body["metadata"]["labels"][keys.QUEUE_LABEL]
        await kube_client.create(kube.JOBS, body, namespace)
        await kube_client.patch(
            kube.JOBS, "plain", {"metadata": {"labels": {keys.QUEUE_LABEL: q}}}, namespace
        )
        done = await wait_state(kube_client, namespace, "plain", "SUCCEEDED")
        template = done["spec"]["template"]
        assert template["metadata"]["labels"][keys.QUEUE_LABEL] == q
        assert keys.BATCH_TOLERATION in template["spec"]["tolerations"]


async def test_a_job_the_webhook_never_saw_runs_pods_stamped_as_the_webhook_stamps_them(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    """Twins, one through the webhook, one created suspended and put in a queue later:
    their pod templates carry the same labels, tolerations, schedulerName and resources
    (the batch-pod resource that sends their pods through Ebb's extender). Their names
    (a manual selector lets a Job's name pass 63 characters) differ past the 63rd, where
    the job-id label, a label value, ends."""
    stem = "twins-named-by-a-pipeline-that-puts-its-whole-run-into-the-names"
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        for twin, webhook in (("seen", True), ("unseen", False)):
            name = f"{stem}-{twin}"
            body = builders.job(name, q, suspend=None if webhook else True)
            body["spec"]["manualSelector"] = True
            body["spec"]["selector"] = {"matchLabels": {"twin": twin}}
            body["spec"]["template"]["metadata"]["labels"] = {"twin": twin}
            if not webhook:
                del body["metadata"]["labels"][keys.QUEUE_LABEL]
            await kube_client.create(kube.JOBS, body, namespace)
            if not webhook:
                await kube_client.patch(
                    kube.JOBS, name, {"metadata": {"labels": {keys.QUEUE_LABEL: q}}}, namespace
                )
        stamps = []
        for twin in ("seen", "unseen"):
            done = await wait_state(kube_client, namespace, f"{stem}-{twin}", "SUCCEEDED")
            template = done["spec"]["template"]
            labels = dict(template["metadata"]["labels"])
            assert labels.pop("twin") == twin
            spec = template["spec"]
            resources = [c.get("resources") for c in spec["containers"]]
            stamps.append((labels, spec["tolerations"], spec.get("schedulerName"), resources))
        assert stamps[0] == stamps[1]
        assert stamps[0][0][keys.JOB_ID_LABEL] == stem[:63]
        first = stamps[0][3][0]
        assert first["requests"][keys.BATCH_POD_RESOURCE] == "1"
        assert first["limits"][keys.BATCH_POD_RESOURCE] == "1"


@pytest.mark.parametrize("webhook", [True, False], ids=["webhook", "created-without-webhook"])
async def test_a_job_without_retry_strategy_runs_once(
    kube_client: kube.KubeClient, namespace: str, webhook: bool
) -> None:
    """AWS Batch runs a job without retryStrategy once; Kubernetes' default backoffLimit
    would run it 7 times. A limit its author wrote is kept."""
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        for name, limit in (("once", None), ("chosen", 1)):
            body = builders.job(name, q, exit_code=1, suspend=None if webhook else True)
            if limit is None:
                del body["spec"]["backoffLimit"]  # Kubernetes' default, 6
            else:
                body["spec"]["backoffLimit"] = limit
            if not webhook:  # the webhook does not see it; put in a queue after
                del body["metadata"]["labels"][keys.QUEUE_LABEL]
            await kube_client.create(kube.JOBS, body, namespace)
            if not webhook:
                await kube_client.patch(
                    kube.JOBS, name, {"metadata": {"labels": {keys.QUEUE_LABEL: q}}}, namespace
                )
        once = await wait_state(kube_client, namespace, "once", "FAILED", timeout=90)
        chosen = await wait_state(kube_client, namespace, "chosen", "FAILED", timeout=90)
        assert once["spec"]["backoffLimit"] == 0
        assert once["status"]["failed"] == 1
        assert annotation(once, keys.REASON_CODE) == "FAILED:ATTEMPTS_EXHAUSTED"
        assert chosen["spec"]["backoffLimit"] == 1
        assert chosen["status"]["failed"] == 2
        for name, runs in (("once", 1), ("chosen", 2)):
            pods = await kube_client.list(kube.PODS, namespace, label_selector=f"job-name={name}")
            assert len(pods.items) == runs, [p["metadata"]["name"] for p in pods.items]


async def test_states_do_not_flap_and_a_retry_waits_runnable_holding_its_admission(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> None:
    """Every state a watch of the Jobs sees, in order: a job whose pod succeeded goes
    from RUNNING to SUCCEEDED (never back to STARTING); a failed attempt waiting for
    its retry is RUNNABLE, holding its admission (a job behind it is not admitted)."""
    seen: dict[str, list[tuple[str, str, str]]] = {}

    def published(raw: dict[str, Any]) -> tuple[str, tuple[str, str, str]]:
        ann = raw["metadata"].get("annotations") or {}
        return raw["metadata"]["name"], (
            ann.get(keys.STATE, ""),
            ann.get(keys.REASON_CODE, ""),
            ann.get(keys.REASON, ""),
        )

    def record(event: kube.Event[tuple[str, tuple[str, str, str]]]) -> None:
        if event.new is not None:
            name, state = event.new
            states = seen.setdefault(name, [])
            if not states or states[-1][:2] != state[:2]:
                states.append(state)

    watch = kube.Reflector(kube_client, kube.JOBS, published, namespace=namespace, name="states")
    watch.subscribe(record)
    task = asyncio.create_task(watch.run())
    try:
        async with batch_env(kube_client) as env:
            ce = await env.compute_environment(unique("ce"), max_vcpus=2)
            q = await env.queue(unique("q"), [ce])
            await kube_client.create(kube.JOBS, builders.job("ok", q, run_seconds=2), namespace)
            retry = {keys.RETRY_STRATEGY: '{"attempts": 2}'}
            body = builders.job("retried", q, cpu="2", exit_code=3, annotations=retry)
            await kube_client.create(kube.JOBS, body, namespace)

            async def retry_wait() -> bool:
                return any(s[1] == "RUNNABLE:RETRY_WAIT" for s in seen.get("retried", ()))

            await wait_for(retry_wait, 60, message="the failed attempt waiting for its retry")
            await kube_client.create(kube.JOBS, builders.job("behind", q, cpu="1"), namespace)
            # The Job controller waits 10 s before the next attempt: meanwhile the retried
            # job holds its 2 vCPUs and the job behind it waits.
            await asyncio.sleep(3)
            behind = await kube_client.get(kube.JOBS, "behind", namespace)
            retried = await kube_client.get(kube.JOBS, "retried", namespace)
            if annotation(retried, keys.REASON_CODE) == "RUNNABLE:RETRY_WAIT":
                assert behind["spec"]["suspend"] is True
                assert annotation(behind, keys.STATE) == "RUNNABLE"
                # `kubectl ebb why` shows the failed attempt's pod, not a queue position.
                why = kubectl_ebb(cluster, "why", "retried", "-n", namespace)
                assert "attempt 1 failed" in why and "pod retried-" in why, why
                assert "position" not in why and "queue " not in why, why
            await wait_state(kube_client, namespace, "ok", "SUCCEEDED")
            await wait_state(kube_client, namespace, "retried", "FAILED", timeout=90)
            await wait_state(kube_client, namespace, "behind", "SUCCEEDED", timeout=60)
    finally:
        watch.stop()
        await asyncio.gather(task, return_exceptions=True)
    ok = [s for s, _, _ in seen["ok"]]
    assert ok[-2:] == ["RUNNING", "SUCCEEDED"], seen["ok"]
    for name, states in seen.items():
        for (before, _, _), (after, _, _) in itertools.pairwise(states):
            assert allowed(State(before), State(after)), (name, states)
    waits = [reason for _, code, reason in seen["retried"] if code == "RUNNABLE:RETRY_WAIT"]
    assert waits and waits[0].startswith("attempt 1 failed (exit code 3); attempt 2 waits"), seen
    assert [s for s, _, _ in seen["retried"]][-1] == "FAILED"
