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
from autoscaler.scaledown import NodeActionKind, NodeState, next_scale_down, plan_scale_down
from autoscaler.settings import AutoscalerSettings
from autoscaler.wake import next_wake
from ebb.catalog import Catalog, NodeOverhead
from ebb.model import ComputeEnvironment
from sim.cloud import Instance

# The autoscaler daemon's defaults, read from its settings type.
_DAEMON = AutoscalerSettings()
DRAIN_GRACE_SECONDS = _DAEMON.drain_grace_seconds
ORPHAN_DELAY_SECONDS = _DAEMON.orphan_scale_down_delay_seconds
# The daemon's loop sleeps no longer than this while nothing is due.
RESYNC_SECONDS = next_wake(
    resync_seconds=_DAEMON.resync_seconds, batch_closes_in=None, scale_down_in=None
)


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
    resync_seconds = RESYNC_SECONDS  # how often it re-plans while pods wait

    def __init__(
        self,
        environments: Mapping[str, ComputeEnvironment],
        catalog: Catalog,
        overhead: NodeOverhead,
        subnet_zones: Mapping[str, str],
    ) -> None:
        self.environments = environments
        self.catalog = catalog
        self.overhead = overhead
        self.subnet_zones = subnet_zones
        self._zone_turn = itertools.count()
        self._views: dict[frozenset[Unavailable], dict[str, Environment]] = {}

    @property
    def pod_slots(self) -> int:
        """Batch pods one node takes."""
        return self.overhead.pod_slots

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

    def decide(self, view: ClusterView) -> Decision:
        out = Decision()
        views = self.views(view)
        plan = plan_launches(views, view.pending, self._room(view))
        for launch in plan.launches:
            zones = launch.zones or tuple(dict.fromkeys(self.subnet_zones.values()))
            out.launches.append(
                Order(launch.environment, launch.instance_type, launch.count, self.zone(zones))
            )
        self._scale_down(view, out)
        return out

    def _room(self, view: ClusterView) -> list[Room]:
        """Free room on nodes and instances still booting, for the pods waiting. Room
        too small for the smallest of them in CPU or in memory is left out: the planner
        could put nothing there."""
        if not view.pending:
            return []
        cpu = min(p.requests.cpu_milli for p in view.pending)
        memory = min(p.requests.memory for p in view.pending)
        room = []
        usable = {}
        for i in view.instances:
            if not i.ready:
                t = i.type.name
                if t not in usable:
                    usable[t] = self.overhead.usable(i.type)
                room.append(Room(i.environment, usable[t], self.pod_slots))
            elif (
                i.draining is None and i.slots > 0 and i.free_cpu >= cpu and i.free_memory >= memory
            ):
                room.append(Room(i.environment, i.free, i.slots))
        return room

    def _scale_down(self, view: ClusterView, out: Decision) -> None:
        states = []
        by_name = {}
        for i in view.instances:
            if i.ready and (i.batch_pods == 0 or i.draining is not None):
                states.append(
                    NodeState(
                        i.id,
                        i.environment,
                        i.type.vcpus,
                        i.price,
                        i.batch_pods,
                        i.idle_since if i.batch_pods == 0 else None,
                        i.draining,
                        i.draining_since,
                    )
                )
                by_name[i.id] = i
        actions = plan_scale_down(
            states,
            self.environments,
            view.vcpus,
            view.now,
            grace_seconds=DRAIN_GRACE_SECONDS,
            orphan_delay_seconds=ORPHAN_DELAY_SECONDS,
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
                states, self.environments, view.now, orphan_delay_seconds=ORPHAN_DELAY_SECONDS
            )
        ]
        if out.cordon:
            due.append(view.now + DRAIN_GRACE_SECONDS)
        out.due = min((d for d in due if d is not None), default=None)

    def idle_delay(self, instance: Instance) -> float:
        spec = self.environments.get(instance.environment)
        return float(spec.scale_down_delay_seconds) if spec else ORPHAN_DELAY_SECONDS
