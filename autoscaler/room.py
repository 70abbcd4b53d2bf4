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


def in_flight(
    intents: Mapping[str, Sequence[LaunchIntent]], seen_tokens: Iterable[str], catalog: Catalog
) -> list[tuple[str, InstanceType]]:
    """(environment, type) of every instance of a launch whose outcome is not known yet
    (written down, sent, no answer, and no instance with its client token in
    `seen_tokens`). They count as capacity on its way, so that passes while EC2 is slow
    to answer neither launch again for the same pods nor go past maxvCpus."""
    seen = set(seen_tokens)
    out = []
    for env, pending in intents.items():
        for intent in pending:
            t = catalog.get(intent.instance_type)
            if t is not None and intent.token not in seen:
                out += [(env, t)] * intent.count
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


def room(
    nodes: Iterable[NodeRoom],
    coming: Iterable[tuple[str, InstanceType | None]],
    overhead: NodeOverhead,
) -> list[Room]:
    """Free room on `nodes` (none on a node holding a multi-node job's pod); then whole
    instances of `coming` capacity ((environment, type) of instances still booting or in
    flight), less the node overhead, empty."""
    max_pods = overhead.max_pods
    out = [
        Room(n.environment, n.allocatable - n.used, max_pods - n.pods, n.name, not n.job_pods)
        for n in nodes
        if not n.exclusive
    ]
    slots = overhead.pod_slots
    out += [
        Room(env, overhead.usable(t), slots, empty=True)
        for env, t in coming
        if t is not None and env
    ]
    return out
