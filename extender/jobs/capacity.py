"""What each compute environment may hold, for admission and the webhook. Pure code.

An environment's limit is its `maxvCpus` (and `maxGpus`, or the most GPUs that many
vCPUs of its GPU types carry; memory likewise). Its *nodes* are the instance types it
may launch, with what pods can use on each (after Ebb's node overhead model): a pod
must fit one of them, GPU pods on a type with NVIDIA GPUs, CPU pods on one without —
as the autoscaler launches them. A managed environment launches only types within its
`maxvCpus`, and its `maxvCpus` counts instance vCPUs (as in AWS Batch), not pod
requests: admission counts what those instances hold (see `CapacityLimit.pod_cost`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ebb.catalog import Catalog, NodeOverhead
from ebb.model import INVALID, ComputeEnvironment
from ebb.resources import Resources
from extender.jobs.admission import UNLIMITED, CapacityLimit, NodeShape


def _dominates(a: NodeShape, b: NodeShape) -> bool:
    """`a` holds every pod `b` holds, for no more vCPUs."""
    return (
        a.vcpus <= b.vcpus
        and a.pod_slots >= b.pod_slots
        and b.usable.fits_in(a.usable)
        and (a.usable.gpu > 0) == (b.usable.gpu > 0)
    )


def _pareto(nodes: Iterable[NodeShape]) -> tuple[NodeShape, ...]:
    """The node shapes no other dominates (a few, instead of hundreds)."""
    ordered = sorted(nodes, key=lambda n: (n.vcpus, -n.usable.cpu_milli, -n.usable.memory, n.name))
    out: list[NodeShape] = []
    for node in ordered:
        if not any(_dominates(kept, node) for kept in out):
            out.append(node)
    return tuple(out)


def capacity_limits(
    ces: Iterable[ComputeEnvironment], catalog: Catalog | None, overhead: NodeOverhead
) -> dict[str, CapacityLimit]:
    out: dict[str, CapacityLimit] = {}
    for ce in ces:
        types = catalog.resolve(ce.instance_types).types if catalog is not None else ()
        memory, gpus = UNLIMITED, UNLIMITED
        nodes: tuple[NodeShape, ...] | None = None
        if types:
            per_vcpu_memory = max(overhead.usable(t).memory / t.vcpus for t in types)
            memory = int(per_vcpu_memory * ce.max_vcpus)
            gpu_types = [t for t in types if t.nvidia_gpus]
            gpus = (
                max((t.nvidia_gpus * ce.max_vcpus) // t.vcpus for t in gpu_types)
                if gpu_types
                else 0
            )
            nodes = _pareto(
                NodeShape(t.name, t.vcpus, overhead.usable(t), overhead.pod_slots)
                for t in types
                if not ce.managed or t.vcpus <= ce.max_vcpus
            )
        if ce.max_gpus is not None:
            gpus = ce.max_gpus
        unavailable = None
        if not ce.enabled:
            unavailable = "DISABLED"
        elif ce.status == INVALID:
            unavailable = f"INVALID ({ce.status_reason})"
        out[ce.name] = CapacityLimit(
            Resources(ce.max_vcpus * 1000, memory, gpus),
            unavailable,
            nodes,
            counts_instances=ce.managed and bool(types),
        )
    return out
