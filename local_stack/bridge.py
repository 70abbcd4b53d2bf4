"""The instance-boot bridge: plays what a booting EC2 instance and the cloud's node
lifecycle do, against the local moto server.

    python -m local_stack.bridge --kubeconfig K --aws-endpoint-url URL [--boot-seconds 2]

An instance of this cluster that has been running for --boot-seconds becomes a KWOK node:
named by its private DNS name, providerID aws:///<zone>/<instance-id>, the labels and
taints its user data asks the kubelet for (as a real node would read them), the
standard instance-type and zone labels, and capacity and allocatable from Ebb's
catalog and overhead model.

An instance that goes away takes its kubelet with it, and KWOK (which would go on
running the node's pods to completion) must not outlive it: --node-loss-seconds after
EC2 reports the instance going, the bridge fails the node's pods with DisruptionTarget
and deletes them, as PodGC would (ebb/nodeloss.py), then deletes the node, as the
cloud's node lifecycle controller would. Ebb's autoscaler does both at once when it
hears of the instance (its SQS notice or its EC2 listing), so the bridge only catches
what the autoscaler does not own; the real cloud and PodGC take a minute or more.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import structlog

from ebb import keys, kube, logs
from ebb.catalog import NodeOverheadSettings, shipped_catalog
from ebb.model import pod_from_raw
from ebb.podgc import end_lost_pod
from ebb.resources import MIB
from ebb.settings import load, setting
from local_stack import builders

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import InstanceTypeDef

log = structlog.get_logger("ebb.bridge")
GOING = ("shutting-down", "terminated", "stopping", "stopped")


@dataclass(frozen=True)
class BridgeSettings(NodeOverheadSettings):
    """Turn this cluster's moto instances into KWOK nodes, and back."""

    kubeconfig: str = setting("", "Kubeconfig of the local cluster.")
    aws_endpoint_url: str = setting("http://127.0.0.1:5000", "The local moto server.")
    region: str = setting("us-east-1", "AWS region.")
    cluster_name: str = setting("ebb", "Only instances tagged ebb.dev/cluster=<this>.")
    boot_seconds: float = setting(2.0, "Seconds from launch until an instance is a node.")
    node_loss_seconds: float = setting(
        3.0, "Seconds from an instance going away until its node's pods and node are removed."
    )
    poll_seconds: float = setting(0.5, "How often to look at EC2.")
    log_level: str = setting("info", "Log level.")


def kubelet_flags(user_data: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The node labels and taints a kubelet started with this user data registers with."""
    labels: dict[str, str] = {}
    taints: list[dict[str, str]] = []
    for match in re.finditer(r"--node-labels=([^\s']+)", user_data):
        for pair in match.group(1).split(","):
            key, _, value = pair.partition("=")
            labels[key] = value
    for match in re.finditer(r"--register-with-taints=([^\s']+)", user_data):
        for spec in match.group(1).split(","):
            key_value, _, effect = spec.partition(":")
            key, _, value = key_value.partition("=")
            taints.append({"key": key, "value": value, "effect": effect})
    return labels, taints


class Bridge:
    def __init__(self, settings: BridgeSettings, client: kube.KubeClient) -> None:
        self.s = settings
        self.client = client
        session = boto3.session.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name=settings.region
        )
        self.ec2 = session.client("ec2", endpoint_url=settings.aws_endpoint_url)
        self.catalog = shipped_catalog()
        self.overhead = settings.node_overhead()
        self.nodes: dict[str, str] = {}  # instance id -> node name
        self.going_since: dict[str, float] = {}  # instance id -> when EC2 said it goes

    def _instances(self) -> list[InstanceTypeDef]:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{keys.TAG_CLUSTER}", "Values": [self.s.cluster_name]}]
        )
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def _user_data(self, instance_id: str) -> str:
        answer = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        value = answer.get("UserData", {}).get("Value", "")
        return base64.b64decode(value).decode(errors="replace") if value else ""

    async def step(self) -> None:
        instances = await asyncio.to_thread(self._instances)
        now = time.time()
        known = {raw["InstanceId"] for raw in instances}
        for iid in [i for i in self.nodes if i not in known]:
            # EC2 has never heard of it (a restarted moto): the cloud would delete it.
            await self._lose(iid)
        self.going_since = {i: t for i, t in self.going_since.items() if i in known}
        for raw in instances:
            iid, state = raw["InstanceId"], raw["State"]["Name"]
            if state in GOING:
                since = self.going_since.setdefault(iid, now)
                if iid in self.nodes and now - since >= self.s.node_loss_seconds:
                    await self._lose(iid)
                continue
            booted = now - raw["LaunchTime"].timestamp() >= self.s.boot_seconds
            if state == "running" and booted and iid not in self.nodes:
                await self._register(raw)

    async def _lose(self, iid: str) -> None:
        """One gone instance's failure to end its pods must not keep the instances that
        are booting meanwhile from becoming nodes: it is logged and tried next step."""
        try:
            await self._node_lost(iid)
        except (kube.ApiError, OSError, TimeoutError):
            log.exception("ending a gone instance's pods and node failed; next step retries")

    async def _node_lost(self, iid: str) -> None:
        name = self.nodes[iid]
        listed = await self.client.list(kube.PODS, field_selector=f"spec.nodeName={name}")
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        message = "PodGC: node no longer exists (the local stand-in for PodGC: local_stack.bridge)"
        pods = [pod_from_raw(raw) for raw in listed.items]
        pods = [p for p in pods if p.phase not in ("Succeeded", "Failed")]
        for pod in pods:
            await end_lost_pod(self.client, pod, message, at)
        await self.client.delete(kube.NODES, name)
        del self.nodes[iid]
        log.info("instance gone; pods and node deleted", instance=iid, node=name, pods=len(pods))

    async def _register(self, raw: InstanceTypeDef) -> None:
        iid, zone = raw["InstanceId"], raw["Placement"]["AvailabilityZone"]
        name = raw["PrivateDnsName"]
        t = self.catalog.get(raw["InstanceType"])
        if t is None:
            log.warning("unknown instance type; not registering", instance=iid)
            self.nodes[iid] = name
            return
        labels, taints = kubelet_flags(await asyncio.to_thread(self._user_data, iid))
        capacity, allocatable = self.overhead.capacity(t), self.overhead.allocatable(t)

        def resources(r: Any) -> dict[str, str]:
            out = {"cpu": f"{r.cpu_milli}m", "memory": f"{r.memory // MIB}Mi", "pods": "110"}
            if r.gpu:
                out[keys.GPU_RESOURCE] = str(r.gpu)
            return out

        body = builders.node(
            name,
            resources(capacity),
            allocatable=resources(allocatable),
            labels={
                "kubernetes.io/arch": "arm64" if t.arch == "arm64" else "amd64",
                "kubernetes.io/os": "linux",
                keys.INSTANCE_TYPE_LABEL: t.name,
                keys.ZONE_LABEL: zone,
                **labels,
            },
            taints=taints,
            provider_id=f"aws:///{zone}/{iid}",
        )
        try:
            await self.client.create(kube.NODES, body)
        except kube.ApiError as exc:
            if not exc.already_exists:
                raise
        self.nodes[iid] = name
        log.info("instance booted; node registered", instance=iid, node=name, type=t.name)

    async def run(self) -> None:
        existing = await self.client.list(kube.NODES)
        for node in existing.items:
            provider = (node.get("spec") or {}).get("providerID") or ""
            if provider.startswith("aws:///"):
                self.nodes[provider.rsplit("/", 1)[-1]] = node["metadata"]["name"]
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("bridge step failed")
            await asyncio.sleep(self.s.poll_seconds)


async def _main(settings: BridgeSettings) -> None:
    access = kube.load_access(settings.kubeconfig or None, None, os.environ)
    async with kube.KubeClient(access, user_agent="ebb-bridge") as client:
        await Bridge(settings, client).run()


def main(argv: list[str] | None = None) -> int:
    settings = load(BridgeSettings, argv, os.environ, prog="python -m local_stack.bridge")
    logs.configure(settings.log_level)
    asyncio.run(_main(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
