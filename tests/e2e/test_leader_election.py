"""Two replicas of each daemon: one leads (the scheduler admits, the autoscaler launches
and terminates), the other serves and waits; when the leader is killed (-9), the other
takes over within the lease time (goal: 15 s)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ebb import keys, kube
from local_stack import builders
from local_stack.aws import (
    LocalAws,
    autoscaler_process,
    batch_job,
    compute_environment,
    job_succeeded,
    metric,
    name,
    scaled_to_zero,
)
from local_stack.batch import annotation, batch_env, unique, wait_state
from local_stack.builders import job_queue
from local_stack.harness import LocalCluster, Process, scheduler_process, wait_for

FAIL_OVER_GOAL_SECONDS = 15


async def lease_holder(client: kube.KubeClient, lease: str = "ebb-scheduler") -> str:
    raw = await client.get(kube.LEASES, lease, "ebb-system")
    return str(raw["spec"].get("holderIdentity") or "")


async def fail_over(client: kube.KubeClient, lease: str, leader: Process, standby: str) -> float:
    """Kill (-9) the leader; seconds until `standby` holds the lease."""
    assert await lease_holder(client, lease) not in ("", standby)
    leader.kill()
    killed = time.monotonic()

    async def standby_leads() -> bool:
        return await lease_holder(client, lease) == standby

    await wait_for(standby_leads, 30, interval=0.2, message=f"{standby} to lead {lease}")
    seconds = time.monotonic() - killed
    print(f"{lease} fail-over took {seconds:.1f} s")
    assert seconds <= FAIL_OVER_GOAL_SECONDS, f"{lease} fail-over took {seconds:.1f} s"
    return seconds


async def test_fail_over_to_the_standby_replica(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    scheduler_daemon: Process,
) -> None:
    port = cluster.port_base + 910
    standby = scheduler_process(
        cluster,
        name="ebb-scheduler-2",
        kubeconfig=cluster.state_dir / "ebb-scheduler.kubeconfig",
        port=port,
        extra=["--identity=standby"],
    )
    standby.start()  # ready: its caches synced, it serves, it does not lead
    try:
        async with batch_env(kube_client) as env:
            ce = await env.compute_environment(unique("ce"))
            q = await env.queue(unique("q"), [ce])
            await kube_client.create(kube.JOBS, builders.job("before", q), namespace)
            await wait_state(kube_client, namespace, "before", "SUCCEEDED")
            await fail_over(kube_client, "ebb-scheduler", scheduler_daemon, "standby")
            # The killed replica comes back (it serves the webhook URL of this local
            # cluster); it follows, and the standby-turned-leader admits the next job.
            scheduler_daemon.start()
            await kube_client.create(kube.JOBS, builders.job("after", q), namespace)
            done = await wait_state(kube_client, namespace, "after", "SUCCEEDED")
            assert annotation(done, keys.ADMITTED_AT)
            assert await lease_holder(kube_client) == "standby"
    finally:
        standby.stop()
        if scheduler_daemon.proc is None or scheduler_daemon.proc.poll() is not None:
            scheduler_daemon.start()


async def test_autoscaler_fails_over_and_the_standby_launches(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    *,
    local_aws: LocalAws,
    autoscaler: Process,
    setup: Any,
) -> None:
    standby = autoscaler_process(
        cluster,
        local_aws,
        name="ebb-autoscaler-2",
        port=cluster.port_base + 952,
        extra=["--identity=autoscaler-standby"],
    )
    await asyncio.to_thread(standby.start)  # ready: caches synced; it does not lead
    try:
        ce = name("ha")
        await setup(
            kube.COMPUTE_ENVIRONMENTS, compute_environment(ce, local_aws, instanceTypes=["c6i"])
        )
        await setup(kube.JOB_QUEUES, job_queue(f"{ce}-q", ce))
        await fail_over(kube_client, "ebb-autoscaler", autoscaler, "autoscaler-standby")
        # Only the standby-turned-leader is left to launch for this job.
        await kube_client.create(kube.JOBS, batch_job("ha", f"{ce}-q", pods=2), namespace)
        await wait_for(lambda: job_succeeded(kube_client, namespace, "ha"), 90, message="job")
        launched = f'ebb_autoscaler_launches_total{{capacity_type="spot",compute_environment="{ce}"'
        instances = local_aws.instances(ce)
        assert instances and metric(standby.ops_url, launched) == len(instances)
        await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 60, message="to zero")
    finally:
        if autoscaler.proc is None:
            await asyncio.to_thread(autoscaler.start)  # back, as a follower
        standby.stop()  # releases the lease: the session's autoscaler leads again

    async def session_autoscaler_leads() -> bool:
        return await lease_holder(kube_client, "ebb-autoscaler") not in ("", "autoscaler-standby")

    await wait_for(session_autoscaler_leads, 30, message="the session's autoscaler to lead")
