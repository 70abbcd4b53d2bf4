"""The job controller: the async shell around `reconcile`.

It watches managed Jobs and their pods (through reflectors), runs a pass whenever
something changed (and every few seconds for time-based rules), and applies the
decisions. It keeps no state that matters: killed and restarted, it rebuilds
everything from the API server and decides the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

from ebb import keys
from ebb.catalog import NodeOverhead, NodeOverheadSettings, shipped_catalog
from ebb.conditions import from_raw as conditions_from_raw
from ebb.conditions import merge
from ebb.events import EventRecorder
from ebb.kube import (
    JOB_QUEUES,
    JOBS,
    PODS,
    SCHEDULING_POLICIES,
    ApiError,
    KubeClient,
    Reflector,
    Resource,
)
from ebb.kube.reflector import Event
from ebb.model import (
    ComputeEnvironment,
    JobQueue,
    NamespaceInfo,
    NodeInfo,
    PodInfo,
    SchedulingPolicy,
    pod_from_raw,
)
from extender.jobs import fairshare, status, tenancy
from extender.jobs.admission import CapacityLimit
from extender.jobs.capacity import capacity_limits
from extender.jobs.lifecycle import Code, IllegalTransition, State
from extender.jobs.reconcile import Decisions, Reconciler, Snapshot
from extender.jobs.snapshot import JobInfo, format_time, job_from_raw, parse_time
from extender.jobs.writes import Writer

log = structlog.get_logger("ebb.jobs")

PASS_SECONDS = Histogram(
    "ebb_scheduling_pass_seconds",
    "Time to decide one scheduling pass (pure code).",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
JOBS_BY_STATE = Gauge("ebb_jobs", "Managed Jobs by queue and state.", ["queue", "state"])
GANGS_WAITING = Gauge(
    "ebb_gangs_waiting",
    "Multi-node jobs RUNNABLE (waiting for admission or a retry), by queue.",
    ["queue"],
)
UNPLACEABLE = Counter(
    "ebb_unplaceable_jobs_total",
    "Admitted jobs whose pods no node of their queue's compute environments can hold (an "
    "environment changed after admission: put back in their queue unless a pod is bound; "
    "counted once per job), by queue.",
    ["queue"],
)
ATTEMPTS = Counter(
    "ebb_job_attempts_total", "Finished attempts by queue and status reason.", ["queue", "result"]
)
ILLEGAL_TRANSITIONS = Counter(
    "ebb_job_illegal_transitions_total",
    "Job states decided that are no edge of the state machine from the published one (a "
    "bug: published all the same, logged, counted once per job and transition).",
    ["from_state", "to_state"],
)


@dataclass(frozen=True)
class ControllerSettings:
    resync_seconds: float = 5.0
    debounce_seconds: float = 0.05
    starvation_seconds: float = 600.0
    write_concurrency: int = 32
    reason_refresh_seconds: float = 30.0
    share_usage_persist_seconds: float = 30.0
    # A queue's job counts alone are rewritten at most this often: in a burst, passes
    # follow each other in under a second, and every queue's counts rewritten each pass
    # cost the API server about as many writes as the admissions themselves.
    queue_counts_seconds: float = 2.0
    silence_timeout: float = 150.0
    overhead: NodeOverhead = field(default_factory=NodeOverheadSettings().node_overhead)


def _job_of_pod(pod: PodInfo) -> tuple[str, ...]:
    return (f"{pod.namespace}/{pod.job_name}",) if pod.job_name else ()


class JobController:
    def __init__(
        self,
        client: KubeClient,
        *,
        queues: Reflector[JobQueue],
        compute_environments: Reflector[ComputeEnvironment],
        policies: Reflector[SchedulingPolicy],
        nodes: Reflector[NodeInfo],
        namespaces: Reflector[NamespaceInfo],
        settings: ControllerSettings,
        leading: asyncio.Event | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.queues = queues
        self.compute_environments = compute_environments
        self.policies = policies
        self.nodes = nodes
        self.namespaces = namespaces
        self.jobs: Reflector[JobInfo] = Reflector(
            client,
            JOBS,
            job_from_raw,
            label_selector=keys.QUEUE_LABEL,
            name="jobs",
            silence_timeout=settings.silence_timeout,
        )
        self.pods: Reflector[PodInfo] = Reflector(
            client,
            PODS,
            pod_from_raw,
            label_selector=keys.QUEUE_LABEL,
            name="batch-pods",
            indexers={"job": _job_of_pod},
            silence_timeout=settings.silence_timeout,
        )
        self.events = EventRecorder(client, "ebb-scheduler")
        self._wake = asyncio.Event()
        self.writer = Writer(
            client,
            self.jobs,
            self.events,
            concurrency=settings.write_concurrency,
            reason_refresh_seconds=settings.reason_refresh_seconds,
            leading=leading,
            settled=self._wake.set,  # a failed admission's job is decided again
        )
        self._usage = fairshare.UsageHistory()
        self._last_persist = 0.0
        self._counts: dict[str, dict[str, int]] = {}  # queue -> state -> Jobs, last pass
        # The statuses last written, so that each is written only when it changes.
        self._written_queues: dict[str, dict[str, Any]] = {}
        self._queue_written_at: dict[str, float] = {}
        self._counts_due = math.inf  # when a queue's held-back counts are to be written
        self._written_policies: dict[str, dict[str, Any]] = {}
        self._counted_attempts: set[str] = set()
        self._counted_unplaceable: set[str] = set()
        self._reported_illegal: dict[str, IllegalTransition] = {}
        # job key → pod name → a finished pod deleted before its attempt was published;
        # kept until the published record has it (see `_forget_departed`).
        self._departed: dict[str, dict[str, PodInfo]] = {}
        self._last_decision = 0.0  # seconds the last pass took to snapshot and decide
        # Passes redo only the jobs changed since the last (their own events, their pods').
        self._reconciler = Reconciler()
        self._touched: set[str] = set()
        # Set while this replica may write (always, without leader election).
        self._leading = leading
        self.catalog = shipped_catalog()
        self.overhead = settings.overhead
        self._capacity: tuple[tuple[object, ...], dict[str, CapacityLimit]] = ((), {})
        for reflector in (self.jobs, self.pods, queues, compute_environments, policies, namespaces):
            reflector.subscribe(self._changed)
        self.jobs.subscribe(self._job_changed)
        self.pods.subscribe(self._pod_changed)
        queues.subscribe(self._forget_status(self._written_queues))
        policies.subscribe(self._forget_status(self._written_policies))

    @property
    def reflectors(self) -> tuple[Reflector[Any], ...]:
        return (self.jobs, self.pods)

    def _changed(self, event: Event[Any]) -> None:
        # A status this controller wrote comes back as an event that changes nothing a
        # pass reads: no pass for it.
        if event.old != event.new:
            self._wake.set()

    def _job_changed(self, event: Event[JobInfo]) -> None:
        self._touched.add(event.key)
        if event.new is None:
            self.writer.forget(event.key)
            self._departed.pop(event.key, None)

    def _pod_changed(self, event: Event[PodInfo]) -> None:
        """A lost node's pods are failed and deleted at once (ebb/nodeloss.py), often
        before a pass records their attempt: their last state is kept for that (by the
        leader: only its passes record, and forget)."""
        for seen in (event.old, event.new):
            if seen is not None:
                self._touched.update(_job_of_pod(seen))
        pod = event.old
        if self._leading is not None and not self._leading.is_set():
            return
        if event.new is None and pod is not None and pod.phase in ("Succeeded", "Failed"):
            for key in _job_of_pod(pod):
                self._departed.setdefault(key, {})[pod.name] = pod

    def _forget_departed(self, snap: Snapshot, decisions: Decisions) -> None:
        """Departed pods whose job's published record needs no change (it has them, or
        they are older than the attempts it keeps), or whose job is gone. A job whose
        record waits for the Job controller to count a finished pod keeps them."""
        for key, pods in snap.departed_by_job.items():
            if key in snap.jobs and (key in decisions.attempts or key in decisions.counting):
                continue
            held = self._departed.get(key, {})
            for pod in pods:
                if held.get(pod.name) is pod:
                    del held[pod.name]
                    self._touched.add(key)
            if not held:
                self._departed.pop(key, None)

    @staticmethod
    def _forget_status(written: dict[str, dict[str, Any]]) -> Callable[[Event[Any]], None]:
        """A deleted object's status is forgotten: one created again under its name
        gets its status written."""

        def forget(event: Event[Any]) -> None:
            if event.new is None:
                written.pop(event.key, None)

        return forget

    def _read(self) -> tuple[Reflector[Any], ...]:
        """Every reflector a pass reads (the two it owns and the app's shared ones)."""
        return (
            self.jobs,
            self.pods,
            self.queues,
            self.compute_environments,
            self.policies,
            self.nodes,
            self.namespaces,
        )

    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self._read())

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self.writer.publish_forever(), name="publisher"),
            asyncio.create_task(self.events.run(), name="events"),
        ]
        try:
            await asyncio.gather(*(r.synced.wait() for r in self._read()))
            self._load_usage()
            log.info("job controller started", jobs=len(self.jobs.store))
            while True:
                if self._leading is not None and not self._leading.is_set():
                    await self._leading.wait()
                    self._load_usage()  # take over the fair-share history as persisted
                    # Another leader wrote meanwhile: write every status afresh.
                    self._written_queues.clear()
                    self._written_policies.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._sleep_seconds())
                self._wake.clear()
                # Let events batch up; under load, leave at least as much time between
                # passes as the last one spent deciding, so passes never take the whole
                # CPU; not its writes, which wait on the API server
                # (docs/decisions/0003-spacing-scheduling-passes.md).
                await asyncio.sleep(max(self.settings.debounce_seconds, 2 * self._last_decision))
                await self.run_pass()
        finally:
            self.writer.cancel_admissions()
            for task in tasks:
                task.cancel()

    async def run_pass(self) -> Decisions:
        started = time.perf_counter()
        now = time.time()
        changed, self._touched = self._touched, set()
        snap = self.snapshot(now)
        # The cached objects live long; spare the collector from walking them every pass.
        gc.freeze()
        deciding = time.perf_counter()
        try:
            # Pure and CPU-bound: off the event loop, so extender requests stay fast.
            decisions = await asyncio.to_thread(self._reconciler.run, snap, changed)
        except BaseException:
            self._reconciler = Reconciler()  # what it kept may be half updated: start afresh
            raise
        PASS_SECONDS.observe(time.perf_counter() - deciding)
        # The writer and the metrics read every job's status: the settled queues' ones are
        # built here, off the event loop too.
        decisions.statuses = await asyncio.to_thread(dict, decisions.statuses.items())
        self._last_decision = time.perf_counter() - started
        # Admissions are started, not awaited: the next pass counts them in flight.
        await self.writer.apply(snap.jobs, decisions, now)
        self._forget_departed(snap, decisions)
        self._observe(snap, decisions, now)
        await self._persist(decisions, now)
        return decisions

    def capacity(self) -> dict[str, CapacityLimit]:
        """What each compute environment may hold. Resolving their instance types against
        the catalog is most of a pass's snapshot and of each webhook review, so the
        limits are kept while the environments are the same objects (the reflector
        replaces one that changes) under the same catalog and overhead."""
        environments = tuple(self.compute_environments.store.values())
        inputs = (self.catalog, self.overhead, *environments)
        held, limits = self._capacity
        if len(held) != len(inputs) or any(a is not b for a, b in zip(held, inputs, strict=True)):
            limits = capacity_limits(environments, self.catalog, self.overhead)
            self._capacity = (inputs, limits)
        return dict(limits)

    def snapshot(self, now: float) -> Snapshot:
        jobs = dict(self.jobs.store.items())
        pods_by_job = {
            key: self.pods.store.by_index("job", key)
            for key in jobs
            if self.pods.store.index_keys("job", key)
        }
        nodes = list(self.nodes.store.values())
        return Snapshot(
            now=now,
            jobs=jobs,
            pods_by_job=pods_by_job,
            queues=dict(self.queues.store.items()),
            policies=dict(self.policies.store.items()),
            capacity=self.capacity(),
            node_compute_environment={
                n.name: n.compute_environment for n in nodes if n.compute_environment
            },
            node_instance={n.name: n.instance_id for n in nodes if n.instance_id},
            departed_by_job={key: list(pods.values()) for key, pods in self._departed.items()},
            decayed_usage=self._usage.decayed(now, self._half_lives()),
            starvation_seconds=self.settings.starvation_seconds,
            namespaces=dict(self.namespaces.store.items()),
            in_flight=dict(self.writer.in_flight),
        )

    # --- fair-share history --------------------------------------------------------------

    def _load_usage(self) -> None:
        usage, times = {}, []
        for queue in self.queues.store.values():
            if queue.share_usage:
                usage[queue.name] = dict(queue.share_usage)
                stamp = parse_time(queue.share_usage_time)
                if stamp:
                    times.append(stamp)
        self._usage = fairshare.UsageHistory(
            {**self._usage.usage, **usage}, min(times) if times else None
        )

    def _half_lives(self) -> dict[str, float]:
        return fairshare.half_lives(
            dict(self.queues.store.items()), dict(self.policies.store.items())
        )

    def _sleep_seconds(self) -> float:
        """Until the next pass if nothing happens: the resync period, or less when a
        queue's counts were held back."""
        return max(min(self.settings.resync_seconds, self._counts_due - time.time()), 0.0)

    async def _persist(self, decisions: Decisions, now: float) -> None:
        self._counts_due = math.inf  # this pass's writes say again what is held back
        self._usage = self._usage.advanced(decisions.running_vcpus, now, self._half_lives())
        usage_due = now - self._last_persist >= self.settings.share_usage_persist_seconds
        if usage_due:
            self._last_persist = now
        environments = dict(self.compute_environments.store.items())
        await asyncio.gather(
            *(
                self._write_queue_status(q, environments, now, usage_due)
                for q in self.queues.store.values()
            ),
            *(self._write_policy_status(p, now) for p in self.policies.store.values()),
        )

    async def _write_queue_status(
        self,
        queue: JobQueue,
        environments: Mapping[str, ComputeEnvironment],
        now: float,
        usage_due: bool,
    ) -> None:
        """What users read is written as soon as it changes (at most once a pass), but a
        change of the job counts alone at most once every `queue_counts_seconds` (a later
        pass writes it: at the latest the resync one); the fair-share history only on its
        period."""
        problem = status.queue_problem(queue, environments, self.policies.store)
        written = self._written_queues.get(queue.name)
        conditions = merge(
            conditions_from_raw(written) if written else queue.conditions,
            [
                status.queue_ready(queue, problem, environments),
                tenancy.namespaces_condition(queue, self.namespaces.store.values()),
            ],
            queue.generation,
            format_time(now),
        )
        body = status.queue_status(queue, self._counts.get(queue.name, {}), problem, conditions)
        changed = written != body
        if (
            changed
            and written is not None
            and now - self._queue_written_at.get(queue.name, 0.0)
            < self.settings.queue_counts_seconds
            and _without_counts(written) == _without_counts(body)
        ):
            changed = False
            # Held back, not dropped: a pass runs when they are due.
            due = self._queue_written_at.get(queue.name, 0.0) + self.settings.queue_counts_seconds
            self._counts_due = min(self._counts_due, due)
        usage = (
            status.share_usage_status(
                (share for share, _ in queue.share_usage),
                self._usage.usage.get(queue.name, {}),
                format_time(now),
            )
            if usage_due
            else None
        )
        if not changed and usage is None:
            return
        patch = {**body, "shareUsage": usage} if usage is not None else body
        if await self._patch_status(JOB_QUEUES, queue.name, patch):
            self._written_queues[queue.name] = body
            self._queue_written_at[queue.name] = now

    async def _write_policy_status(self, policy: SchedulingPolicy, now: float) -> None:
        written = self._written_policies.get(policy.name)
        previous = conditions_from_raw(written) if written else policy.conditions
        body = status.policy_status(policy, self.queues.store.values(), previous, format_time(now))
        if written == body:
            return
        if await self._patch_status(SCHEDULING_POLICIES, policy.name, body):
            self._written_policies[policy.name] = body

    async def _patch_status(self, resource: Resource, name: str, body: dict[str, Any]) -> bool:
        try:
            await self.client.patch(resource, name, {"status": body}, subresource="status")
        except ApiError as exc:
            log.warning("cannot update status", resource=resource.plural, name=name, error=str(exc))
            return False
        return True

    # --- metrics --------------------------------------------------------------------------

    def _observe(self, snap: Snapshot, decisions: Decisions, now: float) -> None:
        def state(key: str, job: JobInfo) -> State:
            decided = decisions.statuses.get(key)
            return decided.state if decided else job.published_state or State.SUBMITTED

        counts = status.count_states(
            snap.queues, ((job.queue, state(key, job)) for key, job in snap.jobs.items())
        )
        JOBS_BY_STATE.clear()
        for queue, states in counts.items():
            for state_name, n in states.items():
                JOBS_BY_STATE.labels(queue, state_name).set(n)
        gangs_waiting = dict.fromkeys(snap.queues, 0)
        for key, job in snap.jobs.items():
            if job.gang and state(key, job) is State.RUNNABLE:
                gangs_waiting[job.queue] = gangs_waiting.get(job.queue, 0) + 1
        GANGS_WAITING.clear()
        for queue, n in gangs_waiting.items():
            GANGS_WAITING.labels(queue).set(n)
        self._counts = counts

        unplaceable = decisions.requeue.keys() | {
            key
            for key, status in decisions.statuses.items()
            if status.state is State.STARTING and status.code is Code.JOB_RESOURCE_REQUIREMENT
        }
        for key in unplaceable - self._counted_unplaceable:
            UNPLACEABLE.labels(snap.jobs[key].queue).inc()
        self._counted_unplaceable = unplaceable  # only jobs still unplaceable: bounded memory

        for key, illegal in decisions.illegal.items():
            seen = self._reported_illegal.get(key)
            if seen is None or (seen.old, seen.new) != (illegal.old, illegal.new):
                ILLEGAL_TRANSITIONS.labels(illegal.old.value, illegal.new.value).inc()
                log.error("illegal job state transition", job=key, error=str(illegal))
        self._reported_illegal = decisions.illegal  # until it is published: bounded memory

        finished: set[str] = set()
        for key, pods in snap.pods_by_job.items():
            queue = snap.jobs[key].queue
            for pod in pods:
                if pod.phase not in ("Succeeded", "Failed"):
                    continue
                finished.add(pod.uid)
                if pod.uid not in self._counted_attempts:
                    ATTEMPTS.labels(queue, _attempt_result(pod)).inc()
        self._counted_attempts = finished  # only pods still present: bounded memory


def _without_counts(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "jobs"}


def _attempt_result(pod: PodInfo) -> str:
    if pod.phase == "Succeeded":
        return "succeeded"
    if pod.disrupted:
        return "host_terminated"
    return "timeout" if pod.reason == "DeadlineExceeded" else "exited"
