"""Resource arithmetic: Kubernetes quantities and the (CPU, memory, GPU) vector.

CPU is kept in millicores and memory in bytes, both as integers, so sums are exact
and comparisons never suffer from floating point.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from ebb.keys import GPU_RESOURCE

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
MIB = 2**20


class QuantityError(ValueError):
    """A string that is not a Kubernetes resource quantity."""


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity ("500m", "1.5", "2Gi", "1e3") into a Decimal."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if not match:
        raise QuantityError(f"{value!r} is not a quantity (examples: 500m, 2, 1.5Gi, 512Mi)")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
    except InvalidOperation as exc:
        raise QuantityError(f"{value!r} is not a quantity") from exc
    if suffix[:1] in ("e", "E"):
        return base * (Decimal(10) ** int(suffix[1:]))
    return base * _SUFFIX[suffix]


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_CEILING))


# Quantities repeat endlessly across pods ("2", "500m", "4Gi"): cache the parses.
@functools.lru_cache(maxsize=8192)
def cpu_millis(value: str | int | float) -> int:
    """CPU quantity in millicores, rounded up as the API server does."""
    return _ceil(parse_quantity(value) * 1000)


@functools.lru_cache(maxsize=8192)
def memory_bytes(value: str | int | float) -> int:
    return _ceil(parse_quantity(value))


@dataclass(frozen=True, slots=True)
class Resources:
    """A request or a capacity: CPU in millicores, memory in bytes, whole GPUs."""

    cpu_milli: int = 0
    memory: int = 0
    gpu: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_milli + other.cpu_milli, self.memory + other.memory, self.gpu + other.gpu
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_milli - other.cpu_milli, self.memory - other.memory, self.gpu - other.gpu
        )

    def __mul__(self, factor: int) -> Resources:
        return Resources(self.cpu_milli * factor, self.memory * factor, self.gpu * factor)

    def fits_in(self, capacity: Resources) -> bool:
        return (
            self.cpu_milli <= capacity.cpu_milli
            and self.memory <= capacity.memory
            and self.gpu <= capacity.gpu
        )

    def max(self, other: Resources) -> Resources:
        return Resources(
            max(self.cpu_milli, other.cpu_milli),
            max(self.memory, other.memory),
            max(self.gpu, other.gpu),
        )

    def shortfall(self, capacity: Resources, available: str = "free") -> list[str]:
        """What does not fit, in words: ["cpu: need 4, free 1.5"] (`available` names what
        `capacity` is: "free", "allocatable", ...)."""
        out = []
        if self.cpu_milli > capacity.cpu_milli:
            out.append(
                f"cpu: need {fmt_cpu(self.cpu_milli)}, {available} {fmt_cpu(capacity.cpu_milli)}"
            )
        if self.memory > capacity.memory:
            out.append(
                f"memory: need {fmt_memory(self.memory)}, {available} {fmt_memory(capacity.memory)}"
            )
        if self.gpu > capacity.gpu:
            out.append(f"gpu: need {self.gpu}, {available} {capacity.gpu}")
        return out

    @property
    def vcpus(self) -> float:
        return self.cpu_milli / 1000

    def is_zero(self) -> bool:
        return self.cpu_milli == 0 and self.memory == 0 and self.gpu == 0

    def __str__(self) -> str:
        text = f"cpu={fmt_cpu(self.cpu_milli)} memory={fmt_memory(self.memory)}"
        return text + (f" gpu={self.gpu}" if self.gpu else "")


ZERO = Resources()


def fmt_cpu(milli: int) -> str:
    whole, frac = divmod(milli, 1000)
    return str(whole) if frac == 0 else f"{whole}.{frac:03d}".rstrip("0")


def fmt_memory(value: int) -> str:
    if value % (2**30) == 0 and value:
        return f"{value // 2**30}Gi"
    if value % MIB == 0:
        return f"{value // MIB}Mi"
    return f"{value / MIB:.1f}Mi"


def from_resource_list(resources: Mapping[str, Any] | None) -> Resources:
    """A container's (or node's) ResourceList as a Resources vector."""
    if not resources:
        return ZERO
    cpu = resources.get("cpu")
    mem = resources.get("memory")
    gpu = resources.get(GPU_RESOURCE)
    return Resources(
        cpu_millis(cpu) if cpu is not None else 0,
        memory_bytes(mem) if mem is not None else 0,
        _ceil(parse_quantity(gpu)) if gpu is not None else 0,
    )


def _container_request(container: Mapping[str, Any]) -> tuple[int, int, int]:
    res = container.get("resources") or {}
    requests = res.get("requests") or {}
    limits = res.get("limits") or {}
    # A limit without a request defaults the request to the limit (API defaulting).
    cpu = requests.get("cpu", limits.get("cpu"))
    mem = requests.get("memory", limits.get("memory"))
    gpu = requests.get(GPU_RESOURCE, limits.get(GPU_RESOURCE))
    return (
        cpu_millis(cpu) if cpu is not None else 0,
        memory_bytes(mem) if mem is not None else 0,
        _ceil(parse_quantity(gpu)) if gpu is not None else 0,
    )


def pod_requests(spec: Mapping[str, Any]) -> Resources:
    """Effective requests of a pod spec, as kube-scheduler computes them.

    max(sum of app containers + restartable init (sidecar) containers,
        each plain init container + the sidecars started before it) + overhead.
    (Plain integer arithmetic: this runs for every pod event.)
    """
    cpu = mem = gpu = 0
    for container in spec.get("containers") or ():
        c, m, g = _container_request(container)
        cpu, mem, gpu = cpu + c, mem + m, gpu + g
    side_cpu = side_mem = side_gpu = 0
    peak_cpu = peak_mem = peak_gpu = 0
    for init in spec.get("initContainers") or ():
        c, m, g = _container_request(init)
        if init.get("restartPolicy") == "Always":
            side_cpu, side_mem, side_gpu = side_cpu + c, side_mem + m, side_gpu + g
            c = m = g = 0
        peak_cpu = max(peak_cpu, side_cpu + c)
        peak_mem = max(peak_mem, side_mem + m)
        peak_gpu = max(peak_gpu, side_gpu + g)
    overhead = from_resource_list(spec.get("overhead")) if spec.get("overhead") else ZERO
    return Resources(
        max(cpu + side_cpu, peak_cpu) + overhead.cpu_milli,
        max(mem + side_mem, peak_mem) + overhead.memory,
        max(gpu + side_gpu, peak_gpu) + overhead.gpu,
    )


def sum_resources(items: Iterable[Resources]) -> Resources:
    cpu = mem = gpu = 0
    for r in items:
        cpu += r.cpu_milli
        mem += r.memory
        gpu += r.gpu
    return Resources(cpu, mem, gpu)
