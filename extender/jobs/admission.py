"""Admission: which runnable jobs may start now, and why the others wait.

One pass takes plain values — queues, the capacity of each compute environment, and
the demands of jobs (runnable ones, and admitted ones still holding capacity) — and
returns grants (pods per job) and a reason for every job left waiting. No I/O.

The rules, in order:

1. Capacity. Each compute environment (CE) holds at most its limit (maxvCpus, and
   GPU/memory limits) of admitted pods' requests; a managed CE's maxvCpus counts the
   vCPUs of the instances it may launch, so a pod takes the share of an instance it
   takes on the type within maxvCpus that packs its shape densest (node overhead
   included), and a pod no such type holds is never admitted (`CapacityLimit`).
   Pods already bound to a node count against that node's CE; admitted pods not yet
   bound are counted against the first CE in their queue's order with room (as the
   extender will place them), pods of the same queue and request together, the group
   with the oldest job first — unless no node of those CEs can hold them (a CE changed
   since): they hold nothing. DISABLED, INVALID or missing CEs hold nothing.
2. Queue priority. Queues are served highest `priority` first; queues of equal
   priority take turns, one job each.
3. Order within a queue. FIFO by creation time, unless the queue has a scheduling
   policy: then the share with the least weighted usage goes next (see `fairshare`),
   and within a share, higher `ebb.dev/scheduling-priority` first, then FIFO.
4. Backfill, with a bound. A job that does not fit now does not stop smaller jobs
   behind it: they are admitted around it. But once the first such job of a queue
   has waited `starvation_seconds`, the CEs of its queue stop admitting anything
   ranked after it until it fits — so a large job waits at most until enough running
   work finishes, and small jobs are never blocked by a job that can never fit (that
   one is not waiting for capacity, it is misconfigured, and says so).
5. Jobs of more than one pod (array jobs, and Jobs with parallelism > 1) are elastic:
   they get as many pods as fit (raising `parallelism`), up to what they ask for, and
   keep the pods they have — so a wide job runs in waves instead of waiting for room
   for all of it. (Kubernetes Jobs have no gang semantics to preserve.)
6. Multi-node jobs (gangs, `exclusive`) are not: all their pods are admitted at once, in
   one CE (as AWS Batch runs a multi-node job in one environment), or none. Each pod has
   a node of its own, so in a CE counting instances it takes a whole instance's vCPUs
   (the smallest type that holds it). A gang no CE of its queue may ever hold waits
   with `MAX_RESOURCE` (the webhook refuses it up front).
"""

from __future__ import annotations

import copy
import heapq
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, filterfalse
from operator import attrgetter
from typing import TypeVar

from ebb import keys
from ebb.model import SchedulingPolicy
from ebb.resources import Resources, fmt_cpu, fmt_memory
from extender.jobs import fairshare
from extender.jobs.lifecycle import Code, State, Status

UNLIMITED = 2**62
# Enum member lookups are slow on Python 3.11; these run once per waiting job.
_RUNNABLE = State.RUNNABLE
_FULL = Code.WAITING_FOR_CAPACITY
_HEAD = Code.HEAD_OF_LINE
_NEVER = Code.MAX_RESOURCE
_SHAPE = Code.JOB_RESOURCE_REQUIREMENT
_FIFO = attrgetter("submitted", "key")
_PRIORITY = attrgetter("priority")
_KEY = attrgetter("key")
_SUBMITTED = attrgetter("submitted")
_RUNNABLE_SINCE = attrgetter("runnable_since")


@dataclass(frozen=True, slots=True)
class NodeShape:
    """One instance type a CE may launch, as admission weighs it: its vCPUs (what
    maxvCpus counts) and what pods can use on it (after the node overhead)."""

    name: str
    vcpus: int
    usable: Resources
    pod_slots: int

    def holds(self, request: Resources) -> int:
        """How many pods of `request` one such node holds (GPU pods on GPU types only)."""
        if (self.usable.gpu > 0) != (request.gpu > 0):
            return 0
        n = self.pod_slots
        for need, have in (
            (request.cpu_milli, self.usable.cpu_milli),
            (request.memory, self.usable.memory),
            (request.gpu, self.usable.gpu),
        ):
            if need:
                n = min(n, have // need)
        return max(n, 0)


@dataclass(frozen=True, slots=True)
class CapacityLimit:
    """What a CE may hold; `unavailable` says why it holds nothing (disabled, ...).
    `nodes`: the instance types it may launch (None: unknown). With `counts_instances`
    (a managed CE: maxvCpus counts the vCPUs of the instances it launches, as in AWS
    Batch) `nodes` only has types within maxvCpus, and a pod takes the share of an
    instance it takes on the type that packs its shape densest — so the pods admitted
    are pods that nodes within maxvCpus can hold, node overhead included."""

    limit: Resources
    unavailable: str | None = None
    nodes: tuple[NodeShape, ...] | None = None
    counts_instances: bool = False

    def holds_pod(self, request: Resources) -> bool:
        """Could one pod of `request` ever run here?"""
        return request.fits_in(self.limit) and self.node_holds(request)

    def node_holds(self, request: Resources) -> bool:
        """Could a node of this CE hold one pod of `request` (True if the types are unknown)?"""
        return self.nodes is None or any(node.holds(request) for node in self.nodes)

    def pod_cost(self, request: Resources, exclusive: bool = False) -> tuple[int, int]:
        """What one pod of `request` uses up of maxvCpus, in millicores, and how many pods
        that count over-admits (see below).

        Not counting instances: its CPU request, and none. Counting instances: the vCPUs of
        the type that packs its shape densest over the pods one holds (rounded down, so k
        pods of a type holding k fit exactly its vCPUs); and, since maxvCpus that are not
        a multiple of that type's vCPUs leave a remainder only smaller, less dense types
        fill, the pods this share over-counts in a CE of only such pods — the densest
        type's instances, then the next type's in what is left, and so on: admission
        keeps that many back, so a CE of one shape is admitted exactly what its whole
        instances hold."""
        if not self.counts_instances or self.nodes is None:
            return request.cpu_milli, 0
        if exclusive:  # a node of its own: the smallest type that holds it, all of it
            node = self.exclusive_node(request)
            return (node.vcpus * 1000 if node else request.cpu_milli), 0
        packing = sorted(
            ((node.vcpus * 1000, n) for node in self.nodes if (n := node.holds(request))),
            key=lambda p: (p[0] / p[1], p[0]),
        )
        if not packing:
            return request.cpu_milli, 0
        cost = packing[0][0] // packing[0][1]
        room, whole = self.limit.cpu_milli, 0
        for milli, held in packing:
            whole += room // milli * held
            room %= milli
        return cost, self.limit.cpu_milli // cost - whole

    def exclusive_node(self, request: Resources) -> NodeShape | None:
        """The type a pod of `request` with a node of its own takes: the smallest that
        holds it (None: none does, or the types are unknown)."""
        holding = [node for node in self.nodes or () if node.holds(request)]
        return min(holding, key=attrgetter("vcpus")) if holding else None

    def exclusive_pods(self, request: Resources) -> int:
        """How many pods of `request`, each on a node of its own, this CE may ever hold."""
        if not self.holds_pod(request):
            return 0
        n = UNLIMITED
        for need, limit in (
            (request.cpu_milli, self.limit.cpu_milli),
            (request.memory, self.limit.memory),
            (request.gpu, self.limit.gpu),
            (self.pod_cost(request, exclusive=True)[0], self.limit.cpu_milli),
        ):
            if need:
                n = min(n, limit // need)
        return n

    def unfit(self, name: str, request: Resources) -> str | None:
        """Why this CE (`name`) can never run a pod of `request` — the resource that does
        not fit and the largest node (or the limit) for it — or None if it can."""
        if self.holds_pod(request):
            return None
        return self.misfit(name, request) or self._over_limit(name, request)

    def misfit(self, name: str, request: Resources) -> str | None:
        """Which resource of `request` no node of this CE (`name`) can hold, naming the
        largest node for it (None: some node holds it, or the types are unknown)."""
        if self.nodes is None or self.node_holds(request):
            return None
        where = f"compute environment {name}"
        if self.counts_instances:
            where += f" within maxvCpus {self.limit.cpu_milli // 1000}"
        kind = [n for n in self.nodes if (n.usable.gpu > 0) == (request.gpu > 0)]
        if not kind:
            if request.gpu:
                return f"requests.{keys.GPU_RESOURCE}: {where} has no instance type with GPUs"
            if self.nodes:
                return f"requests: {where} has only GPU instance types (for GPU pods only)"
            return f"requests: {where} has no instance type"
        for path, attribute, render in _FIT_ORDER:
            need = getattr(request, attribute)
            largest = max(kind, key=lambda n: (getattr(n.usable, attribute), n.vcpus))
            have = getattr(largest.usable, attribute)
            if need > have:
                return (
                    f"{path} {render(need)} exceeds what any node of {where} can hold: "
                    f"{largest.name} has {render(have)} usable"
                )
        largest = max(kind, key=lambda n: (n.usable.cpu_milli, n.usable.memory))
        return f"requests: no node of {where} holds {request}: {largest.name} has {largest.usable}"

    def _over_limit(self, name: str, request: Resources) -> str:
        for path, attribute, render in _FIT_ORDER:
            need, limit = getattr(request, attribute), getattr(self.limit, attribute)
            if need > limit:
                return (
                    f"{path} {render(need)} exceeds compute environment {name}'s limit "
                    f"of {render(limit)}"
                )
        return f"requests: compute environment {name} cannot hold {request}"


# Scarcest first: a pod too big in GPUs or memory is named for that, not for its CPUs.
_FIT_ORDER: tuple[tuple[str, str, Callable[[int], str]], ...] = (
    (f"requests.{keys.GPU_RESOURCE}", "gpu", lambda n: f"{n} GPUs"),
    ("requests.memory", "memory", lambda b: f"{fmt_memory(b)} of memory"),
    ("requests.cpu", "cpu_milli", lambda m: f"{fmt_cpu(m)} vCPUs"),
)


def gang_misfit(
    names: Sequence[str], capacity: Mapping[str, CapacityLimit], request: Resources, nodes: int
) -> str | None:
    """Why no compute environment of `names` may ever hold a gang of `nodes` pods of
    `request`, one per node, naming the one that holds most; None if one may (or none
    is known)."""
    held = [(ce, capacity[ce].exclusive_pods(request)) for ce in names if ce in capacity]
    if not held:
        return None
    ce, most = max(held, key=lambda h: h[1])
    if most >= nodes:
        return None
    c = capacity[ce]
    cost = c.pod_cost(request, exclusive=True)[0]
    per_node = f"{fmt_cpu(cost)} vCPUs per node" if c.counts_instances else f"{request} per node"
    return (
        f"{nodes} nodes exceed what compute environment {ce} may ever hold: at most {most} "
        f"nodes for pods of {request} within maxvCpus {c.limit.cpu_milli // 1000} ({per_node})"
    )


@dataclass(frozen=True, slots=True)
class QueueView:
    name: str
    priority: int
    compute_environments: tuple[str, ...]
    policy: SchedulingPolicy | None = None
    decayed_usage: Mapping[str, float] = field(default_factory=dict)  # share → vCPU-seconds


# Demands (and Statuses) are made by the 100,000 per pass: plain slotted classes
# (a frozen dataclass costs three times as much to build). Treat them as immutable.
@dataclass(slots=True)
class Demand:
    """A job as admission sees it."""

    key: str
    queue: str
    request: Resources  # per pod
    want: int  # pods it would run now if it could
    granted: int = 0  # pods admitted so far (0: not admitted)
    share: str = ""
    priority: int = 0  # ebb.dev/scheduling-priority
    submitted: float = 0.0
    runnable_since: float = 0.0
    elastic: bool = False  # array job: may be granted part of `want`
    bound: Mapping[str, int] | None = None  # CE → pods bound there
    exclusive: bool = False  # multi-node job: all pods in one CE, or none; a node per pod


class Holdings:
    """What admitted jobs hold, summed as admission weighs it — millicores per queue and
    share, bound pods per CE and shape, unbound pods per queue and shape with their
    oldest job — and kept across passes: a job admitted or ended costs its own update.
    (Integer sums: the same whatever the order of the jobs.)"""

    def __init__(self, demands: Iterable[Demand] = ()) -> None:
        self.demands: dict[str, Demand] = {}
        # (queue, share) → [millicores held, jobs]
        self.shares: dict[tuple[str, str], list[int]] = {}
        # (CE, CPU, memory, GPUs, exclusive) → [pods bound, jobs]
        self.bound: dict[tuple[str, int, int, int, bool], list[int]] = {}
        self.requests: dict[tuple[int, int, int], Resources] = {}
        # (queue, CPU, memory, GPUs, exclusive) → [pods not bound]; and its jobs, oldest first
        self.unbound: dict[tuple[str, int, int, int, bool], list[int]] = {}
        self.unbound_jobs: dict[tuple[str, int, int, int, bool], list[tuple[float, str]]] = {}
        for d in demands:
            self.add(d)

    def add(self, d: Demand) -> None:
        self.remove(d.key)
        self.demands[d.key] = d
        self._count(d, 1)

    def remove(self, key: str) -> None:
        d = self.demands.pop(key, None)
        if d is not None:
            self._count(d, -1)

    def _count(self, d: Demand, sign: int) -> None:
        r = d.request
        self.requests.setdefault((r.cpu_milli, r.memory, r.gpu), r)
        bound_total = 0
        for ce, pods in (d.bound or {}).items():
            where = (ce, r.cpu_milli, r.memory, r.gpu, d.exclusive)
            entry = self.bound.setdefault(where, [0, 0])
            entry[0] += sign * pods
            entry[1] += sign
            if not entry[1]:
                del self.bound[where]
            bound_total += pods
        held = max(d.granted, bound_total)
        share = self.shares.setdefault((d.queue, d.share), [0, 0])
        share[0] += sign * r.cpu_milli * held
        share[1] += sign
        if not share[1]:
            del self.shares[d.queue, d.share]
        if d.granted > bound_total:
            shape = (d.queue, r.cpu_milli, r.memory, r.gpu, d.exclusive)
            unbound = self.unbound.setdefault(shape, [0])
            unbound[0] += sign * (d.granted - bound_total)
            jobs = self.unbound_jobs.setdefault(shape, [])
            if sign > 0:
                insort(jobs, (d.submitted, d.key))
            else:
                del jobs[bisect_left(jobs, (d.submitted, d.key))]
                if not jobs:
                    del self.unbound[shape], self.unbound_jobs[shape]


def _rank(d: Demand) -> tuple[int, float, str]:
    """A fair-share queue's order within a share: scheduling priority, then FIFO."""
    return (-d.priority, d.submitted, d.key)


_since: Callable[[Demand], tuple[float, str]] = attrgetter("runnable_since", "key")
_GRANTED = attrgetter("granted")


# What decides whether a waiting demand may get pods: its request (CPU, memory, GPUs),
# whether it is a gang and how many pods it wants (for a gang: nodes at once). (Plain
# values, got in C: cheap to build and hash by the 100,000.)
_Shape = tuple[int, int, int, bool, int]
_T = TypeVar("_T", list[Demand], Counter[_Shape], set[str])
_shape: Callable[[Demand], _Shape] = attrgetter(
    "request.cpu_milli", "request.memory", "request.gpu", "exclusive", "want"
)


class Backlog:
    """The demands that want more pods than they were granted, each queue's kept sorted in
    admission's orders (FIFO; per share, scheduling priority then FIFO) with what a pass
    asks of them (their shapes, the longest wait), so that a pass reads a queue in order
    without sorting it. `updated` makes the next pass's backlog sharing every list that
    did not change: a change costs its own insertion, and a pass's result (whose waiting
    statuses read these lists) stays true."""

    def __init__(self, demands: Iterable[Demand] = ()) -> None:
        self.demands: dict[str, Demand] = {}
        self.fifo: dict[str, list[Demand]] = {}
        # Per share, built when first asked for (`share_lists`): only fair-share queues'.
        self.shares: dict[str, dict[str, list[Demand]]] = {}
        # Not yet admitted ones by the time they wait since (the starvation bound).
        self.since: dict[str, list[Demand]] = {}
        self.shapes: dict[str, Counter[_Shape]] = {}
        self.growing: dict[str, set[str]] = {}  # admitted (elastic) ones wanting more
        self._owned: set[int] = set()  # ids of the lists and counters this one may change
        # Read in the order given while it can be (the order the demands were built in,
        # their order in memory: by the 100,000, reading them out of order costs more
        # than sorting). Sorted by key, then by one number with a stable sort: the same
        # orders as sorting by (number, key) tuples, at half the cost.
        for d in demands:
            self.fifo.setdefault(d.queue, []).append(d)
        for queue, seq in self.fifo.items():
            self.demands.update(zip(map(_KEY, seq), seq, strict=True))
            self.shapes[queue] = Counter(map(_shape, seq))
            growing = {d.key for d in compress(seq, map(_GRANTED, seq))}
            if growing:
                self.growing[queue] = growing
            seq.sort(key=_KEY)
            waiting = list(filterfalse(_GRANTED, seq)) if growing else seq[:]
            if waiting:
                waiting.sort(key=_RUNNABLE_SINCE)
                self.since[queue] = waiting
            seq.sort(key=_SUBMITTED)

    def updated(self, removed: Iterable[str], added: Iterable[Demand]) -> Backlog:
        """The backlog without the demands of `removed` keys, with `added` (replacing any
        of the same key)."""
        new = copy.copy(self)
        new.demands = dict(self.demands)
        new.fifo, new.since = dict(self.fifo), dict(self.since)
        new.shares = {queue: dict(shares) for queue, shares in self.shares.items()}
        new.shapes, new.growing = dict(self.shapes), dict(self.growing)
        new._owned = set()
        for key in removed:
            new._remove(key)
        for d in added:
            new._remove(d.key)
            new._index(d)
        return new

    def _own(self, table: dict[str, _T], queue: str, empty: Callable[[], _T]) -> _T:
        """`table[queue]`, copied first if an earlier backlog shares it."""
        found = table.get(queue)
        if found is None or id(found) not in self._owned:
            found = table[queue] = copy.copy(found) if found is not None else empty()
            self._owned.add(id(found))
        return found

    def share_lists(self, queue: str) -> dict[str, list[Demand]]:
        """The queue's demands per share, each list in scheduling priority then FIFO order
        (fair share's order within a share)."""
        found = self.shares.get(queue)
        if found is None:
            found = self.shares[queue] = {}
            for d in self.fifo.get(queue, ()):
                found.setdefault(d.share, []).append(d)
            for seq in found.values():  # FIFO already: a stable sort keeps it
                seq.sort(key=_PRIORITY, reverse=True)
                self._owned.add(id(seq))
            self._owned.add(id(found))
        return found

    def _own_shares(self, queue: str) -> dict[str, list[Demand]] | None:
        """The queue's lists per share, copied first if an earlier backlog shares them
        (None: not built, nothing to keep sorted)."""
        share_lists = self.shares.get(queue)
        if share_lists is not None and id(share_lists) not in self._owned:
            share_lists = self.shares[queue] = dict(share_lists)
            self._owned.add(id(share_lists))
        return share_lists

    def _index(self, d: Demand) -> None:
        queue = d.queue
        self.demands[d.key] = d
        insort(self._own(self.fifo, queue, list), d, key=_FIFO)
        share_lists = self._own_shares(queue)
        if share_lists is not None:
            insort(self._own(share_lists, d.share, list), d, key=_rank)
        self._own(self.shapes, queue, Counter)[_shape(d)] += 1
        if d.granted:
            self._own(self.growing, queue, set).add(d.key)
        else:
            insort(self._own(self.since, queue, list), d, key=_since)

    def _remove(self, key: str) -> None:
        d = self.demands.pop(key, None)
        if d is None:
            return
        queue = d.queue
        share_lists = self._own_shares(queue)
        tables: list[
            tuple[dict[str, list[Demand]], str, Callable[[Demand], tuple[object, ...]]]
        ] = [(self.fifo, queue, _FIFO)]
        if share_lists is not None:
            tables.append((share_lists, d.share, _rank))
        for table, name, order in tables:
            seq = self._own(table, name, list)
            del seq[bisect_left(seq, order(d), key=order)]
            if not seq:
                del table[name]
        if share_lists is not None and not share_lists:
            del self.shares[queue]
        shapes = self._own(self.shapes, queue, Counter)
        shapes[_shape(d)] -= 1
        if not shapes[_shape(d)]:
            del shapes[_shape(d)]
        if d.granted:
            self._own(self.growing, queue, set).discard(key)
        else:
            since = self._own(self.since, queue, list)
            del since[bisect_left(since, _since(d), key=_since)]

    def longest_wait(self, queue: str) -> float | None:
        """When the queue's demand not admitted that waits longest started waiting."""
        since = self.since.get(queue)
        return since[0].runnable_since if since else None


# A run of one of a backlog's sorted lists: [start, stop).
_Segment = tuple[list[Demand], int, int]


@dataclass
class AdmissionResult:
    grants: dict[str, int] = field(default_factory=dict)  # job → new total pods granted
    waiting: Mapping[str, Status] = field(default_factory=dict)  # RUNNABLE, with why
    used: dict[str, Resources] = field(default_factory=dict)  # CE → admitted requests
    running_vcpus: dict[str, dict[str, float]] = field(default_factory=dict)  # queue → share →


def _reserves(queue: QueueView) -> bool:
    """Does fair share hold room back for the queue's inactive shares (then whether a
    job is blocked depends on its share, not only on its shape)?"""
    return queue.policy is not None and queue.policy.compute_reservation > 0


def admit(
    queues: Mapping[str, QueueView],
    capacity: Mapping[str, CapacityLimit],
    demands: Sequence[Demand],
    now: float,
    starvation_seconds: float = 600.0,
    *,
    backlog: Backlog | None = None,
    holdings: Holdings | None = None,
    settle: bool = True,
) -> AdmissionResult:
    """One admission pass. `backlog`: the demands that want more pods, already sorted;
    `holdings`: what the admitted ones hold, summed; each taken from `demands` when not
    given. `settle`: once no job of a priority level can get pods nor hold capacity
    for itself any more, the waiting statuses of the rest of the level are built only
    when read (`Waiting`); without it every one is decided in turn (the same statuses)."""
    if backlog is None:
        backlog = Backlog(d for d in demands if d.want > d.granted)
    if holdings is None:
        holdings = Holdings(d for d in demands if d.granted > 0)
    return _Pass(queues, capacity, now, starvation_seconds, settle).run(holdings, backlog)


class _Pass:
    def __init__(
        self,
        queues: Mapping[str, QueueView],
        capacity: Mapping[str, CapacityLimit],
        now: float,
        starvation_seconds: float,
        settle: bool = True,
    ) -> None:
        self.queues = queues
        self.capacity = capacity
        self.now = now
        self.starvation = starvation_seconds
        self.settle = settle
        self.eager: dict[str, Status] = {}  # the waiting statuses decided one by one
        self.tails: dict[str, _Tail] = {}  # queue → the statuses of its settled rest
        # Room left per CE, as mutable [cpu, memory, gpu, maxvCpus] (the last in millicores
        # of instance vCPUs, taken by `pod_cost`; the first in requested millicores).
        self.room: dict[str, list[int]] = {
            name: [0, 0, 0, 0]
            if c.unavailable
            else [c.limit.cpu_milli, c.limit.memory, c.limit.gpu, c.limit.cpu_milli]
            for name, c in capacity.items()
        }
        self._costs: dict[tuple[str, int, int, int, bool], tuple[int, int]] = {}  # see _cost
        self.result = AdmissionResult()
        self.held_for: dict[str, str] = {}  # CE → job whose starvation reserves it
        self.queue_vcpus: dict[str, float] = {}  # queue → admitted vCPUs (for reservation)
        self.share_vcpus: dict[str, dict[str, float]] = {}
        self.waiting_count: dict[str, int] = {}
        # Per pass memos: a queue's usable CEs and their limits, waiting texts.
        self._usable: dict[str, tuple[list[str], list[tuple[int, int, int]]]] = {}
        self._texts: dict[tuple[object, ...], str] = {}
        self._taken = 0  # how many times room was taken: waiting texts are memoised per value
        self._never: dict[tuple[str, int, int, int], tuple[Code, str] | None] = {}
        # (queue, shape) found no room in this pass; room only shrinks within a pass, so
        # the queue's later jobs of that shape find none either.
        self._full: set[tuple[str, int, int, int, bool]] = set()

    # --- capacity bookkeeping -----------------------------------------------------------

    def _cost(self, ce: str, request: Resources, exclusive: bool = False) -> tuple[int, int]:
        """`pod_cost` of `request` in `ce`, memoised by plain integers (hashing them is
        cheaper than hashing a Resources)."""
        key = (ce, request.cpu_milli, request.memory, request.gpu, exclusive)
        found = self._costs.get(key)
        if found is None:
            c = self.capacity.get(ce)
            found = self._costs[key] = (
                c.pod_cost(request, exclusive) if c else (request.cpu_milli, 0)
            )
        return found

    def _take(self, ce: str, request: Resources, pods: int, exclusive: bool = False) -> None:
        self._taken += 1
        room = self.room.setdefault(ce, [0, 0, 0, 0])
        room[0] -= request.cpu_milli * pods
        room[1] -= request.memory * pods
        room[2] -= request.gpu * pods
        room[3] -= self._cost(ce, request, exclusive)[0] * pods

    def _fits(self, ce: str, request: Resources, exclusive: bool = False) -> int:
        """How many pods of `request` fit in CE `ce` now. (Hot: plain integer code.)"""
        room = self.room.get(ce)
        if room is None or ce in self.held_for:
            return 0
        n = UNLIMITED
        cpu, memory, gpu = request.cpu_milli, request.memory, request.gpu
        if cpu:
            n = room[0] // cpu
        if memory:
            n = min(n, room[1] // memory)
        if gpu:
            n = min(n, room[2] // gpu)
        found = self._costs.get((ce, cpu, memory, gpu, exclusive))
        cost, over = found if found is not None else self._cost(ce, request, exclusive)
        if cost:
            n = min(n, room[3] // cost - over)
        return n if n > 0 else 0

    def _account(self, demand: Demand, pods: int) -> None:
        vcpus = demand.request.cpu_milli * pods / 1000
        self.queue_vcpus[demand.queue] = self.queue_vcpus.get(demand.queue, 0.0) + vcpus
        shares = self.share_vcpus.setdefault(demand.queue, {})
        shares[demand.share] = shares.get(demand.share, 0.0) + vcpus

    # --- the pass -----------------------------------------------------------------------

    def run(self, holdings: Holdings, backlog: Backlog) -> AdmissionResult:
        self._hold_admitted(holdings)
        # 2. New grants, queue priority first.
        levels: dict[int, list[str]] = {}
        for name in backlog.fifo:
            queue = self.queues.get(name)
            levels.setdefault(queue.priority if queue else -1, []).append(name)
        for priority in sorted(levels, reverse=True):
            self._serve_level(sorted(levels[priority]), backlog)
        self.result.waiting = Waiting(self.eager, self.tails, backlog.demands)
        self.result.used = {
            ce: Resources(
                c.limit.cpu_milli - self.room[ce][0],
                c.limit.memory - self.room[ce][1],
                c.limit.gpu - self.room[ce][2],
            )
            for ce, c in self.capacity.items()
            if not c.unavailable
        }
        self.result.running_vcpus = self.share_vcpus
        return self.result

    def _hold_admitted(self, holdings: Holdings) -> None:
        """1. What admitted jobs already hold: bound pods where they are, the rest
        first-fit.

        Every admitted job holds capacity on every pass (100,000s of them while a burst's
        pods wait for instances to boot), so this takes their sums (`Holdings`) per
        queue, share and request shape and places the unbound pods by shape — oldest
        shape first, one first-fit per shape rather than per job."""
        requests = holdings.requests
        for (ce, cpu, memory, gpu, exclusive), (pods, _) in holdings.bound.items():
            self._take(ce, requests[cpu, memory, gpu], pods, exclusive)
        queue_milli: dict[str, int] = {}
        for (queue, share), (milli, _) in holdings.shares.items():
            queue_milli[queue] = queue_milli.get(queue, 0) + milli
            self.share_vcpus.setdefault(queue, {})[share] = milli / 1000
        for queue, milli in queue_milli.items():
            self.queue_vcpus[queue] = milli / 1000
        jobs = holdings.unbound_jobs
        for shape in sorted(holdings.unbound, key=lambda shape: jobs[shape][0]):
            queue, cpu, memory, gpu, exclusive = shape
            pods = holdings.unbound[shape][0]
            self._hold_unbound(queue, requests[cpu, memory, gpu], pods, exclusive)

    def _hold_unbound(
        self, queue_name: str, request: Resources, pods: int, exclusive: bool
    ) -> None:
        queue = self.queues.get(queue_name)
        ces = queue.compute_environments if queue else ()
        if not any(ce in self.capacity and self.capacity[ce].node_holds(request) for ce in ces):
            return  # no node can ever hold them (the CE changed since): they hold nothing
        for ce in ces:
            n = min(pods, self._fits(ce, request, exclusive))
            if n:
                self._take(ce, request, n, exclusive)
                pods -= n
            if not pods:
                return
        if ces:  # over the limits (e.g. a CE's maxvCpus was lowered): charge the first
            self._take(ces[0], request, pods, exclusive)

    def _serve_level(self, names: list[str], backlog: Backlog) -> None:
        orders = {name: self._order(name, backlog) for name in names}
        active = list(names)
        rounds, check_at = 0, 1
        while active:
            still = []
            for name in active:  # equal-priority queues take turns, one job each
                d = orders[name].next()
                if d is None:
                    continue
                self._consider(d)
                still.append(name)
            active = still
            rounds += 1
            if self.settle and active and rounds >= check_at:
                # Settled stays settled (room only shrinks, holds only grow); checking
                # ever more rarely costs a few rounds at most.
                if all(self._settled(name, backlog) for name in active):
                    context = self._frozen()
                    for name in active:
                        self.tails[name] = _Tail(
                            context,
                            orders[name],
                            self.waiting_count.get(name, 0),
                            [backlog.demands[key] for key in backlog.growing.get(name, ())],
                        )
                    return
                check_at = rounds + 1 + rounds // 8

    def _order(self, name: str, backlog: Backlog) -> _Order:
        queue = self.queues.get(name)
        if queue is None or queue.policy is None:
            return _Order(backlog.fifo[name])
        policy = queue.policy
        shares = self.share_vcpus.setdefault(name, {})
        decayed = queue.decayed_usage

        def key(share: str) -> float:
            return fairshare.share_key(
                policy, share, shares.get(share, 0.0), decayed.get(share, 0.0)
            )

        return _FairOrder(backlog.share_lists(name), key)

    def _settled(self, name: str, backlog: Backlog) -> bool:
        """Can no job left in the queue get pods, nor hold capacity for itself (the
        starvation bound), whatever else is decided in this pass? (Room only shrinks.)"""
        queue = self.queues.get(name)
        if queue is None:
            return True
        usable, limits = self._usable_ces(queue)
        if not usable:
            return True
        if not any(ce in self.held_for for ce in usable):
            since = backlog.longest_wait(name)
            if since is not None and self.now - since >= self.starvation:
                return False
        # (A job not a gang needs room for one pod: its size is the same whatever it wants.)
        shapes = {(c, m, g, x, n if x else 1) for c, m, g, x, n in backlog.shapes.get(name, {})}
        for cpu, memory, gpu, exclusive, need in shapes:
            request = Resources(cpu, memory, gpu)
            if self._never_fits(name, request, usable, limits) is not None:
                continue
            if any(self._fits(ce, request, exclusive) >= need for ce in usable):
                return False
        return True

    def _frozen(self) -> _Pass:
        """This pass as it stands, to build the statuses of settled queues from: later
        levels take room and must not change what those say."""
        frozen = copy.copy(self)
        frozen.room = {ce: list(room) for ce, room in self.room.items()}
        frozen.held_for = dict(self.held_for)
        frozen.queue_vcpus = dict(self.queue_vcpus)
        frozen.share_vcpus = {q: dict(shares) for q, shares in self.share_vcpus.items()}
        frozen._texts = {}
        return frozen

    def _reservation_blocks(self, d: Demand) -> str | None:
        """Fair share's computeReservation: room held for shares not active yet."""
        queue = self.queues.get(d.queue)
        if queue is None or not _reserves(queue):
            return None
        assert queue.policy is not None
        active = len(self.share_vcpus.get(d.queue, {}).keys() | {d.share})
        fraction = fairshare.reserved_fraction(queue.policy, active)
        total = sum(
            self.capacity[ce].limit.cpu_milli / 1000
            for ce in queue.compute_environments
            if ce in self.capacity and not self.capacity[ce].unavailable
        )
        limit = total * (1 - fraction)
        if self.queue_vcpus.get(d.queue, 0.0) + d.request.cpu_milli / 1000 > limit + 1e-9:
            return (
                f"fair share holds back {fraction:.0%} of queue {d.queue}'s "
                f"{fmt_cpu(int(total * 1000))} vCPUs for shares not yet active "
                f"(computeReservation {queue.policy.compute_reservation}, {active} active shares)"
            )
        return None

    def _usable_ces(self, queue: QueueView) -> tuple[list[str], list[tuple[int, int, int]]]:
        """The queue's CEs that may hold anything, and their limits (memoised per pass)."""
        found = self._usable.get(queue.name)
        if found is None:
            usable = [
                ce
                for ce in queue.compute_environments
                if ce in self.capacity and not self.capacity[ce].unavailable
            ]
            limits = [
                (c.cpu_milli, c.memory, c.gpu) for c in (self.capacity[ce].limit for ce in usable)
            ]
            found = self._usable[queue.name] = (usable, limits)
        return found

    def _never_fits(
        self, queue: str, r: Resources, usable: list[str], limits: list[tuple[int, int, int]]
    ) -> tuple[Code, str] | None:
        """Why a pod of `r` can never run in the queue's CEs, or None if it can (memoised
        per pass: many jobs of a queue share a shape)."""
        memo_key = (queue, r.cpu_milli, r.memory, r.gpu)
        if memo_key in self._never:
            return self._never[memo_key]
        within = [
            ce
            for ce, (cpu, memory, gpu) in zip(usable, limits, strict=True)
            if r.cpu_milli <= cpu and r.memory <= memory and r.gpu <= gpu
        ]
        verdict: tuple[Code, str] | None = None
        if not within:
            biggest = max(usable, key=lambda ce: self.capacity[ce].limit.cpu_milli)
            limit = self.capacity[biggest].limit
            verdict = (
                _NEVER,
                (
                    f"needs {r} per pod but the largest compute environment of queue "
                    f"{queue} ({biggest}) allows at most {limit}; it can never run"
                ),
            )
        elif not any(self.capacity[ce].holds_pod(r) for ce in within):
            why = "; ".join(
                self.capacity[ce].unfit(ce, r) or f"{ce} cannot hold it" for ce in within
            )
            verdict = (_SHAPE, f"needs {r} per pod but {why}; it can never run")
        self._never[memo_key] = verdict
        return verdict

    def _queue_ces(
        self, d: Demand
    ) -> tuple[list[str], list[tuple[int, int, int]]] | tuple[Code, str]:
        """The usable CEs of `d`'s queue and their limits, or why it has none."""
        queue = self.queues.get(d.queue)
        if queue is None:
            return Code.NO_QUEUE, f"job queue {d.queue} does not exist"
        usable, limits = self._usable_ces(queue)
        if not usable:
            why = "; ".join(self._why_unavailable(ce) for ce in queue.compute_environments)
            return (
                Code.NO_COMPUTE_ENVIRONMENT,
                f"no usable compute environment in queue {d.queue}: {why}",
            )
        return usable, limits

    def _cannot_start(
        self, d: Demand, usable: list[str], limits: list[tuple[int, int, int]]
    ) -> tuple[Code, str] | None:
        """Why `d` may get no pods whatever the room: it can never run, or fair share's
        reservation holds the room back."""
        never = self._never_fits(d.queue, d.request, usable, limits)
        if never is None and d.exclusive:
            misfit = gang_misfit(usable, self.capacity, d.request, d.want)
            if misfit is not None:
                never = (_NEVER, f"multi-node job: {misfit}; it can never run")
        if never is not None:
            return never
        blocked = self._reservation_blocks(d)
        return (Code.FAIR_SHARE, blocked) if blocked else None

    def _waiting_reason(self, d: Demand) -> tuple[Code, str]:
        """Why `d` waits, in a pass where it gets no pods: what `_consider` says of it.
        (A shape it finds full is one that neither never fits nor is held back by a
        reservation: the same answer.)"""
        ces = self._queue_ces(d)
        if isinstance(ces[0], Code):
            return ces
        usable, limits = ces
        return self._cannot_start(d, usable, limits) or self._capacity_reason(d, usable)

    def _consider(self, d: Demand) -> None:
        ces = self._queue_ces(d)
        if isinstance(ces[0], Code):
            self._wait(d, *ces)
            return
        usable, limits = ces
        r = d.request
        shape = (d.queue, r.cpu_milli, r.memory, r.gpu, d.exclusive)
        if shape in self._full:
            self._blocked_on_capacity(d, usable)
            return
        pods_needed = d.want - d.granted
        why = self._cannot_start(d, usable, limits)
        if why is not None:
            self._wait(d, *why)
            return
        queue = self.queues[d.queue]
        placed, left = self._placements(d, usable, pods_needed)
        granted_now = pods_needed - left
        if left and (not d.elastic or granted_now == 0):
            # (Not for a gang: a smaller gang of its shape may still fit.)
            if granted_now == 0 and not _reserves(queue) and not d.exclusive:
                self._full.add(shape)
            self._blocked_on_capacity(d, usable)
            return
        for ce, n in placed:
            self._take(ce, d.request, n, d.exclusive)
        self._account(d, granted_now)
        self.result.grants[d.key] = d.granted + granted_now
        if left:  # an elastic job got part of what it wants
            self._wait(
                d,
                Code.WAITING_FOR_CAPACITY,
                f"{left} more pods wait for capacity in queue {d.queue}",
            )

    def _placements(
        self, d: Demand, usable: list[str], wanted: int
    ) -> tuple[list[tuple[str, int]], int]:
        """Where `wanted` more pods of `d` fit, as (CE, pods) in the queue's order (a gang:
        all in one CE), and how many fit nowhere."""
        r = d.request
        if d.exclusive:
            for ce in usable:
                if self._fits(ce, r, True) >= wanted:
                    return [(ce, wanted)], 0
            return [], wanted
        placed: list[tuple[str, int]] = []
        left = wanted
        for ce in usable:
            n = min(left, self._fits(ce, r))
            if n:
                placed.append((ce, n))
                left -= n
            if not left:
                break
        return placed, left

    def _blocked_on_capacity(self, d: Demand, usable: list[str]) -> None:
        code, text = self._capacity_reason(d, usable)
        self._wait(d, code, text)
        if code is _FULL and self.now - d.runnable_since >= self.starvation:
            for ce in usable:
                self.held_for.setdefault(ce, d.key)

    def _capacity_reason(self, d: Demand, usable: list[str]) -> tuple[Code, str]:
        """Why `d` finds no room: its CEs are held for a starving job, or full."""
        if self.held_for:
            for ce in usable:
                holder = self.held_for.get(ce)
                if holder is not None:
                    return _HEAD, self._held_text(holder)
        # Many jobs wait on the same full CEs: build each distinct text once (until more
        # room is taken, a queue's text for a request stays the same).
        r = d.request
        memo_key = (
            d.queue,
            r.cpu_milli,
            r.memory,
            r.gpu,
            d.want if d.exclusive else 0,
            self._taken,
        )
        text = self._texts.get(memo_key)
        if text is None:
            parts = []
            for ce in usable:
                c, room = self.capacity[ce].limit, self.room[ce]
                used = c.cpu_milli - room[0]
                node = self.capacity[ce].exclusive_node(r) if d.exclusive else None
                if node is not None and self.capacity[ce].counts_instances:
                    # What the gang takes of maxvCpus (a whole instance per pod) and what
                    # the instances of admitted pods take, not the pods' requests.
                    parts.append(
                        f"{ce}: it takes {d.want} x {node.name}, {d.want * node.vcpus} vCPUs "
                        f"of maxvCpus {fmt_cpu(c.cpu_milli)}; "
                        f"{fmt_cpu(max(c.cpu_milli - room[3], 0))} taken"
                    )
                    continue
                part = f"{ce} {fmt_cpu(max(used, 0))}/{fmt_cpu(c.cpu_milli)} vCPUs in use"
                if (
                    self.capacity[ce].counts_instances
                    and room[0] >= r.cpu_milli
                    and room[1] >= r.memory
                    and room[2] >= r.gpu
                    and not self._fits(ce, r, d.exclusive)
                ):
                    part += " (node overhead included, its instances hold no more such pods)"
                parts.append(part)
            needs = (
                f"needs {d.want} nodes in one compute environment for its {d.want} pods "
                f"of {r} (multi-node job, all or nothing)"
                if d.exclusive
                else f"needs {d.request} per pod"
            )
            text = f"waiting for capacity: {needs}; " + ", ".join(parts)
            self._texts[memo_key] = text
        return _FULL, text

    def _held_text(self, holder: str) -> str:
        """(Memoised: once a queue's CEs are held, every job behind it gets this text.)"""
        text = self._texts.get(("held", holder))
        if text is None:
            text = self._texts[("held", holder)] = (
                f"capacity is held for job {holder}, which has waited longer than "
                f"{self.starvation:.0f} s at the head of its queue"
            )
        return text

    def _why_unavailable(self, ce: str) -> str:
        c = self.capacity.get(ce)
        if c is None:
            return f"{ce} does not exist"
        return f"{ce} is {c.unavailable}"

    def _wait(self, d: Demand, code: Code, reason: str) -> None:
        position = 0
        if d.granted == 0:  # place among the queue's jobs that are still waiting
            position = self.waiting_count.get(d.queue, 0) + 1
            self.waiting_count[d.queue] = position
        self.eager[d.key] = Status(_RUNNABLE, code, reason, position, d.queue)


class _Order:
    """A FIFO queue's waiting demands in the order it serves them (a sorted list)."""

    key: Callable[[Demand], tuple[object, ...]] = staticmethod(_FIFO)

    def __init__(self, seq: list[Demand]) -> None:
        self._seq = seq
        self._next = 0

    def next(self) -> Demand | None:
        if self._next < len(self._seq):
            self._next += 1
            return self._seq[self._next - 1]
        return None

    def rest(self) -> list[_Segment]:
        """What `next` would still return, as segments of sorted lists."""
        return [(self._seq, self._next, len(self._seq))]


class _FairOrder(_Order):
    """Fair share: the share with the least weighted usage goes next, one job at a time.
    A share's key is taken when it is next considered, so it counts what its last job
    was granted."""

    key = staticmethod(_rank)

    def __init__(self, shares: Mapping[str, list[Demand]], key: Callable[[str], float]) -> None:
        self._shares = shares
        self._key = key
        self._cursor = dict.fromkeys(shares, 0)
        self._heap = [(key(share), share) for share in shares]
        heapq.heapify(self._heap)
        self._again: str | None = None  # the share just served, if it has more

    def next(self) -> Demand | None:
        if self._again is not None:
            heapq.heappush(self._heap, (self._key(self._again), self._again))
            self._again = None
        if not self._heap:
            return None
        _, share = heapq.heappop(self._heap)
        seq, i = self._shares[share], self._cursor[share]
        self._cursor[share] = i + 1
        if i + 1 < len(seq):
            self._again = share
        return seq[i]

    def rest(self) -> list[_Segment]:
        """Settled, no share's key changes any more: each share in turn drains, least
        key first."""
        heap = list(self._heap)
        if self._again is not None:
            heap.append((self._key(self._again), self._again))
        return [
            (self._shares[share], self._cursor[share], len(self._shares[share]))
            for _, share in sorted(heap)
        ]


# What a waiting job's reason depends on in a settled queue (its size, share, and as a
# gang how many nodes), in C.
_reason_key: Callable[[Demand], tuple[object, ...]] = attrgetter(
    "request.cpu_milli", "request.memory", "request.gpu", "exclusive", "want", "share"
)


class _Tail:
    """The rest of a settled queue, in its order: each job gets no pods and waits for
    what `_waiting_reason` says in the pass frozen when it settled, at the next
    position. Found by bisecting the sorted lists it runs over."""

    def __init__(self, context: _Pass, order: _Order, before: int, growing: list[Demand]) -> None:
        self._context = context
        self._segments = segments = order.rest()
        self._order = order.key
        self._before = before  # positions taken when it settled
        self._offsets: list[int] = []
        total = 0
        for _, start, stop in segments:
            self._offsets.append(total)
            total += stop - start
        self.size = total
        self._reasons: dict[tuple[object, ...], tuple[Code, str]] = {}  # see _reason_key
        # Admitted jobs wanting more take no position: where they are in the tail.
        self._growing = sorted(offset for d in growing if (offset := self._locate(d)) is not None)

    def _locate(self, d: Demand) -> int | None:
        order = self._order
        for (seq, start, stop), offset in zip(self._segments, self._offsets, strict=True):
            if order is _rank and seq[0].share != d.share:
                continue  # a fair-share queue: one run per share
            i = bisect_left(seq, order(d), key=order)
            if start <= i < stop and seq[i] is d:
                return offset + i - start
        return None

    def _reason(self, d: Demand) -> tuple[Code, str]:
        memo = _reason_key(d)
        found = self._reasons.get(memo)
        if found is None:
            found = self._reasons[memo] = self._context._waiting_reason(d)
        return found

    def status(self, d: Demand) -> Status | None:
        offset = self._locate(d)
        if offset is None:
            return None
        position = 0
        if not d.granted:
            position = self._before + offset + 1 - bisect_left(self._growing, offset)
        code, text = self._reason(d)
        return Status(_RUNNABLE, code, text, position, d.queue)

    def items(self) -> Iterator[tuple[str, Status]]:
        position = self._before
        reasons, reason = self._reasons, self._reason
        for seq, start, stop in self._segments:
            for i in range(start, stop):
                d = seq[i]
                found = reasons.get(_reason_key(d))
                code, text = found if found is not None else reason(d)
                if d.granted:
                    yield d.key, Status(_RUNNABLE, code, text, 0, d.queue)
                else:
                    position += 1
                    yield d.key, Status(_RUNNABLE, code, text, position, d.queue)

    def demands(self) -> Iterator[Demand]:
        for seq, start, stop in self._segments:
            yield from seq[start:stop]


class Waiting(Mapping[str, Status]):
    """Why each job left waiting waits (RUNNABLE, with its position): those admission
    decided one by one, and the settled queues' tails, whose statuses are built when
    read."""

    def __init__(
        self, eager: dict[str, Status], tails: Mapping[str, _Tail], demands: Mapping[str, Demand]
    ) -> None:
        self.eager = eager
        self.tails = tails
        self._demands = demands

    def __getitem__(self, key: str) -> Status:
        status = self.get(key)
        if status is None:
            raise KeyError(key)
        return status

    def get(self, key: str, default: Status | None = None) -> Status | None:  # type: ignore[override]
        """(Without raising: most jobs a pass asks about were admitted.)"""
        found = self.eager.get(key)
        if found is not None:
            return found
        d = self._demands.get(key)
        tail = self.tails.get(d.queue) if d is not None else None
        status = tail.status(d) if tail is not None and d is not None else None
        return default if status is None else status

    def __iter__(self) -> Iterator[str]:
        yield from self.eager
        for tail in self.tails.values():
            for d in tail.demands():
                yield d.key

    def __len__(self) -> int:
        return len(self.eager) + sum(tail.size for tail in self.tails.values())

    def items(self) -> Iterator[tuple[str, Status]]:  # type: ignore[override]
        yield from self.eager.items()
        for tail in self.tails.values():
            yield from tail.items()
