"""The autoscaler's control loop: the thin I/O shell around the pure planner.

Each pass reads the caches (nodes, pods, compute environments, queues) and EC2's view
of this cluster's instances, asks the planner what to launch and the scale-down code
what to cordon or terminate, does it, and publishes status, Events and metrics.

Restart safety: every launch is first written down as an intent (its client token,
type, count and subnet) in the compute environment's status, then sent to EC2 with that
token, then crossed out. A daemon killed in between finds the intent on start: if EC2
already has instances tagged with the token they are simply counted, else the same
request is sent again with the same token, which EC2 answers without launching twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError

from autoscaler import metrics
from autoscaler.aws import NOTICE_WAIT_SECONDS, Aws, AwsError, Instance, LaunchRequest
from autoscaler.bootstrap import ClusterInfo, image_parameter, node_labels, user_data
from autoscaler.environments import Unavailable, environment
from autoscaler.interruptions import (
    GOING_STATES,
    SPOT_INTERRUPTION,
    STATE_CHANGE,
    NoticeError,
    parse_notice,
)
from autoscaler.planner import (
    Environment,
    Launch,
    PendingPod,
    Room,
    plan_launches,
    routed_pods,
)
from autoscaler.scaledown import (
    CORDON,
    IDLE,
    INSTANCE_GONE,
    LIVE_STATES,
    REGISTRATION_TIMEOUT,
    TERMINATE,
    UNCORDON,
    InstanceState,
    NodeRecord,
    NodeState,
    plan_garbage,
    plan_scale_down,
)
from autoscaler.scaledown import SPOT_INTERRUPTION as DRAIN_SPOT_INTERRUPTION
from autoscaler.settings import AutoscalerSettings
from ebb import keys, kube
from ebb.catalog import Catalog, InstanceType
from ebb.events import EventRecorder, ObjectRef
from ebb.model import (
    ComputeEnvironment,
    JobQueue,
    NodeInfo,
    PodInfo,
    compute_environment_from_raw,
)
from ebb.nodeloss import end_lost_pod, lost_message
from ebb.resources import ZERO, Resources, sum_resources

log = structlog.get_logger("ebb.autoscaler")
FIELD_MANAGER = "ebb-autoscaler"
_LAUNCH_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class EnvironmentRecord:
    """A ComputeEnvironment as the autoscaler caches it: spec, and the launch intents
    its status holds."""

    spec: ComputeEnvironment
    intents: tuple[Mapping[str, Any], ...]


def environment_record(raw: dict[str, Any]) -> EnvironmentRecord:
    status = raw.get("status") or {}
    return EnvironmentRecord(compute_environment_from_raw(raw), tuple(status.get("launches") or ()))


@dataclass(slots=True)
class _Memory:
    """What the daemon remembers between passes. Losing it (a restart) only delays
    decisions, never makes a wrong one."""

    instances: dict[str, Instance] = field(default_factory=dict)
    listed_at: float = -1e18
    unavailable: dict[Unavailable, float] = field(default_factory=dict)  # -> expiry
    idle_since: dict[str, float] = field(default_factory=dict)
    draining_since: dict[str, float] = field(default_factory=dict)
    cordoned: dict[str, str] = field(default_factory=dict)  # until the watch shows the taint
    seen_pending: set[str] = field(default_factory=set)
    batch_start: float | None = None
    batch_last: float = 0.0
    accounted_at: float | None = None
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: set[str] = field(default_factory=set)  # environments with gauges
    intents: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    launch_backoff: dict[str, float] = field(default_factory=dict)  # environment -> until
    launch_errors: dict[str, str] = field(default_factory=dict)  # environment -> last failure
    awaited_nodes: frozenset[str] = frozenset()  # the last plan put pending pods there
    zone_turn: itertools.count[int] = field(default_factory=itertools.count)


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
        self.cluster = cluster
        self.overhead = settings.node_overhead()
        self.ready = False
        self._wake = asyncio.Event()
        self._m = _Memory()
        self.events = EventRecorder(client, FIELD_MANAGER)

    def poke(self, event: kube.Event[Any] | None = None) -> None:
        """Run a pass now; not for an event that changes nothing the pass reads (as
        the status this daemon just wrote coming back)."""
        if event is None or event.old != event.new:
            self._wake.set()

    # --- the loop -------------------------------------------------------------------------

    async def _lead(self) -> None:
        """Wait until this replica leads; only the leader touches EC2 and nodes."""
        if self._leading is not None and not self._leading.is_set():
            await self._leading.wait()
            self._m.listed_at = -1e18  # take over from a fresh view of EC2
            self._m.status.clear()  # another leader wrote meanwhile: write it afresh

    async def run(self) -> None:
        for reflector in (self.nodes, self.pods, self.environments, self.queues):
            await reflector.wait_synced()
        self.ready = True  # caches synced: a follower serves its metrics and health too
        await self._lead()
        while True:
            try:
                await self._refresh_instances(force=True)
                self._m.intents = {
                    r.spec.name: list(r.intents) for r in self.environments.store.values()
                }
                await self._resolve_intents()
                break
            except (AwsError, kube.ApiError, OSError) as exc:
                log.warning("start-up failed; retrying", error=str(exc))
                await asyncio.sleep(2)
        log.info("autoscaler leading", instances=len(self._m.instances))
        while True:
            if self._leading is not None and not self._leading.is_set():
                await self._lead()
                # A new term: launches the last leader left unresolved are settled first.
                self._m.intents = {
                    r.spec.name: list(r.intents) for r in self.environments.store.values()
                }
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
        await self._refresh_instances()
        if any(self._m.intents.values()):
            await self._resolve_intents()
        self._account(now)
        ours = self._our_nodes()
        live = {i.instance_id: i for i in self._m.instances.values() if i.state in LIVE_STATES}
        # UNMANAGED environments are their owners' nodes: nothing to launch or check.
        specs = {r.spec.name: r.spec for r in self.environments.store.values() if r.spec.managed}
        for key in [k for k, until in self._m.unavailable.items() if until <= mono]:
            del self._m.unavailable[key]
        views = await self._views(specs, live)
        pending = self._pending_pods()
        sleep = min(self.s.resync_seconds, 5.0)
        plan_ready, wait = self._batch_ready(pending, mono)
        # Counted every pass, so that status and metrics never show pods that are gone;
        # a plan then adds the pods that later environments must take.
        pending_by_env = routed_pods(pending)
        if plan_ready:
            started = time.perf_counter()
            plan = plan_launches(views, pending, self._room(ours, live))
            metrics.PLANNER_SECONDS.observe(time.perf_counter() - started)
            pending_by_env = dict(plan.pending)
            self._m.awaited_nodes = plan.awaited_nodes
            if plan.launches:
                log.info(
                    "capacity plan",
                    pods=len(pending),
                    on_existing=plan.on_existing,
                    waiting=len(plan.waiting),
                    launches=[
                        f"{x.count}x{x.instance_type}@{x.environment}" for x in plan.launches
                    ],
                )
                await self._launch_all(plan.launches, specs)
            elif plan.waiting:
                log.debug("pods waiting", reasons=sorted(set(plan.waiting.values()))[:5])
        else:
            sleep = min(sleep, wait)
        due = await self._scale_down(ours, specs, live, now)
        await self._collect_garbage(ours, now)
        await self._publish(views, ours, live, pending_by_env)
        return max(0.2, min(sleep, due))

    # --- EC2 view -------------------------------------------------------------------------

    async def _refresh_instances(self, *, force: bool = False) -> None:
        mono = time.monotonic()
        if not force and mono - self._m.listed_at < self.s.resync_seconds:
            return
        listed = await asyncio.to_thread(self.aws.instances)
        self._m.instances = {i.instance_id: i for i in listed}
        self._m.listed_at = mono

    def _account(self, now: float) -> None:
        """Instance time by type and capacity type (instance-hours / 3600)."""
        last = self._m.accounted_at
        self._m.accounted_at = now
        if last is None:
            return
        for i in self._m.instances.values():
            if i.state in ("pending", "running"):
                seconds = now - max(last, i.launched)
                if seconds > 0:
                    metrics.INSTANCE_SECONDS.labels(i.instance_type, i.capacity_type).inc(seconds)

    def _our_nodes(self) -> dict[str, NodeInfo]:
        """Nodes of instances this cluster launched, by instance id."""
        out = {}
        for node in self.nodes.store.values():
            iid = node.instance_id
            if iid is not None and iid in self._m.instances and node.compute_environment:
                out[iid] = node
        return out

    async def _zones(self, subnets: Iterable[str]) -> dict[str, str]:
        """Subnet -> zone (EC2 is asked only about subnets not seen before)."""
        return await asyncio.to_thread(self.aws.subnet_zones, list(subnets))

    async def _views(
        self, specs: Mapping[str, ComputeEnvironment], live: Mapping[str, Instance]
    ) -> dict[str, Environment]:
        subnets = {s for spec in specs.values() for s in spec.subnets}
        zones = await self._zones(subnets)
        in_flight = self._in_flight()
        views = {}
        for name, spec in specs.items():
            mine = [
                self.catalog.get(i.instance_type) for i in live.values() if i.environment == name
            ]
            types = [t for t in mine if t is not None]
            types += [t for env, t in in_flight if env == name]
            views[name] = environment(
                spec,
                self.catalog,
                self.overhead,
                zones,
                self._m.unavailable.keys(),
                vcpus=sum(t.vcpus for t in types),
                gpus=sum(t.nvidia_gpus for t in types),
                daemonset_pods=self.s.daemonset_pods,
            )
        return views

    # --- pending pods and room -----------------------------------------------------------

    def _pending_pods(self) -> list[PendingPod]:
        queues = {q.name: q for q in self.queues.store.values()}
        out = []
        for pod in self.pods.store.values():
            if not (
                pod.queue
                and pod.node_name is None
                and pod.phase == "Pending"
                and pod.unschedulable
                and pod.tolerates_batch_taint
                and not pod.scheduling_gated
                and not pod.terminating
            ):
                continue
            queue = queues.get(pod.queue)
            envs = queue.compute_environments if queue is not None else ()
            priority = queue.priority if queue is not None else 0
            out.append(PendingPod(pod.key, pod.requests, envs, priority, pod.created))
        return out

    def _batch_ready(self, pending: list[PendingPod], mono: float) -> tuple[bool, float]:
        """Batch arrivals: plan once no new pod came for the idle window, or when the
        maximum window since the first one is over."""
        keys_now = {p.key for p in pending}
        new = keys_now - self._m.seen_pending
        self._m.seen_pending = keys_now
        if new:
            if self._m.batch_start is None:
                self._m.batch_start = mono
            self._m.batch_last = mono
        if self._m.batch_start is None:
            return True, 0.0
        idle_left = self._m.batch_last + self.s.batch_idle_seconds - mono
        max_left = self._m.batch_start + self.s.batch_max_seconds - mono
        if idle_left <= 0 or max_left <= 0:
            self._m.batch_start = None
            return True, 0.0
        return False, max(0.05, min(idle_left, max_left))

    def _in_flight(self) -> list[tuple[str, InstanceType]]:
        """(environment, type) of every instance of a launch whose outcome is not known
        yet (written down, sent, no answer, not seen in EC2). They count as capacity on
        its way, so that passes while EC2 is slow to answer neither launch again for the
        same pods nor go past maxvCpus."""
        seen = {i.launch_token for i in self._m.instances.values()}
        out = []
        for env, intents in self._m.intents.items():
            for intent in intents:
                t = self.catalog.get(str(intent.get("instanceType", "")))
                if t is not None and intent.get("token") not in seen:
                    out += [(env, t)] * int(intent.get("count") or 0)
        return out

    def _room(self, ours: Mapping[str, NodeInfo], live: Mapping[str, Instance]) -> list[Room]:
        """Free room on nodes; then whole instances still booting, and those of launches
        not answered yet."""
        room = []
        for iid, node in ours.items():
            if (
                iid not in live
                or node.unschedulable
                or node.draining
                or not node.compute_environment
            ):
                continue
            on_node = self.pods.store.by_index("node", node.name)
            used = sum_resources(p.requests for p in on_node if p.active)
            slots = self.s.max_pods - sum(1 for p in on_node if p.active)
            room.append(Room(node.compute_environment, node.allocatable - used, slots, node.name))
        booting = [
            (i.environment, self.catalog.get(i.instance_type))
            for iid, i in live.items()
            if iid not in ours
        ]
        slots = self.s.max_pods - self.s.daemonset_pods
        room += [
            Room(env, self.overhead.usable(t), slots)
            for env, t in [*booting, *self._in_flight()]
            if t is not None and env
        ]
        return room

    # --- launching ------------------------------------------------------------------------

    async def _launch_all(
        self, launches: Iterable[Launch], specs: Mapping[str, ComputeEnvironment]
    ) -> None:
        by_env: dict[str, list[Mapping[str, Any]]] = {}
        zones = await self._zones({s for spec in specs.values() for s in spec.subnets})
        mono = time.monotonic()
        for launch in launches:
            if self._m.launch_backoff.get(launch.environment, 0.0) > mono:
                continue  # its last launch failed for a reason retrying will not fix soon
            spec = specs[launch.environment]
            subnets = [s for s in spec.subnets if zones.get(s) in launch.zones]
            subnet = subnets[next(self._m.zone_turn) % len(subnets)]
            intent = {
                "token": uuid.uuid4().hex,
                "instanceType": launch.instance_type,
                "count": launch.count,
                "subnet": subnet,
                "reason": launch.reason,
                "requestedAt": _iso(time.time()),
            }
            by_env.setdefault(launch.environment, []).append(intent)
        await asyncio.gather(*(self._launch_env(specs[e], items) for e, items in by_env.items()))

    async def _launch_env(self, spec: ComputeEnvironment, intents: list[Mapping[str, Any]]) -> None:
        before = self._m.intents.get(spec.name, [])
        await self._write_intents(spec.name, before + intents)
        results = await asyncio.gather(*(self._send(spec, intent) for intent in intents))
        left = [intent for intent, done in zip(intents, results, strict=True) if not done]
        await self._write_intents(spec.name, before + left, sent=True)

    async def _resolve_intents(self) -> None:
        """Launches whose outcome is unknown: sent by a daemon that then stopped (see the
        module's doc), or cut off by a network error. Those EC2 has instances for are
        crossed out; the others are sent again with the same client token."""
        by_token: dict[str, list[Instance]] = {}
        for instance in self._m.instances.values():
            by_token.setdefault(instance.launch_token, []).append(instance)
        for name, intents in list(self._m.intents.items()):
            record = self.environments.store.get(name)
            if not intents or record is None:
                continue
            left: list[Mapping[str, Any]] = []
            for intent in intents:
                found = by_token.get(str(intent.get("token")))
                if found:
                    await self._launched(record.spec, intent, found, "found by its client token")
                    continue
                log.info("resending a launch of unknown outcome", launch=intent.get("token"))
                if not await self._send(record.spec, intent):
                    left.append(intent)
            await self._write_intents(name, left, sent=True)

    async def _send(self, spec: ComputeEnvironment, intent: Mapping[str, Any]) -> bool:
        """Send one launch; True once EC2 has answered (launched or refused), False when
        the outcome is unknown (the intent then stays, to be resolved)."""
        t = self.catalog.get(str(intent["instanceType"]))
        subnet = str(intent["subnet"])
        zone = (await self._zones([subnet])).get(subnet, "")
        if t is None:
            return True
        try:
            request = await asyncio.to_thread(self._request, spec, t, intent)
            launched = await asyncio.to_thread(self.aws.launch, request)
        except AwsError as exc:
            self._refused(spec, t, zone, exc)
            return True
        except (BotoCoreError, OSError) as exc:
            # EC2 may have launched: look again before anything is re-sent (with the same
            # token), and meanwhile count the launch as capacity on its way.
            self._m.listed_at = -1e18
            metrics.LAUNCH_FAILURES.labels(spec.name, "outcome-unknown").inc()
            problem = f"RunInstances for {intent['count']} x {t.name} in {zone}: no answer ({exc})"
            log.warning(
                "launch outcome unknown; it will be settled with its client token",
                compute_environment=spec.name,
                launch=intent["token"],
                error=str(exc),
            )
            self._launch_failed(spec, "LaunchOutcomeUnknown", problem)
            return False
        for instance in launched:
            self._m.instances[instance.instance_id] = instance
        await self._launched(spec, intent, launched, "EC2 answered")
        return True

    async def _launched(
        self,
        spec: ComputeEnvironment,
        intent: Mapping[str, Any],
        instances: Sequence[Instance],
        how: str,
    ) -> None:
        """Count, log and record a launch EC2 answered, or one found done by its token."""
        self._m.launch_errors.pop(spec.name, None)
        reason = str(intent.get("reason", ""))
        instance_type = str(intent.get("instanceType", ""))
        zone = instances[0].zone if instances else ""
        metrics.LAUNCHES.labels(spec.name, spec.capacity_type, reason).inc(len(instances))
        log.info(
            "launched",
            compute_environment=spec.name,
            instance_type=instance_type,
            zone=zone,
            count=len(instances),
            instances=[i.instance_id for i in instances],
            reason=reason,
            launch=intent.get("token"),
            how=how,
        )
        self._event(
            spec,
            "Launched",
            f"launched {len(instances)} x {instance_type} ({spec.capacity_type}) in {zone} "
            f"for {reason} ({how})",
        )

    def _request(
        self, spec: ComputeEnvironment, t: InstanceType, intent: Mapping[str, Any]
    ) -> LaunchRequest:
        image = spec.image_id or self.aws.image_id(
            image_parameter(
                self.s.image_parameter_prefix,
                self.cluster.kubernetes_version,
                spec.image_type,
                t,
            )
        )
        labels = node_labels(spec.name, spec.capacity_type)
        max_price = (
            f"{t.on_demand_price * spec.bid_percentage / 100:.6f}"
            if spec.bid_percentage is not None
            else None
        )
        return LaunchRequest(
            token=str(intent["token"]),
            environment=spec.name,
            instance_type=t.name,
            capacity_type=spec.capacity_type,
            count=int(intent["count"]),
            subnet_id=str(intent["subnet"]),
            image_id=image,
            user_data=user_data(self.cluster, spec.image_type, labels, t, self.overhead),
            security_group_ids=spec.security_group_ids,
            instance_profile=spec.instance_role,
            launch_template=spec.launch_template,
            tags=spec.tags,
            max_price=max_price,
        )

    def _refused(self, spec: ComputeEnvironment, t: InstanceType, zone: str, exc: AwsError) -> None:
        if exc.insufficient_capacity:
            key = Unavailable(t.name, zone, spec.capacity_type)
            self._m.unavailable[key] = time.monotonic() + self.s.unavailable_offering_seconds
            metrics.LAUNCH_FAILURES.labels(spec.name, "insufficient-capacity").inc()
            log.warning(
                "no capacity; avoiding this offering for a while",
                compute_environment=spec.name,
                offering=str(key),
                code=exc.code,
                seconds=self.s.unavailable_offering_seconds,
            )
            self._launch_failed(spec, "InsufficientCapacity", f"{key}: {exc.code}: {exc.message}")
            self.poke()  # plan again at once: the next type or zone
            return
        metrics.LAUNCH_FAILURES.labels(spec.name, "error").inc()
        self._m.launch_backoff[spec.name] = time.monotonic() + _LAUNCH_BACKOFF_SECONDS
        log.error(
            "launch failed; pausing launches for this environment",
            compute_environment=spec.name,
            error=str(exc),
            seconds=_LAUNCH_BACKOFF_SECONDS,
        )
        self._launch_failed(
            spec,
            "LaunchFailed",
            f"{exc}; launches paused for {_LAUNCH_BACKOFF_SECONDS:.0f} s",
        )

    def _launch_failed(self, spec: ComputeEnvironment, reason: str, message: str) -> None:
        """A warning Event, and the environment's status.lastLaunchError until a launch
        succeeds."""
        self._m.launch_errors[spec.name] = f"{_iso(time.time())} {reason}: {message}"
        self._event(spec, reason, message, warning=True)

    async def _write_intents(
        self, name: str, intents: list[Mapping[str, Any]], *, sent: bool = False
    ) -> None:
        """Record the environment's launches of unknown outcome. Before a launch is sent
        this must succeed (or the launch is not sent); after (`sent`), an environment
        deleted meanwhile has nothing left to record."""
        self._m.intents[name] = intents
        try:
            await self.client.patch(
                kube.COMPUTE_ENVIRONMENTS,
                name,
                {"status": {"launches": intents}},
                subresource="status",
            )
        except kube.ApiError as exc:
            if not (sent and exc.not_found):
                raise
            self._m.intents.pop(name, None)
            log.info("compute environment deleted during a launch", compute_environment=name)

    # --- scale-down and garbage -------------------------------------------------------------

    async def _scale_down(
        self,
        ours: Mapping[str, NodeInfo],
        specs: Mapping[str, ComputeEnvironment],
        live: Mapping[str, Instance],
        now: float,
    ) -> float:
        """Cordon, uncordon and terminate; returns seconds until the next decision is due."""
        states = []
        by_name: dict[str, tuple[str, NodeInfo]] = {}
        for iid, node in ours.items():
            if iid not in live or not node.compute_environment:
                continue
            t = self.catalog.get(node.instance_type or live[iid].instance_type)
            batch = sum(
                1 for p in self.pods.store.by_index("node", node.name) if p.active and p.queue
            )
            # A node pending pods are expected to land on is not idle either: it was
            # launched for them, and kube-scheduler may still be backing off from them.
            if batch or node.name in self._m.awaited_nodes:
                self._m.idle_since.pop(node.name, None)
            else:
                self._m.idle_since.setdefault(node.name, now)
            reason = _draining_reason(node) or self._m.cordoned.get(node.name)
            if reason is None:
                self._m.draining_since.pop(node.name, None)
            else:
                self._m.draining_since.setdefault(node.name, now)
            states.append(
                NodeState(
                    node.name,
                    node.compute_environment,
                    t.vcpus if t else 0,
                    t.price(live[iid].capacity_type) if t else 0.0,
                    batch,
                    self._m.idle_since.get(node.name),
                    reason,
                    self._m.draining_since.get(node.name),
                )
            )
            by_name[node.name] = (iid, node)
        for memory in (self._m.idle_since, self._m.draining_since, self._m.cordoned):
            for gone in set(memory) - set(by_name):
                del memory[gone]
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
            iid, node = by_name[action.node]
            if action.kind == CORDON:
                await self._cordon(node, action.reason, action.detail)
            elif action.kind == UNCORDON:
                await self._uncordon(node, action.detail)
            elif action.kind == TERMINATE:
                await self._terminate(
                    iid, node.name, node.compute_environment or "", action.reason, action.detail
                )
        # Wake when the next idle node's delay is over, or soon while nodes drain.
        due = [1.0 for n in states if n.draining is not None]
        for n in states:
            if n.draining is None and n.idle_since is not None:
                spec = specs.get(n.environment)
                delay = (
                    spec.scale_down_delay_seconds
                    if spec is not None
                    else self.s.orphan_scale_down_delay_seconds
                )
                left = n.idle_since + delay - now
                if left > 0:  # past due and still here: minvCpus keeps it
                    due.append(left)
        return min(due, default=math.inf)

    async def _cordon(self, node: NodeInfo, reason: str, detail: str) -> None:
        """Mark the node unschedulable with Ebb's draining taint, whose value is the
        reason (a node already draining gets the new reason)."""
        taint = {"key": keys.DRAINING_TAINT, "value": reason, "effect": "NoSchedule"}
        ops: list[dict[str, Any]] = [{"op": "add", "path": "/spec/unschedulable", "value": True}]
        index = _draining_index(node)
        if index is not None:
            ops += [
                {"op": "test", "path": f"/spec/taints/{index}/key", "value": keys.DRAINING_TAINT},
                {"op": "replace", "path": f"/spec/taints/{index}/value", "value": reason},
            ]
        elif node.taints:
            ops.append({"op": "add", "path": "/spec/taints/-", "value": taint})
        else:
            ops.append({"op": "add", "path": "/spec/taints", "value": [taint]})
        if await self._patch_node(node, ops):
            self._m.cordoned[node.name] = reason
            log.info("cordoned", node=node.name, reason=reason, detail=detail)

    async def _uncordon(self, node: NodeInfo, detail: str) -> None:
        index = _draining_index(node)
        if index is None:
            return  # the taint is not in the cache yet: next pass
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": f"/spec/taints/{index}/key", "value": keys.DRAINING_TAINT},
            {"op": "remove", "path": f"/spec/taints/{index}"},
            {"op": "replace", "path": "/spec/unschedulable", "value": False},
        ]
        if await self._patch_node(node, ops):
            self._m.draining_since.pop(node.name, None)
            self._m.cordoned.pop(node.name, None)
            log.info("uncordoned", node=node.name, detail=detail)

    async def _patch_node(self, node: NodeInfo, ops: list[dict[str, Any]]) -> bool:
        try:
            await self.client.patch(kube.NODES, node.name, ops, patch_type="json")
        except kube.ApiError as exc:
            log.warning("node update failed; will retry", node=node.name, error=str(exc))
            return False
        return True

    async def _terminate(
        self, iid: str, node: str | None, env: str, reason: str, detail: str
    ) -> None:
        try:
            done = await asyncio.to_thread(self.aws.terminate, [iid])
        except AwsError as exc:
            log.error("terminate failed", instance=iid, error=str(exc))
            return
        if not done:
            return
        self._m.listed_at = -1e18  # re-list on the next pass
        metrics.TERMINATIONS.labels(env, reason).inc()
        # (Else garbage collection deletes the node once its pods are ended.)
        if node is not None and await self._end_pods(iid, node, env, "shutting-down"):
            await self.client.delete(kube.NODES, node)
        log.info(
            "terminated",
            instance=iid,
            node=node,
            compute_environment=env,
            reason=reason,
            detail=detail,
        )
        record = self.environments.store.get(env)
        if record is not None:
            self._event(record.spec, "Terminated", f"terminated {iid} ({node}): {reason}")

    async def _collect_garbage(self, ours: Mapping[str, NodeInfo], now: float) -> None:
        by_node = {node.name: iid for iid, node in ours.items()}
        instances = [
            InstanceState(
                i.instance_id,
                i.state,
                i.launched,
                ours[i.instance_id].name if i.instance_id in ours else None,
            )
            for i in self._m.instances.values()
        ]
        records = [
            NodeRecord(node.name, self._m.instances[iid].state, _epoch(node.created, now))
            for iid, node in ours.items()
        ]
        garbage = plan_garbage(
            instances,
            records,
            now,
            registration_timeout_seconds=self.s.registration_timeout_seconds,
            node_grace_seconds=self.s.node_grace_seconds,
        )
        for iid in garbage.terminate:
            env = self._m.instances[iid].environment
            await self._terminate(iid, None, env, REGISTRATION_TIMEOUT, "never became a node")
        for name in garbage.delete_nodes:
            instance = self._m.instances[by_node[name]]
            await self._instance_gone(
                instance.instance_id, name, instance.environment, instance.state
            )

    async def _instance_gone(self, iid: str, node: str, env: str, state: str) -> None:
        """The instance of one of our nodes is going (EC2 said so in a notice, or in its
        list): its pods are ended now, and its node deleted unless the instance is only
        stopping (it may start again, with its node)."""
        if not await self._end_pods(iid, node, env, state) or state in LIVE_STATES:
            return
        if await self.client.delete(kube.NODES, node) is not None:
            metrics.TERMINATIONS.labels(env, INSTANCE_GONE).inc()
            log.info("deleted node of a gone instance", node=node, instance=iid, state=state)

    async def _end_pods(self, iid: str, node: str, env: str, state: str) -> bool:
        """Fail and delete the pods bound to `node`, whose instance is going, as PodGC
        would (ebb/nodeloss.py) but without its 40 s wait: their attempts end now, as
        host terminations naming `iid`, and the Job controller replaces them. False if
        some could not be ended (the caller keeps the node, and tries again later)."""
        pods = [p for p in self.pods.store.by_index("node", node) if p.active]
        if not pods:
            return True
        message = lost_message(iid, node, state)
        at = _iso(time.time())
        results = await asyncio.gather(
            *(end_lost_pod(self.client, p, message, at) for p in pods),
            return_exceptions=True,
        )
        errors = [str(r) for r in results if isinstance(r, BaseException)]
        ended = [p.key for p, r in zip(pods, results, strict=True) if r is True]
        metrics.LOST_PODS.labels(env).inc(len(ended))
        log.info("ended the pods of a lost node", instance=iid, node=node, state=state, pods=ended)
        if ended:
            record = self.environments.store.get(env)
            if record is not None:
                self._event(
                    record.spec,
                    "PodsLost",
                    f"{iid} ({node}) is {state}: {len(ended)} pod(s) on it failed "
                    "(DisruptionTarget) and deleted",
                    warning=True,
                )
        if errors:
            log.warning("ending pods of a lost node failed; will retry", node=node, errors=errors)
        return not errors

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

    # --- interruption notices -------------------------------------------------------------

    async def consume_notices(self) -> None:
        """Read EC2's notices from SQS for as long as the daemon runs: a message that is
        not a notice is logged and dropped; one whose handling fails is logged and left
        for SQS to deliver again; nothing stops the loop."""
        url = self.s.interruption_queue_url
        while True:
            await self._lead()
            try:
                messages = await asyncio.to_thread(self.aws.receive, url, NOTICE_WAIT_SECONDS)
            except (AwsError, BotoCoreError, OSError) as exc:
                log.warning("reading interruption notices failed", error=str(exc))
                await asyncio.sleep(5)
                continue
            for receipt, body in messages:
                try:
                    await self._handle_notice(body)
                    await asyncio.to_thread(self.aws.delete_message, url, receipt)
                except Exception:
                    log.exception("handling an EC2 notice failed; SQS will deliver it again")

    async def _handle_notice(self, body: str) -> None:
        try:
            notice = parse_notice(body)
        except NoticeError as exc:
            metrics.NOTICES_DROPPED.inc()
            log.warning("dropped an SQS message that is not an EC2 notice", error=str(exc))
            return
        metrics.INTERRUPTIONS.labels(notice.kind).inc()
        node = next(
            (n for n in self.nodes.store.values() if n.instance_id == notice.instance_id), None
        )
        log.info(
            "ec2 notice", kind=notice.kind, instance=notice.instance_id, node=node and node.name
        )
        self._m.listed_at = -1e18
        if (
            notice.kind == SPOT_INTERRUPTION
            and node is not None
            and _draining_reason(node) != DRAIN_SPOT_INTERRUPTION
            and self._m.cordoned.get(node.name) != DRAIN_SPOT_INTERRUPTION
        ):
            await self._cordon(node, DRAIN_SPOT_INTERRUPTION, "Spot interruption warning")
            record = self.environments.store.get(node.compute_environment or "")
            if record is not None:
                self._event(
                    record.spec,
                    "SpotInterruption",
                    f"{notice.instance_id} ({node.name}) will be reclaimed; cordoned",
                    warning=True,
                )
        elif notice.kind == STATE_CHANGE and notice.state in GOING_STATES:
            log.info("instance going away", instance=notice.instance_id, state=notice.state)
            ours = self._our_nodes().get(notice.instance_id)
            if ours is not None:
                await self._instance_gone(
                    notice.instance_id, ours.name, ours.compute_environment or "", notice.state
                )
        self.poke()

    # --- status, events, metrics -----------------------------------------------------------

    async def _publish(
        self,
        views: Mapping[str, Environment],
        ours: Mapping[str, NodeInfo],
        live: Mapping[str, Instance],
        pending: Mapping[str, int],
    ) -> None:
        self._count_instances(live)
        for gone in self._m.published - views.keys():  # deleted environments
            for gauge in metrics.PER_ENVIRONMENT:
                gauge.remove(gone)
            self._m.published.discard(gone)
            self._m.status.pop(gone, None)
        for name, view in views.items():
            mine = [i for i in live.values() if i.environment == name]
            nodes = [ours[i.instance_id] for i in mine if i.instance_id in ours]
            current = sum(
                _vcpus(self.catalog, ours[i.instance_id].instance_type)
                for i in mine
                if i.instance_id in ours
            )
            desired = view.vcpus
            unavailable = sorted(
                str(u)
                for u in self._m.unavailable
                if u.capacity_type == view.spec.capacity_type
                and any(o.name == u.instance_type for o in view.offerings)
            )
            status: dict[str, Any] = {
                "status": "INVALID" if view.problem else "VALID",
                "statusReason": view.problem or "",
                "desiredvCpus": desired,
                "currentvCpus": current,
                "nodes": len(nodes),
                "pendingPods": pending.get(name, 0),
                "observedGeneration": view.spec.generation,
                "unavailableOfferings": unavailable,
                "lastLaunchError": self._m.launch_errors.get(name, ""),
            }
            metrics.DESIRED_VCPUS.labels(name).set(desired)
            self._resource_metrics(name, mine, nodes)
            metrics.NODES.labels(name).set(len(nodes))
            metrics.PENDING_PODS.labels(name).set(status["pendingPods"])
            self._m.published.add(name)
            if self._m.status.get(name) == status:
                continue
            old = self._m.status.get(name, {})
            try:
                await self.client.patch(
                    kube.COMPUTE_ENVIRONMENTS, name, {"status": status}, subresource="status"
                )
            except kube.ApiError as exc:
                log.warning("status update failed", compute_environment=name, error=str(exc))
                continue
            self._m.status[name] = status
            if old.get("status") != status["status"] and view.problem:
                self._event(view.spec, "Invalid", view.problem, warning=True)

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

    def _event(
        self, spec: ComputeEnvironment, reason: str, message: str, *, warning: bool = False
    ) -> None:
        ref = ObjectRef(keys.API_VERSION, "ComputeEnvironment", spec.name, uid=spec.uid)
        self.events.record(ref, reason, message, warning=warning)


def _draining_index(node: NodeInfo) -> int | None:
    return next((i for i, t in enumerate(node.taints) if t[0] == keys.DRAINING_TAINT), None)


def _draining_reason(node: NodeInfo) -> str | None:
    return next((t[1] or IDLE for t in node.taints if t[0] == keys.DRAINING_TAINT), None)


def _vcpus(catalog: Catalog, instance_type: str | None) -> int:
    t = catalog.get(instance_type or "")
    return t.vcpus if t else 0


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(timestamp: str, default: float) -> float:
    try:
        return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
