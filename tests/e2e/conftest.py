"""Fixtures that bring up the real local control plane once per test session.

The cluster is never optional: if it cannot start, every e2e test errors (it is not
skipped), so CI cannot pass without really running them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ebb import kube
from local_stack import ROOT
from local_stack.aws import LocalAws, autoscaler_process, bridge_process
from local_stack.cluster import binaries_path
from local_stack.harness import LocalCluster, Process, cluster_command, scheduler_process


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    state_dir = Path(os.environ.get("EBB_TEST_STATE_DIR", ROOT / ".ebb-test")).resolve()
    port_base = int(os.environ.get("EBB_TEST_PORT_BASE", "17000"))
    path = binaries_path()
    if state_dir.exists():
        cluster_command("down", state_dir, port_base, f"--bin-path={path}")
        shutil.rmtree(state_dir)
    # ConfigMaps bypass the watch cache so that tests can make a watch 410 Gone by
    # compacting etcd (the cache would otherwise replay a fresh cluster's history).
    up_args = (f"--bin-path={path}", "--apiserver-extra-args=--watch-cache-sizes=configmaps#0")
    cluster_command("up", state_dir, port_base, *up_args)
    try:
        yield LocalCluster(state_dir, port_base, state_dir / "kubeconfig", path, up_args)
    finally:
        cluster_command("down", state_dir, port_base, f"--bin-path={path}")


@pytest.fixture(scope="session")
def scheduler_daemon(cluster: LocalCluster) -> Iterator[Process]:
    """Ebb's scheduler daemon, serving the extender kube-scheduler is configured with."""
    daemon = scheduler_process(
        cluster,
        kubeconfig=cluster.state_dir / "ebb-scheduler.kubeconfig",
        extra=[f"--webhook-url=https://127.0.0.1:{cluster.extender_port}", "--log-level=debug"],
    )
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
async def kube_client(cluster: LocalCluster) -> AsyncIterator[kube.KubeClient]:
    access = kube.load_access(str(cluster.kubeconfig), None, {})
    client = kube.KubeClient(access, user_agent="ebb-tests")
    yield client
    await client.close()


@pytest.fixture
async def namespace(kube_client: kube.KubeClient) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await kube_client.create(kube.NAMESPACES, {"metadata": {"name": name}})
    yield name
    await kube_client.delete(kube.NAMESPACES, name)


# --- the local AWS, the instance-boot bridge and the autoscaler ---------------------


@pytest.fixture(scope="session")
def local_aws(cluster: LocalCluster) -> Iterator[LocalAws]:
    aws = LocalAws(cluster)
    aws.start()
    yield aws
    aws.process.stop()


@pytest.fixture(scope="session")
def bridge(cluster: LocalCluster, local_aws: LocalAws) -> Iterator[Process]:
    process = bridge_process(cluster, local_aws)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def autoscaler(
    cluster: LocalCluster,
    local_aws: LocalAws,
    bridge: Process,
    scheduler_daemon: Process,
) -> Iterator[Process]:
    """The autoscaler, for the modules that use it. Not for the whole session: it marks
    every compute environment without subnets INVALID (as it must), and the job
    scheduling tests' environments (fixed KWOK nodes, no EC2) have none, so the
    scheduler would then admit nothing to them."""
    process = autoscaler_process(cluster, local_aws)
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def setup(
    kube_client: kube.KubeClient, local_aws: LocalAws, autoscaler: Process
) -> AsyncIterator[Any]:
    """Creates compute environments and queues for one autoscaler test; after it, clears
    the local AWS's faults and deletes them."""
    made: list[tuple[kube.Resource, str]] = []

    async def make(resource: kube.Resource, body: dict[str, Any]) -> None:
        await kube_client.create(resource, body)
        made.append((resource, body["metadata"]["name"]))

    yield make
    local_aws.faults([])
    for resource, name in reversed(made):
        await kube_client.delete(resource, name)
