"""Two scheduler replicas: one leads (admits), the other serves and waits; when the
leader is killed (-9), the other takes over within the lease time."""

from __future__ import annotations

import time

from ebb import keys, kube
from tests.e2e.batch import annotation, batch_env, job_body, unique, wait_state
from tests.e2e.cluster import LocalCluster, Process, scheduler_process, wait_for


async def lease_holder(client: kube.KubeClient) -> str:
    lease = await client.get(kube.LEASES, "ebb-scheduler", "ebb-system")
    return str(lease["spec"].get("holderIdentity") or "")


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
        assert await lease_holder(kube_client) != "standby"
        async with batch_env(kube_client) as env:
            ce = await env.compute_environment(unique("ce"))
            q = await env.queue(unique("q"), [ce])
            await kube_client.create(kube.JOBS, job_body("before", q), namespace)
            await wait_state(kube_client, namespace, "before", "SUCCEEDED")
            scheduler_daemon.kill()
            killed = time.monotonic()

            async def standby_leads() -> bool:
                return await lease_holder(kube_client) == "standby"

            await wait_for(standby_leads, 30, interval=0.2, message="the standby to lead")
            fail_over = time.monotonic() - killed
            assert fail_over <= 15, f"fail-over took {fail_over:.1f} s"
            print(f"fail-over took {fail_over:.1f} s")
            # The killed replica comes back (it serves the webhook URL of this local
            # cluster); it follows, and the standby-turned-leader admits the next job.
            scheduler_daemon.start()
            await kube_client.create(kube.JOBS, job_body("after", q), namespace)
            done = await wait_state(kube_client, namespace, "after", "SUCCEEDED")
            assert annotation(done, keys.ADMITTED_AT)
            assert await lease_holder(kube_client) == "standby"
    finally:
        standby.stop()
        if scheduler_daemon.proc is None or scheduler_daemon.proc.poll() is not None:
            scheduler_daemon.start()
