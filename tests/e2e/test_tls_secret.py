"""Replicas share one serving certificate through a Secret, with the scheduler's own
(least-privilege) service account, and switch to its renewals without a restart."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import time
import urllib.request
from pathlib import Path

from cryptography import x509

from ebb import kube, tls
from ebb.kube.resources import SECRETS
from local_stack import builders
from local_stack.aws import metric
from local_stack.batch import batch_env, unique, wait_state
from local_stack.harness import LocalCluster, Process, scheduler_process


async def test_two_replicas_race_and_end_with_the_same_certificate(
    cluster: LocalCluster, kube_client: kube.KubeClient, tmp_path: Path
) -> None:
    name = "ebb-scheduler-tls"
    await kube_client.delete(SECRETS, name, "ebb-system")
    access = kube.load_access(str(cluster.state_dir / "ebb-scheduler.kubeconfig"), None, {})
    async with kube.KubeClient(access) as client:
        dirs = [tmp_path / "a", tmp_path / "b"]
        await asyncio.gather(
            *(
                tls.sync_secret(
                    client,
                    namespace="ebb-system",
                    name=name,
                    directory=d,
                    common_name="ebb-scheduler",
                    dns_names=("localhost",),
                )
                for d in dirs
            )
        )
    for file_name in ("ca.crt", "tls.crt", "tls.key"):
        assert (dirs[0] / file_name).read_bytes() == (dirs[1] / file_name).read_bytes()
    secret = await kube_client.get(SECRETS, name, "ebb-system")
    assert set(secret["data"]) >= {"ca.crt", "tls.crt", "tls.key"}
    await kube_client.delete(SECRETS, name, "ebb-system")


LIFETIME_SECONDS = 60  # renewed at 40 s; each replica looks every 6 s
RENEWALS = 3


async def test_replicas_serve_through_renewals_without_a_refused_job_or_failed_cycle(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    scheduler_daemon: Process,
    tmp_path: Path,
) -> None:
    """Two replicas share a certificate that lasts a minute: through three renewals the
    webhook admits every Job, kube-scheduler's extender calls place them all (no
    scheduling cycle ends in an error), and both replicas switch to each renewed
    certificate without a restart. The CA stays, so caBundles never change."""
    name = "ebb-scheduler-tls"
    await kube_client.delete(SECRETS, name, "ebb-system")
    replicas = []
    for i, port in enumerate((cluster.extender_port, cluster.port_base + 910)):
        directory = tmp_path / f"replica-{i}"
        directory.mkdir()
        for file_name in ("ca.crt", "ca.key"):  # the CA kube-scheduler and the webhook trust
            shutil.copy(cluster.state_dir / "ebb-tls" / file_name, directory / file_name)
        extra = [
            f"--tls-dir={directory}",
            f"--tls-secret=ebb-system/{name}",
            f"--tls-lifetime-seconds={LIFETIME_SECONDS}",
            f"--identity=renewing-{i}",
        ]
        if port == cluster.extender_port:  # the replica kube-scheduler and the webhook call
            extra.append(f"--webhook-url=https://127.0.0.1:{port}")
        replicas.append(
            scheduler_process(
                cluster,
                name=f"ebb-scheduler-renewing-{i}",
                kubeconfig=cluster.state_dir / "ebb-scheduler.kubeconfig",
                port=port,
                extra=extra,
            )
        )
    errors_before = schedule_errors(cluster)
    scheduler_daemon.stop()
    try:
        for replica in replicas:
            replica.start()
        async with batch_env(kube_client) as env:
            ce = await env.compute_environment(unique("renew-ce"))
            q = await env.queue(unique("renew-q"), [ce])
            served: list[set[int]] = [set(), set()]
            jobs: list[str] = []
            started = time.monotonic()
            while min(len(s) for s in served) <= RENEWALS:
                assert time.monotonic() - started < 4 * LIFETIME_SECONDS, served
                for i, port in enumerate((cluster.extender_port, cluster.port_base + 910)):
                    served[i].add(await serial_served(port))
                # Refused by the webhook, create raises; kube-scheduler places each.
                job = f"job-{len(jobs)}"
                await kube_client.create(kube.JOBS, builders.job(job, q), namespace)
                jobs.append(job)
                await asyncio.sleep(4)
            for job in jobs:
                await wait_state(kube_client, namespace, job, "SUCCEEDED")
            assert served[0] == served[1]  # both replicas switched to each certificate
            for replica in replicas:
                assert metric(replica.ops_url, "ebb_tls_certificate_loads_total") >= RENEWALS
            assert schedule_errors(cluster) == errors_before
            print(f"{len(served[0])} certificates served, {len(jobs)} Jobs placed")
    finally:
        for replica in replicas:
            replica.stop()
        await kube_client.delete(SECRETS, name, "ebb-system")
        scheduler_daemon.start()


async def serial_served(port: int) -> int:
    pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port))
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def schedule_errors(cluster: LocalCluster) -> float:
    """kube-scheduler's scheduling cycles that ended in an error (an extender call that
    failed is one)."""
    pki = cluster.state_dir / "pki"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # kube-scheduler's self-signed serving certificate
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    url = f"https://127.0.0.1:{cluster.port_base + 259}/metrics"
    with urllib.request.urlopen(url, context=context, timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("scheduler_schedule_attempts_total{") and 'result="error"' in line
    )
