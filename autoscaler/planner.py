"""The capacity planner: pending pods, compute environments and the capacity already
there in; a launch plan (instance types, counts, zones, reasons) out.

Pure code: plain snapshots in, plain decisions out, no I/O and no clock.

How a plan is made:

1. Pods are taken in priority order (queue priority, then age). Each first goes onto
   room that already exists (nodes, and instances still booting) in its queue's
   compute environments, in `computeEnvironmentOrder`.
2. The rest are routed to the first environment in their order that can launch for
   them (ENABLED, VALID, an instance type that fits, vCPUs left under `maxvCpus`);
   what one environment cannot take overflows to the next.
3. Per environment, pods are bin-packed (CPU, memory, GPU and pod slots) onto new
   instances of the types that fit under what is left of `maxvCpus`. Pods are grouped
   by shape, so the work grows with the number of distinct shapes, not of pods. Each
   step fills one instance of every candidate type from the remaining pods, twice
   (greedily, most valuable pods first; and in the proportions still to be placed,
   topped up greedily), values a fill at what its pods would cost on their own, ranks
   fills by the allocation strategy (value per dollar; Spot capacity-optimized: lowest
   interruption bucket first; price-capacity-optimized: value per dollar discounted by
   the interruption rate), and repeats the best fill as often as the remaining pods
   allow.
4. Whatever vCPUs `minvCpus` still asks for are added with the cheapest type per vCPU.

A multi-node job's pod is exclusive (the extender places it only on a node with no other
Job's pod, and nothing beside it): it takes existing room only where nothing else is or
is planned, and each gets a new instance of its own, the best-ranked type it fits. A
multi-node job's pods get capacity all together or not at all (maxvCpus cuts before its
first pod, never inside it): placement waits for all of them anyway. A gang goes to the
one environment and zone `ebb.gang_site` chooses (the extender's filter places it by the
same rule): empty nodes that hold it whole first, else the first environment that holds
it whole with its empty nodes in one zone and what it can still launch there.

GPU pods only go to types with NVIDIA GPUs; CPU pods never go to types with GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from ebb.catalog import UNKNOWN_BUCKET, InstanceType
from ebb.gang_site import Site, choose_site
from ebb.model import ComputeEnvironment
from ebb.resources import Resources

BEST_FIT = "BEST_FIT"
BEST_FIT_PROGRESSIVE = "BEST_FIT_PROGRESSIVE"
SPOT_CAPACITY_OPTIMIZED = "SPOT_CAPACITY_OPTIMIZED"
SPOT_PRICE_CAPACITY_OPTIMIZED = "SPOT_PRICE_CAPACITY_OPTIMIZED"

REASON_PENDING_PODS = "pending-pods"
REASON_MULTI_NODE_JOB = "multi-node-job"
REASON_MIN_VCPUS = "min-vcpus"

# Why pods routed to an environment wait, as its CapacityAvailable condition says.
MAX_VCPUS_REACHED = "MaxvCpusReached"
INSUFFICIENT_CAPACITY = "InsufficientCapacity"


@dataclass(frozen=True, slots=True)
class Offering:
    """An instance type an environment may launch, as the planner weighs it."""

    instance_type: InstanceType
    usable: Resources  # what pods can use on it (after the node overhead)
    pod_slots: int  # pods it can still take (max pods less DaemonSet pods)
    price: float  # USD per hour for the environment's capacity type
    zones: tuple[str, ...]  # zones it can launch in now (known-unavailable ones left out)

    @property
    def name(self) -> str:
        return self.instance_type.name

    @property
    def vcpus(self) -> int:
        return self.instance_type.vcpus

    @property
    def available(self) -> bool:
        return bool(self.zones)


@dataclass(frozen=True, slots=True)
class Environment:
    """A compute environment with everything the planner needs to launch for it."""

    spec: ComputeEnvironment
    offerings: tuple[Offering, ...]
    vcpus: int  # vCPUs of its instances: running, booting and being launched
    gpus: int = 0
    problem: str | None = None  # why it is INVALID; None when VALID

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class PendingPod:
    key: str
    requests: Resources
    environments: tuple[str, ...]  # its queue's computeEnvironmentOrder
    priority: int = 0  # its queue's priority
    created: str = ""
    exclusive: bool = False  # a multi-node job's pod: an instance to itself
    job: str = ""  # its Job ("namespace/name"): an exclusive pod's gang


@dataclass(frozen=True, slots=True)
class Room:
    """Free room on a node, or on an instance that is still booting."""

    environment: str
    free: Resources
    pod_slots: int
    node: str = ""  # the node's name ("" for an instance that is not a node yet)
    empty: bool = False  # no Job's pod on it: an exclusive pod may take it
    zone: str = ""  # its availability zone ("": unknown; no multi-node job takes it)


@dataclass(frozen=True, slots=True)
class Launch:
    environment: str
    instance_type: str
    count: int
    vcpus: int  # of all `count` instances
    zones: tuple[str, ...]
    pods: int  # pods the instances are for (0 when launched for minvCpus)
    reason: str
    per_instance: tuple[tuple[Resources, int], ...] = ()  # pods (size, count) on each
    detail: str = ""  # what the pods are, when it says more than `reason`


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    launches: tuple[Launch, ...]
    on_existing: int  # pods expected to fit room that is already there
    waiting: Mapping[str, str]  # pod key -> why no capacity is planned for it
    pending: Mapping[str, int]  # environment -> pods routed to it (placed or not)
    # Nodes whose free room pending pods are expected to take (kube-scheduler may not
    # have tried them there yet: its backoff for a pod that failed to fit is up to 10 s).
    awaited_nodes: frozenset[str] = frozenset()
    # Environment -> MAX_VCPUS_REACHED or INSUFFICIENT_CAPACITY: why it cannot launch for
    # some pods routed to it.
    blocked: Mapping[str, str] = field(default_factory=dict)


# --- the plan ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Group:
    """Pods of one shape with the same routing and priority, oldest first; or the
    pods of one multi-node job (`gang`: its Job; they share the Job's template)."""

    requests: Resources
    environments: tuple[str, ...]
    keys: list[str]
    gang: str = ""
    zone: str = ""  # a gang on existing room: the room's zone, where the rest must launch
    done: int = 0  # pods of `keys` (from the front) already provided for
    on_room: list[tuple[str, int]] = field(default_factory=list)  # (node, pods) of room taken
    passed_over: list[str] = field(default_factory=list)  # a gang: why each environment did not

    @property
    def left(self) -> int:
        return len(self.keys) - self.done


def plan_launches(
    environments: Mapping[str, Environment],
    pods: Sequence[PendingPod],
    room: Sequence[Room] = (),
) -> LaunchPlan:
    groups = _group(pods)
    pending = routed_pods(pods)
    first = [g.environments[:1] for g in groups]
    _use_existing_room(groups, room, environments)
    for g, was in zip(groups, first, strict=True):
        if g.left and g.environments[:1] != was:  # a gang sent on to a later environment
            _route(g, g.environments[0], pending)
    waiting: dict[str, str] = {}
    blocked: dict[str, str] = {}
    launches: list[Launch] = []
    used: dict[str, tuple[int, int]] = {}  # environment -> (vCPUs, GPUs) planned
    rounds = max((len(g.environments) for g in groups), default=0)
    for position in range(rounds):
        by_env: dict[str, list[_Group]] = {}
        for g in groups:
            if g.left and position < len(g.environments):
                by_env.setdefault(g.environments[position], []).append(g)
        for name in sorted(by_env):
            env = environments.get(name)
            reason = _cannot_launch(env, name)
            if env is None or reason is not None:
                _wait(by_env[name], reason or "", waiting)
                continue
            if position > 0:
                for g in by_env[name]:
                    _route(g, name, pending)
            env_launches, vcpus, gpus = _plan_environment(env, by_env[name], used, waiting, blocked)
            launches.extend(env_launches)
            old_vcpus, old_gpus = used.get(name, (0, 0))
            used[name] = (old_vcpus + vcpus, old_gpus + gpus)
        for name, routed in by_env.items():
            for g in routed:
                if g.gang and g.left:
                    g.passed_over.append(f"{name}: {waiting[g.keys[g.done]]}")
    _explain_waits(groups, waiting)
    _all_or_nothing(groups, waiting)
    for env in environments.values():
        launches.extend(_keep_min_vcpus(env, used.get(env.name, (0, 0))[0]))
    on_existing = sum(n for g in groups for _, n in g.on_room)
    awaited = frozenset(node for g in groups for node, _ in g.on_room if node)
    return LaunchPlan(tuple(launches), on_existing, waiting, pending, awaited, blocked)


def routed_pods(pods: Iterable[PendingPod]) -> dict[str, int]:
    """Pending pods by the first compute environment of their queue: what is waiting
    there before a plan says which pods the later environments must take."""
    out: dict[str, int] = {}
    for pod in pods:
        if pod.environments:
            out[pod.environments[0]] = out.get(pod.environments[0], 0) + 1
    return out


def _group(pods: Sequence[PendingPod]) -> list[_Group]:
    ordered = sorted(pods, key=lambda p: (-p.priority, p.created, p.key))
    groups: dict[tuple[Resources, tuple[str, ...], int, str], _Group] = {}
    for pod in ordered:
        gang = (pod.job or pod.key) if pod.exclusive else ""
        key = (pod.requests, pod.environments, pod.priority, gang)
        group = groups.get(key)
        if group is None:
            groups[key] = _Group(pod.requests, pod.environments, [pod.key], gang)
        else:
            group.keys.append(pod.key)
    return list(groups.values())


def _route(g: _Group, environment: str, pending: dict[str, int]) -> None:
    """Count the pods of `g` still to provide for as routed to `environment` too."""
    pending[environment] = pending.get(environment, 0) + g.left


def _explain_waits(groups: Sequence[_Group], waiting: dict[str, str]) -> None:
    """Reasons the environments could not give: pods with no environment, and a gang no
    environment holds whole (why, in each)."""
    for g in groups:
        if g.left and not g.environments:
            _wait([g], "its queue has no compute environment", waiting)
        elif len(g.passed_over) > 1:
            _wait([g], "; ".join(g.passed_over), waiting)


def _wait(groups: Sequence[_Group], reason: str, waiting: dict[str, str]) -> None:
    for g in groups:
        for key in g.keys[g.done :]:
            waiting[key] = reason


def _all_or_nothing(groups: Sequence[_Group], waiting: dict[str, str]) -> None:
    """A multi-node job some of whose pods wait gets no capacity at all: the room its
    other pods were to take is left to nobody (this plan), and they wait too."""
    for g in groups:
        reason = next((waiting[k] for k in g.keys if k in waiting), None) if g.gang else None
        if reason is not None:
            g.on_room.clear()
            for key in g.keys:
                waiting[key] = reason


def _cannot_launch(env: Environment | None, name: str) -> str | None:
    if env is None:
        return f"compute environment {name} does not exist"
    if env.problem is not None:
        return f"compute environment {name} is INVALID: {env.problem}"
    if not env.spec.enabled:
        return f"compute environment {name} is DISABLED"
    return None


def _fit_count(free: Resources, slots: int, need: Resources) -> int:
    """How many pods of size `need` fit into `free` with `slots` pod slots; CPU pods
    never count room that has GPUs."""
    if free.gpu and not need.gpu:
        return 0
    count = slots
    if need.cpu_milli:
        count = min(count, free.cpu_milli // need.cpu_milli)
    if need.memory:
        count = min(count, free.memory // need.memory)
    if need.gpu:
        count = min(count, free.gpu // need.gpu)
    return max(count, 0)


def _eligible(o: Offering, need: Resources) -> bool:
    """GPU pods only on types with NVIDIA GPUs; CPU pods only on types with no GPU."""
    t = o.instance_type
    return t.nvidia_gpus > 0 if need.gpu else t.gpus == 0


def _fits(o: Offering, need: Resources) -> bool:
    return _eligible(o, need) and _fit_count(o.usable, o.pod_slots, need) > 0


def _in_zone(o: Offering, zone: str) -> bool:
    """Whether `o` can launch in `zone` ("": in any zone). An unavailable offering (that
    BEST_FIT waits for) is in none."""
    return not zone or zone in o.zones


@dataclass(slots=True)
class _Free:
    room: Resources
    pod_slots: int
    node: str
    empty: bool
    zone: str


def _use_existing_room(
    groups: Sequence[_Group], room: Sequence[Room], environments: Mapping[str, Environment]
) -> None:
    """Place pods on existing room (recorded in each group's `on_room`). Exclusive pods
    first, in priority order: each needs a whole empty room, and a gang's in one zone;
    then the others, largest first."""
    rooms: dict[str, list[_Free]] = {}
    for r in room:
        rooms.setdefault(r.environment, []).append(
            _Free(r.free, r.pod_slots, r.node, r.empty, r.zone)
        )
    shared = sorted(
        (g for g in groups if not g.gang),
        key=lambda g: (g.requests.gpu, g.requests.memory),
        reverse=True,
    )
    spent: dict[str, tuple[int, int]] = {}  # environment -> (vCPUs, GPUs) gangs will launch
    for g in groups:
        if g.gang:
            _place_gang(g, rooms, environments, spent)
    for g in shared:
        for env in g.environments:
            for free in rooms.get(env, ()):
                if not g.left:
                    break
                k = min(g.left, _fit_count(free.room, free.pod_slots, g.requests))
                if k:
                    free.room -= g.requests * k
                    free.pod_slots -= k
                    free.empty = False
                    g.done += k
                    g.on_room.append((free.node, k))


def _place_gang(
    g: _Group,
    rooms: Mapping[str, list[_Free]],
    environments: Mapping[str, Environment],
    spent: dict[str, tuple[int, int]],
) -> None:
    """Pin a gang to the one environment and zone that can hold all of it (the rule of
    `ebb.gang_site`, which the extender's filter places a gang by): a pod on each empty
    room there that fits one, and the rest launched there. An environment that cannot
    hold it whole is passed over, whatever empty room it has. With no such site the gang
    is left to its environments in order, each of which says why it launches nothing."""
    sites: list[Site] = []
    empties: dict[tuple[str, str], list[_Free]] = {}
    launches: dict[tuple[str, str], Offering] = {}
    for name in g.environments:
        env = environments.get(name)
        if env is None or not env.spec.enabled:
            continue  # the extender keeps none of its nodes: a gang uses none of its room
        for free in rooms.get(name, ()):
            if free.empty and free.zone and _fit_count(free.room, free.pod_slots, g.requests):
                empties.setdefault((name, free.zone), []).append(free)
        for zone in [z for e, z in empties if e == name] + [""]:
            empty = len(empties.get((name, zone), ()))
            own, launchable = _gang_launch(env, g.requests, zone, spent.get(name, (0, 0)))
            if own is not None:
                launches[name, zone] = own
            if empty or launchable:
                sites.append(Site(name, zone or None, empty, launchable))
    site = choose_site(g.environments, sites, g.left)
    if site is None:
        return
    g.environments = (site.environment,)
    g.zone = site.zone or ""
    for free in empties.get((site.environment, g.zone), [])[: g.left]:
        free.room -= g.requests
        free.pod_slots = 0  # nothing else goes beside an exclusive pod
        free.empty = False
        g.done += 1
        g.on_room.append((free.node, 1))
    own = launches.get((site.environment, g.zone))
    if g.left and own is not None:  # what its launch takes of the limits, for the next gangs
        vcpus, gpus = spent.get(site.environment, (0, 0))
        spent[site.environment] = (
            vcpus + g.left * own.vcpus,
            gpus + g.left * own.instance_type.nvidia_gpus,
        )


def _gang_launch(
    env: Environment, need: Resources, zone: str, spent: tuple[int, int]
) -> tuple[Offering | None, int]:
    """The type `env` would launch in `zone` ("": any) for a gang's pods, as `_pack`
    chooses it among the types under what is left of its limits, and how many of it
    fit there; (None, 0) if it launches none."""
    if _cannot_launch(env, env.name) is not None:
        return None, 0
    vcpus, gpus = _left_under_limits(env, spent)
    strategy = env.spec.allocation_strategy
    pool = [
        o
        for o in env.offerings
        if _affordable(o, vcpus, gpus)
        and (o.available or strategy == BEST_FIT)
        and _eligible(o, need)
        and _in_zone(o, zone)
    ]
    own = _own_instance(_distinct(pool, strategy), need, strategy)
    if own is None:
        return None, 0
    count = vcpus // own.vcpus
    if gpus is not None and own.instance_type.nvidia_gpus:
        count = min(count, gpus // own.instance_type.nvidia_gpus)
    return own, count


def _left_under_limits(env: Environment, spent: tuple[int, int]) -> tuple[int, int | None]:
    """(vCPUs, GPUs; None: no GPU limit) `env` may still launch, beside its instances and
    the `spent` already planned."""
    vcpus = env.spec.max_vcpus - env.vcpus - spent[0]
    gpus = env.spec.max_gpus - env.gpus - spent[1] if env.spec.max_gpus is not None else None
    return vcpus, gpus


def _affordable(o: Offering, vcpus: int, gpus: int | None) -> bool:
    """Whether one instance of `o` fits under `vcpus` (and `gpus`) left. A type bigger
    than what is left under maxvCpus can never be launched: left in, a strategy that
    ranks it first (capacity-optimized ranks a big type in a quiet pool above every
    small one) would leave nothing to launch at all."""
    return o.vcpus <= vcpus and (gpus is None or o.instance_type.nvidia_gpus <= gpus)


# --- one environment --------------------------------------------------------------------


@dataclass(slots=True)
class _Pattern:
    offering: Offering
    copies: int
    counts: dict[int, int] = field(default_factory=dict)  # demand index -> pods per copy
    gang: bool = False  # a multi-node job's instances: one launch, all or none
    zones: tuple[str, ...] = ()  # where it may launch, when narrower than the offering's


def _plan_environment(
    env: Environment,
    groups: list[_Group],
    used: Mapping[str, tuple[int, int]],
    waiting: dict[str, str],
    blocked: dict[str, str],
) -> tuple[list[Launch], int, int]:
    budget_vcpus, budget_gpus = _left_under_limits(env, used.get(env.name, (0, 0)))
    limit = f"maxvCpus {env.spec.max_vcpus} of {env.name} reached"
    affordable = partial(_affordable, vcpus=budget_vcpus, gpus=budget_gpus)

    # BEST_FIT does not move on to other types when its pick is unavailable: it waits.
    candidates = tuple(
        o
        for o in env.offerings
        if affordable(o) and (o.available or env.spec.allocation_strategy == BEST_FIT)
    )
    launchable = _launchable(
        env, groups, candidates, affordable, limit, waiting=waiting, blocked=blocked
    )
    if not launchable:
        return [], 0, 0

    def within_budget(patterns: list[_Pattern]) -> bool:
        vcpus = sum(p.copies * p.offering.vcpus for p in patterns)
        gpus = sum(p.copies * p.offering.instance_type.nvidia_gpus for p in patterns)
        return vcpus <= budget_vcpus and (budget_gpus is None or gpus <= budget_gpus)

    demand = [g.left for g in launchable]
    patterns = _pack(launchable, demand, candidates, env.spec.allocation_strategy)
    if not within_budget(patterns):
        # Too much for maxvCpus: provide for the longest prefix of pods (in priority
        # order, a multi-node job whole or not at all) that fits the budget, found by
        # bisection on the number of pods.
        total = sum(demand)
        low, high = 0, total
        best: list[_Pattern] = []
        while low < high:
            mid = (low + high + 1) // 2
            trial = _pack(
                launchable,
                _prefix(launchable, demand, mid),
                candidates,
                env.spec.allocation_strategy,
            )
            if within_budget(trial):
                low, best = mid, trial
            else:
                high = mid - 1
        patterns = best
    launches: list[Launch] = []
    vcpus = gpus = 0
    placed = [0] * len(launchable)
    for p in patterns:
        waits = not p.offering.available
        pods = 0
        for i, n in p.counts.items():
            g, start = launchable[i], launchable[i].done + placed[i]
            for key in g.keys[start : start + p.copies * n]:
                if waits:
                    waiting[key] = f"BEST_FIT waits for {p.offering.name} capacity in {env.name}"
                    blocked[env.name] = INSUFFICIENT_CAPACITY
                else:  # an earlier environment's reason no longer holds
                    waiting.pop(key, None)
            placed[i] += p.copies * n
            pods += p.copies * n
        if waits:
            continue
        vcpus += p.copies * p.offering.vcpus
        gpus += p.copies * p.offering.instance_type.nvidia_gpus
        launches.append(
            Launch(
                env.name,
                p.offering.name,
                p.copies,
                p.copies * p.offering.vcpus,
                p.zones or p.offering.zones,
                pods,
                REASON_MULTI_NODE_JOB if p.gang else REASON_PENDING_PODS,
                tuple((launchable[i].requests, n) for i, n in p.counts.items()),
                _detail(launchable[i] for i in p.counts),
            )
        )
    for i, g in enumerate(launchable):
        g.done += placed[i]
    cut = [g for g in launchable if g.left]
    _wait(cut, limit, waiting)
    if cut:
        blocked[env.name] = MAX_VCPUS_REACHED
    return launches, vcpus, gpus


def _launchable(
    env: Environment,
    groups: Sequence[_Group],
    candidates: Sequence[Offering],
    affordable: Callable[[Offering], bool],
    limit: str,
    *,
    waiting: dict[str, str],
    blocked: dict[str, str],
) -> list[_Group]:
    """The groups some candidate type fits (in their zone); the others wait, with why."""
    launchable: list[_Group] = []
    for g in groups:
        if any(_fits(o, g.requests) and _in_zone(o, g.zone) for o in candidates):
            launchable.append(g)
            continue
        cause, why = _why_not_launchable(env, g, affordable, limit)
        _wait([g], why, waiting)
        if cause:
            blocked[env.name] = cause
    return launchable


def _why_not_launchable(
    env: Environment, g: _Group, affordable: Callable[[Offering], bool], limit: str
) -> tuple[str | None, str]:
    """Why the environment launches nothing for these pods: the environment's cause
    (MAX_VCPUS_REACHED, INSUFFICIENT_CAPACITY; None when it is the pods'), and the
    pods' reason."""
    fitting = [o for o in env.offerings if _fits(o, g.requests)]
    if any(affordable(o) for o in fitting):
        where = f"{env.name} in {g.zone}" if g.zone else env.name
        return (
            INSUFFICIENT_CAPACITY,
            f"no capacity available for it in {where} (insufficient capacity)",
        )
    if fitting:
        return MAX_VCPUS_REACHED, limit
    if not g.requests.gpu and any(g.requests.fits_in(o.usable) for o in env.offerings):
        return (
            None,
            f"{env.name} has only GPU types that fit it; a pod without GPUs never launches one",
        )
    return None, f"no instance type of {env.name} fits {g.requests}"


def _detail(groups: Iterable[_Group]) -> str:
    """Names the multi-node jobs a launch is for."""
    gangs = sorted({g.gang for g in groups if g.gang})
    return ", ".join(f"multi-node job {gang}" for gang in gangs)


def _prefix(groups: Sequence[_Group], demand: list[int], pods: int) -> list[int]:
    """The first `pods` of `demand`, cut before a multi-node job rather than inside it."""
    out = []
    for g, d in zip(groups, demand, strict=True):
        take = min(d, pods)
        if g.gang and take < d:
            take = pods = 0
        out.append(take)
        pods -= take
    return out


# --- packing ----------------------------------------------------------------------------


def _distinct(offerings: Sequence[Offering], strategy: str) -> list[Offering]:
    """One offering per usable size: types of equal size fill identically, so only the
    best-ranked of them can ever win."""
    best: dict[tuple[Resources, int], Offering] = {}
    for o in offerings:
        key = (o.usable, o.pod_slots)
        old = best.get(key)
        if old is None or _rank(o, 1.0, strategy) > _rank(old, 1.0, strategy):
            best[key] = o
    return list(best.values())


def _rank(o: Offering, value: float, strategy: str) -> tuple[float, ...]:
    """Higher is better. Every strategy weighs what a fill packs against its price."""
    t = o.instance_type
    per_dollar = value / o.price if o.price > 0 else math.inf
    if strategy == SPOT_CAPACITY_OPTIMIZED:
        bucket = UNKNOWN_BUCKET if t.interruption_bucket is None else t.interruption_bucket
        return (-bucket, per_dollar, value)
    if strategy == SPOT_PRICE_CAPACITY_OPTIMIZED:
        # Price per unit of work that is not lost to interruptions.
        return (per_dollar * (1 - t.interruption_rate), value)
    return (per_dollar, value)


def _pack(
    groups: Sequence[_Group], demand: list[int], offerings: Sequence[Offering], strategy: str
) -> list[_Pattern]:
    """Bin-pack `demand[i]` pods of `groups[i].requests` onto new instances."""
    patterns: list[_Pattern] = []
    for gpu_class in (True, False):
        members = [i for i, g in enumerate(groups) if (g.requests.gpu > 0) == gpu_class]
        if not members or not any(demand[i] for i in members):
            continue
        need = Resources(gpu=1) if gpu_class else Resources()
        eligible = [o for o in offerings if _eligible(o, need)]
        for i in members:
            g = groups[i]
            if g.gang and demand[i]:
                # One instance per pod, of one type, in one zone: a single launch.
                where = _distinct([o for o in eligible if _in_zone(o, g.zone)], strategy)
                own = _own_instance(where, g.requests, strategy)
                zones = (g.zone,) if g.zone else ()
                if own is not None:
                    patterns.append(_Pattern(own, demand[i], {i: 1}, gang=True, zones=zones))
        pool = _distinct(eligible, strategy)
        shared = [i for i in members if not groups[i].gang]
        patterns.extend(_pack_class(groups, demand, shared, pool, strategy))
    return patterns


def _own_instance(pool: Sequence[Offering], need: Resources, strategy: str) -> Offering | None:
    """The best-ranked type for a pod alone on an instance (an exclusive pod)."""
    fitting = [o for o in pool if _fit_count(o.usable, o.pod_slots, need) > 0]
    return max(fitting, key=lambda o: _rank(o, 1.0, strategy), default=None)


Need = tuple[int, int, int]  # cpu millicores, memory bytes, GPUs: plain ints for speed


def _pack_class(
    groups: Sequence[_Group],
    demand_in: list[int],
    members: list[int],
    pool: list[Offering],
    strategy: str,
) -> list[_Pattern]:
    demand = {i: demand_in[i] for i in members if demand_in[i]}
    packer = _Packer(groups, demand, pool, strategy)
    patterns: list[_Pattern] = []
    while demand:
        best = packer.best_fill(demand)
        if best is None:
            break  # nothing left fits any type; the caller filtered such pods out
        offering, counts = best
        copies = min(demand[i] // n for i, n in counts.items())
        patterns.append(_Pattern(offering, copies, counts))
        for i, n in counts.items():
            demand[i] -= copies * n
            if not demand[i]:
                del demand[i]
    return patterns


_SHORTLIST = 48


class _Packer:
    """Finds, for the pods still to place, the best way to fill one instance."""

    def __init__(
        self,
        groups: Sequence[_Group],
        demand: Mapping[int, int],
        pool: list[Offering],
        strategy: str,
    ) -> None:
        self.strategy = strategy
        self.needs: dict[int, Need] = {}
        for i in demand:
            r = groups[i].requests
            self.needs[i] = (r.cpu_milli, r.memory, r.gpu)
        # A pod is worth what it costs on its own: the cheapest price per pod when an
        # instance holds only pods of its shape. A fill that mixes shapes onto one type
        # for less (CPU-heavy with memory-heavy pods, say) then ranks above both.
        cheapest = {i: _standalone(pool, groups[i].requests) for i in demand}
        self.value = {i: cost for i, (cost, _) in cheapest.items()}
        self.order = sorted(demand, key=lambda i: (self.value[i], i), reverse=True)
        self.pool = pool
        if len(pool) > _SHORTLIST:
            # Search only the types that fill best for the whole demand, and each
            # shape's cheapest own type: the best fills change little as pods are placed.
            ranked = sorted(
                ((rank, o.name, o) for o, _, rank in self._fills(demand)),
                reverse=True,
            )
            keep = {o.name: o for _, _, o in ranked[:_SHORTLIST]}
            for _, own in cheapest.values():
                if own is not None:
                    keep.setdefault(own.name, own)
            self.pool = list(keep.values())

    def best_fill(self, demand: Mapping[int, int]) -> tuple[Offering, dict[int, int]] | None:
        best = max(self._fills(demand), key=lambda f: f[2], default=None)
        return (best[0], best[1]) if best is not None else None

    def _fills(
        self, demand: Mapping[int, int]
    ) -> Iterator[tuple[Offering, dict[int, int], tuple[float, ...]]]:
        """Per type, a greedy fill (largest pods first) and a proportional one."""
        total = [sum(self.needs[i][d] * n for i, n in demand.items()) for d in range(3)]
        pods = sum(demand.values())
        for o in self.pool:
            for start in ({}, _proportional(o, demand, total, pods)):
                counts = self._fill(o, demand, start)
                if counts:
                    packed = sum(k * self.value[i] for i, k in counts.items())
                    yield o, counts, _rank(o, packed, self.strategy)

    def _fill(
        self, o: Offering, demand: Mapping[int, int], start: dict[int, int]
    ) -> dict[int, int]:
        """`start`, topped up greedily with whatever else still fits."""
        needs = self.needs
        cpu, mem, gpu, slots = o.usable.cpu_milli, o.usable.memory, o.usable.gpu, o.pod_slots
        for i, k in start.items():
            c, m, g = needs[i]
            cpu, mem, gpu, slots = cpu - k * c, mem - k * m, gpu - k * g, slots - k
        counts = dict(start)
        for i in self.order:
            left = demand.get(i, 0) - counts.get(i, 0)
            if left <= 0 or slots <= 0:
                continue
            c, m, g = needs[i]
            k = min(left, slots)
            if c:
                k = min(k, cpu // c)
            if m:
                k = min(k, mem // m)
            if g:
                k = min(k, gpu // g)
            if k <= 0:
                continue
            counts[i] = counts.get(i, 0) + k
            cpu, mem, gpu, slots = cpu - k * c, mem - k * m, gpu - k * g, slots - k
        return counts


def _standalone(pool: Sequence[Offering], need: Resources) -> tuple[float, Offering | None]:
    """The cheapest price per pod, and its type, when an instance holds only such pods."""
    best: tuple[float, Offering | None] = (0.0, None)
    for o in pool:
        k = _fit_count(o.usable, o.pod_slots, need)
        if k > 0 and (best[1] is None or o.price / k < best[0]):
            best = (o.price / k, o)
    return best


def _proportional(
    o: Offering, demand: Mapping[int, int], total: Sequence[int], pods: int
) -> dict[int, int]:
    """Pods in the proportions still to be placed, as many as one instance holds."""
    u = o.usable
    scale = min(1.0, o.pod_slots / pods)
    for have, want in zip((u.cpu_milli, u.memory, u.gpu), total, strict=True):
        if want:
            scale = min(scale, have / want)
    return {i: k for i, n in demand.items() if (k := int(n * scale))}


# --- minvCpus ---------------------------------------------------------------------------


def _keep_min_vcpus(env: Environment, planned_vcpus: int) -> list[Launch]:
    """Launch the cheapest instances that bring the environment up to minvCpus (AWS Batch
    keeps them even when DISABLED, but a DISABLED environment does not scale out)."""
    if _cannot_launch(env, env.name) is not None:
        return []
    have = env.vcpus + planned_vcpus
    deficit = env.spec.min_vcpus - have
    budget = env.spec.max_vcpus - have
    pool = [o for o in env.offerings if o.available and not o.instance_type.gpus] or [
        o for o in env.offerings if o.available
    ]
    launches: list[Launch] = []
    while deficit > 0:
        fitting = [o for o in pool if o.vcpus <= budget]
        if not fitting:
            break
        # The cheapest way to cover the deficit (not the cheapest vCPU: 64 cheap vCPUs
        # cost more than the 2 asked for).
        options = [(min(math.ceil(deficit / o.vcpus), budget // o.vcpus), o) for o in fitting]
        count, o = min(options, key=lambda c: (c[0] * c[1].price, -c[1].vcpus, c[1].name))
        launches.append(
            Launch(env.name, o.name, count, count * o.vcpus, o.zones, 0, REASON_MIN_VCPUS)
        )
        deficit -= count * o.vcpus
        budget -= count * o.vcpus
    return launches
