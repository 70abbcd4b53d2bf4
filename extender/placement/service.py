"""Ebb's extender: the verbs kube-scheduler calls, over the placement cache.

filter and prioritize hand the cached snapshot to the pure decisions in `scoring`
(filter keeps only the nodes prioritize would score highest, so Ebb's stanza needs no
prioritize; it is still served for one that names it); bind POSTs the pod's Binding and
counts the pod on its node (assumed) until the watch shows it there. A multi-node job's
pods are held at bind, each counted on the node chosen for it, until every pod of the
gang has one; then all are bound together (or, after `gang_hold` seconds, all released:
see docs/decisions/0007-gang-placement.md).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import structlog
from prometheus_client import Counter, Gauge

from ebb import keys, kube
from ebb.events import EventRecorder, ObjectRef
from ebb.kube import Event
from ebb.model import ComputeEnvironment, JobQueue, NodeInfo, PodInfo, node_from_raw
from extender.callers import Refusal, refuse
from extender.placement.cache import PlacementCache
from extender.placement.fresh_reads import FreshReads
from extender.placement.protocol import BindingArgs, ExtenderArgs, FilterResult, HostPriority
from extender.placement.scoring import (
    Lookup,
    NodeState,
    RejectKind,
    filter_nodes,
    node_state,
    score_nodes,
    untolerated_taint,
)
from extender.settings import SchedulerSettings

log = structlog.get_logger("ebb.placement")

_FILTERED = Counter(
    "ebb_extender_filtered_nodes_total",
    "Nodes the extender filtered out for batch pods, by reason class.",
    ["reason"],
)
_ASSUMED = Gauge(
    "ebb_extender_assumed_pods",
    "Pods the extender bound that the pod watch has not shown bound yet.",
)
_GANG_HOLDS = Counter(
    "ebb_extender_gang_holds_total",
    "Multi-node jobs' holds at bind, by outcome: bound (every pod had a node, all bound "
    "together) or released (see ebb_extender_gang_releases_total).",
    ["outcome"],
)
_GANG_RELEASES = Counter(
    "ebb_extender_gang_releases_total",
    "Multi-node jobs' holds at bind released, their pods back in kube-scheduler's queue, "
    "by reason: timed_out (not every pod had a node within --gang-hold), pod_deleted (a "
    "held pod was deleted: its Job terminated or deleted) or node_unusable (a held pod's "
    "node was deleted or tainted meanwhile, as scale-down cordons an idle node).",
    ["reason"],
)
_BINDS_REFUSED = Counter(
    "ebb_extender_binds_refused_total",
    "Binds answered with an Error because every binding slot stayed busy (API server slow).",
)


@functools.cache
def _filtered(kind: RejectKind) -> Counter:
    """The filtered-nodes counter of one reason class (looked up once, not on every call)."""
    return _FILTERED.labels(kind.value)


NOT_SYNCED = "ebb-scheduler is starting: its caches are not synced yet"
_RECENT_PODS = 4096

# POSTs the pod's Binding, with these annotations for the pod.
Binder = Callable[[BindingArgs, Mapping[str, str]], Awaitable[None]]
# How many pods of a Job (namespace, name) have failed: its earlier attempts.
FailureCount = Callable[[str, str], Awaitable[int]]
# A node's taints read afresh (None: no such node), for a bind the cache would refuse.
NodeTaints = Callable[[str], Awaitable[tuple[tuple[str, str, str], ...] | None]]


@dataclass(frozen=True)
class Binding:
    """How the bind verb binds. kube-scheduler gives a bind its extender's httpTimeout; a
    bind that outlived it would be retried while the first still lands, so binds wait at
    most `wait` seconds for one of `concurrency` slots and otherwise answer with an Error
    (the pod goes back to kube-scheduler's queue) instead of piling up."""

    post: Binder
    job_failures: FailureCount
    concurrency: int
    wait: float
    assumed_pod_ttl: float  # how long a bound pod counts before the watch shows it
    gang_hold: float = 12.0  # how long a gang's pods are held for the rest of the gang
    # Read a node's taints afresh when the cache's would refuse a bind: kube-scheduler may
    # have seen a new node's not-ready taint go before Ebb's watch did. None: the cache.
    node_taints: NodeTaints | None = None


@dataclass
class _GangHold:
    """A multi-node job's pods held at bind, each on the node chosen for it."""

    started: float
    members: dict[str, tuple[BindingArgs, PodInfo, asyncio.Future[str]]] = field(
        default_factory=dict
    )


def attempt_number(pod: PodInfo, job_failures: int | None) -> int:
    """Which attempt of its job (1-based, as AWS_BATCH_JOB_ATTEMPT) a pod is: one more
    than the failures before it. An array child's are its index's, which the Job
    controller writes on each pod it creates (backoffLimitPerIndex); for any other Job,
    the Job's failed pods (`job_failures`)."""
    if pod.index_failures is not None:
        return pod.index_failures + 1
    return (job_failures or 0) + 1


async def bind_pod(
    client: kube.KubeClient, args: BindingArgs, annotations: Mapping[str, str]
) -> None:
    """POST the pod's Binding; its UID, when given, is a precondition (a pod deleted and
    re-created under the same name is not bound by mistake). The API server copies the
    Binding's annotations onto the pod as it sets its node: both land in one write."""
    metadata: dict[str, object] = {"name": args.pod_name, "namespace": args.pod_namespace}
    if args.pod_uid:
        metadata["uid"] = args.pod_uid
    if annotations:
        metadata["annotations"] = dict(annotations)
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": metadata,
        "target": {"apiVersion": "v1", "kind": "Node", "name": args.node},
    }
    await client.post_subresource(kube.PODS, args.pod_name, args.pod_namespace, "binding", body)


async def node_taints(
    client: kube.KubeClient, name: str
) -> tuple[tuple[str, str, str], ...] | None:
    raw = await client.get_or_none(kube.NODES, name)
    return None if raw is None else node_from_raw(raw).taints


async def job_failures(client: kube.KubeClient, namespace: str, name: str) -> int:
    """The attempts of the Job before the one being bound, read from the API server (not a
    cache): its failed pods, status.failed and the failures the Job controller is still
    counting. It records a failure before it creates the replacement pod (after a backoff
    of 10 s or more), so a pod being bound sees every failure before it, including pods
    since deleted (a lost node's). A multi-node job's failures are Ebb's to count (the
    Job controller ignores them): its attempts are `ebb.dev/gang-attempt`."""
    job = await client.get(kube.JOBS, name, namespace)
    gang_attempt = ((job.get("metadata") or {}).get("annotations") or {}).get(keys.GANG_ATTEMPT)
    if gang_attempt is not None and gang_attempt.isdigit():
        return max(int(gang_attempt) - 1, 0)
    status = job.get("status") or {}
    uncounted = (status.get("uncountedTerminatedPods") or {}).get("failed") or ()
    return int(status.get("failed") or 0) + len(uncounted)


class EbbExtender:
    def __init__(
        self,
        cache: PlacementCache,
        pods: Lookup[PodInfo],
        queues: Lookup[JobQueue],
        environments: Lookup[ComputeEnvironment],
        *,
        binding: Binding,
        ready: Callable[[], bool],
        batch_only: bool = False,
        events: EventRecorder | None = None,
    ) -> None:
        self._cache = cache
        self._pods = pods
        self._queues = queues
        self._environments = environments
        self._binding = binding
        self._binding_slots = asyncio.Semaphore(binding.concurrency)
        self._ready = ready
        # Behind a kube-scheduler of its own (--scheduler-name) every pod is a batch pod;
        # behind the cluster's only scheduler, plain pods are bound here too.
        self._batch_only = batch_only
        # Pods seen in filter requests, by UID: bind learns a pod's requests here when the
        # pod watch has not delivered the pod yet.
        self._recent: dict[str, PodInfo] = {}
        self._holds: dict[str, _GangHold] = {}  # multi-node Job UID -> its held pods
        self.events = events  # a released hold is an Event on its Job
        _ASSUMED.set_function(lambda: cache.assumed_pods)

    async def filter(self, args: ExtenderArgs) -> FilterResult:
        pod = args.pod
        self._remember(pod)
        if pod.queue is None:
            return FilterResult(args.node_names)  # not Ebb's pod: untouched
        if not self._ready():
            return FilterResult(error=NOT_SYNCED)
        self._cache.expire(time.monotonic())
        unplaced = group = None
        if pod.gang_size is not None and pod.job_uid:
            unplaced = pod.gang_size - self._cache.gang_placed(pod.job_uid)
            group = self._cache.gang_group(pod.job_uid)
        verdict = filter_nodes(
            pod,
            args.node_names,
            self._nodes_for(args),
            self._queues,
            self._environments,
            gang_unplaced=unplaced,
            gang_group=group,
            best_only=True,
        )
        for kind, count in verdict.rejected.items():
            _filtered(kind).inc(count)
        if verdict.kept:
            log.debug("filtered", pod=pod.key, queue=pod.queue, kept=len(verdict.kept))
        else:
            log.debug(
                "no node fits",
                pod=pod.key,
                queue=pod.queue,
                candidates=len(args.node_names),
                rejected={kind.value: count for kind, count in verdict.rejected.items()},
            )
        return FilterResult(verdict.kept, verdict.failed, verdict.unresolvable)

    async def prioritize(self, args: ExtenderArgs) -> list[HostPriority]:
        if args.pod.queue is None or not self._ready():
            return [(name, 0) for name in args.node_names]
        return score_nodes(
            args.pod, args.node_names, self._nodes_for(args), self._queues, self._environments
        )

    async def bind(self, args: BindingArgs) -> str:
        pod = self._pod_for(args)
        if pod is not None and pod.gang_size is not None and pod.job_uid and not pod.node_name:
            return await self._hold(pod, args, pod.gang_size, pod.job_uid)
        return await self._bind_in_slot(args)

    async def _bind_in_slot(self, args: BindingArgs, *, checked: bool = False) -> str:
        """`checked`: a held gang pod, checked (and counted on its node) when it was held."""
        try:
            async with asyncio.timeout(self._binding.wait):
                await self._binding_slots.acquire()
        except TimeoutError:
            _BINDS_REFUSED.inc()
            return (
                f"binding {args.pod_key} to {args.node}: {self._binding.concurrency} bindings "
                f"in flight and none done within {self._binding.wait:g} s; try again later"
            )
        try:
            return await self._bind(args, checked=checked)
        finally:
            self._binding_slots.release()

    async def _bind(self, args: BindingArgs, *, checked: bool) -> str:
        pod = self._pod_for(args)
        now = time.monotonic()
        self._cache.expire(now)
        if pod is None:
            unseen = "Ebb has not seen this pod (neither watched nor filtered)"
            return refuse(Refusal.UNKNOWN_POD, f"binding {args.pod_key} to {args.node}: {unseen}")
        refusal = None if checked else await self._confirmed_refusal(pod, args)
        if refusal is not None:
            why, message = refusal
            return refuse(why, f"binding {args.pod_key} to {args.node}: {message}")
        # Assume before the POST: the watch may show the pod bound before the POST returns.
        if pod.node_name is None and not checked:
            expires = now + self._binding.assumed_pod_ttl
            # As a Job's pod: until the watch shows it bound, no gang pod may take the node.
            self._cache.assume(
                pod.uid, pod.requests, args.node, expires, job=pod.job_uid is not None
            )
        try:
            await self._binding.post(args, await self._annotations(pod, args.node))
        except (kube.ApiError, aiohttp.ClientError, TimeoutError) as exc:
            self._cache.forget(pod.uid)
            log.warning("binding failed", pod=args.pod_key, node=args.node, error=str(exc))
            return f"binding {args.pod_key} to {args.node}: {exc}"
        log.debug("bound", pod=args.pod_key, node=args.node, queue=pod.queue)
        return ""

    async def _hold(self, pod: PodInfo, args: BindingArgs, size: int, gang: str) -> str:
        """Hold a gang's pod on its node until the whole gang has nodes, then bind all.
        kube-scheduler runs each pod's binding cycle apart (its bind call waits here while
        it schedules the next pod), and counts the held pods on their nodes meanwhile."""
        now = time.monotonic()
        self._cache.expire(now)
        self._cache.forget(pod.uid)  # asked again: its node is chosen anew
        refusal = await self._confirmed_refusal(pod, args)
        if refusal is not None:
            why, message = refusal
            return refuse(why, f"binding {args.pod_key} to {args.node}: {message}")
        hold = self._holds.get(gang)
        if hold is None:
            hold = self._holds[gang] = _GangHold(now)
        self._cache.assume(
            pod.uid,
            pod.requests,
            args.node,
            now + self._binding.assumed_pod_ttl,
            job=True,
            gang=gang,
        )
        result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        earlier = hold.members.get(pod.uid)
        if earlier is not None and not earlier[2].done():  # kube-scheduler asked again
            earlier[2].set_result(f"binding {args.pod_key}: superseded by a later bind")
        hold.members[pod.uid] = (args, pod, result)
        if self._cache.gang_placed(gang) >= size:
            unusable = await self._unusable_node(hold)
            if self._holds.get(gang) is not hold:  # released while the node was read
                return await result
            if unusable is not None:
                self._release(gang, pod, "node_unusable", unusable)
                return await result
            del self._holds[gang]
            _GANG_HOLDS.labels("bound").inc()
            log.info("gang complete, binding", job=pod.job_name, pods=len(hold.members))
            outcomes = await asyncio.gather(
                *(
                    self._bind_in_slot(member, checked=True)
                    for member, _, _ in hold.members.values()
                )
            )
            for (_, _, waiter), outcome in zip(hold.members.values(), outcomes, strict=True):
                if not waiter.done():
                    waiter.set_result(outcome)
            return await result
        left = hold.started + self._binding.gang_hold - now
        try:
            return await asyncio.wait_for(asyncio.shield(result), max(left, 0.0))
        except TimeoutError:
            if self._holds.get(gang) is hold:  # else bound or released meanwhile
                placed = self._cache.gang_placed(gang)
                self._release(
                    gang,
                    pod,
                    "timed_out",
                    f"multi-node job not fully placed within {self._binding.gang_hold:g} s "
                    f"({placed} of {size} pods had a node)",
                )
        return await result

    def on_pod(self, event: Event[PodInfo]) -> None:
        """A held pod deleted (its Job terminated or deleted) releases its gang's hold at
        once: the other held pods' nodes are not kept for the rest of the window."""
        old = event.old
        if event.new is not None or old is None or not old.job_uid:
            return
        hold = self._holds.get(old.job_uid)
        if hold is not None and old.uid in hold.members:
            self._release(
                old.job_uid, old, "pod_deleted", f"its pod {old.key} was deleted while held"
            )

    def _release(self, gang: str, pod: PodInfo, reason: str, why: str) -> None:
        """Answer every held bind of the gang with an error (kube-scheduler puts the pods
        back in its queue), uncount them from their nodes, and say so: counted, logged and
        an Event on the Job."""
        hold = self._holds.pop(gang)
        _GANG_HOLDS.labels("released").inc()
        _GANG_RELEASES.labels(reason).inc()
        message = f"{why}; released the nodes of its {len(hold.members)} held pods, they wait again"
        log.info("gang hold released", job=pod.job_name, reason=reason, detail=message)
        for args, member, waiter in hold.members.values():
            self._cache.forget(member.uid)
            if not waiter.done():
                waiter.set_result(f"binding {args.pod_key}: {message}")
        if self.events is not None and pod.job_name:
            job = ObjectRef("batch/v1", "Job", pod.job_name, pod.namespace, gang)
            event = "GangHoldTimedOut" if reason == "timed_out" else "GangHoldReleased"
            self.events.record(job, event, message, warning=True)

    async def _annotations(self, pod: PodInfo, node_name: str) -> dict[str, str]:
        """What an Ebb pod learns at bind (AWS_BATCH_CE_NAME, AWS_BATCH_JOB_ATTEMPT)."""
        if pod.queue is None:
            return {}
        node = self._cache.nodes.get(node_name)
        annotations = {}
        if node is not None and node.info.compute_environment:
            annotations[keys.POD_COMPUTE_ENVIRONMENT] = node.info.compute_environment
        if pod.job_name:
            failures = None
            if pod.index_failures is None:
                failures = await self._binding.job_failures(pod.namespace, pod.job_name)
            annotations[keys.POD_ATTEMPT] = str(attempt_number(pod, failures))
        return annotations

    async def _confirmed_refusal(
        self, pod: PodInfo, args: BindingArgs
    ) -> tuple[Refusal, str] | None:
        """`_refusal`, but a taint the cache shows is read afresh before it refuses."""
        return self._refusal(pod, args, taints=await self._fresh_taints(pod, args.node))

    async def _fresh_taints(
        self, pod: PodInfo, node_name: str
    ) -> tuple[tuple[str, str, str], ...] | None:
        """The node's taints read afresh when the cache shows one the pod does not
        tolerate (the cache may be behind); None: the cache's stand."""
        node = self._cache.nodes.get(node_name)
        reader = self._binding.node_taints
        if (
            reader is None
            or node is None
            or untolerated_taint(pod.tolerations, node.info.taints) is None
        ):
            return None
        try:
            return await reader(node_name)
        except (kube.ApiError, aiohttp.ClientError, TimeoutError):
            return None

    async def _unusable_node(self, hold: _GangHold) -> str | None:
        """Why a node chosen for a held pod can no longer take it, if one cannot: deleted,
        or tainted since it was chosen. The autoscaler cannot see a held pod (it is not
        bound yet), so it may cordon the node as idle and terminate it after its drain
        grace; binding the gang there would lose the attempt."""
        for args, member, _ in list(hold.members.values()):
            node = self._cache.nodes.get(args.node)
            if node is None:
                return f"node {args.node} of its pod {args.pod_key} was deleted while held"
            fresh = await self._fresh_taints(member, args.node)
            taint = untolerated_taint(
                member.tolerations, node.info.taints if fresh is None else fresh
            )
            if taint is not None:
                return (
                    f"node {args.node} of its pod {args.pod_key} was tainted "
                    f"{_shown(taint)} while held"
                )
        return None

    def _refusal(
        self,
        pod: PodInfo,
        args: BindingArgs,
        taints: tuple[tuple[str, str, str], ...] | None = None,
    ) -> tuple[Refusal, str] | None:
        """Why kube-scheduler would never ask this bind: the verb holds the daemon's
        cluster-wide binding right, so it checks what filter would have checked
        (`taints`: the node's read afresh, else the cache's)."""
        if pod.queue is None and self._batch_only:
            return Refusal.NOT_A_BATCH_POD, "the pod has no Ebb queue label"
        node = self._cache.nodes.get(args.node)
        if node is None:
            return Refusal.NODE_REJECTED, "no such node"
        taint = untolerated_taint(pod.tolerations, node.info.taints if taints is None else taints)
        if taint is not None:
            return Refusal.NODE_REJECTED, f"the pod does not tolerate the taint {_shown(taint)}"
        verdict = filter_nodes(
            pod, [args.node], self._cache.nodes, self._queues, self._environments
        )
        if not verdict.kept:
            reasons = {**verdict.failed, **verdict.unresolvable}
            return Refusal.NODE_REJECTED, reasons.get(args.node, "filter rejects the node")
        return None

    def _nodes_for(self, args: ExtenderArgs) -> Lookup[NodeState]:
        if args.nodes is None:
            return self._cache.nodes
        # nodeCacheCapable: false: the scheduler's Node objects, with the pods Ebb knows.
        return {
            info.name: node_state(
                info, self._cache.used_on(info.name), *self._cache.occupants(info.name)
            )
            for info in args.nodes
        }

    def _remember(self, pod: PodInfo) -> None:
        if not pod.uid:
            return
        self._recent.pop(pod.uid, None)
        self._recent[pod.uid] = pod
        if len(self._recent) > _RECENT_PODS:
            del self._recent[next(iter(self._recent))]

    def _pod_for(self, args: BindingArgs) -> PodInfo | None:
        pod = self._pods.get(args.pod_key)
        if pod is not None and (not args.pod_uid or pod.uid == args.pod_uid):
            return pod
        return self._recent.get(args.pod_uid) if args.pod_uid else None


def _shown(taint: tuple[str, str, str]) -> str:
    key, value, effect = taint
    return f"{key}={value}:{effect}" if value else f"{key}:{effect}"


def ebb_extender(
    client: kube.KubeClient,
    nodes: kube.Reflector[NodeInfo],
    pods: kube.Reflector[PodInfo],
    queues: kube.Reflector[JobQueue],
    environments: kube.Reflector[ComputeEnvironment],
    *,
    settings: SchedulerSettings,
) -> EbbExtender:
    """The daemon's extender, following the reflectors (which may still be syncing)."""
    cache = PlacementCache()
    cache.attach(nodes, pods)
    synced = (nodes.synced, pods.synced, queues.synced, environments.synced)
    failures: FreshReads[tuple[str, str], int] = FreshReads(lambda job: job_failures(client, *job))
    binding = Binding(
        functools.partial(bind_pod, client),
        lambda namespace, name: failures((namespace, name)),
        concurrency=settings.bind_concurrency,
        wait=settings.bind_wait,
        assumed_pod_ttl=settings.assumed_pod_ttl,
        gang_hold=settings.gang_hold,
        node_taints=functools.partial(node_taints, client),
    )
    extender = EbbExtender(
        cache,
        pods.store,
        queues.store,
        environments.store,
        binding=binding,
        ready=lambda: all(event.is_set() for event in synced),
        batch_only=bool(settings.scheduler_name),
        events=EventRecorder(client, "ebb-scheduler"),
    )
    pods.subscribe(extender.on_pod)
    return extender
