"""Multi-node jobs (gangs) from zero capacity on the local stack: the time from submission
until every pod of a 4-, 16- and 64-node gang runs, phase by phase.
Run: python -m bench.gang_start [--nodes 4,16,64]

Brings up its own local stack (`python -m local_stack.cluster up --ebb`: the real
control plane, Ebb's scheduler and autoscaler, the local EC2 (moto) and the
instance-boot bridge that turns an instance into a KWOK node 2 s after its launch) in
.ebb-bench on ports from EBB_BENCH_PORT_BASE (26000: below the kernel's ephemeral
range). Each gang gets a compute environment of its own, so it starts from zero nodes:
on-demand c6i.large (2 vCPUs), maxvCpus 256, one pod of 1 vCPU and 1 GiB per node.
The benchmark polls the local EC2 and the API server every 0.1 s and times, from the
Job's creation:

    submitted -> launched   every instance of the gang is in EC2 (one RunInstances)
              -> ready      every instance is a Ready node
              -> bound      every pod has a node (the extender binds them together)
              -> running    every pod is Running

The extender holds every pod's bind until the whole gang has nodes, then POSTs all the
Bindings (--bind-concurrency at a time): no pod is bound before every pod is placed,
but the Bindings land one by one, and KWOK may run the first before the last lands.
The benchmark reports that spread (first pod bound to last) and whether a pod ran
before the last was bound. It then deletes the Job and waits for the environment's
nodes to go before the next size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from bench.admission_e2e import PORT_BASE, fresh_cluster
from ebb import keys, kube

INSTANCE_TYPE = "c6i.large"
MAX_VCPUS = 256
POLL = 0.1
PHASES = ("launched", "ready", "bound", "running")


@dataclass
class Timeline:
    """Seconds from submission at which each phase was first seen complete."""

    nodes: int
    at: dict[str, float] = field(default_factory=dict)
    first_bound: float | None = None
    first_running: float | None = None

    def phase_seconds(self) -> dict[str, float]:
        """Each phase's own duration (from the end of the one before)."""
        out, before = {}, 0.0
        for phase in PHASES:
            out[phase] = self.at[phase] - before
            before = self.at[phase]
        return out


def environment(name: str, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": keys.API_VERSION,
        "kind": "ComputeEnvironment",
        "metadata": {"name": name},
        "spec": {
            "type": "EC2",
            "maxvCpus": MAX_VCPUS,
            "instanceTypes": [INSTANCE_TYPE],
            "subnets": info["subnets"],
            "securityGroupIds": [info["securityGroup"]],
            "instanceRole": info["instanceRole"],
            "scaleDownDelaySeconds": 5,
        },
    }


def queue(name: str) -> dict[str, Any]:
    return {
        "apiVersion": keys.API_VERSION,
        "kind": "JobQueue",
        "metadata": {"name": name},
        "spec": {
            "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": name}],
        },
    }


def gang(name: str, nodes: int) -> dict[str, Any]:
    requests = {"cpu": "1", "memory": "1Gi"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "annotations": {keys.NODES: str(nodes)}},
        "spec": {
            "parallelism": nodes,
            "completions": nodes,
            "completionMode": "Indexed",
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    "labels": {keys.QUEUE_LABEL: name},
                    "annotations": {"kwok.ebb.dev/run-seconds": "600"},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "tolerations": [keys.BATCH_TOLERATION],
                    "nodeSelector": {keys.COMPUTE_ENVIRONMENT_LABEL: name},
                    "containers": [
                        {"name": "main", "image": "busybox", "resources": {"requests": requests}}
                    ],
                },
            },
        },
    }


class Stack:
    def __init__(self, client: kube.KubeClient, info: dict[str, Any]) -> None:
        self.client = client
        self.info = info
        session = boto3.session.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name=info["region"]
        )
        self.ec2 = session.client("ec2", endpoint_url=info["endpoint"])

    def instances(self, ce: str) -> int:
        filters: Any = [
            {"Name": f"tag:{keys.TAG_COMPUTE_ENVIRONMENT}", "Values": [ce]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return sum(len(r["Instances"]) for p in pages for r in p["Reservations"])

    async def ready_nodes(self, ce: str) -> int:
        listed = await self.client.list(
            kube.NODES, label_selector=f"{keys.COMPUTE_ENVIRONMENT_LABEL}={ce}"
        )
        return sum(
            1
            for n in listed.items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions") or ()
            )
        )

    async def pods(self, job: str) -> list[dict[str, Any]]:
        listed = await self.client.list(
            kube.PODS, "default", label_selector=f"batch.kubernetes.io/job-name={job}"
        )
        return listed.items

    async def run_gang(self, nodes: int, timeout: float) -> Timeline:
        name = f"gang-{nodes}"
        await self.client.create(kube.COMPUTE_ENVIRONMENTS, environment(name, self.info))
        await self.client.create(kube.JOB_QUEUES, queue(name))
        await asyncio.sleep(3)  # the autoscaler validates the new environment
        timeline = Timeline(nodes)
        start = time.monotonic()
        await self.client.create(kube.JOBS, gang(name, nodes), "default")
        while len(timeline.at) < len(PHASES):
            now = time.monotonic() - start
            if now > timeout:
                raise TimeoutError(f"{nodes}-node gang: only {timeline.at} after {timeout} s")
            if "launched" not in timeline.at:
                if await asyncio.to_thread(self.instances, name) >= nodes:
                    timeline.at["launched"] = now
            elif "ready" not in timeline.at and await self.ready_nodes(name) >= nodes:
                timeline.at["ready"] = now
            pods = await self.pods(name)
            bound = sum(1 for p in pods if p["spec"].get("nodeName"))
            running = sum(1 for p in pods if p.get("status", {}).get("phase") == "Running")
            if bound and timeline.first_bound is None:
                timeline.first_bound = now
            if running and timeline.first_running is None:
                timeline.first_running = now
            if bound >= nodes and "bound" not in timeline.at:
                timeline.at["bound"] = now
            if running >= nodes and "bound" in timeline.at:
                timeline.at["running"] = now
            await asyncio.sleep(POLL)
        # A phase seen complete in the same poll as a later one: no earlier than it.
        timeline.at["launched"] = min(timeline.at["launched"], timeline.at["ready"])
        await self.client.delete(kube.JOBS, name, "default")
        await self._until_no_nodes(name, 300)
        return timeline

    async def _until_no_nodes(self, ce: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = await self.client.list(
                kube.NODES, label_selector=f"{keys.COMPUTE_ENVIRONMENT_LABEL}={ce}"
            )
            if not listed.items and not await asyncio.to_thread(self.instances, ce):
                return
            await asyncio.sleep(1)
        raise TimeoutError(f"the nodes of {ce} did not go within {timeout} s")


async def measure(kubeconfig: Path, info: dict[str, Any], sizes: list[int]) -> list[Timeline]:
    access = kube.load_access(str(kubeconfig), None, {})
    async with kube.KubeClient(access, user_agent="ebb-bench") as client:
        stack = Stack(client, info)
        out = []
        for nodes in sizes:
            timeline = await stack.run_gang(nodes, timeout=600)
            print(f"  {nodes}-node gang: {timeline.at}", file=sys.stderr, flush=True)
            out.append(timeline)
        return out


def report(timelines: list[Timeline]) -> str:
    header = (
        f"{'nodes':>5}  {'launched':>8}  {'ready':>6}  {'bound':>6}  {'running':>7}  "
        f"{'total':>6}  {'vs first':>8}  {'bind spread':>11}  ran before all bound"
    )
    lines = [
        "seconds per phase (each from the end of the one before), total from submission:",
        header,
    ]
    first = timelines[0]
    for t in timelines:
        phases = t.phase_seconds()
        total = t.at["running"]
        spread = t.at["bound"] - (t.first_bound or t.at["bound"])
        early = t.first_running is not None and t.first_running < t.at["bound"]
        lines.append(
            f"{t.nodes:>5}  {phases['launched']:>8.1f}  {phases['ready']:>6.1f}  "
            f"{phases['bound']:>6.1f}  {phases['running']:>7.1f}  {total:>6.1f}  "
            f"{total / first.at['running']:>7.2f}x  {spread:>10.1f}s  {'yes' if early else 'no'}"
        )
    lines.append("share of the total per phase:")
    for t in timelines:
        phases = t.phase_seconds()
        shares = ", ".join(f"{p} {phases[p] / t.at['running']:.0%}" for p in PHASES)
        lines.append(f"  {t.nodes:>3} nodes: {shares}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="4,16,64", help="gang sizes, comma-separated")
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")]
    if max(sizes) * 2 > MAX_VCPUS:
        parser.error(f"--nodes: at most {MAX_VCPUS // 2} ({INSTANCE_TYPE} has 2 vCPUs)")
    with fresh_cluster(PORT_BASE, "--ebb") as state:
        info = json.loads((state / "aws.json").read_text())
        timelines = asyncio.run(measure(state / "kubeconfig", info, sizes))
    print(report(timelines))


if __name__ == "__main__":
    main()
