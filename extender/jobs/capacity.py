"""What each compute environment may hold, for admission and the webhook. Pure code.

An environment's limit is its `maxvCpus` (and `maxGpus`, or the most GPUs that many
vCPUs of its GPU types carry; memory likewise). Its *shapes* are the usable resources
of the instance types it may launch (after Ebb's node overhead model): a pod must fit
one of them, GPU pods on a type with NVIDIA GPUs, CPU pods on one without — as the
autoscaler launches them.
"""

from __future__ import annotations

from collections.abc import Iterable

from ebb.catalog import Catalog, NodeOverhead
from ebb.model import INVALID, ComputeEnvironment
from ebb.resources import Resources
from extender.jobs.admission import UNLIMITED, CapacityLimit


def _pareto(shapes: Iterable[Resources]) -> tuple[Resources, ...]:
    """The shapes no other shape holds entirely (a few, instead of hundreds)."""
    out: list[Resources] = []
    for shape in sorted(set(shapes), key=lambda r: (-r.cpu_milli, -r.memory, -r.gpu)):
        if not any(shape.fits_in(kept) for kept in out):
            out.append(shape)
    return tuple(out)


def capacity_limits(
    ces: Iterable[ComputeEnvironment], catalog: Catalog | None, overhead: NodeOverhead
) -> dict[str, CapacityLimit]:
    out: dict[str, CapacityLimit] = {}
    for ce in ces:
        types = catalog.resolve(ce.instance_types).types if catalog is not None else ()
        memory, gpus = UNLIMITED, UNLIMITED
        shapes: tuple[Resources, ...] = ()
        if types:
            per_vcpu_memory = max(overhead.usable(t).memory / t.vcpus for t in types)
            memory = int(per_vcpu_memory * ce.max_vcpus)
            gpu_types = [t for t in types if t.nvidia_gpus]
            gpus = (
                max((t.nvidia_gpus * ce.max_vcpus) // t.vcpus for t in gpu_types)
                if gpu_types
                else 0
            )
            shapes = _pareto(overhead.usable(t) for t in types)
        if ce.max_gpus is not None:
            gpus = ce.max_gpus
        unavailable = None
        if not ce.enabled:
            unavailable = "DISABLED"
        elif ce.status == INVALID:
            unavailable = f"INVALID ({ce.status_reason})"
        out[ce.name] = CapacityLimit(
            Resources(ce.max_vcpus * 1000, memory, gpus), unavailable, shapes
        )
    return out
