"""Replicas share one serving certificate through a Secret, with the scheduler's own
(least-privilege) service account."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ebb import kube, tls
from ebb.kube.resources import SECRETS
from tests.e2e.cluster import LocalCluster


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
