"""EC2's view of this cluster's instances, as the autoscaler keeps it: listed every
`resync_seconds` (or at once after something changed them), and the instance time
counted for the metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from autoscaler import metrics
from autoscaler.aws import Aws, Instance
from ebb.model import NodeInfo

_NEVER = -1e18


class Ec2View:
    def __init__(self, aws: Aws, resync_seconds: float) -> None:
        self._aws = aws
        self._resync_seconds = resync_seconds
        self.instances: dict[str, Instance] = {}  # by instance id
        self._listed_at = _NEVER
        self._accounted_at: float | None = None

    def relist(self) -> None:
        """List again on the next refresh: EC2 changed (a launch of unknown outcome, a
        termination, a notice), or another leader acted meanwhile."""
        self._listed_at = _NEVER

    async def refresh(self, *, force: bool = False) -> None:
        mono = time.monotonic()
        if not force and mono - self._listed_at < self._resync_seconds:
            return
        listed = await asyncio.to_thread(self._aws.instances)
        self.instances = {i.instance_id: i for i in listed}
        self._listed_at = mono

    def add(self, launched: Iterable[Instance]) -> None:
        """Instances EC2 just answered a launch with (before the next listing has them)."""
        for instance in launched:
            self.instances[instance.instance_id] = instance

    def our_nodes(self, nodes: Iterable[NodeInfo]) -> dict[str, NodeInfo]:
        """The nodes of instances this cluster launched, by instance id."""
        out = {}
        for node in nodes:
            iid = node.instance_id
            if iid is not None and iid in self.instances and node.compute_environment:
                out[iid] = node
        return out

    async def zones(self, subnets: Iterable[str]) -> dict[str, str]:
        """Subnet -> zone (EC2 is asked only about subnets not seen before)."""
        return await asyncio.to_thread(self._aws.subnet_zones, list(subnets))

    def account(self, now: float) -> None:
        """Instance time by type and capacity type (instance-hours / 3600)."""
        last = self._accounted_at
        self._accounted_at = now
        if last is None:
            return
        for i in self.instances.values():
            if i.state in ("pending", "running"):
                seconds = now - max(last, i.launched)
                if seconds > 0:
                    metrics.INSTANCE_SECONDS.labels(i.instance_type, i.capacity_type).inc(seconds)
