"""Room for pending pods in capacity that is already there: free room on nodes,
instances still booting, and launches whose outcome is not known yet (in flight).
Pure code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from autoscaler.launch_intent import LaunchIntent
from autoscaler.planner import Room
from ebb.catalog import Catalog, InstanceType, NodeOverhead
from ebb.resources import Resources


@dataclass(frozen=True, slots=True)
class Coming:
    """An instance on its way: booting, or of a launch whose outcome is not known yet."""

    environment: str
    instance_type: InstanceType | None  # None: not in the catalog
    zone: str  # "": not known


def in_flight(
    intents: Mapping[str, Sequence[LaunchIntent]],
    seen_tokens: Iterable[str],
    catalog: Catalog,
    subnet_zones: Mapping[str, str],
) -> list[Coming]:
    """Every instance of a launch whose outcome is not known yet (written down, sent, no
    answer, and no instance with its client token in `seen_tokens`). They count as
    capacity on its way, so that passes while EC2 is slow to answer neither launch again
    for the same pods nor go past maxvCpus."""
    seen = set(seen_tokens)
    out = []
    for env, pending in intents.items():
        for intent in pending:
            t = catalog.get(intent.instance_type)
            if t is not None and intent.token not in seen:
                out += [Coming(env, t, subnet_zones.get(intent.subnet, ""))] * intent.count
    return out


@dataclass(frozen=True, slots=True)
class NodeRoom:
    """A node that takes batch pods, and what its active pods use."""

    name: str
    environment: str
    allocatable: Resources
    used: Resources
    pods: int
    job_pods: int = 0  # of which pods of Jobs (a multi-node job's pod takes no such node)
    exclusive: bool = False  # holds a multi-node job's pod: no room for anything else
    zone: str = ""


def room(nodes: Iterable[NodeRoom], coming: Iterable[Coming], overhead: NodeOverhead) -> list[Room]:
    """Free room on `nodes` (none on a node holding a multi-node job's pod); then whole
    instances of `coming` capacity (still booting or in flight), less the node overhead,
    empty."""
    max_pods = overhead.max_pods
    out = [
        Room(
            n.environment,
            n.allocatable - n.used,
            max_pods - n.pods,
            n.name,
            not n.job_pods,
            n.zone,
        )
        for n in nodes
        if not n.exclusive
    ]
    slots = overhead.pod_slots
    out += [
        Room(c.environment, overhead.usable(c.instance_type), slots, empty=True, zone=c.zone)
        for c in coming
        if c.instance_type is not None and c.environment
    ]
    return out
