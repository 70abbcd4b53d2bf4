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

import heapq
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

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


@dataclass(slots=True)
class _Unbound:
    """Admitted pods of one queue and request shape not bound yet, and their oldest job."""

    pods: int
    submitted: float
    key: str

    def add(self, d: Demand, pods: int) -> None:
        self.pods += pods
        self.submitted, self.key = min((self.submitted, self.key), (d.submitted, d.key))

    def oldest(self) -> tuple[float, str]:
        return self.submitted, self.key


@dataclass
class AdmissionResult:
    grants: dict[str, int] = field(default_factory=dict)  # job → new total pods granted
    waiting: dict[str, Status] = field(default_factory=dict)  # RUNNABLE, with why
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
) -> AdmissionResult:
    return _Pass(queues, capacity, now, starvation_seconds).run(demands)


class _Pass:
    def __init__(
        self,
        queues: Mapping[str, QueueView],
        capacity: Mapping[str, CapacityLimit],
        now: float,
        starvation_seconds: float,
    ) -> None:
        self.queues = queues
        self.capacity = capacity
        self.now = now
        self.starvation = starvation_seconds
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

    def run(self, demands: Sequence[Demand]) -> AdmissionResult:
        waiting_by_queue = self._hold_admitted(demands)
        # 2. New grants, queue priority first.
        levels: dict[int, list[str]] = {}
        for name in waiting_by_queue:
            queue = self.queues.get(name)
            levels.setdefault(queue.priority if queue else -1, []).append(name)
        for priority in sorted(levels, reverse=True):
            self._serve_level(sorted(levels[priority]), waiting_by_queue)
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

    def _hold_admitted(self, demands: Sequence[Demand]) -> dict[str, list[Demand]]:
        """1. What admitted jobs already hold: bound pods where they are, the rest
        first-fit. Returns the jobs that want more, by queue.

        Every admitted job passes through here on every pass (100,000s of them while a
        burst's pods wait for instances to boot), so it sums per queue, share and request
        shape and places the unbound pods by shape — oldest shape first, one first-fit
        per shape rather than per job."""
        waiting_by_queue: dict[str, list[Demand]] = {}
        admitted: dict[tuple[str, str], int] = {}  # (queue, share) → admitted millicores
        unbound: dict[tuple[str, Resources, bool], _Unbound] = {}  # (queue, request, exclusive)
        for d in demands:
            granted = d.granted
            if granted > 0:
                request = d.request
                bound_total = 0
                if d.bound:
                    for ce, pods in d.bound.items():
                        self._take(ce, request, pods, d.exclusive)
                        bound_total += pods
                holder = (d.queue, d.share)
                held = granted if granted > bound_total else bound_total
                admitted[holder] = admitted.get(holder, 0) + request.cpu_milli * held
                if granted > bound_total:
                    shape = (d.queue, request, d.exclusive)
                    group = unbound.get(shape)
                    if group is None:
                        unbound[shape] = _Unbound(granted - bound_total, d.submitted, d.key)
                    else:
                        group.add(d, granted - bound_total)
            if d.want > granted:
                waiting_by_queue.setdefault(d.queue, []).append(d)
        for (queue, share), milli in admitted.items():
            self.queue_vcpus[queue] = self.queue_vcpus.get(queue, 0.0) + milli / 1000
            self.share_vcpus.setdefault(queue, {})[share] = milli / 1000
        for (queue, request, exclusive), group in sorted(
            unbound.items(), key=lambda g: g[1].oldest()
        ):
            self._hold_unbound(queue, request, group.pods, exclusive)
        return waiting_by_queue

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

    def _serve_level(self, names: list[str], waiting: Mapping[str, list[Demand]]) -> None:
        orders = {name: self._order(name, waiting[name]) for name in names}
        active = list(names)
        while active:
            still = []
            for name in active:  # equal-priority queues take turns, one job each
                try:
                    d = next(orders[name])
                except StopIteration:
                    continue
                self._consider(d)
                still.append(name)
            active = still

    def _order(self, name: str, demands: list[Demand]) -> Iterator[Demand]:
        queue = self.queues.get(name)
        if queue is None or queue.policy is None:
            yield from sorted(demands, key=_FIFO)
            return
        yield from self._fair_order(queue, queue.policy, demands)

    def _fair_order(
        self, queue: QueueView, policy: SchedulingPolicy, demands: list[Demand]
    ) -> Iterator[Demand]:
        by_share: dict[str, list[Demand]] = {}
        for d in demands:
            by_share.setdefault(d.share, []).append(d)
        for jobs in by_share.values():
            jobs.sort(key=lambda d: (-d.priority, d.submitted, d.key), reverse=True)
        shares = self.share_vcpus.setdefault(queue.name, {})

        def key(share: str) -> float:
            return fairshare.share_key(
                policy, share, shares.get(share, 0.0), queue.decayed_usage.get(share, 0.0)
            )

        heap = [(key(s), s) for s in by_share]
        heapq.heapify(heap)
        while heap:
            _, share = heapq.heappop(heap)
            yield by_share[share].pop()
            if by_share[share]:
                heapq.heappush(heap, (key(share), share))

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
        self, d: Demand, usable: list[str], limits: list[tuple[int, int, int]]
    ) -> tuple[Code, str] | None:
        """Why `d` can never run in its queue's CEs, or None if it can (memoised per pass:
        many jobs of a queue share a shape)."""
        r = d.request
        memo_key = (d.queue, r.cpu_milli, r.memory, r.gpu)
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
                    f"{d.queue} ({biggest}) allows at most {limit}; it can never run"
                ),
            )
        elif not any(self.capacity[ce].holds_pod(r) for ce in within):
            why = "; ".join(
                self.capacity[ce].unfit(ce, r) or f"{ce} cannot hold it" for ce in within
            )
            verdict = (_SHAPE, f"needs {r} per pod but {why}; it can never run")
        self._never[memo_key] = verdict
        return verdict

    def _consider(self, d: Demand) -> None:
        queue = self.queues.get(d.queue)
        if queue is None:
            self._wait(d, Code.NO_QUEUE, f"job queue {d.queue} does not exist")
            return
        usable, limits = self._usable_ces(queue)
        if not usable:
            why = "; ".join(self._why_unavailable(ce) for ce in queue.compute_environments)
            self._wait(
                d,
                Code.NO_COMPUTE_ENVIRONMENT,
                f"no usable compute environment in queue {d.queue}: {why}",
            )
            return
        r = d.request
        shape = (d.queue, r.cpu_milli, r.memory, r.gpu, d.exclusive)
        if shape in self._full:
            self._blocked_on_capacity(d, usable)
            return
        pods_needed = d.want - d.granted
        never = self._never_fits(d, usable, limits)
        if never is None and d.exclusive:
            misfit = gang_misfit(usable, self.capacity, r, d.want)
            if misfit is not None:
                never = (_NEVER, f"multi-node job: {misfit}; it can never run")
        if never is not None:
            self._wait(d, *never)
            return
        blocked = self._reservation_blocks(d)
        if blocked:
            self._wait(d, Code.FAIR_SHARE, blocked)
            return
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
        if self.held_for:
            for ce in usable:
                holder = self.held_for.get(ce)
                if holder is not None:
                    self._wait(d, _HEAD, self._held_text(holder))
                    return
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
        self._wait(d, _FULL, text)
        if self.now - d.runnable_since >= self.starvation:
            for ce in usable:
                self.held_for.setdefault(ce, d.key)

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
        self.result.waiting[d.key] = Status(_RUNNABLE, code, reason, position, d.queue)
