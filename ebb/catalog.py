"""The EC2 instance catalog: what each instance type offers (vCPUs, memory, GPUs,
architecture), what it costs (On-Demand, Spot) and how often Spot takes it back, plus
the node overhead model that turns an instance's size into what pods can really use.

A snapshot of real data ships in `ebb/data/` (sources and licences in its README) so
planning works offline and in tests; a daemon may refresh prices and specs from EC2
with `Catalog.updated`.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Final

from ebb import keys
from ebb.resources import MIB, Resources, cpu_millis, memory_bytes
from ebb.settings import setting

X86_64: Final = "x86_64"
ARM64: Final = "arm64"

# AWS Batch's instance-type keywords and the families each stands for. Since
# 2025-11-01 `optimal` means the same as `default_x86_64`.
KEYWORD_FAMILIES: Final[Mapping[str, tuple[str, ...]]] = {
    "optimal": ("m6i", "c6i", "r6i", "c7i"),
    "default_x86_64": ("m6i", "c6i", "r6i", "c7i"),
    "default_arm64": ("m6g", "c6g", "r6g", "c7g"),
}

# Spot Advisor's interruption-frequency buckets (<5 %, 5-10 %, 10-15 %, 15-20 %, >20 %)
# as a fraction of instances interrupted per month; the open-ended last bucket is
# taken as 25 %, and a type the advisor does not cover is assumed to be that bad.
_BUCKET_RATES: Final = (0.025, 0.075, 0.125, 0.175, 0.25)
UNKNOWN_BUCKET: Final = 4

_NON_NVIDIA_GPUS: Final = {"Radeon Pro V520": "amd", "Gaudi HL-205": "habana"}


@dataclass(frozen=True, slots=True)
class InstanceType:
    name: str
    family: str
    vcpus: int
    memory_mib: int
    gpus: int
    gpu_model: str | None
    gpu_memory_mib: int
    arch: str
    on_demand_price: float  # USD per hour
    spot_price: float  # USD per hour: observed, or estimated from Spot Advisor savings
    interruption_bucket: int | None  # Spot Advisor bucket 0..4; None: not covered

    @property
    def gpu_vendor(self) -> str | None:
        if not self.gpus:
            return None
        return _NON_NVIDIA_GPUS.get(self.gpu_model or "", "nvidia")

    @property
    def nvidia_gpus(self) -> int:
        """GPUs a pod can request as nvidia.com/gpu on this type."""
        return self.gpus if self.gpu_vendor == "nvidia" else 0

    @property
    def interruption_rate(self) -> float:
        bucket = UNKNOWN_BUCKET if self.interruption_bucket is None else self.interruption_bucket
        return _BUCKET_RATES[bucket]

    def price(self, capacity_type: str) -> float:
        return self.spot_price if capacity_type == keys.CAPACITY_SPOT else self.on_demand_price


@dataclass(frozen=True, slots=True)
class Resolution:
    """instanceTypes resolved: the types they name, and the entries naming nothing."""

    types: tuple[InstanceType, ...]
    unknown: tuple[str, ...]


class Catalog:
    """Instance types by name; resolves AWS Batch `instanceTypes` entries."""

    def __init__(self, types: Iterable[InstanceType]) -> None:
        self._types = {t.name: t for t in types}
        self._families: dict[str, list[InstanceType]] = {}
        for t in sorted(self._types.values(), key=lambda t: (t.vcpus, t.memory_mib, t.name)):
            self._families.setdefault(t.family, []).append(t)

    def __len__(self) -> int:
        return len(self._types)

    def __iter__(self) -> Iterator[InstanceType]:
        return iter(self._types.values())

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def get(self, name: str) -> InstanceType | None:
        return self._types.get(name)

    def resolve(self, selectors: Iterable[str]) -> Resolution:
        """Exact types (c6i.large), whole families (c6i) and the keywords `optimal`,
        `default_x86_64` and `default_arm64`, in a stable order without duplicates."""
        found: dict[str, InstanceType] = {}
        unknown: list[str] = []
        for selector in selectors:
            families = KEYWORD_FAMILIES.get(selector, (selector,))
            matched = [t for family in families for t in self._families.get(family, ())]
            if not matched and selector in self._types:
                matched = [self._types[selector]]
            if not matched:
                unknown.append(selector)
            for t in matched:
                found.setdefault(t.name, t)
        return Resolution(tuple(found.values()), tuple(unknown))

    def updated(
        self,
        *,
        specs: Iterable[InstanceType] = (),
        on_demand_prices: Mapping[str, float] | None = None,
        spot_prices: Mapping[str, float] | None = None,
    ) -> Catalog:
        """A new catalog with fresher data: `specs` replace or add whole types (keeping
        known prices when theirs are unknown, i.e. not positive); prices replace prices."""
        types = dict(self._types)
        for spec in specs:
            old = types.get(spec.name)
            keep_prices = old is not None and spec.on_demand_price <= 0
            types[spec.name] = (
                replace(
                    spec,
                    on_demand_price=old.on_demand_price,
                    spot_price=old.spot_price,
                    interruption_bucket=old.interruption_bucket,
                )
                if old is not None and keep_prices
                else spec
            )
        for name, price in (on_demand_prices or {}).items():
            if name in types and price > 0:
                old_spot = types[name].spot_price
                # A type new to the catalog claims no Spot saving until one is seen.
                types[name] = replace(
                    types[name],
                    on_demand_price=price,
                    spot_price=old_spot if old_spot > 0 else price,
                )
        for name, price in (spot_prices or {}).items():
            if name in types and price > 0:
                types[name] = replace(types[name], spot_price=price)
        return Catalog(t for t in types.values() if t.on_demand_price > 0)


def _optional_int(value: str) -> int | None:
    return int(value) if value.strip() else None


def _row_to_type(row: Mapping[str, str]) -> InstanceType:
    on_demand = float(row["on_demand_usd_per_hour"])
    savings = _optional_int(row["spot_savings_pct"])
    return InstanceType(
        name=row["instance_type"],
        family=row["family"],
        vcpus=int(row["vcpu"]),
        memory_mib=int(row["memory_mib"]),
        gpus=int(row["gpu_count"]),
        gpu_model=row["gpu_model"] or None,
        gpu_memory_mib=_optional_int(row["gpu_memory_mib"]) or 0,
        arch=row["arch"],
        on_demand_price=on_demand,
        # Without advisor data, claim no saving rather than invent one.
        spot_price=on_demand * (100 - savings) / 100 if savings is not None else on_demand,
        interruption_bucket=_optional_int(row["interruption_bucket"]),
    )


@functools.cache
def shipped_catalog() -> Catalog:
    """The catalog snapshot shipped with Ebb (us-east-1 prices; see ebb/data/README.md)."""
    text = (resources.files("ebb") / "data" / "ec2-instance-types.csv").read_text()
    return Catalog(_row_to_type(row) for row in csv.DictReader(text.splitlines()))


# --- node overhead ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeOverhead:
    """What a node keeps for itself, so plans only count what pods can really use.

    capacity     = the instance's vCPUs; its memory less what the hypervisor and kernel
                   take (a percentage); its NVIDIA GPUs
    allocatable  = capacity - kube-reserved (the EKS AMI's formulas) - the hard
                   eviction threshold
    usable       = allocatable - the requests of the DaemonSet pods every node runs

    Built by `NodeOverheadSettings.node_overhead()` (its defaults are the only ones):
    every daemon, the local bridge, the simulator and the benchmarks size nodes alike.
    """

    max_pods: int
    vm_memory_overhead_percent: float
    eviction_memory_mib: int
    daemonset: Resources
    daemonset_pods: int

    @property
    def pod_slots(self) -> int:
        """Pods of jobs a node takes besides its DaemonSet pods."""
        return self.max_pods - self.daemonset_pods

    def capacity(self, t: InstanceType) -> Resources:
        lost = math.ceil(t.memory_mib * self.vm_memory_overhead_percent / 100)
        return Resources(t.vcpus * 1000, (t.memory_mib - lost) * MIB, t.nvidia_gpus)

    def kube_reserved(self, t: InstanceType) -> Resources:
        # EKS: 6 % of the first core, 1 % of the second, 0.5 % of the next two and
        # 0.25 % of every core above four; memory 11 MiB per pod plus 255 MiB.
        n = t.vcpus
        tenths_of_milli = 600 + 100 * (n >= 2) + 50 * min(max(n - 2, 0), 2) + 25 * max(n - 4, 0)
        return Resources(math.ceil(tenths_of_milli / 10), (11 * self.max_pods + 255) * MIB, 0)

    def allocatable(self, t: InstanceType) -> Resources:
        reserved = self.kube_reserved(t) + Resources(0, self.eviction_memory_mib * MIB, 0)
        return self.capacity(t) - reserved

    def usable(self, t: InstanceType) -> Resources:
        return self.allocatable(t) - self.daemonset


@dataclass(frozen=True)
class NodeOverheadSettings:
    """The settings of the node overhead model, declared once for every daemon that sizes
    nodes: the scheduler (what admission thinks a node holds), the autoscaler (what it
    launches for, and tells the kubelet) and the local bridge (what a node offers) must
    agree, or admission admits pods that no launched node can hold."""

    max_pods: int = setting(110, "Pods per node (kubelet maxPods, passed in user data).")
    vm_memory_overhead_percent: float = setting(
        7.5, "Share of an instance's memory the hypervisor and kernel keep."
    )
    eviction_memory_mib: int = setting(100, "Kubelet hard eviction threshold (memory, MiB).")
    daemonset_cpu: str = setting("150m", "CPU requests of the DaemonSet pods on every node.")
    daemonset_memory: str = setting("200Mi", "Memory requests of the DaemonSet pods.")
    daemonset_pods: int = setting(3, "Number of DaemonSet pods on every node.")

    def node_overhead(self) -> NodeOverhead:
        """The one builder of the node overhead model."""
        return NodeOverhead(
            max_pods=self.max_pods,
            vm_memory_overhead_percent=self.vm_memory_overhead_percent,
            eviction_memory_mib=self.eviction_memory_mib,
            daemonset=Resources(
                cpu_millis(self.daemonset_cpu or "0"), memory_bytes(self.daemonset_memory or "0"), 0
            ),
            daemonset_pods=self.daemonset_pods,
        )
