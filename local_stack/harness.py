"""What tests and benchmarks drive the local stack with: a handle on a running cluster
(local_stack.cluster), Ebb's processes run for real, and waiting for a condition."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ebb import kube
from local_stack import ROOT, builders
from local_stack.cluster import PORT_OFFSETS

T = TypeVar("T")


@dataclass(frozen=True)
class LocalCluster:
    state_dir: Path
    port_base: int
    kubeconfig: Path
    bin_path: str
    up_args: tuple[str, ...] = ()  # the flags `local_stack.cluster up` was given

    @property
    def extender_port(self) -> int:
        return self.port_base + PORT_OFFSETS["extender_port"]

    def client_context(self, who: str = "ebb-extender-client") -> ssl.SSLContext:
        """A TLS client trusting Ebb's CA and showing the client certificate the local
        stack gives kube-scheduler (ebb-extender-client) or kube-apiserver
        (ebb-webhook-client): the only callers Ebb's daemon answers."""
        context = ssl.create_default_context(cafile=str(self.state_dir / "ebb-tls" / "ca.crt"))
        pki = self.state_dir / "pki"
        context.load_cert_chain(pki / f"{who}.crt", pki / f"{who}.key")
        return context

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.port_base + PORT_OFFSETS['etcd_port']}"

    def compact_etcd(self) -> int:
        """Compact etcd's history up to now (what kube-apiserver does every 5 minutes), so
        watches from older resourceVersions get 410 Gone. Returns the revision."""
        key = base64.b64encode(b"/").decode()
        header = _post_json(f"{self.etcd_url}/v3/kv/range", {"key": key, "limit": 1})["header"]
        revision = int(header["revision"])
        _post_json(f"{self.etcd_url}/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def restart(self, component: str) -> str:
        """Stop one control-plane component (by its recorded PID) and start it again with
        the flags the cluster came up with; returns once it is ready."""
        return cluster_command(
            "restart", self.state_dir, self.port_base, *self.up_args, component=component
        )

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": self.bin_path + os.pathsep + os.environ.get("PATH", ""),
        }

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            ["kubectl", *args],
            env=self.env(),
            input=input,
            text=True,
            capture_output=True,
            check=False,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout + (proc.stderr if not check else "")

    def can_i(self, who: str, verb: str, resource: str, *scope: str) -> bool:
        """`kubectl auth can-i` as `who` (impersonated by the cluster's admin)."""
        answer = self.kubectl("auth", "can-i", verb, resource, *scope, f"--as={who}", check=False)
        first = answer.splitlines()[0].strip()
        assert first in ("yes", "no"), answer
        return first == "yes"


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def cluster_args(
    command: str, state_dir: Path, port_base: int, *extra: str, component: str = ""
) -> list[str]:
    """The command line of `python -m local_stack.cluster COMMAND` for this cluster."""
    return [
        sys.executable,
        "-m",
        "local_stack.cluster",
        command,
        *([component] if component else []),
        f"--state-dir={state_dir}",
        f"--port-base={port_base}",
        *extra,
    ]


def cluster_command(
    command: str, state_dir: Path, port_base: int, *extra: str, component: str = ""
) -> str:
    """Run `python -m local_stack.cluster COMMAND`; its output, or RuntimeError saying it."""
    proc = subprocess.run(
        cluster_args(command, state_dir, port_base, *extra, component=component),
        capture_output=True,
        check=False,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"local_stack.cluster {command} failed:\n{proc.stderr}\n{proc.stdout}")
    return proc.stdout + proc.stderr


def scheduler_daemon_args(
    cluster: LocalCluster, *, kubeconfig: Path | None = None, port: int | None = None
) -> list[str]:
    """The command line of Ebb's scheduler daemon: extender and webhook on `port` (the
    cluster's extender port by default), /healthz, /readyz and /metrics on `port + 1`."""
    port = port or cluster.extender_port
    return [
        sys.executable,
        "-m",
        "extender",
        f"--kubeconfig={kubeconfig or cluster.kubeconfig}",
        "--listen-host=127.0.0.1",
        f"--port={port}",
        f"--ops-port={port + 1}",
        f"--tls-dir={cluster.state_dir / 'ebb-tls'}",
        "--webhook-clients=kube-apiserver",
    ]


def scheduler_process(
    cluster: LocalCluster,
    *,
    name: str = "ebb-scheduler",
    kubeconfig: Path | None = None,
    port: int | None = None,
    extra: Sequence[str] = (),
) -> Process:
    """Ebb's scheduler daemon as a Process (`start` returns once it is ready)."""
    port = port or cluster.extender_port
    args = [*scheduler_daemon_args(cluster, kubeconfig=kubeconfig, port=port), *extra]
    return Process(name, args, cluster.state_dir / "logs", ops_url=f"http://127.0.0.1:{port + 1}")


async def wait_for(
    check: Callable[[], Awaitable[T | None]],
    timeout: float = 60.0,
    interval: float = 0.25,
    message: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy; fail with `message` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message} (last: {last!r})")


async def create_node(
    client: kube.KubeClient,
    name: str,
    *,
    cpu: str = "4",
    memory: str = "16Gi",
    gpu: int = 0,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A KWOK-managed node (kwok marks it Ready and runs its pods)."""
    capacity = builders.node_resources(cpu, memory, gpu=gpu)
    body = builders.node(name, capacity, labels=labels, taints=taints or ())
    return await client.create(kube.NODES, body)


class Process:
    """One of Ebb's processes (a daemon, the local AWS, the bridge), run for real so
    that tests may kill (-9) and restart it; its log is in the cluster's log directory.
    With an `ops_url`, `start` returns once its /readyz answers."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_dir: Path,
        ops_url: str = "",
        ready_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.ready_timeout = ready_timeout
        self.args = list(args)
        self.log_path = log_dir / f"{name}.log"
        self.ops_url = ops_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}  # over the defaults below

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                # moto accepts any credentials; botocore needs some to sign with.
                env={
                    **os.environ,
                    "AWS_ACCESS_KEY_ID": "local",
                    "AWS_SECRET_ACCESS_KEY": "local",
                    **self.env,
                },
            )
        if self.ops_url:
            self.wait_http(f"{self.ops_url}/readyz", timeout=self.ready_timeout)

    def wait_http(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not become ready ({url}); log:\n{tail}")

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
