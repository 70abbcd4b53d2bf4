"""Capacity policies: what to launch and what to terminate, at each autoscaler pass.

`EbbCapacity` is Ebb's autoscaler: the real capacity planner (`autoscaler.planner`)
over the real offerings (`autoscaler.environments`), and the real scale-down decisions
(`autoscaler.scaledown`), fed what the daemon would see. The baselines it is compared
with (`sim.baselines`) implement the same interface.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from autoscaler.environments import Unavailable, environment
from autoscaler.planner import Environment, PendingPod, Room, plan_launches
from autoscaler.room import Coming, NodeRoom, room
from autoscaler.scaledown import (
    NodeActionKind,
    NodeSeen,
    idle_delay,
    next_scale_down,
    plan_scale_down,
    track_nodes,
)
from autoscaler.settings import AutoscalerSettings
from autoscaler.wake import next_wake
from ebb.catalog import Catalog, NodeOverhead
from ebb.model import ComputeEnvironment
from sim.cloud import Instance


@dataclass(frozen=True, slots=True)
class Order:
    """Launch `count` instances of one type in one zone for an environment."""

    environment: str
    instance_type: str
    count: int
    zone: str


@dataclass
class Decision:
    launches: list[Order] = field(default_factory=list)
    cordon: list[tuple[Instance, str]] = field(default_factory=list)
    terminate: list[tuple[Instance, str]] = field(default_factory=list)
    due: float | None = None  # when the policy wants its next pass (None: on events only)


@dataclass(frozen=True)
class ClusterView:
    """What an autoscaler sees at one pass."""

    now: float
    pending: Sequence[PendingPod]  # admitted pods no node could take
    instances: Collection[Instance]  # every live instance, booting or a node, launch order
    unavailable: Collection[Unavailable]  # offerings EC2 recently refused
    vcpus: Mapping[str, int]  # environment → vCPUs of its live instances
    gpus: Mapping[str, int]
    # Subsets of `instances` the engine keeps up to date, so that a policy need not scan
    # every instance at each pass (None: `booting()` and `idle()` derive them).
    booting_instances: Collection[Instance] | None = None  # not ready yet, in launch order
    idle_nodes: Collection[Instance] | None = None  # ready without batch pods, any order
    # The batch window is over: this pass plans (between batches it only scales down).
    plans: bool = True

    def booting(self) -> Collection[Instance]:
        """The instances still booting, in launch order."""
        if self.booting_instances is not None:
            return self.booting_instances
        return [i for i in self.instances if not i.ready]

    def idle(self) -> list[Instance]:
        """The nodes (ready instances) without batch pods, in launch order."""
        if self.idle_nodes is not None:
            return sorted(self.idle_nodes, key=lambda i: i.number)
        return [i for i in self.instances if i.ready and i.batch_pods == 0]


class CapacityPolicy(abc.ABC):
    name: str = ""
    description: str = ""
    # Multi-node jobs are gangs, as Ebb runs them: admitted, placed and retried all or
    # nothing. False: as plain Indexed Jobs, pod by pod (a baseline without gangs).
    gang_aware: bool = True

    def __init__(
        self,
        environments: Mapping[str, ComputeEnvironment],
        catalog: Catalog,
        overhead: NodeOverhead,
        subnet_zones: Mapping[str, str],
        settings: AutoscalerSettings | None = None,
    ) -> None:
        self.environments = environments
        self.catalog = catalog
        self.overhead = overhead
        self.subnet_zones = subnet_zones
        self.settings = settings or AutoscalerSettings()  # the daemon's defaults
        self._zone_turn = itertools.count()
        self._views: dict[frozenset[Unavailable], dict[str, Environment]] = {}

    @property
    def pod_slots(self) -> int:
        """Batch pods one node takes."""
        return self.overhead.pod_slots

    @property
    def resync_seconds(self) -> float:
        """How often it re-plans while pods wait: as the daemon's loop sleeps while
        nothing is due."""
        return next_wake(
            resync_seconds=self.settings.resync_seconds, batch_closes_in=None, scale_down_in=None
        )

    @abc.abstractmethod
    def decide(self, view: ClusterView) -> Decision: ...

    @abc.abstractmethod
    def idle_delay(self, instance: Instance) -> float:
        """Seconds an idle node stays before the policy may remove it."""

    def views(self, view: ClusterView) -> dict[str, Environment]:
        """Each environment as the planner sees it (its offerings, validity, budget).
        `environment()` is pure and its offerings depend only on the spec and the refused
        offerings, so it runs once per set of refusals; the vCPUs and GPUs it passes
        through are filled in per pass."""
        refused = frozenset(view.unavailable)
        base = self._views.get(refused)
        if base is None:
            if len(self._views) > 64:
                self._views.clear()
            base = self._views[refused] = {
                name: environment(
                    spec,
                    self.catalog,
                    self.overhead,
                    self.subnet_zones,
                    refused,
                    vcpus=0,
                    gpus=0,
                )
                for name, spec in self.environments.items()
            }
        return {
            name: dataclasses.replace(
                env, vcpus=view.vcpus.get(name, 0), gpus=view.gpus.get(name, 0)
            )
            for name, env in base.items()
        }

    def zone(self, zones: Sequence[str]) -> str:
        """One zone per launch, taking turns (as the daemon picks subnets)."""
        return zones[next(self._zone_turn) % len(zones)]


class EbbCapacity(CapacityPolicy):
    name = "ebb"
    description = (
        "Ebb's autoscaler: autoscaler.planner over each environment's offerings "
        "(allocation strategy as configured), autoscaler.scaledown (idle for the "
        "environment's scaleDownDelaySeconds, cordon, 5 s grace, terminate)"
    )
    # The nodes the last plan put pending pods on (not idle either, as in the daemon).
    _awaited: frozenset[str] = frozenset()

    def decide(self, view: ClusterView) -> Decision:
        out = Decision()
        if view.plans:
            room = self._room(view) if view.pending else []
            plan = plan_launches(self.views(view), view.pending, room)
            self._awaited = plan.awaited_nodes
            for launch in plan.launches:
                zones = launch.zones or tuple(dict.fromkeys(self.subnet_zones.values()))
                out.launches.append(
                    Order(launch.environment, launch.instance_type, launch.count, self.zone(zones))
                )
        self._scale_down(view, out)
        return out

    def _room(self, view: ClusterView) -> list[Room]:
        """The daemon's room (`autoscaler.room`): free room on nodes that take pods, and
        instances still booting. A node with room too small for the smallest pod waiting
        in CPU or in memory is not passed: the planner could put nothing there, and at
        thousands of nodes per pass that is most of the time of a pass."""
        cpu = min(p.requests.cpu_milli for p in view.pending)
        memory = min(p.requests.memory for p in view.pending)
        max_pods = self.overhead.max_pods
        nodes = [
            NodeRoom(
                i.id,
                i.environment,
                i.allocatable,
                i.allocatable - i.free,
                max_pods - i.slots,
                job_pods=i.batch_pods,
                exclusive=i.gang_pods > 0,
                zone=i.zone,
            )
            for i in view.instances
            if i.ready
            and i.draining is None
            and i.slots > 0
            and i.free_cpu >= cpu
            and i.free_memory >= memory
        ]
        booting = [Coming(i.environment, i.type, i.zone) for i in view.booting()]
        return room(nodes, booting, self.overhead)

    def _scale_down(self, view: ClusterView, out: Decision) -> None:
        """The daemon's scale-down (`autoscaler.scaledown`) over the nodes that may have
        something to decide: idle or draining (a busy node that is not draining has
        neither an action nor a due time)."""
        seen, idle_since, draining_since, by_name = [], {}, {}, {}
        for i in view.instances:
            if i.ready and (i.batch_pods == 0 or i.draining is not None):
                seen.append(
                    NodeSeen(
                        i.id,
                        i.environment,
                        i.type.vcpus,
                        i.price,
                        i.batch_pods,
                        i.id in self._awaited,
                        i.draining,
                    )
                )
                if i.idle_since is not None:
                    idle_since[i.id] = i.idle_since
                if i.draining_since is not None:
                    draining_since[i.id] = i.draining_since
                by_name[i.id] = i
        states = track_nodes(seen, idle_since, draining_since, view.now)
        s = self.settings
        actions = plan_scale_down(
            states,
            self.environments,
            view.vcpus,
            view.now,
            grace_seconds=s.drain_grace_seconds,
            orphan_delay_seconds=s.orphan_scale_down_delay_seconds,
        )
        for action in actions:
            instance = by_name[action.node]
            if action.kind == NodeActionKind.CORDON:
                out.cordon.append((instance, action.reason))
            elif action.kind == NodeActionKind.TERMINATE:
                out.terminate.append((instance, action.reason))
        # As the daemon: wake when the next idle node's delay is over, soon while draining;
        # and (no watch tells the simulator) when a node cordoned now may be terminated.
        due = [
            next_scale_down(
                states,
                self.environments,
                view.now,
                orphan_delay_seconds=s.orphan_scale_down_delay_seconds,
            )
        ]
        if out.cordon:
            due.append(view.now + s.drain_grace_seconds)
        out.due = min((d for d in due if d is not None), default=None)

    def idle_delay(self, instance: Instance) -> float:
        return idle_delay(
            self.environments, instance.environment, self.settings.orphan_scale_down_delay_seconds
        )
