"""Placement decisions for batch pods: the nodes a pod may go to (filter) and the ones
it should prefer (prioritize). Pure: plain snapshots in, plain decisions out; no I/O,
no clock. Both are linear in the number of candidate nodes and run as numpy array
operations over their rows in a `NodeTable` (the placement cache keeps one current); only
the reasons of rejected nodes are built per node. The extender's filter keeps only the
nodes prioritize would score highest (`best_only`), so kube-scheduler calls it once per
pod (docs/decisions/0011-one-extender-call-per-pod.md).

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
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from ebb import keys
from ebb.gang_site import Site, choose_site
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


# The slots of filter's reasons, in the order the checks run (the first failing check's
# reason is the node's); the environments' reasons follow them.
_KEPT, _UNKNOWN, _CORDONED_SLOT, _DRAINING_SLOT, _OCCUPIED, _RESOURCES = range(6)

# NodeTable.ints' columns: interned environment and kind, the reason slot of a cordoned or
# draining node (else _KEPT), pods of Jobs and of gangs, and free room; NodeTable.floats'
# are Packing's fields in order.
_ENV, _KIND, _BLOCKED, _JOB_PODS, _GANG_PODS, _FREE_CPU, _FREE_MEMORY, _FREE_GPU = range(8)
_INT_COLUMNS, _FLOAT_COLUMNS = 8, 7

IntArray = npt.NDArray[np.int64]


class _RowIndex(dict[str, int]):
    """Node name -> row; a name not there reads -1 (so lookups need no default argument)."""

    def __missing__(self, name: str) -> int:
        return -1


class NodeTable(Mapping[str, NodeState]):
    """Node states by name, kept as columns as well (one numpy row per node), so that
    filter's and prioritize's per-candidate work is a few array operations over the
    candidates' rows rather than a Python loop over them. The placement cache keeps one
    current; a plain Lookup is made into one per call (`NodeTable.of`)."""

    def __init__(self, capacity: int = 64) -> None:
        self._rows = _RowIndex()
        self._states: list[NodeState | None] = []
        self._vacant: list[int] = []  # rows of deleted nodes, to reuse
        self.ints = np.zeros((max(capacity, 1), _INT_COLUMNS), dtype=np.int64)
        self.floats = np.zeros((max(capacity, 1), _FLOAT_COLUMNS), dtype=np.float64)
        # Interned: environment names (0: none, not a batch node) and node kinds.
        self.environments: list[str | None] = [None]
        self._environment_codes: dict[str | None, int] = {None: 0}
        self.kinds: list[tuple[str | None, str | None, bool]] = []
        self._kind_codes: dict[tuple[str | None, str | None, bool], int] = {}

    @classmethod
    def of(cls, names: Sequence[str], nodes: Lookup[NodeState]) -> NodeTable:
        table = cls(len(names))
        for name in names:
            state = nodes.get(name)
            if state is not None:
                table[name] = state
        return table

    def get(self, name: str, default: NodeState | None = None, /) -> NodeState | None:  # type: ignore[override]
        row = self._rows.get(name)
        return default if row is None else self._states[row]

    def __getitem__(self, name: str) -> NodeState:
        state = self._states[self._rows[name]]
        assert state is not None
        return state

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def __setitem__(self, name: str, state: NodeState) -> None:
        row = self._rows.get(name)
        if row is None:
            row = self._vacant.pop() if self._vacant else self._new_row()
            self._rows[name] = row
        self._states[row] = state
        info, free, p = state.info, state.free, state.packing
        self.ints[row] = (
            self._intern_environment(info.compute_environment),
            self._intern_kind(state.kind),
            _CORDONED_SLOT if info.unschedulable else _DRAINING_SLOT if info.draining else _KEPT,
            state.job_pods,
            state.gang_pods,
            free.cpu_milli,
            free.memory,
            free.gpu,
        )
        self.floats[row] = (
            p.cpu_used,
            p.cpu_per_unit,
            p.memory_used,
            p.memory_per_unit,
            p.gpu_used,
            p.gpu_per_unit,
            p.resources,
        )

    def pop(self, name: str, default: NodeState | None = None) -> NodeState | None:
        row = self._rows.pop(name, None)
        if row is None:
            return default
        state, self._states[row] = self._states[row], None
        self._vacant.append(row)
        return state

    def rows(self, names: Sequence[str]) -> IntArray:
        """Each name's row, -1 for a node not in the table (dict lookups done in C)."""
        return np.fromiter(map(self._rows.__getitem__, names), dtype=np.int64, count=len(names))

    def state(self, row: int) -> NodeState:
        state = self._states[row]
        assert state is not None
        return state

    def _new_row(self) -> int:
        row = len(self._states)
        self._states.append(None)
        if row == len(self.ints):
            self.ints = np.concatenate([self.ints, np.zeros_like(self.ints)])
            self.floats = np.concatenate([self.floats, np.zeros_like(self.floats)])
        return row

    def _intern_environment(self, environment: str | None) -> int:
        code = self._environment_codes.get(environment)
        if code is None:
            code = self._environment_codes[environment] = len(self.environments)
            self.environments.append(environment)
        return code

    def _intern_kind(self, kind: tuple[str | None, str | None, bool]) -> int:
        code = self._kind_codes.get(kind)
        if code is None:
            code = self._kind_codes[kind] = len(self.kinds)
            self.kinds.append(kind)
        return code


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
    best_only: bool = False,
) -> FilterVerdict:
    """`gang_unplaced`: for a multi-node job's pod, how many of its pods have no node yet
    (this one included): unless that many nodes fit in one (CE, zone), none is kept. None:
    not checked (a bind checks one node). `gang_group`: the (CE, zone) of the nodes its
    placed pods have, if any: only nodes there are kept. `best_only`: of the nodes that
    pass, keep only those `score_nodes` scores highest."""
    if pod.queue is None:
        return FilterVerdict(list(names), {}, {}, {})
    queue = queues.get(pod.queue)
    if queue is None:
        missing = dict.fromkeys(names, f"queue {pod.queue} does not exist")
        return FilterVerdict([], {}, missing, {RejectKind.UNKNOWN_QUEUE: len(missing)})
    names = names if isinstance(names, list) else list(names)
    table = nodes if isinstance(nodes, NodeTable) else NodeTable.of(names, nodes)
    rows = table.rows(names)
    known = rows >= 0
    # A name not in the table (-1) reads the last row; its slot is _UNKNOWN below.
    columns = table.ints.take(rows, axis=0)  # (take: a faster gather than indexing)
    gang = pod.gang_size is not None
    request = pod.requests
    reasons: list[Rejection | None] = [
        None,
        _UNKNOWN_NODE,
        _CORDONED,
        _DRAINING,
        _NOT_EMPTY if gang else _GANG_NODE,
        None,  # per node: see _resource_rejection
    ]
    in_queue = frozenset(queue.compute_environments)
    environment_slots = []
    for environment in table.environments:
        rejection = _environment_rejection(environment, queue, in_queue, environments)
        environment_slots.append(len(reasons) if rejection is not None else _KEPT)
        if rejection is not None:
            reasons.append(rejection)
    # Each candidate's reason slot (0: kept), the checks from last to first so that the
    # first one a node fails writes last: room, occupancy, then (environment, cordoned,
    # draining), then not in the table.
    fits = (
        (columns[:, _FREE_CPU] >= request.cpu_milli)
        & (columns[:, _FREE_MEMORY] >= request.memory)
        & (columns[:, _FREE_GPU] >= request.gpu)
    )
    slot = np.where(fits, _KEPT, _RESOURCES)
    slot[columns[:, _JOB_PODS if gang else _GANG_PODS] > 0] = _OCCUPIED
    first = np.array(environment_slots, dtype=np.int64)[columns[:, _ENV]]
    first = np.where(first != _KEPT, first, columns[:, _BLOCKED])
    slot = np.where(known, np.where(first != _KEPT, first, slot), _UNKNOWN)
    counts = np.bincount(slot, minlength=len(reasons)).tolist()
    # The candidates' positions grouped by slot, in candidate order within each (stable).
    order = np.argsort(slot, kind="stable")
    verdict = FilterVerdict([], {}, {}, {})
    kept_at = order[: counts[_KEPT]]
    rejected_at = order[counts[_KEPT] :].tolist()
    rejected = list(map(names.__getitem__, rejected_at))
    end = 0
    for which in range(_KEPT + 1, len(counts)):
        begin, end = end, end + counts[which]
        if begin == end:
            continue
        if which == _RESOURCES:
            group = zip(rows[rejected_at[begin:end]].tolist(), rejected[begin:end], strict=True)
            for rejection, names_of in _resource_rejections(request, table, group):
                _reject_or_keep(verdict, names_of, rejection)
        else:
            _reject_or_keep(verdict, rejected[begin:end], reasons[which])
    if best_only and gang_unplaced is None and len(kept_at) > 1:
        # What score_nodes scores highest: the best tier's fullest nodes. kube-scheduler
        # then needs no prioritize call; among these its own scoring plugins choose, as
        # they broke ties between equal scores before (docs/decisions/0011).
        kept_at = kept_at[_highest(pod, queue, rows.take(kept_at), table, environments)]
    verdict.kept.extend(map(names.__getitem__, kept_at.tolist()))
    if gang_unplaced is not None:
        groups: dict[GangGroup, list[str]] = {}
        for name in verdict.kept:
            info = table[name].info
            groups.setdefault((info.compute_environment, info.zone), []).append(name)
        verdict = FilterVerdict([], verdict.failed, verdict.unresolvable, verdict.rejected)
        for there, rejection in _gang_groups(queue, groups, gang_unplaced, gang_group):
            _reject_or_keep(verdict, there, rejection)
        if best_only and len(verdict.kept) > 1:
            highest = _highest(pod, queue, table.rows(verdict.kept), table, environments)
            verdict.kept[:] = compress(verdict.kept, highest.tolist())
    return verdict


def _resource_rejections(
    request: Resources, table: NodeTable, candidates: Iterable[tuple[int, str]]
) -> Iterable[tuple[Rejection, list[str]]]:
    """The candidates (row, name) the request does not fit, by reason; nodes with the same
    room share one."""
    out: dict[Rejection, list[str]] = {}
    for row, name in candidates:
        state = table.state(row)
        rejection = _resource_rejection(request, state.free, state.info.allocatable)
        out.setdefault(rejection, []).append(name)
    return out.items()


def _gang_groups(
    queue: JobQueue,
    groups: Mapping[GangGroup, list[str]],
    unplaced: int,
    placed_in: GangGroup | None,
) -> Iterator[tuple[list[str], Rejection | None]]:
    """The nodes a gang's pod fits, group by group, each with why it is not kept (None:
    kept): all or nothing, in one group with a node for each unplaced pod, so no pod of
    the gang takes a node before all can, and all go to one CE and zone. The group its
    placed pods are in, else the one `ebb.gang_site` chooses from the empty nodes (the
    rule the autoscaler's planner launches for a gang by): the first of the queue's CEs
    with enough in one zone, then its zone with the most."""
    rank = {environment: i for i, environment in enumerate(queue.compute_environments)}
    ordered = sorted(groups, key=lambda g: (rank.get(g[0] or "", 0), -len(groups[g]), g[1] or ""))
    need = f"multi-node job needs {unplaced} empty nodes"
    if placed_in is not None:
        chosen: GangGroup | None = placed_in
        where = f"{_where(placed_in)}, where its other pods are"
        fit = len(groups.get(placed_in, ()))
        short = f"{need} for its {unplaced} unplaced pods in {where}; {fit} empty nodes fit there"
    else:
        site = choose_site(
            queue.compute_environments,
            (Site(env, zone, len(groups[env, zone])) for env, zone in ordered if env),
            unplaced,
        )
        chosen = (site.environment, site.zone) if site is not None else None
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


# Pods come in few shapes and nodes in few sizes: the same texts recur across calls.
@functools.lru_cache(maxsize=4096)
def _resource_rejection(request: Resources, free: Resources, allocatable: Resources) -> Rejection:
    if not request.fits_in(allocatable):
        text = "; ".join(request.shortfall(allocatable, "allocatable"))
        return Rejection(RejectKind.TOO_SMALL, text)
    return Rejection(RejectKind.INSUFFICIENT, "; ".join(request.shortfall(free)))


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
    names = names if isinstance(names, list) else list(names)
    table = nodes if isinstance(nodes, NodeTable) else NodeTable.of(names, nodes)
    scores = _scores(pod, queue, table.rows(names), table, environments)
    return list(zip(names, scores.tolist(), strict=True))


def _scores(
    pod: PodInfo,
    queue: JobQueue,
    rows: IntArray,
    table: NodeTable,
    environments: Lookup[ComputeEnvironment],
) -> IntArray:
    """Each row's score (0 for -1, a node not in the table)."""
    known = rows >= 0
    safe = np.where(known, rows, 0)
    kinds = table.ints[safe, _KIND]
    low, width = _kind_bands(pod, queue, kinds[known], table, environments)
    lows = low[kinds]
    scores = np.floor(lows + _utilization(pod, safe, table) * width[kinds]).astype(np.int64)
    return np.where(known & (lows >= 0), scores, 0)


def _highest(
    pod: PodInfo,
    queue: JobQueue,
    rows: IntArray,
    table: NodeTable,
    environments: Lookup[ComputeEnvironment],
) -> npt.NDArray[np.bool_]:
    """Which rows (all in the table) `_scores` scores highest. Only the best tier's rows
    can (each tier has a band of its own, the best tier the highest), so only theirs are
    packed, with the same floats as `_scores`."""
    kinds = table.ints[:, _KIND].take(rows)
    tier = _tiers(pod, queue, environments)
    present = np.flatnonzero(np.bincount(kinds)).tolist()
    tier_of_kind = {kind: tier(*table.kinds[kind]) for kind in present}
    tiers = sorted({code for code in tier_of_kind.values() if code is not None})
    if not tiers:  # none eligible: all score 0
        return np.ones(len(rows), dtype=np.bool_)
    low, high = _bands(len(tiers))[0]
    best_kinds = np.zeros(len(table.kinds), dtype=np.bool_)
    best_kinds[[kind for kind, code in tier_of_kind.items() if code == tiers[0]]] = True
    best: npt.NDArray[np.bool_] = best_kinds[kinds]
    scores = np.floor(low + 0.5 + _utilization(pod, rows[best], table) * (high - low))
    best[best] = scores == scores.max()
    return best


def _kind_bands(
    pod: PodInfo,
    queue: JobQueue,
    kinds: IntArray,
    table: NodeTable,
    environments: Lookup[ComputeEnvironment],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """By kind code, the band (low, high) of its tier among the tiers of `kinds`, as
    (low + 0.5, high - low): score = ⌊low + 0.5 + utilization × width⌋; a low of -1: not
    eligible. A node's tier depends only on its kind."""
    tier = _tiers(pod, queue, environments)
    present = np.flatnonzero(np.bincount(kinds, minlength=len(table.kinds))).tolist()
    tier_of_kind = {kind: tier(*table.kinds[kind]) for kind in present}
    tiers = sorted({code for code in tier_of_kind.values() if code is not None})
    bands = dict(zip(tiers, _bands(len(tiers)), strict=True))
    low = np.full(max(len(table.kinds), 1), -1.0)
    width = np.zeros(len(low))
    for kind, code in tier_of_kind.items():
        if code is not None:
            low[kind] = bands[code][0] + 0.5
            width[kind] = bands[code][1] - bands[code][0]
    return low, width


def _utilization(pod: PodInfo, rows: IntArray, table: NodeTable) -> npt.NDArray[np.float64]:
    """The utilization after placement: the mean over the node's resources of the share
    in use, each capped at 1 (in the order of the module doc's formula: the same floats)."""
    request = pod.requests
    p = table.floats.take(rows, axis=0)
    cpu = np.minimum(p[:, 0] + request.cpu_milli * p[:, 1], 1.0)
    memory = np.minimum(p[:, 2] + request.memory * p[:, 3], 1.0)
    gpu = np.minimum(p[:, 4] + request.gpu * p[:, 5], 1.0)
    resources = p[:, 6]
    out = np.zeros(len(rows))
    np.divide(cpu + memory + gpu, resources, out=out, where=resources > 0)
    return out


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


@functools.cache
def _bands(count: int) -> Sequence[tuple[int, int]]:
    """(low, high) score bands for `count` tiers, best first, covering 0..10."""
    if count >= _LEVELS:
        return tuple((max(MAX_SCORE - i, 0), max(MAX_SCORE - i, 0)) for i in range(count))
    width, wider = divmod(_LEVELS, count) if count else (0, 0)
    bands, high = [], MAX_SCORE
    for i in range(count):
        size = width + (1 if i < wider else 0)
        bands.append((high - size + 1, high))
        high -= size
    return tuple(bands)


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
