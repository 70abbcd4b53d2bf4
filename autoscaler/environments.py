"""Compute environments as the planner sees them: validation (VALID or INVALID, with a
reason that says what to fix) and the offerings each may launch. Pure code."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from autoscaler.planner import (
    SPOT_CAPACITY_OPTIMIZED,
    SPOT_PRICE_CAPACITY_OPTIMIZED,
    Environment,
    Offering,
)
from ebb.catalog import Catalog, NodeOverhead, Resolution
from ebb.model import ComputeEnvironment

SPOT_ONLY_STRATEGIES = (SPOT_CAPACITY_OPTIMIZED, SPOT_PRICE_CAPACITY_OPTIMIZED)


@dataclass(frozen=True, slots=True)
class Unavailable:
    """An offering EC2 recently had no capacity for."""

    instance_type: str
    zone: str
    capacity_type: str

    def __str__(self) -> str:
        return f"{self.instance_type}/{self.zone}/{self.capacity_type}"


def validate(
    spec: ComputeEnvironment, resolution: Resolution, subnet_zones: Mapping[str, str]
) -> str | None:
    """Why the environment cannot be used (None: it is VALID). `subnet_zones` maps the
    subnets EC2 knows to their availability zones."""
    if spec.min_vcpus > spec.max_vcpus:
        return f"minvCpus ({spec.min_vcpus}) is greater than maxvCpus ({spec.max_vcpus})"
    if resolution.unknown:
        return "instanceTypes: unknown instance type or family: " + ", ".join(resolution.unknown)
    arches = {t.arch for t in resolution.types}
    if len(arches) > 1:
        return (
            "instanceTypes: mixes " + " and ".join(sorted(arches)) + " types; "
            "use one architecture per compute environment"
        )
    if spec.type != "SPOT" and spec.allocation_strategy in SPOT_ONLY_STRATEGIES:
        return f"allocationStrategy {spec.allocation_strategy} needs type SPOT"
    if spec.type != "SPOT" and spec.bid_percentage is not None:
        return "bidPercentage applies only to type SPOT"
    if not spec.subnets:
        return "subnets: at least one subnet is required"
    missing = [s for s in spec.subnets if s not in subnet_zones]
    if missing:
        return "subnets: not found in EC2: " + ", ".join(missing)
    if not spec.security_group_ids and spec.launch_template is None:
        return "securityGroupIds: give at least one, or a launchTemplate that sets them"
    if not spec.instance_role:
        return "instanceRole: required (the instance profile the nodes run with)"
    smallest = min(t.vcpus for t in resolution.types)
    if smallest > spec.max_vcpus:
        return (
            f"maxvCpus ({spec.max_vcpus}) is below the smallest instance type "
            f"({smallest} vCPUs), so nothing could ever be launched"
        )
    if spec.bid_percentage is not None and not any(
        _within_bid(spec, t.spot_price, t.on_demand_price) for t in resolution.types
    ):
        return f"bidPercentage {spec.bid_percentage}% is below the Spot price of every type"
    return None


def _within_bid(spec: ComputeEnvironment, spot: float, on_demand: float) -> bool:
    return spec.bid_percentage is None or spot <= on_demand * spec.bid_percentage / 100


def zones_of(spec: ComputeEnvironment, subnet_zones: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subnet_zones[s] for s in spec.subnets if s in subnet_zones))


def environment(
    spec: ComputeEnvironment,
    catalog: Catalog,
    overhead: NodeOverhead,
    subnet_zones: Mapping[str, str],
    unavailable: Collection[Unavailable],
    *,
    vcpus: int,
    gpus: int,
) -> Environment:
    """The planner's view of one compute environment."""
    resolution = catalog.resolve(spec.instance_types)
    problem = validate(spec, resolution, subnet_zones)
    zones = zones_of(spec, subnet_zones)
    capacity = spec.capacity_type
    offerings = []
    for t in resolution.types:
        usable = overhead.usable(t)
        if usable.cpu_milli <= 0 or usable.memory <= 0:
            continue  # too small to run anything once the node has taken its share
        if spec.type == "SPOT" and not _within_bid(spec, t.spot_price, t.on_demand_price):
            continue
        offerings.append(
            Offering(
                instance_type=t,
                usable=usable,
                pod_slots=overhead.pod_slots,
                price=t.price(capacity),
                zones=tuple(
                    z for z in zones if Unavailable(t.name, z, capacity) not in unavailable
                ),
            )
        )
    return Environment(spec, tuple(offerings), vcpus, gpus, problem)
