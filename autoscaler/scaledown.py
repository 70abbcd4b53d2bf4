"""Scale-down and garbage-collection decisions. Pure code: node and instance snapshots
and the time (`now`, seconds on any clock) in; what to cordon, terminate, uncordon or
delete out.

The rule that matters most: a node with a batch pod on it is never chosen. Scale-down
cordons an idle node first (taint `ebb.dev/draining=<reason>`), and terminates it only
after a grace period in which no batch pod arrived; one that did arrive gets the node
uncordoned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ebb.model import ComputeEnvironment


class NodeActionKind(StrEnum):
    CORDON = "cordon"
    TERMINATE = "terminate"
    UNCORDON = "uncordon"


# Reasons: the value of the draining taint, and a bounded metrics label.
IDLE = "idle"
SPOT_INTERRUPTION = "spot-interruption"
REGISTRATION_TIMEOUT = "registration-timeout"
INSTANCE_GONE = "instance-gone"

# How often a draining node is looked at again (its grace may be over).
DRAINING_RECHECK_SECONDS = 1.0

LIVE_STATES = frozenset({"pending", "running", "stopping", "stopped"})


@dataclass(frozen=True, slots=True)
class NodeState:
    name: str
    environment: str
    vcpus: int
    price: float  # USD per hour
    batch_pods: int  # batch pods bound to it and not finished
    idle_since: float | None  # since when it has had no batch pod; None while it has one
    draining: str | None = None  # reason in Ebb's draining taint; None when not draining
    draining_since: float | None = None  # when Ebb saw the taint first


@dataclass(frozen=True, slots=True)
class NodeSeen:
    """A node as one pass sees it, before the times the daemon remembers are added."""

    name: str
    environment: str
    vcpus: int
    price: float  # USD per hour
    batch_pods: int
    awaited: bool  # the last plan put pending pods on it: not idle either
    draining: str | None  # the reason it drains (its taint, or a cordon not yet seen)


def track_nodes(
    nodes: Iterable[NodeSeen],
    idle_since: Mapping[str, float],
    draining_since: Mapping[str, float],
    now: float,
) -> list[NodeState]:
    """Since when each node has been idle and draining: as remembered from earlier
    passes, or from `now` for a node that just became so. The daemon remembers what this
    returns (and nothing about nodes that are gone)."""
    return [
        NodeState(
            n.name,
            n.environment,
            n.vcpus,
            n.price,
            n.batch_pods,
            None if n.batch_pods or n.awaited else idle_since.get(n.name, now),
            n.draining,
            None if n.draining is None else draining_since.get(n.name, now),
        )
        for n in nodes
    ]


@dataclass(frozen=True, slots=True)
class NodeAction:
    node: str
    kind: NodeActionKind
    reason: str
    detail: str = ""


def plan_scale_down(
    nodes: Iterable[NodeState],
    environments: Mapping[str, ComputeEnvironment],
    vcpus: Mapping[str, int],
    now: float,
    *,
    grace_seconds: float,
    orphan_delay_seconds: float,
) -> list[NodeAction]:
    """`vcpus`: each environment's vCPUs (all its instances). Nodes of environments that
    no longer exist scale down after `orphan_delay_seconds`, to zero."""
    actions: list[NodeAction] = []
    remaining = dict(vcpus)
    candidates: list[tuple[float, NodeState]] = []
    for n in nodes:
        if n.draining is not None:
            if n.batch_pods:
                if n.draining == IDLE:
                    actions.append(
                        NodeAction(
                            n.name,
                            NodeActionKind.UNCORDON,
                            IDLE,
                            "a batch pod arrived while draining",
                        )
                    )
                continue
            remaining[n.environment] = remaining.get(n.environment, 0) - n.vcpus
            if n.draining_since is not None and now - n.draining_since >= grace_seconds:
                actions.append(
                    NodeAction(n.name, NodeActionKind.TERMINATE, n.draining, "no batch pods")
                )
        elif n.batch_pods == 0 and n.idle_since is not None:
            candidates.append((n.idle_since, n))
    # The most expensive idle nodes go first.
    for idle_since, n in sorted(candidates, key=lambda c: (-c[1].price, c[0], c[1].name)):
        delay = idle_delay(environments, n.environment, orphan_delay_seconds)
        spec = environments.get(n.environment)
        minimum = spec.min_vcpus if spec is not None else 0
        idle_for = now - idle_since
        left = remaining.get(n.environment, 0) - n.vcpus
        if idle_for < delay or left < minimum:
            continue
        remaining[n.environment] = left
        actions.append(
            NodeAction(
                n.name,
                NodeActionKind.CORDON,
                IDLE,
                f"no batch pods for {idle_for:.0f} s (delay {delay} s)",
            )
        )
    return actions


def idle_delay(
    environments: Mapping[str, ComputeEnvironment], environment: str, orphan_delay_seconds: float
) -> float:
    """How long a node of `environment` stays idle before it is cordoned: its
    scaleDownDelaySeconds, or `orphan_delay_seconds` when the environment is gone."""
    spec = environments.get(environment)
    return float(spec.scale_down_delay_seconds) if spec is not None else orphan_delay_seconds


def next_scale_down(
    nodes: Iterable[NodeState],
    environments: Mapping[str, ComputeEnvironment],
    now: float,
    *,
    orphan_delay_seconds: float,
) -> float | None:
    """When the next scale-down decision is due (None: none is): soon while nodes
    drain, else when the next idle node's delay is over. A node past its delay and still
    there is kept by minvCpus: it sets no time."""
    due = [now + DRAINING_RECHECK_SECONDS for n in nodes if n.draining is not None]
    due += [
        n.idle_since + idle_delay(environments, n.environment, orphan_delay_seconds)
        for n in nodes
        if n.draining is None and n.idle_since is not None
    ]
    return min((d for d in due if d > now), default=None)


@dataclass(frozen=True, slots=True)
class InstanceState:
    instance_id: str
    state: str  # EC2 instance state name
    launched: float  # seconds, same clock as `now`
    node: str | None  # the node it registered as, if any


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    instance_state: str  # state of its instance, which carries this cluster's tag
    created: float  # seconds, same clock as `now`


@dataclass(frozen=True, slots=True)
class Garbage:
    terminate: tuple[str, ...]  # instance ids that never became nodes
    delete_nodes: tuple[str, ...]  # nodes whose instance is gone


def plan_garbage(
    instances: Sequence[InstanceState],
    nodes: Sequence[NodeRecord],
    now: float,
    *,
    registration_timeout_seconds: float,
    node_grace_seconds: float,
) -> Garbage:
    """Instances (of this cluster) that did not become a node in time, and nodes whose
    instance (of this cluster) EC2 no longer runs. Nodes of instances Ebb did not
    launch are never considered."""
    terminate = tuple(
        i.instance_id
        for i in instances
        if i.state in LIVE_STATES
        and i.node is None
        and now - i.launched >= registration_timeout_seconds
    )
    delete = tuple(
        n.name
        for n in nodes
        if n.instance_state not in LIVE_STATES and now - n.created >= node_grace_seconds
    )
    return Garbage(terminate, delete)
