"""The autoscaler's control loop: the thin I/O shell around the pure decisions.

Each pass (`reconcile`) is a list of steps that decide nothing themselves: they read
the caches and EC2, hand snapshots to the pure units and carry out what those return.

Where things are:
- pending pods, as the planner sees them: autoscaler/pending.py
- the batch window (when to plan): autoscaler/batch_window.py
- room in existing capacity, and launches in flight: autoscaler/room.py
- the capacity planner (what to launch): autoscaler/planner.py, over the offerings
  of autoscaler/environments.py
- the launch ledger (restart-safe launches): autoscaler/launch_ledger.py
- scale-down and garbage decisions: autoscaler/scaledown.py; carried out by
  autoscaler/node_actions.py
- EC2's notices (SQS): autoscaler/notices.py, parsed by autoscaler/interruptions.py
- the status document: autoscaler/status.py
- when the next pass runs: autoscaler/wake.py
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from autoscaler import metrics
from autoscaler.aws import Aws, AwsError, Instance
from autoscaler.batch_window import BatchWindow
from autoscaler.bootstrap import ClusterInfo
from autoscaler.ec2_view import Ec2View
from autoscaler.environments import environment
from autoscaler.events import EnvironmentEvents
from autoscaler.launch_intent import LaunchIntent, intent_from_raw
from autoscaler.launch_ledger import EnvironmentStatusStore, LaunchLedger
from autoscaler.node_actions import NodeActions, draining_reason
from autoscaler.notices import NoticeConsumer
from autoscaler.pending import pending_pods
from autoscaler.planner import Environment, PendingPod, Room, plan_launches, routed_pods
from autoscaler.room import Coming, NodeRoom, room
from autoscaler.scaledown import (
    LIVE_STATES,
    NodeSeen,
    next_scale_down,
    plan_scale_down,
    track_nodes,
)
from autoscaler.settings import AutoscalerSettings
from autoscaler.status import environment_status, unmanaged_status
from autoscaler.timestamps import rfc3339
from autoscaler.wake import next_wake
from ebb import kube
from ebb.catalog import Catalog
from ebb.conditions import from_raw as conditions_from_raw
from ebb.events import EventRecorder
from ebb.model import ComputeEnvironment, JobQueue, NodeInfo, PodInfo, compute_environment_from_raw
from ebb.resources import ZERO, Resources, sum_resources

log = structlog.get_logger("ebb.autoscaler")
FIELD_MANAGER = "ebb-autoscaler"
_START_UP_ERRORS: tuple[type[Exception], ...] = (AwsError, *kube.REQUEST_ERRORS)


@dataclass(frozen=True, slots=True)
class EnvironmentRecord:
    """A ComputeEnvironment as the autoscaler caches it: spec, and the launch intents
    its status holds."""

    spec: ComputeEnvironment
    intents: tuple[LaunchIntent, ...]


def environment_record(raw: dict[str, Any]) -> EnvironmentRecord:
    status = raw.get("status") or {}
    intents = tuple(intent_from_raw(i) for i in status.get("launches") or ())
    return EnvironmentRecord(compute_environment_from_raw(raw), intents)


class Controller:
    def __init__(
        self,
        settings: AutoscalerSettings,
        client: kube.KubeClient,
        aws: Aws,
        catalog: Catalog,
        *,
        nodes: kube.Reflector[NodeInfo],
        pods: kube.Reflector[PodInfo],
        environments: kube.Reflector[EnvironmentRecord],
        queues: kube.Reflector[JobQueue],
        cluster: ClusterInfo,
        leading: asyncio.Event | None = None,
    ) -> None:
        self.s = settings
        # Set while this replica may launch and terminate (always, without election).
        self._leading = leading
        self.client = client
        self.aws = aws
        self.catalog = catalog
        self.nodes = nodes
        self.pods = pods
        self.environments = environments
        self.queues = queues
        self.overhead = settings.node_overhead()
        self.ready = False
        self._wake = asyncio.Event()
        self.events = EventRecorder(client, FIELD_MANAGER)
        self._events = events = EnvironmentEvents(self.events, self._spec)
        self.ec2 = Ec2View(aws, settings.resync_seconds)
        self.ledger = LaunchLedger(
            settings,
            aws,
            self.ec2,
            EnvironmentStatusStore(client),
            events,
            catalog=lambda: self.catalog,
            cluster=cluster,
            overhead=self.overhead,
            poke=self.poke,
        )
        self.node_actions = NodeActions(
            client, aws, self.ec2, pods, events=events, settings=settings
        )
        self.notices = NoticeConsumer(
            settings.interruption_queue_url,
            aws,
            self.ec2,
            nodes,
            actions=self.node_actions,
            events=events,
            lead=self._lead,
            poke=self.poke,
        )
        self._batch = BatchWindow(settings.batch_idle_seconds, settings.batch_max_seconds)
        self._awaited_nodes: frozenset[str] = frozenset()  # the last plan put pods there
        self._blocked: Mapping[str, str] = {}  # the last plan: why environments could not launch
        self._status: dict[str, dict[str, Any]] = {}  # as last written, by environment
        self._published: set[str] = set()  # environments with gauges

    def poke(self, event: kube.Event[Any] | None = None) -> None:
        """Run a pass now; not for an event that changes nothing the pass reads (as
        the status this daemon just wrote coming back)."""
        if event is None or event.old != event.new:
            self._wake.set()

    def _spec(self, name: str) -> ComputeEnvironment | None:
        record = self.environments.store.get(name)
        return record.spec if record is not None else None

    def _specs(self) -> dict[str, ComputeEnvironment]:
        return {r.spec.name: r.spec for r in self.environments.store.values()}

    # --- the loop -------------------------------------------------------------------------

    async def _lead(self) -> None:
        """Wait until this replica leads; only the leader touches EC2 and nodes."""
        if self._leading is not None and not self._leading.is_set():
            await self._leading.wait()
            self.ec2.relist()  # take over from a fresh view of EC2
            self._status.clear()  # another leader wrote meanwhile: write it afresh

    def _load_ledger(self) -> None:
        self.ledger.load({r.spec.name: r.intents for r in self.environments.store.values()})

    async def run(self) -> None:
        for reflector in (self.nodes, self.pods, self.environments, self.queues):
            await reflector.wait_synced()
        self.ready = True  # caches synced: a follower serves its metrics and health too
        await self._lead()
        while True:
            try:
                await self.ec2.refresh(force=True)
                self._load_ledger()
                await self.ledger.resolve(self._specs())
                break
            except _START_UP_ERRORS as exc:
                log.warning("start-up failed; retrying", error=str(exc))
                await asyncio.sleep(2)
        log.info("autoscaler leading", instances=len(self.ec2.instances))
        while True:
            if self._leading is not None and not self._leading.is_set():
                await self._lead()
                # A new term: launches the last leader left unresolved are settled first.
                self._load_ledger()
            self._wake.clear()
            try:
                delay = await self.reconcile()
            except Exception:
                log.exception("reconcile failed")
                delay = 2.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def reconcile(self) -> float:
        """One pass; returns how long the loop may sleep if nothing happens."""
        now, mono = time.time(), time.monotonic()
        # 1. EC2's view of this cluster's instances (listed again when due).
        await self.ec2.refresh()
        # 2. Launches of unknown outcome are settled through their client tokens.
        if self.ledger.unresolved():
            await self.ledger.resolve(self._specs())
        self.ec2.account(now)
        # 3. The snapshot, read from the caches with no await in between (the watches
        #    apply their events while a pass awaits: a pod read as pending must not also
        #    fill a node's room): our nodes, live instances, the environments that launch
        #    (not UNMANAGED ones: those are their owners' nodes), each as the planner sees
        #    it, the pending pods (counted every pass, so that status and metrics never
        #    show pods that are gone) and the room they may take.
        specs = {name: spec for name, spec in self._specs().items() if spec.managed}
        zones = await self.ec2.zones({s for spec in specs.values() for s in spec.subnets})
        ours = self.ec2.our_nodes(self.nodes.store.values())
        live = {i.instance_id: i for i in self.ec2.instances.values() if i.state in LIVE_STATES}
        self.ledger.forget_unavailable(mono)
        views = self._views(specs, live, zones)
        queues = {q.name: q for q in self.queues.store.values()}
        pending = pending_pods(self.pods.store.values(), queues)
        rooms = self._room(ours, live, zones)
        # 4. The batch window the pending pods arrived in.
        self._batch = self._batch.observe((p.key for p in pending), mono)
        pending_by_env = routed_pods(pending)
        if not pending:
            self._blocked = {}  # nothing waits: no plan is made, the last one no longer holds
        # 5. Once the window is over: a plan, and its launches (through the ledger).
        if self._batch.ready(mono):
            self._batch = self._batch.closed()
            pending_by_env = await self._plan(views, pending, rooms, specs)
        # 6. Scale-down: cordon, uncordon, terminate.
        scale_down_at = await self._scale_down(ours, specs, live, now)
        # 7. Garbage: instances that never became nodes, nodes whose instance is gone.
        await self.node_actions.collect_garbage(ours, now)
        # 8. Status, Events and metrics.
        await self._publish(views, ours, live, pending_by_env, now)
        await self._publish_unmanaged(now)
        # 9. Sleep until the window closes or a scale-down decision is due.
        closes_at = self._batch.closes_at()
        return next_wake(
            resync_seconds=self.s.resync_seconds,
            batch_closes_in=None if closes_at is None else closes_at - mono,
            scale_down_in=None if scale_down_at is None else scale_down_at - now,
        )

    # --- the steps ------------------------------------------------------------------------

    def _views(
        self,
        specs: Mapping[str, ComputeEnvironment],
        live: Mapping[str, Instance],
        zones: Mapping[str, str],
    ) -> dict[str, Environment]:
        in_flight = self.ledger.in_flight(zones)
        views = {}
        for name, spec in specs.items():
            mine = [
                self.catalog.get(i.instance_type) for i in live.values() if i.environment == name
            ]
            mine += [c.instance_type for c in in_flight if c.environment == name]
            types = [t for t in mine if t is not None]
            views[name] = environment(
                spec,
                self.catalog,
                self.overhead,
                zones,
                self.ledger.unavailable.keys(),
                vcpus=sum(t.vcpus for t in types),
                gpus=sum(t.nvidia_gpus for t in types),
            )
        return views

    async def _plan(
        self,
        views: Mapping[str, Environment],
        pending: Sequence[PendingPod],
        rooms: Sequence[Room],
        specs: Mapping[str, ComputeEnvironment],
    ) -> dict[str, int]:
        """Plan for the pending pods and launch; returns the pods routed to each
        environment (with those later environments must take)."""
        started = time.perf_counter()
        plan = plan_launches(views, pending, rooms)
        metrics.PLANNER_SECONDS.observe(time.perf_counter() - started)
        self._awaited_nodes = plan.awaited_nodes
        self._blocked = plan.blocked
        if plan.launches:
            log.info(
                "capacity plan",
                pods=len(pending),
                on_existing=plan.on_existing,
                # The room it saw: a launch beside empty room must be explainable.
                room=sorted(
                    f"{r.environment}/{r.zone or '?'}/{r.node or 'coming'}"
                    + ("/empty" if r.empty else "")
                    for r in rooms
                )[:20],
                waiting=len(plan.waiting),
                launches=[
                    f"{x.count}x{x.instance_type}@{x.environment}"
                    + (f" for {x.detail}" if x.detail else "")
                    for x in plan.launches
                ],
            )
            await self.ledger.launch_all(plan.launches, specs)
        elif plan.waiting:
            log.debug("pods waiting", reasons=sorted(set(plan.waiting.values()))[:5])
        return dict(plan.pending)

    def _room(
        self,
        ours: Mapping[str, NodeInfo],
        live: Mapping[str, Instance],
        subnet_zones: Mapping[str, str],
    ) -> list[Room]:
        nodes = []
        for iid, node in ours.items():
            if (
                iid not in live
                or node.unschedulable
                or node.draining
                or not node.compute_environment
            ):
                continue
            active = [p for p in self.pods.store.by_index("node", node.name) if p.active]
            used = sum_resources(p.requests for p in active)
            nodes.append(
                NodeRoom(
                    node.name,
                    node.compute_environment,
                    node.allocatable,
                    used,
                    len(active),
                    job_pods=sum(1 for p in active if p.job_uid),
                    exclusive=any(p.gang_size is not None for p in active),
                    zone=node.zone or live[iid].zone,
                )
            )
        booting = [
            Coming(i.environment, self.catalog.get(i.instance_type), i.zone)
            for iid, i in live.items()
            if iid not in ours
        ]
        return room(nodes, [*booting, *self.ledger.in_flight(subnet_zones)], self.overhead)

    async def _scale_down(
        self,
        ours: Mapping[str, NodeInfo],
        specs: Mapping[str, ComputeEnvironment],
        live: Mapping[str, Instance],
        now: float,
    ) -> float | None:
        """Cordon, uncordon and terminate; returns when the next decision is due."""
        memory = self.node_actions.memory
        seen = []
        by_name: dict[str, tuple[str, NodeInfo]] = {}
        for iid, node in ours.items():
            if iid not in live or not node.compute_environment:
                continue
            t = self.catalog.get(node.instance_type or live[iid].instance_type)
            batch = sum(
                1 for p in self.pods.store.by_index("node", node.name) if p.active and p.queue
            )
            seen.append(
                NodeSeen(
                    node.name,
                    node.compute_environment,
                    t.vcpus if t else 0,
                    t.price(live[iid].capacity_type) if t else 0.0,
                    batch,
                    node.name in self._awaited_nodes,
                    draining_reason(node) or memory.cordoned.get(node.name),
                )
            )
            by_name[node.name] = (iid, node)
        states = track_nodes(seen, memory.idle_since, memory.draining_since, now)
        memory.remember(states)
        vcpus: dict[str, int] = {}
        for i in live.values():
            t = self.catalog.get(i.instance_type)
            vcpus[i.environment] = vcpus.get(i.environment, 0) + (t.vcpus if t else 0)
        actions = plan_scale_down(
            states,
            specs,
            vcpus,
            now,
            grace_seconds=self.s.drain_grace_seconds,
            orphan_delay_seconds=self.s.orphan_scale_down_delay_seconds,
        )
        for action in actions:
            await self.node_actions.apply(action, *by_name[action.node])
        return next_scale_down(
            states, specs, now, orphan_delay_seconds=self.s.orphan_scale_down_delay_seconds
        )

    async def _publish(
        self,
        views: Mapping[str, Environment],
        ours: Mapping[str, NodeInfo],
        live: Mapping[str, Instance],
        pending: Mapping[str, int],
        now: float,
    ) -> None:
        self._count_instances(live)
        for gone in self._published - views.keys():  # deleted environments
            for gauge in metrics.PER_ENVIRONMENT:
                gauge.remove(gone)
            self._published.discard(gone)
            self._status.pop(gone, None)
        for name, view in views.items():
            mine = [i for i in live.values() if i.environment == name]
            nodes = [ours[i.instance_id] for i in mine if i.instance_id in ours]
            written = self._status.get(name)
            status = environment_status(
                view,
                self.catalog,
                node_types=[n.instance_type for n in nodes],
                pending_pods=pending.get(name, 0),
                unavailable=self.ledger.unavailable,
                launch_failure=self.ledger.errors.get(name),
                blocked=self._blocked.get(name),
                previous=conditions_from_raw(written) if written else view.spec.conditions,
                now=rfc3339(now),
            )
            metrics.DESIRED_VCPUS.labels(name).set(view.vcpus)
            metrics.MAX_VCPUS.labels(name).set(view.spec.max_vcpus)
            metrics.MIN_VCPUS.labels(name).set(view.spec.min_vcpus)
            metrics.INVALID.labels(name).set(1 if view.problem else 0)
            self._resource_metrics(name, mine, nodes)
            metrics.NODES.labels(name).set(len(nodes))
            metrics.PENDING_PODS.labels(name).set(status["pendingPods"])
            self._published.add(name)
            if written == status:
                continue
            old = written or {}
            if not await self._write_status(name, status):
                continue
            self._status[name] = status
            if old.get("status") != status["status"] and view.problem:
                self._events.record(view.spec, "Invalid", view.problem, warning=True)

    async def _publish_unmanaged(self, now: float) -> None:
        """UNMANAGED environments get their Ready condition (nothing else: Ebb launches
        nothing for them)."""
        specs = self._specs()
        for gone in self._status.keys() - specs.keys():  # deleted (and maybe made anew)
            del self._status[gone]
        for name, spec in specs.items():
            if spec.managed:
                continue
            written = self._status.get(name)
            previous = conditions_from_raw(written) if written else spec.conditions
            status = unmanaged_status(spec, previous, rfc3339(now))
            if written != status and await self._write_status(name, status):
                self._status[name] = status

    async def _write_status(self, name: str, status: dict[str, Any]) -> bool:
        try:
            await self.client.patch(
                kube.COMPUTE_ENVIRONMENTS, name, {"status": status}, subresource="status"
            )
        except kube.ApiError as exc:
            log.warning("status update failed", compute_environment=name, error=str(exc))
            return False
        return True

    def _resource_metrics(
        self, name: str, instances: Sequence[Instance], nodes: Sequence[NodeInfo]
    ) -> None:
        """Requested vs provisioned, per resource, and what the instances cost."""
        provisioned = ZERO
        for node in nodes:
            t = self.catalog.get(node.instance_type or "")
            if t is not None:
                provisioned = provisioned + Resources(
                    t.vcpus * 1000, t.memory_mib * 2**20, t.nvidia_gpus
                )
        requested = sum_resources(
            p.requests
            for node in nodes
            for p in self.pods.store.by_index("node", node.name)
            if p.active and p.queue
        )
        metrics.PROVISIONED_VCPUS.labels(name).set(provisioned.vcpus)
        metrics.PROVISIONED_MEMORY.labels(name).set(provisioned.memory)
        metrics.PROVISIONED_GPUS.labels(name).set(provisioned.gpu)
        metrics.REQUESTED_VCPUS.labels(name).set(requested.vcpus)
        metrics.REQUESTED_MEMORY.labels(name).set(requested.memory)
        metrics.REQUESTED_GPUS.labels(name).set(requested.gpu)
        cost = 0.0
        for i in instances:
            t = self.catalog.get(i.instance_type)
            cost += t.price(i.capacity_type) if t is not None else 0.0
        metrics.COST.labels(name).set(cost)

    def _count_instances(self, live: Mapping[str, Instance]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for i in live.values():
            counts[(i.instance_type, i.capacity_type)] = (
                counts.get((i.instance_type, i.capacity_type), 0) + 1
            )
        metrics.INSTANCES.clear()
        for (instance_type, capacity_type), n in counts.items():
            metrics.INSTANCES.labels(instance_type, capacity_type).set(n)

    # --- catalog refresh --------------------------------------------------------------------

    async def refresh_catalog(self) -> None:
        """Fresher specs and prices from EC2 and the Price List API when they can be
        reached; the shipped snapshot (or the last refresh) stays in use when not."""
        while True:
            try:
                specs = await asyncio.to_thread(self.aws.instance_type_specs)
                on_demand = await asyncio.to_thread(self.aws.on_demand_prices, self.s.region)
                used = sorted(
                    {
                        t.name
                        for r in self.environments.store.values()
                        for t in self.catalog.resolve(r.spec.instance_types).types
                    }
                )
                spot = await asyncio.to_thread(self.aws.spot_prices, used)
                self.catalog = self.catalog.updated(
                    specs=specs, on_demand_prices=on_demand, spot_prices=spot
                )
                log.info(
                    "catalog refreshed",
                    types=len(self.catalog),
                    on_demand_prices=len(on_demand),
                    spot_prices=len(spot),
                )
            except AwsError as exc:
                log.warning("catalog refresh failed; keeping the current one", error=str(exc))
            await asyncio.sleep(self.s.catalog_refresh_seconds)
