"""Queues on the real control plane: capacity, priority, fair share, backfill, reasons,
state time limits, array jobs."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ebb import keys, kube
from local_stack import builders
from local_stack.batch import annotation, batch_env, unique, wait_state
from local_stack.harness import LocalCluster, wait_for

pytestmark = pytest.mark.usefixtures("scheduler_daemon")


async def admitted_at(client: kube.KubeClient, namespace: str, name: str) -> str:
    return annotation(await client.get(kube.JOBS, name, namespace), keys.ADMITTED_AT)


async def test_waiting_jobs_say_why_and_capacity_is_never_exceeded(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=2, node_cpu="4")
        q = await env.queue(unique("q"), [ce])
        for i in range(4):
            await kube_client.create(kube.JOBS, builders.job(f"j{i}", q, run_seconds=5), namespace)
        waiting = await wait_state(kube_client, namespace, "j3", "RUNNABLE")
        reason = annotation(waiting, keys.REASON)
        assert reason.startswith("position 2 in queue")
        assert f"{ce} 2/2 vCPUs in use" in reason
        assert annotation(waiting, keys.REASON_CODE) == "CAPACITY:COMPUTE_ENVIRONMENT_FULL"
        peak = 0

        async def all_done() -> bool:
            nonlocal peak
            jobs = await kube_client.list(kube.JOBS, namespace)
            running = sum(
                1
                for j in jobs.items
                if not j["spec"].get("suspend")
                and not any(
                    c["type"] in ("Complete", "Failed")
                    for c in j.get("status", {}).get("conditions") or ()
                )
            )
            peak = max(peak, running)
            return all(annotation(j, keys.STATE) == "SUCCEEDED" for j in jobs.items)

        await wait_for(all_done, 90, interval=0.2, message="all jobs SUCCEEDED")
        assert peak <= 2  # maxvCpus 2, one vCPU each


async def test_the_higher_priority_queue_goes_first(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=2, node_cpu="4")
        low = await env.queue(unique("low"), [ce], priority=1)
        high = await env.queue(unique("high"), [ce], priority=100)
        await kube_client.create(
            kube.JOBS, builders.job("blocker", low, cpu="2", run_seconds=4), namespace
        )
        await wait_state(kube_client, namespace, "blocker", "STARTING", "RUNNING")
        for i in range(3):
            await kube_client.create(
                kube.JOBS, builders.job(f"low{i}", low, run_seconds=2), namespace
            )
        for i in range(3):
            await kube_client.create(
                kube.JOBS, builders.job(f"high{i}", high, run_seconds=2), namespace
            )
        for name in ("low2", "high2"):
            await wait_state(kube_client, namespace, name, "SUCCEEDED", timeout=90)
        highs = [await admitted_at(kube_client, namespace, f"high{i}") for i in range(3)]
        lows = [await admitted_at(kube_client, namespace, f"low{i}") for i in range(3)]
        assert max(highs) <= min(lows)


async def test_fair_share_splits_capacity_by_weight(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    """weightFactor a=1, b=2: while both have work, a gets 2/3 of the vCPUs."""
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=6, node_cpu="8")
        policy = await env.policy(unique("fair"), {"a": 1.0, "b": 2.0})
        q = await env.queue(unique("q"), [ce], policy=policy)
        bodies = [
            builders.job(f"{share}{i}", q, share=share, run_seconds=3)
            for i in range(24)
            for share in ("a", "b")
        ]
        await asyncio.gather(*(kube_client.create(kube.JOBS, b, namespace) for b in bodies))
        samples = {"a": 0, "b": 0}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jobs = await kube_client.list(kube.JOBS, namespace)
            waiting = {"a": 0, "b": 0}
            running = {"a": 0, "b": 0}
            for j in jobs.items:
                share = j["metadata"]["labels"][keys.SHARE_LABEL]
                state = annotation(j, keys.STATE)
                if state in ("STARTING", "RUNNING"):
                    running[share] += 1
                elif state in ("RUNNABLE", "SUBMITTED"):
                    waiting[share] += 1
            if not (waiting["a"] and waiting["b"]):
                break  # the split only means something while both shares wait
            for share in samples:
                samples[share] += running[share]
            await asyncio.sleep(0.5)
        total = samples["a"] + samples["b"]
        assert total > 0
        assert abs(samples["a"] / total - 2 / 3) <= 0.1 * (2 / 3)


async def test_small_jobs_backfill_and_a_job_that_can_never_fit_says_so(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=4, node_cpu="8")
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(
            kube.JOBS, builders.job("holder", q, cpu="3", run_seconds=20), namespace
        )
        await wait_state(kube_client, namespace, "holder", "STARTING", "RUNNING")
        await kube_client.create(
            kube.JOBS, builders.job("big", q, cpu="4", run_seconds=1), namespace
        )
        await kube_client.create(
            kube.JOBS, builders.job("small", q, cpu="1", run_seconds=1), namespace
        )
        await wait_state(kube_client, namespace, "small", "SUCCEEDED")  # went around "big"
        big = await wait_state(kube_client, namespace, "big", "RUNNABLE")
        assert "position 1" in annotation(big, keys.REASON)
        # Shrink the environment below what "big" needs: it can never run, and says so.
        await kube_client.patch(kube.COMPUTE_ENVIRONMENTS, ce, {"spec": {"maxvCpus": 3}})

        async def misconfigured() -> bool:
            raw = await kube_client.get(kube.JOBS, "big", namespace)
            return annotation(raw, keys.REASON_CODE) == (
                "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE"
            )

        await wait_for(misconfigured, 30, message="big flagged as never fitting")
        raw = await kube_client.get(kube.JOBS, "big", namespace)
        assert "can never run" in annotation(raw, keys.REASON)


async def test_state_time_limit_cancels_a_job_stuck_runnable(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=1)
        q = await env.queue(
            unique("q"),
            [ce],
            time_limits=[
                {
                    "reason": "CAPACITY:COMPUTE_ENVIRONMENT_FULL",
                    "state": "RUNNABLE",
                    "maxTimeSeconds": 600,
                    "action": "CANCEL",
                }
            ],
        )
        await kube_client.create(kube.JOBS, builders.job("holder", q, run_seconds=60), namespace)
        await wait_state(kube_client, namespace, "holder", "STARTING", "RUNNING")
        await kube_client.create(kube.JOBS, builders.job("stuck", q), namespace)
        await wait_state(kube_client, namespace, "stuck", "RUNNABLE")
        # Travel in time: it has been waiting for capacity for 11 minutes. Only Ebb writes
        # what it publishes, so the clock is turned back with its own credentials.
        past = (datetime.now(UTC) - timedelta(seconds=660)).strftime("%Y-%m-%dT%H:%M:%SZ")
        access = kube.load_access(str(cluster.state_dir / "ebb-scheduler.kubeconfig"), None, {})
        async with kube.KubeClient(access) as as_ebb:
            await as_ebb.patch(
                kube.JOBS,
                "stuck",
                {"metadata": {"annotations": {keys.STATE_SINCE: past}}},
                namespace,
            )
        done = await wait_state(kube_client, namespace, "stuck", "FAILED")
        assert annotation(done, keys.REASON_CODE) == "FAILED:STATE_TIME_LIMIT"
        assert "longer than 600 s" in annotation(done, keys.REASON)


async def test_array_job_children_run_within_capacity_and_are_summarised(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=4, node_cpu="8")
        q = await env.queue(unique("q"), [ce])
        created = await kube_client.create(
            kube.JOBS,
            builders.job("arr", q, completions=12, parallelism=12, indexed=True, run_seconds=1),
            namespace,
        )
        env_vars = created["spec"]["template"]["spec"]["containers"][0]["env"]
        assert any(e["name"] == "AWS_BATCH_JOB_ARRAY_INDEX" for e in env_vars)
        running = await wait_state(kube_client, namespace, "arr", "RUNNING", "STARTING")
        assert running["spec"]["parallelism"] <= 4
        assert annotation(running, keys.REQUESTED_PARALLELISM) == "12"
        done = await wait_state(kube_client, namespace, "arr", "SUCCEEDED", timeout=90)
        summary = orjson.loads(annotation(done, keys.ARRAY_STATUS))
        assert summary["SUCCEEDED"] == 12
        assert summary["RUNNABLE"] == summary["RUNNING"] == summary["FAILED"] == 0
        pods = await kube_client.list(kube.PODS, namespace, label_selector="job-name=arr")
        assert len(pods.items) == 12
