"""Fixtures that bring up the real local control plane once per test session.

The cluster is never optional: if it cannot start, every e2e test errors (it is not
skipped), so CI cannot pass without really running them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ebb import kube
from tests.e2e.cluster import ROOT, LocalCluster, bin_path, cluster_command


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    state_dir = Path(os.environ.get("EBB_TEST_STATE_DIR", ROOT / ".ebb-test")).resolve()
    port_base = int(os.environ.get("EBB_TEST_PORT_BASE", "17000"))
    path = bin_path()
    if state_dir.exists():
        cluster_command("down", state_dir, port_base, f"--bin-path={path}")
        shutil.rmtree(state_dir)
    # ConfigMaps bypass the watch cache so that tests can make a watch 410 Gone by
    # compacting etcd (the cache would otherwise replay a fresh cluster's history).
    cluster_command(
        "up",
        state_dir,
        port_base,
        f"--bin-path={path}",
        "--apiserver-extra-args=--watch-cache-sizes=configmaps#0",
    )
    try:
        yield LocalCluster(state_dir, port_base, state_dir / "kubeconfig", path)
    finally:
        cluster_command("down", state_dir, port_base, f"--bin-path={path}")


class Daemon:
    """One of Ebb's daemons as a real process, which tests may kill and restart."""

    def __init__(self, name: str, args: list[str], ops_port: int, log: Path) -> None:
        self.name, self.args, self.ops_port, self.log = name, args, ops_port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.starts += 1
        deadline = time.monotonic() + 60
        while True:
            try:
                url = f"http://127.0.0.1:{self.ops_port}/readyz"
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"{self.name} did not become ready; see {self.log}")
            time.sleep(0.2)

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture(scope="session")
def scheduler_daemon(cluster: LocalCluster) -> Iterator[Daemon]:
    """Ebb's scheduler daemon, serving the extender kube-scheduler is configured with."""
    ops_port = cluster.port_base + 901
    daemon = Daemon(
        "ebb-scheduler",
        [
            sys.executable,
            "-m",
            "extender",
            f"--kubeconfig={cluster.state_dir / 'ebb-scheduler.kubeconfig'}",
            "--listen-host=127.0.0.1",
            f"--port={cluster.extender_port}",
            f"--ops-port={ops_port}",
            f"--tls-dir={cluster.state_dir / 'ebb-tls'}",
            f"--webhook-url=https://127.0.0.1:{cluster.extender_port}",
            "--log-level=debug",
        ],
        ops_port,
        cluster.state_dir / "logs" / "ebb-scheduler.log",
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
