"""Simulated EC2: instances that take a while to boot, Spot capacity taken back at each
type's interruption rate, and launch requests refused for insufficient capacity.

Randomness comes from one seeded `random.Random` owned by the engine, drawn in event
order, so a run is deterministic given its seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ebb import keys
from ebb.catalog import InstanceType
from ebb.model import NodeInfo
from ebb.resources import Resources

MONTH_SECONDS = 30 * 86400.0
MIN_BILLED_SECONDS = 60.0  # EC2 Linux: per-second billing, one minute at least


@dataclass(frozen=True)
class CloudSettings:
    boot_seconds: tuple[float, float] = (60.0, 120.0)  # launch → node ready, uniform
    interruption_notice_seconds: float = 120.0  # Spot's two-minute warning
    interruption_scale: float = 1.0  # multiplies every type's Spot interruption rate
    # Chance that EC2 refuses one launch request (InsufficientInstanceCapacity).
    insufficient_capacity_spot: float = 0.02
    insufficient_capacity_on_demand: float = 0.002


class Instance:
    """One EC2 instance and, once it has booted, its node. Mutable engine state: the
    free room is kept as plain integers because it changes with every pod."""

    __slots__ = (
        "allocatable",
        "batch_pods",
        "capacity_type",
        "draining",
        "draining_since",
        "environment",
        "free_cpu",
        "free_gpu",
        "free_memory",
        "gang_pods",
        "gone",
        "id",
        "idle_since",
        "info",
        "launched",
        "number",
        "price",
        "ready",
        "slots",
        "type",
        "zone",
    )

    def __init__(
        self,
        *,
        number: int,
        environment: str,
        instance_type: InstanceType,
        capacity_type: str,
        zone: str,
        launched: float,
        allocatable: Resources,
        usable: Resources,
        slots: int,
    ) -> None:
        self.number = number  # launch order
        self.id = f"i-{number:08x}"
        self.environment = environment
        self.type = instance_type
        self.capacity_type = capacity_type
        self.zone = zone
        self.price = instance_type.price(capacity_type)
        self.launched = launched
        self.allocatable = allocatable
        self.free_cpu, self.free_memory, self.free_gpu = usable.cpu_milli, usable.memory, usable.gpu
        self.slots = slots  # batch pods it can still take
        self.batch_pods = 0  # pods bound to it
        self.gang_pods = 0  # of which a multi-node job's (it has the node to itself)
        self.ready = False
        self.gone = False
        self.idle_since: float | None = None
        self.draining: str | None = None
        self.draining_since: float | None = None
        self.info: NodeInfo | None = None

    @property
    def free(self) -> Resources:
        return Resources(self.free_cpu, self.free_memory, self.free_gpu)

    def register(self) -> NodeInfo:
        """The node the instance becomes when it has booted."""
        self.ready = True
        self.info = NodeInfo(
            name=self.id,
            allocatable=self.allocatable,
            compute_environment=self.environment,
            capacity_type=self.capacity_type,
            instance_type=self.type.name,
            zone=self.zone,
            provider_id=f"aws:///{self.zone}/{self.id}",
            unschedulable=False,
            draining=False,
            ready=True,
            created="",
        )
        return self.info

    def billed_seconds(self, end: float) -> float:
        return max(end - self.launched, MIN_BILLED_SECONDS)


class Cloud:
    """Draws what EC2 does: boot times, Spot interruptions, refused launches."""

    def __init__(self, settings: CloudSettings, rng: random.Random) -> None:
        self.s = settings
        self.rng = rng

    def refuses(self, capacity_type: str) -> bool:
        p = (
            self.s.insufficient_capacity_spot
            if capacity_type == keys.CAPACITY_SPOT
            else self.s.insufficient_capacity_on_demand
        )
        return p > 0 and self.rng.random() < p

    def boot_seconds(self) -> float:
        low, high = self.s.boot_seconds
        return self.rng.uniform(low, high)

    def interruption_after(self, instance: Instance) -> float | None:
        """Seconds after launch when Spot takes the instance back (None: it never does,
        or it is On-Demand). Spot Advisor's bucket is the share of instances interrupted
        per month: a constant hazard rate with that monthly probability."""
        if instance.capacity_type != keys.CAPACITY_SPOT or self.s.interruption_scale <= 0:
            return None
        monthly = instance.type.interruption_rate
        rate = -math.log1p(-monthly) / MONTH_SECONDS * self.s.interruption_scale
        return self.rng.expovariate(rate)
