"""A job's path through Ebb on the real control plane: webhook, admission, states."""

from __future__ import annotations

import pytest

from ebb import keys, kube
from local_stack import builders
from local_stack.batch import annotation, batch_env, unique, wait_state
from local_stack.harness import wait_for

pytestmark = pytest.mark.usefixtures("scheduler_daemon")


async def test_a_job_is_suspended_admitted_runs_and_succeeds(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        queue = await env.queue(unique("q"), [ce])
        created = await kube_client.create(kube.JOBS, builders.job("hello", queue), namespace)
        # The webhook made it Ebb's.
        assert created["spec"]["suspend"] is True
        assert annotation(created, keys.STATE) == "SUBMITTED"
        template = created["spec"]["template"]
        assert template["metadata"]["labels"][keys.QUEUE_LABEL] == queue
        assert keys.BATCH_TOLERATION in template["spec"]["tolerations"]
        done = await wait_state(kube_client, namespace, "hello", "SUCCEEDED")
        assert done["spec"]["suspend"] is False
        assert annotation(done, keys.ADMITTED_AT)
        attempts = annotation(done, keys.ATTEMPTS)
        assert '"exitCode":0' in attempts and ce in attempts

        async def reasons() -> set[str] | None:
            events = await kube_client.list(
                kube.EVENTS, namespace, field_selector="involvedObject.name=hello"
            )
            found = {e["reason"] for e in events.items}
            return found if {"Starting", "Succeeded"} <= found else None

        # Events are recorded in the background (behind any backlog an earlier test left).
        await wait_for(reasons, 60, message="the Starting and Succeeded events")


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {keys.RETRY_STRATEGY: '{"attempts": 11}'},
            "metadata.annotations[ebb.dev/retry-strategy].attempts: 11 is not allowed",
        ),
        ({keys.DEPENDS_ON: "Not_A_Name"}, "metadata.annotations[ebb.dev/depends-on]: "),
        ({keys.TIMEOUT_SECONDS: "30"}, "30 is below the minimum of 60 seconds"),
    ],
)
async def test_webhook_rejects_bad_annotations_naming_the_field(
    kube_client: kube.KubeClient, namespace: str, annotations: dict[str, str], message: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), nodes=0)
        queue = await env.queue(unique("q"), [ce])
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(
                kube.JOBS, builders.job("bad", queue, annotations=annotations), namespace
            )
        assert message in info.value.message


async def test_webhook_rejects_unknown_and_disabled_queues_and_oversized_pods(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=16, nodes=0)
        off = await env.queue(unique("off"), [ce], state="DISABLED")
        on = await env.queue(unique("on"), [ce])
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(kube.JOBS, builders.job("a", "no-such-queue"), namespace)
        assert "job queue 'no-such-queue' does not exist" in info.value.message
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(kube.JOBS, builders.job("b", off), namespace)
        assert "is DISABLED and accepts no new jobs" in info.value.message
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(kube.JOBS, builders.job("c", on, cpu="32"), namespace)
        assert (
            f"requests.cpu: 32 vCPUs per pod exceeds the largest compute environment of "
            f"queue {on} ({ce}: maxvCpus 16)"
        ) in info.value.message
        small = await env.compute_environment(
            unique("small"), nodes=0, instance_types=("c6i.large",)
        )
        tiny = await env.queue(unique("tiny"), [small])
        with pytest.raises(kube.ApiError) as info:
            # c6i.large: 2 vCPUs, of which ~1.78 are left after kube-reserved and DaemonSets.
            await kube_client.create(kube.JOBS, builders.job("d", tiny, cpu="1900m"), namespace)
        assert (
            f"requests.cpu 1.9 vCPUs exceeds what any node of compute environment {small} can "
            "hold: c6i.large has 1.78 vCPUs usable"
        ) in info.value.message


async def test_only_ebb_may_unsuspend_a_queued_job(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        # DISABLED: the job must stay queued; with room, Ebb admits it within a pass and
        # unsuspending it is then no change at all.
        ce = await env.compute_environment(unique("ce"), nodes=0, state="DISABLED")
        queue = await env.queue(unique("q"), [ce])
        await kube_client.create(kube.JOBS, builders.job("mine", queue), namespace)
        with pytest.raises(kube.ApiError) as info:
            await kube_client.patch(kube.JOBS, "mine", {"spec": {"suspend": False}}, namespace)
        assert "spec.suspend: only Ebb admits Jobs" in info.value.message
        with pytest.raises(kube.ApiError) as info:
            await kube_client.patch(
                kube.JOBS, "mine", {"metadata": {"labels": {keys.QUEUE_LABEL: "other"}}}, namespace
            )
        assert "is immutable" in info.value.message
        # What Ebb publishes is Ebb's: no one else may write it, nor widen the array.
        with pytest.raises(kube.ApiError) as info:
            await kube_client.patch(
                kube.JOBS, "mine", {"metadata": {"annotations": {keys.STATE: "RUNNING"}}}, namespace
            )
        assert f"metadata.annotations[{keys.STATE}]: is written by Ebb only" in info.value.message
        with pytest.raises(kube.ApiError) as info:
            await kube_client.patch(kube.JOBS, "mine", {"spec": {"parallelism": 5}}, namespace)
        assert "spec.parallelism: Ebb sets it" in info.value.message
