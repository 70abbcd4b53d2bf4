"""Scripted scheduler extenders, served through Ebb's own extender shell and protocol, and
extra kube-scheduler processes configured to call them (the port of kube-scheduler's
test/integration/scheduler/extender)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from ebb import kube
from ebb.model import PodInfo
from extender.placement.protocol import BindingArgs, ExtenderArgs, FilterResult, HostPriority
from extender.placement.routes import add_routes
from extender.placement.service import bind_pod
from local_stack.harness import LocalCluster

Predicate = Callable[[PodInfo, str], bool]
Prioritizer = Callable[[PodInfo, Sequence[str]], list[HostPriority]]


@dataclass
class ScriptedExtender:
    """Upstream's test extender: predicates and weighted prioritizers over node names,
    binding through the API when given a client; plus the failure modes to script."""

    name: str
    predicates: Sequence[Predicate] = ()
    prioritizers: Sequence[tuple[Prioritizer, int]] = ()
    client: kube.KubeClient | None = None
    unresolvable: bool = False  # rejected nodes go to FailedAndUnresolvableNodes
    error: str = ""  # answer filter with this Error
    delay: float = 0.0  # answer filter only after this many seconds
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    async def filter(self, args: ExtenderArgs) -> FilterResult:
        self.calls["filter"] += 1
        await asyncio.sleep(self.delay)
        if self.error:
            return FilterResult(error=self.error)
        kept, failed = [], {}
        for name in args.node_names:
            if all(predicate(args.pod, name) for predicate in self.predicates):
                kept.append(name)
            else:
                failed[name] = f"extender failed: {self.name}"
        if self.unresolvable:
            return FilterResult(kept, unresolvable=failed)
        return FilterResult(kept, failed)

    async def prioritize(self, args: ExtenderArgs) -> list[HostPriority]:
        self.calls["prioritize"] += 1
        combined: dict[str, int] = defaultdict(int)
        for prioritizer, weight in self.prioritizers:
            for host, score in prioritizer(args.pod, args.node_names):
                combined[host] += score * weight
        return list(combined.items())

    async def bind(self, args: BindingArgs) -> str:
        self.calls["bind"] += 1
        assert self.client is not None, f"{self.name} has no bind verb"
        try:
            await bind_pod(self.client, args, {})
        except kube.ApiError as exc:
            return str(exc)
        return ""


def only(*names: str) -> Predicate:
    return lambda _pod, node: node in names


def favour(favourite: str) -> Prioritizer:
    return lambda _pod, nodes: [(n, 10 if n == favourite else 1) for n in nodes]


@contextlib.asynccontextmanager
async def serve_extenders(
    extenders: Mapping[str, ScriptedExtender], port: int
) -> AsyncIterator[str]:
    """Serve each extender under /<key>/ on plain HTTP; yields the base URL."""
    app = web.Application()
    for prefix, extender in extenders.items():
        add_routes(
            app,
            lambda extender=extender: extender,  # type: ignore[misc]
            prefix=f"/{prefix}",
            max_body_bytes=32 * 2**20,
            read_timeout=10.0,
        )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def kube_scheduler(
    cluster: LocalCluster,
    name: str,
    extenders: list[dict[str, Any]],
    port: int,
    *,
    qps: int = 100,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Another kube-scheduler (the cluster's own binary) serving the profile `name` with
    these extender stanzas, against the session cluster."""
    state = cluster.state_dir
    kubeconfig = state / "kube-scheduler.kubeconfig"
    config = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig), "qps": qps, "burst": 2 * qps},
        "leaderElection": {"leaderElect": False},
        "profiles": [{"schedulerName": name}],
        "extenders": extenders,
    }
    path = state / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    binary = next(
        Path(d) / "kube-scheduler"
        for d in cluster.bin_path.split(":")
        if (Path(d) / "kube-scheduler").exists()
    )
    log_path = state / "logs" / f"{name}.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            f"--config={path}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await _wait_healthy(proc, f"https://127.0.0.1:{port}/healthz", log_path)
        yield proc
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _wait_healthy(proc: asyncio.subprocess.Process, url: str, log_path: Path) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the scheduler's self-signed serving certificate

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url, context=context, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    for _ in range(150):
        if proc.returncode is not None:
            raise RuntimeError(f"kube-scheduler exited; see {log_path}")
        if await asyncio.to_thread(healthy):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"kube-scheduler not healthy after 30 s; see {log_path}")
