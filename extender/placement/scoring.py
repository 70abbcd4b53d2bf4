"""Placement decisions for batch pods: the nodes a pod may go to (filter) and the ones
it should prefer (prioritize). Pure: plain snapshots in, plain decisions out; no I/O,
no clock. Both run in O(n log n) in the number of candidate nodes (one pass, and a sort
of the distinct preference tiers).

A pod without the `ebb.dev/queue` label is not Ebb's: every node is kept and scores 0.

Filter. A batch pod of queue Q may land on node N only if N belongs to a compute
environment (CE) in Q's `computeEnvironmentOrder`, that CE exists and is ENABLED, N is
neither cordoned nor being drained, and the pod's requests fit N's allocatable minus
the requests of the pods bound or assumed there. Multi-node jobs are node-exclusive: a
pod of one fits only a node with no pod of any Job on it, no other pod fits a node
holding one, and a gang's pods all go to one compute environment and one zone (as AWS
Batch runs a multi-node job in one CE, and the autoscaler launches a gang in one zone):
none fits until one (CE, zone) has empty nodes for all of its pods not placed yet, the
one its placed pods are in, else the first CE in the queue's order, then the zone with
the most (the bind verb then holds and binds them together; see
docs/decisions/0007-gang-placement.md). Each rejected node gets a short reason;
reasons that evicting pods cannot fix (everything except "does not fit right now" and
"node not in the cache yet") are unresolvable, so kube-scheduler's preemption skips
those nodes.

Scoring formula (prioritize). Each eligible node gets a preference tier, a tuple
compared lexicographically, smaller is better:

    tier = (explicit_capacity_mismatch, ce_rank, gpu_waste, default_capacity_mismatch)

    explicit_capacity_mismatch  1 if the pod's `ebb.dev/capacity-type` annotation asks
                                for spot or on-demand and the node is the other kind
    ce_rank                     the node's CE's index in the queue's order (0 = first)
    gpu_waste                   1 if the node has GPUs and the pod requests none
    default_capacity_mismatch   1 if the pod states no preference and the node is not
                                spot (Spot is cheaper)

and a packing utilization after placement, the mean over the node's resources (cpu,
memory, and gpu if it has any) of min(1, (used + request) / allocatable).

The 11 scores 0..10 are split into one contiguous band per distinct tier present among
the candidates, the best tier taking the highest band (with T tiers, band widths are
11 // T, the first 11 % T bands one wider), and within its band a node scores

    score = band_low + round(utilization * (band_high - band_low))

so a better tier always scores strictly higher (while there are at most 11 tiers; with
more, the 11th and later tiers all score 0), and within a tier the fuller node scores
higher: bin-packing, so that the emptiest nodes drain and can be scaled to zero. Nodes
that are not eligible (unknown, or of a CE outside the queue) score 0. kube-scheduler
adds score x weight x 10 to its own plugins' scores, so the extender's weight in the
KubeSchedulerConfiguration sets how strongly these preferences win.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ebb import keys
from ebb.model import ComputeEnvironment, JobQueue, NodeInfo, PodInfo, Toleration
from ebb.resources import ZERO, Resources

V_co = TypeVar("V_co", covariant=True)

MAX_SCORE = 10
_LEVELS = MAX_SCORE + 1


class Lookup(Protocol[V_co]):
    """What decisions read a snapshot through: a dict, or a reflector's store."""

    def get(self, key: str, /) -> V_co | None: ...


@dataclass(frozen=True, slots=True)
class Packing:
    """How full a node is, per resource, ready for scoring: `x_used` is used / allocatable
    and `x_per_unit` 1 / allocatable (both 0 for a resource the node lacks), so the share
    after placing a request r is x_used + r * x_per_unit, with no division per call."""

    cpu_used: float
    cpu_per_unit: float
    memory_used: float
    memory_per_unit: float
    gpu_used: float
    gpu_per_unit: float
    resources: int  # how many of cpu, memory, gpu the node has


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node as placement sees it: `used` sums the requests of the pods bound to it or
    assumed there; `free` never goes below zero (an overcommitted node has none)."""

    info: NodeInfo
    used: Resources
    free: Resources
    kind: tuple[str | None, str | None, bool]  # (environment, capacity type, has GPUs)
    packing: Packing
    job_pods: int = 0  # pods of Jobs bound or assumed here
    gang_pods: int = 0  # of which pods of multi-node jobs


def node_state(info: NodeInfo, used: Resources, job_pods: int = 0, gang_pods: int = 0) -> NodeState:
    size = info.allocatable
    free = (size - used).max(ZERO)
    kind = (info.compute_environment, info.capacity_type, size.gpu > 0)
    shares = [
        (have / total, 1 / total) if total > 0 else (0.0, 0.0)
        for have, total in (
            (used.cpu_milli, size.cpu_milli),
            (used.memory, size.memory),
            (used.gpu, size.gpu),
        )
    ]
    (cpu, cpu_unit), (memory, memory_unit), (gpu, gpu_unit) = shares
    resources = sum(1 for total in (size.cpu_milli, size.memory, size.gpu) if total > 0)
    packing = Packing(cpu, cpu_unit, memory, memory_unit, gpu, gpu_unit, resources)
    return NodeState(info, used, free, kind, packing, job_pods, gang_pods)


class RejectKind(enum.StrEnum):
    """Why a node was filtered out; the values are the bounded metric label. (A StrEnum:
    it hashes as fast as a str, and the filter loop counts by it.)"""

    UNKNOWN_NODE = "unknown_node"
    UNKNOWN_QUEUE = "unknown_queue"
    NOT_BATCH_NODE = "not_batch_node"
    NOT_IN_QUEUE = "ce_not_in_queue"
    UNKNOWN_CE = "unknown_ce"
    CE_DISABLED = "ce_disabled"
    CORDONED = "cordoned"
    DRAINING = "draining"
    TOO_SMALL = "node_too_small"
    INSUFFICIENT = "insufficient_resources"
    NOT_EMPTY = "not_empty_for_gang"
    GANG_NODE = "holds_gang_pod"
    GANG_SHORT = "too_few_nodes_for_gang"
    GANG_ELSEWHERE = "gang_in_another_ce_or_zone"

    @property
    def resolvable(self) -> bool:
        """Whether evicting pods (or the cache catching up) could make the node fit."""
        return self in (RejectKind.UNKNOWN_NODE, RejectKind.INSUFFICIENT, RejectKind.GANG_SHORT)


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: RejectKind
    message: str
    resolvable: bool = field(init=False)  # a field, not a property: read for every node

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolvable", self.kind.resolvable)


_UNKNOWN_NODE = Rejection(RejectKind.UNKNOWN_NODE, "node not in ebb's cache yet")
_NOT_BATCH_NODE = Rejection(
    RejectKind.NOT_BATCH_NODE, f"not a batch node (no {keys.COMPUTE_ENVIRONMENT_LABEL} label)"
)
_CORDONED = Rejection(RejectKind.CORDONED, "node is cordoned")
_DRAINING = Rejection(RejectKind.DRAINING, "node is being drained by ebb")
_NOT_EMPTY = Rejection(
    RejectKind.NOT_EMPTY, "a multi-node job's pod needs a node with no other job's pods"
)
_GANG_NODE = Rejection(
    RejectKind.GANG_NODE, "node runs a multi-node job's pod (it has the node to itself)"
)


# Where a multi-node job's pods go: (compute environment, zone).
GangGroup = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class FilterVerdict:
    kept: list[str]
    failed: dict[str, str]  # FailedNodes: a later try (or preemption) may fit
    unresolvable: dict[str, str]  # FailedAndUnresolvableNodes: preemption cannot help
    rejected: dict[RejectKind, int]  # how many nodes each kind of reason filtered out


def filter_nodes(
    pod: PodInfo,
    names: Iterable[str],
    nodes: Lookup[NodeState],
    queues: Lookup[JobQueue],
    environments: Lookup[ComputeEnvironment],
    *,
    gang_unplaced: int | None = None,
    gang_group: GangGroup | None = None,
) -> FilterVerdict:
    """`gang_unplaced`: for a multi-node job's pod, how many of its pods have no node yet
    (this one included): unless that many nodes fit in one (CE, zone), none is kept. None:
    not checked (a bind checks one node). `gang_group`: the (CE, zone) of the nodes its
    placed pods have, if any: only nodes there are kept."""
    if pod.queue is None:
        return FilterVerdict(list(names), {}, {}, {})
    queue = queues.get(pod.queue)
    if queue is None:
        missing = dict.fromkeys(names, f"queue {pod.queue} does not exist")
        return FilterVerdict([], {}, missing, {RejectKind.UNKNOWN_QUEUE: len(missing)})
    in_queue = frozenset(queue.compute_environments)
    by_environment: dict[str | None, Rejection | None] = {}
    request = pod.requests
    cpu, memory, gpu = request.cpu_milli, request.memory, request.gpu
    kept: list[str] = []
    failed: dict[str, str] = {}
    unresolvable: dict[str, str] = {}
    rejected: dict[RejectKind, int] = {}
    gang = pod.gang_size is not None
    groups: dict[GangGroup, list[str]] = {}  # with gang_unplaced: the kept nodes by group
    # The hot loop of the extender: per node, a few dict lookups and comparisons.
    for name in names:
        state = nodes.get(name)
        rejection: Rejection | None
        if state is None:
            rejection = _UNKNOWN_NODE
        else:
            info = state.info
            environment = info.compute_environment
            if environment in by_environment:
                rejection = by_environment[environment]
            else:
                rejection = _environment_rejection(environment, queue, in_queue, environments)
                by_environment[environment] = rejection
            if rejection is None:
                free = state.free
                if info.unschedulable:
                    rejection = _CORDONED
                elif info.draining:
                    rejection = _DRAINING
                elif state.job_pods if gang else state.gang_pods:
                    rejection = _NOT_EMPTY if gang else _GANG_NODE
                elif cpu <= free.cpu_milli and memory <= free.memory and gpu <= free.gpu:
                    kept.append(name)
                    if gang_unplaced is not None:
                        groups.setdefault((environment, info.zone), []).append(name)
                    continue
                else:
                    rejection = _resource_rejection(request, state)
        if rejection.resolvable:
            failed[name] = rejection.message
        else:
            unresolvable[name] = rejection.message
        rejected[rejection.kind] = rejected.get(rejection.kind, 0) + 1
    if gang_unplaced is not None:
        verdict = FilterVerdict([], failed, unresolvable, rejected)
        for there, rejection in _gang_groups(queue, groups, gang_unplaced, gang_group):
            _reject_or_keep(verdict, there, rejection)
        return verdict
    return FilterVerdict(kept, failed, unresolvable, rejected)


def _gang_groups(
    queue: JobQueue,
    groups: Mapping[GangGroup, list[str]],
    unplaced: int,
    placed_in: GangGroup | None,
) -> Iterator[tuple[list[str], Rejection | None]]:
    """The nodes a gang's pod fits, group by group, each with why it is not kept (None:
    kept): all or nothing, in one group with a node for each unplaced pod, so no pod of
    the gang takes a node before all can, and all go to one CE and zone. The group its
    placed pods are in, else the first of the queue's CEs, then the zone with the most
    nodes (as the autoscaler's planner fills empty room for a gang)."""
    rank = {environment: i for i, environment in enumerate(queue.compute_environments)}
    ordered = sorted(groups, key=lambda g: (rank.get(g[0] or "", 0), -len(groups[g]), g[1] or ""))
    need = f"multi-node job needs {unplaced} empty nodes"
    if placed_in is not None:
        chosen: GangGroup | None = placed_in
        where = f"{_where(placed_in)}, where its other pods are"
        fit = len(groups.get(placed_in, ()))
        short = f"{need} for its {unplaced} unplaced pods in {where}; {fit} empty nodes fit there"
    else:
        chosen = next((g for g in ordered if len(groups[g]) >= unplaced), None)
        where = (
            f"{_where(chosen)}: the first of its queue's environments with {unplaced} empty "
            "nodes that fit in one zone"
            if chosen is not None
            else ""  # no node is kept elsewhere: every group is short
        )
        total = sum(len(names) for names in groups.values())
        if len(groups) > 1:
            most = max(ordered, key=lambda g: len(groups[g]))  # the first of the largest
            short = (
                f"{need} in one compute environment and zone for its {unplaced} unplaced "
                f"pods; {total} empty nodes fit, at most {len(groups[most])} in one "
                f"({_where(most)})"
            )
        else:
            short = f"{need} for its {unplaced} unplaced pods; {total} empty nodes fit"
    enough = chosen is not None and len(groups.get(chosen, ())) >= unplaced
    elsewhere = Rejection(RejectKind.GANG_ELSEWHERE, f"multi-node job's pods all go to {where}")
    for group in ordered:
        if group == chosen:
            yield groups[group], None if enough else Rejection(RejectKind.GANG_SHORT, short)
        elif chosen is not None:
            yield groups[group], elsewhere
        else:
            yield groups[group], Rejection(RejectKind.GANG_SHORT, short)


def _reject_or_keep(verdict: FilterVerdict, names: list[str], rejection: Rejection | None) -> None:
    if rejection is None:
        verdict.kept.extend(names)
        return
    (verdict.failed if rejection.resolvable else verdict.unresolvable).update(
        dict.fromkeys(names, rejection.message)
    )
    verdict.rejected[rejection.kind] = verdict.rejected.get(rejection.kind, 0) + len(names)


def _where(group: GangGroup) -> str:
    environment, zone = group
    return f"ce {environment}, zone {zone}" if zone else f"ce {environment} (no zone label)"


def _environment_rejection(
    environment: str | None,
    queue: JobQueue,
    in_queue: frozenset[str],
    environments: Lookup[ComputeEnvironment],
) -> Rejection | None:
    if environment is None:
        return _NOT_BATCH_NODE
    if environment not in in_queue:
        return Rejection(RejectKind.NOT_IN_QUEUE, f"ce {environment} not in queue {queue.name}")
    spec = environments.get(environment)
    if spec is None:
        return Rejection(RejectKind.UNKNOWN_CE, f"ce {environment} does not exist")
    if not spec.enabled:
        return Rejection(RejectKind.CE_DISABLED, f"ce {environment} is {spec.state}")
    return None


def _resource_rejection(request: Resources, state: NodeState) -> Rejection:
    allocatable = state.info.allocatable
    if not request.fits_in(allocatable):
        text = "; ".join(request.shortfall(allocatable, "allocatable"))
        return Rejection(RejectKind.TOO_SMALL, text)
    return Rejection(RejectKind.INSUFFICIENT, "; ".join(request.shortfall(state.free)))


def score_nodes(
    pod: PodInfo,
    names: Iterable[str],
    nodes: Lookup[NodeState],
    queues: Lookup[JobQueue],
    environments: Lookup[ComputeEnvironment],
) -> list[tuple[str, int]]:
    """(node, score 0..10) for every name, in order; the formula is the module's doc."""
    queue = queues.get(pod.queue) if pod.queue is not None else None
    if queue is None:
        return [(name, 0) for name in names]
    names = list(names)
    states = [nodes.get(name) for name in names]
    # A node's tier depends only on its kind: find the tiers present, then their bands.
    tier = _tiers(pod, queue, environments)
    kinds = {state.kind for state in states if state is not None}
    tier_of_kind = {kind: tier(*kind) for kind in kinds}
    tiers = sorted({code for code in tier_of_kind.values() if code is not None})
    bands = dict(zip(tiers, _bands(len(tiers)), strict=True))
    # Each band (low, high) as (low + 0.5, high - low): score = int(low + 0.5 + u * width).
    band_of_kind = {
        kind: (bands[code][0] + 0.5, bands[code][1] - bands[code][0])
        for kind, code in tier_of_kind.items()
        if code is not None
    }
    request = pod.requests
    cpu, memory, gpu = request.cpu_milli, request.memory, request.gpu
    scores: list[tuple[str, int]] = []
    # The hot loop: per node two lookups and the utilization after placement (the mean over
    # the node's resources of the share in use, each capped at 1), inlined.
    for name, state in zip(names, states, strict=True):
        band = band_of_kind.get(state.kind) if state is not None else None
        if state is None or band is None:
            scores.append((name, 0))
            continue
        p = state.packing
        c = p.cpu_used + cpu * p.cpu_per_unit
        m = p.memory_used + memory * p.memory_per_unit
        g = p.gpu_used + gpu * p.gpu_per_unit
        total = (c if c < 1.0 else 1.0) + (m if m < 1.0 else 1.0) + (g if g < 1.0 else 1.0)
        utilization = total / p.resources if p.resources else 0.0
        scores.append((name, int(band[0] + utilization * band[1])))
    return scores


def _tiers(
    pod: PodInfo, queue: JobQueue, environments: Lookup[ComputeEnvironment]
) -> Callable[[str | None, str | None, bool], int | None]:
    """The preference tier of a node kind (environment, capacity type, has GPUs) for this
    pod: one integer ordered as the module doc's tuple; None: not eligible."""
    rank = {environment: i for i, environment in enumerate(queue.compute_environments)}
    preference = pod.capacity_type_preference
    if preference not in (keys.CAPACITY_SPOT, keys.CAPACITY_ON_DEMAND):
        preference = None
    wants_gpu = pod.requests.gpu > 0

    def tier(environment: str | None, capacity: str | None, has_gpu: bool) -> int | None:
        position = rank.get(environment) if environment is not None else None
        if environment is None or position is None:
            return None
        if capacity is None:  # an unlabelled node is what its environment launches
            spec = environments.get(environment)
            capacity = spec.capacity_type if spec is not None else None
        explicit_mismatch = preference is not None and capacity != preference
        gpu_waste = has_gpu and not wants_gpu
        default_mismatch = preference is None and capacity != keys.CAPACITY_SPOT
        code = int(explicit_mismatch) * len(rank) + position
        return (code * 2 + int(gpu_waste)) * 2 + int(default_mismatch)

    return tier


def _bands(count: int) -> Sequence[tuple[int, int]]:
    """(low, high) score bands for `count` tiers, best first, covering 0..10."""
    if count >= _LEVELS:
        return [(max(MAX_SCORE - i, 0), max(MAX_SCORE - i, 0)) for i in range(count)]
    width, wider = divmod(_LEVELS, count) if count else (0, 0)
    bands, high = [], MAX_SCORE
    for i in range(count):
        size = width + (1 if i < wider else 0)
        bands.append((high - size + 1, high))
        high -= size
    return bands


def untolerated_taint(
    tolerations: Iterable[Toleration], taints: Iterable[tuple[str, str, str]]
) -> tuple[str, str, str] | None:
    """The first taint of a node that keeps the pod off it (NoSchedule or NoExecute, and
    no toleration matches), as kube-scheduler's TaintToleration filter decides; None if
    the pod tolerates them all."""
    held = tuple(tolerations)
    for key, value, effect in taints:
        if effect in ("NoSchedule", "NoExecute") and not any(
            _tolerates(t, key, value, effect) for t in held
        ):
            return key, value, effect
    return None


def _tolerates(toleration: Toleration, key: str, value: str, effect: str) -> bool:
    t_key, operator, t_value, t_effect = toleration
    if t_effect and t_effect != effect:
        return False
    if operator == "Exists":
        return not t_key or t_key == key
    return t_key == key and t_value == value
