"""The autoscaler daemon and EC2, in the simulation: instances launched, booting,
becoming nodes, interrupted and terminated, and the autoscaler's passes.

What decides is a `CapacityPolicy` (`sim.capacity`): Ebb's own planner, room and
scale-down (`EbbCapacity`), or a baseline. A pass runs as the daemon's loop does: when
pods kube-scheduler found no node for arrive, once the batch window
(`autoscaler.batch_window.BatchWindow`, the daemon's) closes; when a scale-down decision
is due; and every `resync_seconds` while pods wait. Between batches a pass only scales
down. A node's idle time counts from its last pod's end.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

from autoscaler.batch_window import BatchWindow
from autoscaler.environments import Unavailable
from autoscaler.planner import PendingPod
from sim.capacity import CapacityPolicy, ClusterView, Decision
from sim.cloud import Instance

if TYPE_CHECKING:
    from sim.engine import Simulation


class Autoscaler:
    def __init__(self, sim: Simulation, policy: CapacityPolicy) -> None:
        self.sim = sim
        self.policy = policy
        self.overhead = policy.overhead
        self.instances: dict[str, Instance] = {}  # live: booting or nodes
        self._booting: dict[Instance, None] = {}  # live, not ready yet (launch order)
        self._idle: dict[Instance, None] = {}  # ready without batch pods
        self._unavailable: dict[Unavailable, float] = {}  # → until
        self._vcpus: dict[str, int] = dict.fromkeys(sim.environments, 0)
        self._gpus: dict[str, int] = dict.fromkeys(sim.environments, 0)
        self._due = math.inf
        self.batch = BatchWindow(
            policy.settings.batch_idle_seconds, policy.settings.batch_max_seconds
        )
        self._numbers = itertools.count(1)

    def finish(self) -> None:
        for instance in list(self.instances.values()):
            self._terminate(instance, "end of simulation")

    def _launch(self, env_name: str, type_name: str, count: int, zone: str) -> None:
        sim = self.sim
        spec = sim.environments[env_name]
        t = sim.catalog.get(type_name)
        if t is None or count <= 0:
            return
        capacity = spec.capacity_type
        if sim.cloud.refuses(capacity):
            self._unavailable[Unavailable(type_name, zone, capacity)] = (
                sim.now + self.policy.settings.unavailable_offering_seconds
            )
            sim.recorder.refused()
            self.wanted(sim.now + 1.0)  # as the daemon: re-plan at once
            return
        allocatable = self.overhead.allocatable(t)
        usable = self.overhead.usable(t)
        for _ in range(count):
            instance = Instance(
                number=next(self._numbers),
                environment=env_name,
                instance_type=t,
                capacity_type=capacity,
                zone=zone,
                launched=sim.now,
                allocatable=allocatable,
                usable=usable,
                slots=self.policy.pod_slots,
            )
            self.instances[instance.id] = instance
            self._booting[instance] = None
            sim.placement.pods_on[instance.id] = {}
            self._vcpus[env_name] += t.vcpus
            self._gpus[env_name] += t.nvidia_gpus
            sim.recorder.launched(instance, len(self.instances))
            sim.push(sim.now + sim.cloud.boot_seconds(), self._ready, instance)
            after = sim.cloud.interruption_after(instance)
            if after is not None:
                notice = sim.now + max(after - sim.s.cloud.interruption_notice_seconds, 0.0)
                sim.push(notice, self._notice, instance)
                sim.push(sim.now + after, self._reclaim, instance)
        sim.progress()

    def _ready(self, instance: Instance) -> None:
        if instance.gone:
            return
        instance.register()
        instance.idle_since = self.sim.now
        del self._booting[instance]
        self._idle[instance] = None
        self.sim.placement.score_state(instance)
        self.sim.placement.node_changed(instance)
        self.wanted(self.sim.now + self.policy.idle_delay(instance))

    def _cordon(self, instance: Instance, reason: str) -> None:
        if instance.draining is None:
            instance.draining_since = self.sim.now
        instance.draining = reason
        self.sim.placement.node_changed(instance)

    def _notice(self, instance: Instance) -> None:
        """Spot's two-minute warning: the daemon cordons the node."""
        if not instance.gone:
            self._cordon(instance, "spot-interruption")
            self.wanted(self.sim.now)

    def _reclaim(self, instance: Instance) -> None:
        if instance.gone:
            return
        self.sim.recorder.interrupted(len(self.sim.placement.pods_on[instance.id]))
        self._terminate(instance, "spot-interruption")

    def _terminate(self, instance: Instance, reason: str) -> None:
        instance.gone = True
        sim = self.sim
        sim.placement.node_gone(instance)
        del self.instances[instance.id]
        self._booting.pop(instance, None)
        self._idle.pop(instance, None)
        self._vcpus[instance.environment] -= instance.type.vcpus
        self._gpus[instance.environment] -= instance.type.nvidia_gpus
        sim.recorder.terminated(instance, sim.now, reason)
        sim.progress()

    def unschedulable(self) -> None:
        """A pod was found to fit no node: batch arrivals as the daemon does (plan once
        none came for the idle window, or when the maximum window is over)."""
        self.batch = self.batch.arrived(self.sim.now)
        self.wanted(self.batch.closes_at())

    def pods_changed(self, node: Instance) -> None:
        """Pods were bound to the node or left it: it may have become idle, or busy."""
        if node.batch_pods:
            self._idle.pop(node, None)
        else:
            self._idle[node] = None
            self.wanted(self.sim.now + self.policy.idle_delay(node))

    def wanted(self, when: float | None) -> None:
        """A pass is wanted at `when` (None: none)."""
        if when is not None and when < self._due:
            self._due = when
            self.sim.push(when, self._pass, None)

    def _pass(self, _: object) -> None:
        now = self.sim.now
        if now != self._due:
            return  # moved
        self._due = math.inf
        for key in [k for k, until in self._unavailable.items() if until <= now]:
            del self._unavailable[key]
        plan = self.batch.ready(now)
        closes_at = self.batch.closes_at()
        if plan:
            self.batch = self.batch.closed()
        # Between batches the pass only scales down (as the daemon's does).
        pending = self._pending_pods() if plan else []
        view = ClusterView(
            now,
            pending,
            self.instances.values(),
            self._unavailable.keys(),
            self._vcpus,
            self._gpus,
            self._booting.keys(),
            self._idle.keys(),
            plans=plan,
        )
        decision = self.policy.decide(view)
        self._apply(decision)
        if decision.due is not None:
            self.wanted(decision.due)
        if not plan:
            self.wanted(closes_at)
        elif self.sim.placement.blocked_groups:
            self.wanted(now + self.policy.resync_seconds)

    def _pending_pods(self) -> list[PendingPod]:
        out = []
        for group in self.sim.placement.blocked_groups:
            queue = group.queue
            for pod in group.pods:
                if pod.pending is None:
                    pod.pending = PendingPod(
                        f"{pod.job.key}/{pod.index}/{pod.attempt}",
                        group.request,
                        group.environments,
                        queue.priority,
                        f"{pod.created:016.3f}",
                        # A node each; planned as a gang only by a gang-aware policy.
                        exclusive=group.gang > 0,
                        job=pod.job.key if self.policy.gang_aware else "",
                    )
                out.append(pod.pending)
        return out

    def _apply(self, decision: Decision) -> None:
        for order in decision.launches:
            self._launch(order.environment, order.instance_type, order.count, order.zone)
        for instance, reason in decision.cordon:
            self._cordon(instance, reason)
        for instance, reason in decision.terminate:
            if not instance.gone:
                self._terminate(instance, reason)
