"""What users would run instead of Ebb's autoscaler, as capacity policies for the same
simulator. Only the capacity decisions differ: admission (queues, fair share,
dependencies, maxvCpus) and placement are Ebb's in every run, so a ratio between runs
measures the capacity strategy alone.

`NodeGroups` — cluster-autoscaler with node groups, as commonly configured:
- one fixed instance type per node group: per instance family an environment allows,
  its `4xlarge` and its largest type (CPU families), or its cheapest type for each GPU
  count it offers (GPU families);
- scale-up every 10 s (the scan interval): pending pods that fit no node that is
  still booting are bin-packed (first fit, largest first) onto new nodes of every
  group; the least-waste expander picks the one group whose new nodes would leave the
  least unused CPU and memory (ties: more pods helped, then lower price); that group
  alone grows, by the whole estimate, within the environment's maxvCpus; a group whose
  type EC2 just refused sits out while the refusal lasts;
- scale-down only of empty nodes (batch pods carry safe-to-evict: false, as batch users
  set), unneeded for 10 minutes, none within 10 minutes of a scale-up anywhere, at most
  10 per scan (cluster-autoscaler's defaults).

`OnePodPerInstance` — every pod gets its own instance: the cheapest type of the first
environment (in its queue's order) with room that fits it; a node runs one batch pod
and is terminated as soon as it has none.

`PodByPodGangs` — plain Kubernetes Jobs and cluster-autoscaler for multi-node jobs: the
node groups above, and no gang awareness anywhere (the one baseline where more than the
capacity decisions differ). A multi-node job is a plain Indexed Job of one pod per node:
admitted pod by pod as capacity allows (what Ebb's admission does for any Job of more
than one pod without `ebb.dev/nodes`), placed pod by pod as nodes appear (each pod still
on a node of its own), provisioned pod by pod; a bound pod holds its node idle until the
last pod of its gang is bound, as a training framework's rendezvous waits for every
worker. Its failure semantics are Ebb's (one pod lost ends the attempt for all), so that
only admission, placement and provisioning differ.

`EbbWithoutGangs` — the same absence of gang awareness on Ebb's own autoscaler (as Ebb
ran multi-node training before it had gangs): separates what gang awareness saves from
what the capacity strategy does.

All launch into one zone per request, taking turns, and meet the same simulated EC2
(boot times, Spot interruptions, refused launches) as Ebb.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autoscaler.planner import Environment, Offering, PendingPod
from ebb.catalog import InstanceType
from ebb.resources import Resources
from sim.capacity import CapacityPolicy, ClusterView, Decision, EbbCapacity, Order
from sim.cloud import Instance

SCAN_SECONDS = 10.0
UNNEEDED_SECONDS = 600.0
DELAY_AFTER_ADD_SECONDS = 600.0
MAX_EMPTY_BULK_DELETE = 10


def _eligible(o: Offering, need: Resources) -> bool:
    """GPU pods only on NVIDIA types, CPU pods only on types without GPUs (the rule Ebb's
    planner applies; node-group users get it with GPU taints)."""
    t = o.instance_type
    return t.nvidia_gpus > 0 if need.gpu else t.gpus == 0


def _fits(free: Resources, slots: int, need: Resources) -> int:
    """Pods of `need` that fit in `free` with `slots` pod slots."""
    n = slots
    for have, want in ((free.cpu_milli, need.cpu_milli), (free.memory, need.memory)):
        if want:
            n = min(n, have // want)
    if need.gpu:
        n = min(n, free.gpu // need.gpu)
    return max(n, 0)


def _shapes(pods: Sequence[PendingPod]) -> dict[tuple[Resources, tuple[str, ...]], int]:
    """Pending pods counted by (requests, environments): the work grows with shapes."""
    out: dict[tuple[Resources, tuple[str, ...]], int] = {}
    for p in pods:
        key = (p.requests, p.environments)
        out[key] = out.get(key, 0) + 1
    return out


@dataclass
class _Bin:
    free: Resources
    slots: int


def _first_fit(bins: list[_Bin], need: Resources, count: int) -> int:
    """Place up to `count` pods of `need` first-fit into `bins`; returns how many."""
    placed = 0
    for b in bins:
        if placed == count:
            break
        k = min(count - placed, _fits(b.free, b.slots, need))
        if k:
            b.free -= need * k
            b.slots -= k
            placed += k
    return placed


@dataclass
class _Run:
    """`count` one-pod bins in a row, all of one instance type (room: `usable`)."""

    type: InstanceType
    usable: Resources
    count: int


def _first_fit_runs(runs: list[_Run], need: Resources, count: int) -> int:
    """`_first_fit` over one-pod bins given as runs of alike ones: a bin takes one pod
    if it fits, and first fit takes the first free bins of a run (the same result as
    bin by bin, in time linear in the runs)."""
    placed = 0
    for r in runs:
        if placed == count:
            break
        if r.count and _fits(r.usable, 1, need):
            k = min(count - placed, r.count)
            r.count -= k
            placed += k
    return placed


class NodeGroups(CapacityPolicy):
    name = "cluster-autoscaler"
    description = (
        "cluster-autoscaler-like node groups: one fixed type per group (each family's "
        "4xlarge and largest; GPU families: cheapest per GPU count), least-waste "
        "expander, one group per 10 s scan, empty nodes removed after 10 min "
        "(10 min after any scale-up, 10 per scan)"
    )
    resync_seconds = SCAN_SECONDS

    _last_scale_up = -math.inf

    def decide(self, view: ClusterView) -> Decision:
        out = Decision()
        views = self.views(view)
        if view.pending:
            self._scale_up(view, views, out)
        self._scale_down(view, out)
        return out

    def groups(self, env: Environment) -> list[Offering]:
        """The environment's node groups (one offering each)."""
        by_family: dict[str, list[Offering]] = {}
        for o in env.offerings:
            by_family.setdefault(o.instance_type.family, []).append(o)
        chosen: dict[str, Offering] = {}
        for offerings in by_family.values():
            gpu = [o for o in offerings if o.instance_type.nvidia_gpus]
            if gpu:
                for count in sorted({o.instance_type.nvidia_gpus for o in gpu}):
                    same = [o for o in gpu if o.instance_type.nvidia_gpus == count]
                    best = min(same, key=lambda o: (o.price, o.name))
                    chosen[best.name] = best
            elif not any(o.instance_type.gpus for o in offerings):
                sizes = sorted(offerings, key=lambda o: (o.vcpus, o.name))
                mid = min(sizes, key=lambda o: (abs(o.vcpus - 16), o.vcpus))
                chosen[mid.name] = mid
                chosen[sizes[-1].name] = sizes[-1]
        return sorted(chosen.values(), key=lambda o: o.name)

    def _scale_up(self, view: ClusterView, views: Mapping[str, Environment], out: Decision) -> None:
        shapes = _shapes(view.pending)
        # Pods that fit a node still booting are not unschedulable to the autoscaler.
        booting: dict[str, list[_Bin]] = {}
        for i in view.instances:
            if not i.ready:
                usable = self.overhead.usable(i.type)
                booting.setdefault(i.environment, []).append(_Bin(usable, self.pod_slots))
        left: dict[tuple[Resources, tuple[str, ...]], int] = {}
        for (need, envs), count in sorted(shapes.items(), key=lambda s: _size(s[0][0])):
            unplaced = count
            for env in envs:
                unplaced -= _first_fit(booting.get(env, []), need, unplaced)
            if unplaced:
                left[(need, envs)] = unplaced
        best: tuple[tuple[float, int, float, str], str, Offering, int] | None = None
        for name, view_of in sorted(views.items()):
            if view_of.problem is not None or not view_of.spec.enabled:
                continue
            budget = view_of.spec.max_vcpus - view_of.vcpus
            for o in self.groups(view_of):
                if not o.available or o.vcpus > budget:
                    continue
                option = self._estimate(o, name, left, budget // o.vcpus)
                if option is None:
                    continue
                rank, nodes = option
                if best is None or rank < best[0]:
                    best = (rank, name, o, nodes)
        if best is not None:
            _, name, o, nodes = best
            out.launches.append(Order(name, o.name, nodes, self.zone(o.zones)))
            self._last_scale_up = view.now

    def _estimate(
        self,
        o: Offering,
        env: str,
        pods: Mapping[tuple[Resources, tuple[str, ...]], int],
        max_nodes: int,
    ) -> tuple[tuple[float, int, float, str], int] | None:
        """Nodes of `o` the pods it can take need (first fit, largest first), and the
        least-waste rank of that option."""
        bins: list[_Bin] = []
        helped = 0
        used = Resources()
        for (need, envs), count in sorted(pods.items(), key=lambda s: _size(s[0][0]), reverse=True):
            if env not in envs or not _eligible(o, need) or not _fits(o.usable, o.pod_slots, need):
                continue
            placed = _first_fit(bins, need, count)
            per_node = _fits(o.usable, o.pod_slots, need)
            while placed < count and len(bins) < max_nodes:
                new = min(count - placed, per_node)
                bins.append(_Bin(o.usable - need * new, o.pod_slots - new))
                placed += new
            helped += placed
            used += need * placed
        if not bins:
            return None
        total = o.usable * len(bins)
        waste = sum(
            (have - use) / have
            for have, use in ((total.cpu_milli, used.cpu_milli), (total.memory, used.memory))
            if have
        )
        return (waste, -helped, o.price * len(bins), o.name), len(bins)

    def _scale_down(self, view: ClusterView, out: Decision) -> None:
        empty = sorted(
            (
                i
                for i in view.instances
                if i.ready and i.batch_pods == 0 and i.idle_since is not None
            ),
            key=lambda i: (i.idle_since or 0.0, i.id),
        )
        if not empty:
            return
        allowed = view.now - self._last_scale_up >= DELAY_AFTER_ADD_SECONDS
        ripe = [i for i in empty if view.now - (i.idle_since or 0.0) >= UNNEEDED_SECONDS]
        if allowed:
            out.terminate.extend((i, "unneeded") for i in ripe[:MAX_EMPTY_BULK_DELETE])
        out.due = view.now + SCAN_SECONDS

    def idle_delay(self, instance: Instance) -> float:
        return UNNEEDED_SECONDS


class PodByPodGangs(NodeGroups):
    name = "pod-by-pod-gangs"
    description = (
        "plain Indexed Jobs and cluster-autoscaler node groups: a multi-node job admitted, "
        "provisioned and placed pod by pod, its bound pods idle until all are bound"
    )
    gang_aware = False


class EbbWithoutGangs(EbbCapacity):
    name = "ebb-without-gangs"
    description = (
        "Ebb's autoscaler, multi-node jobs as plain Indexed Jobs: admitted, provisioned and "
        "placed pod by pod, their bound pods idle until all are bound"
    )
    gang_aware = False


def _size(need: Resources) -> tuple[int, int, int]:
    return (need.gpu, need.cpu_milli, need.memory)


class OnePodPerInstance(CapacityPolicy):
    name = "one-pod-per-instance"
    description = (
        "one pod per instance: the cheapest type that fits each pod, in the first "
        "environment of its queue with room; terminated when its pod ends"
    )

    @property
    def pod_slots(self) -> int:
        return 1

    def decide(self, view: ClusterView) -> Decision:
        out = Decision()
        out.terminate.extend((i, "pod ended") for i in view.idle())
        if not view.pending:
            return out
        views = self.views(view)
        # Each instance still booting takes one pod; alike ones in a row form one run.
        booting: dict[str, list[_Run]] = {}
        for i in view.booting():
            runs = booting.setdefault(i.environment, [])
            if runs and runs[-1].type is i.type:
                runs[-1].count += 1
            else:
                runs.append(_Run(i.type, self.overhead.usable(i.type), 1))
        budget = {
            name: env.spec.max_vcpus - env.vcpus
            for name, env in views.items()
            if env.problem is None and env.spec.enabled
        }
        launches: dict[tuple[str, str], int] = {}
        cheapest: dict[tuple[str, Resources], Offering | None] = {}
        for (need, envs), count in _shapes(view.pending).items():
            unplaced = count
            for env in envs:
                unplaced -= _first_fit_runs(booting.get(env, []), need, unplaced)
            for env in envs:
                if not unplaced or env not in budget:
                    continue
                key = (env, need)
                if key not in cheapest:
                    fitting = [
                        o
                        for o in views[env].offerings
                        if o.available and _eligible(o, need) and _fits(o.usable, 1, need)
                    ]
                    cheapest[key] = min(fitting, key=lambda o: (o.price, o.name), default=None)
                o = cheapest[key]
                if o is None:
                    continue
                n = min(unplaced, budget[env] // o.vcpus)
                if n > 0:
                    launches[(env, o.name)] = launches.get((env, o.name), 0) + n
                    budget[env] -= n * o.vcpus
                    unplaced -= n
        for (env, type_name), n in launches.items():
            o = next(x for x in views[env].offerings if x.name == type_name)
            out.launches.append(Order(env, type_name, n, self.zone(o.zones)))
        return out

    def idle_delay(self, instance: Instance) -> float:
        return 0.0
