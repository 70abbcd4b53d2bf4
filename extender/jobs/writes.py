"""Applying a pass's decisions to the API server.

Admissions and failures are written at once (with the Job's resourceVersion as a
precondition, so a decision made on a stale view can never admit a job twice) and
their results are fed straight back into the cache. The next pass does not wait for
the admissions: it runs while they are in flight, and counts them (`in_flight`) as
holding what they were granted; a write that fails gives it back and its job is
decided again. Published states, reasons and
attempt records go through a queue that keeps only the latest per job, so a burst
of status churn never delays an admission; attempt records and array summaries wait
for the job's next state or reason publication, or a refresh period.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Histogram

from ebb import keys
from ebb.events import EventRecorder, ObjectRef
from ebb.kube import (
    JOBS,
    PODS,
    REQUEST_ERRORS,
    SERVICES,
    TRANSPORT_ERRORS,
    ApiError,
    KubeClient,
    Reflector,
)
from extender.jobs.lifecycle import CONDITION_REASONS, State, Status
from extender.jobs.reconcile import Decisions, Failure, GangRestart
from extender.jobs.retry import ONE_ATTEMPT, effective_strategy
from extender.jobs.snapshot import JobInfo, format_time
from extender.jobs.stamp import SUSPENDED_MUTABLE, stamp_pod_template

log = structlog.get_logger("ebb.jobs")
WRITES = Counter(
    "ebb_job_writes_total", "Writes to Jobs and Pods, by kind and outcome.", ["kind", "outcome"]
)
TRANSITIONS = Counter(
    "ebb_job_transitions_total", "Job state transitions published.", ["from_state", "to_state"]
)
DEPENDENCY_WAIT = Histogram(
    "ebb_dependency_wait_seconds",
    "Time jobs spent PENDING on their dependencies, by queue.",
    ["queue"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 14400, 86400),
)
Json = dict[str, Any]
# At most this many admissions are in flight (being written, or waiting for a write slot);
# a pass writes only what room is left and the rest are decided again by a later pass, a
# moment later and from fresher state, so that a burst of thousands of unsuspends on a
# slow API server never holds back what changed meanwhile (an environment enabled, a job
# cancelled, a higher-priority job submitted).
MAX_ADMISSIONS_IN_FLIGHT = 1000
# Counted when the unsuspend is written, not when a pass decides it: a pass whose write
# failed decides again, and a Job is admitted once.
ADMISSIONS = Counter("ebb_admissions_total", "Jobs admitted (unsuspended), by queue.", ["queue"])
GANGS_ADMITTED = Counter(
    "ebb_gangs_admitted_total",
    "Multi-node jobs admitted (all their pods at once), by queue.",
    ["queue"],
)
GANGS_RETRIED = Counter(
    "ebb_gang_retries_total",
    "Multi-node jobs whose attempt ended and that were retried as a whole, by queue.",
    ["queue"],
)
ADMISSION_WAIT = Histogram(
    "ebb_admission_wait_seconds",
    "Time from creation to admission, by queue.",
    ["queue"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
)


def admission_patch(job: JobInfo, pods: int, status: Status | None, now: float) -> Json:
    annotations: dict[str, str] = {keys.ADMITTED_AT: format_time(now)}
    spec: Json = {"suspend": False}
    if job.elastic:
        spec["parallelism"] = pods
        if job.suspended:
            annotations[keys.REQUESTED_PARALLELISM] = str(job.requested_parallelism)
    if status is not None:
        annotations.update(status_annotations(job, status, now))
    if not job.suspended:  # an array growing: only its parallelism changes
        return {"metadata": {"resourceVersion": job.resource_version}, "spec": spec}
    return {
        "metadata": {"resourceVersion": job.resource_version, "annotations": annotations},
        "spec": spec,
    }


def gang_service(job: JobInfo) -> Json:
    """A multi-node job's headless Service: its pods' subdomain, so each pod resolves as
    `<job>-<index>.<job>` (the main node's address). Owned by the Job, so the garbage
    collector deletes it with the Job. Not-ready pods are published too: the main node's
    name must resolve for the other nodes as soon as its pod has an IP."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": job.name,
            "namespace": job.namespace,
            "labels": {keys.QUEUE_LABEL: job.queue},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": job.name, "uid": job.uid}
            ],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {"batch.kubernetes.io/job-name": job.name},
            "publishNotReadyAddresses": True,
        },
    }


def requeue_patch(job: JobInfo, status: Status, now: float) -> Json:
    """Suspends an admitted Job again (the Job controller deletes its pods), publishing
    why it waits. On the Job as the pass saw it: if it changed since (a pod became
    ready, say), the write conflicts and the next pass decides again."""
    return {
        "metadata": {
            "resourceVersion": job.resource_version,
            "annotations": status_annotations(job, status, now),
        },
        "spec": {"suspend": True},
    }


def restart_patch(job: JobInfo, restart: GangRestart, now: float) -> Json:
    """Ends a multi-node job's attempt: suspended, the Job controller deletes every pod
    still running (uncounted); with the next attempt's number and the ended attempt's
    record in the same write, so a daemon killed at any moment never loses nor repeats
    an attempt. On the Job as the pass saw it: if it changed since, the write conflicts
    and the next pass decides again."""
    annotations = status_annotations(job, restart.status, now)
    annotations[keys.GANG_ATTEMPT] = str(restart.attempt)
    annotations[keys.ATTEMPTS] = restart.record
    return {
        "metadata": {"resourceVersion": job.resource_version, "annotations": annotations},
        "spec": {"suspend": True},
    }


def status_annotations(job: JobInfo, status: Status, now: float) -> dict[str, str]:
    changed = status.state is not job.published_state or status.code.value != job.published_code
    since = now if changed or job.since is None else job.since
    return {
        keys.STATE: status.state.value,
        keys.REASON: status.reason[:2000],
        keys.REASON_CODE: status.code.value,
        keys.STATE_SINCE: format_time(since),
    }


def batch_template_patch(job: JobInfo, spec: Json) -> Json:
    """The spec patch that makes a Job created suspended without the webhook run as the
    webhook would have made it, in what a Job that never ran may still change: its pod
    template's stamp (`SUSPENDED_MUTABLE`) and its backoffLimit."""
    stamped = stamp_pod_template(
        spec["template"], name=job.name, queue=job.queue, share=job.share, job_spec=job.spec
    )
    patch: Json = {
        "template": {
            "metadata": {"labels": stamped["metadata"]["labels"]},
            "spec": {k: stamped["spec"][k] for k in SUSPENDED_MUTABLE if k in stamped["spec"]},
        }
    }
    # backoffLimit is the one retry field a Job's update may change; (a retry strategy
    # needs the webhook: podFailurePolicy, backoffLimitPerIndex and restartPolicy are
    # immutable.) A job without one runs once, as the webhook makes it.
    if effective_strategy(job.spec.retry, spec) is ONE_ATTEMPT:
        patch["backoffLimit"] = 0
    return patch


def failure_status(job: JobInfo, failure: Failure, now: float) -> Json:
    """The Job status that fails it: the Job controller finishes a started job (stopping
    its pods); a job that never started is marked Failed outright."""
    stamp = format_time(now)
    reason = CONDITION_REASONS[failure.code]

    def condition(kind: str) -> Json:
        return {
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": failure.message,
            "lastProbeTime": stamp,
            "lastTransitionTime": stamp,
        }

    if failure.started and job.active + job.terminating > 0:
        return {"status": {"conditions": [condition("FailureTarget")]}}
    status: Json = {"conditions": [condition("FailureTarget"), condition("Failed")]}
    if job.started is None:
        status["startTime"] = stamp  # the API server requires it of a finished Job
    return {"status": status}


class Writer:
    def __init__(
        self,
        client: KubeClient,
        jobs: Reflector[JobInfo],
        events: EventRecorder,
        *,
        concurrency: int = 32,
        reason_refresh_seconds: float = 30.0,
        leading: asyncio.Event | None = None,
        settled: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._leading = leading  # set while this replica may write (None: always)
        self._settled = settled  # called when an admission's write lands or fails
        # job key → pods its admission grants, while the write is in flight
        self._admitting: dict[str, int] = {}
        self._admissions: set[asyncio.Task[None]] = set()
        self._jobs = jobs
        self._events = events
        self._limit = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._refresh = reason_refresh_seconds
        self._pending: dict[str, Json] = {}  # job key → annotations to publish
        self._ready = asyncio.Event()
        self._last_reason: dict[str, float] = {}
        self._last_details: dict[str, float] = {}
        self._announced: dict[str, State] = {}

    # --- decisions -----------------------------------------------------------------------

    @property
    def in_flight(self) -> Mapping[str, int]:
        """Job key → pods granted, for the admissions whose write has not settled."""
        return self._admitting

    async def apply(self, jobs: Mapping[str, JobInfo], decisions: Decisions, now: float) -> None:
        """Starts the admissions (in the order admission granted them, as many as there is
        room in flight for) without waiting for them; writes the rest before returning."""
        room = max(MAX_ADMISSIONS_IN_FLIGHT - len(self._admitting), 0)
        for key, pods in itertools.islice(decisions.admit.items(), room):
            if key not in self._admitting:  # (a pass never admits a job in flight)
                self._start_admission(jobs[key], pods, decisions.statuses.get(key), now)
        ops = [self._requeue(jobs[key], status, now) for key, status in decisions.requeue.items()]
        ops += [self._fail(jobs[key], failure, now) for key, failure in decisions.fail.items()]
        ops += [self._restart(jobs[key], r, now) for key, r in decisions.restart.items()]
        ops += [self._clear_indexes(jobs[key]) for key in decisions.clear_indexes]
        ops += [self._ungate(pod) for pod in decisions.ungate]
        await asyncio.gather(*ops)
        self._queue_publications(jobs, decisions, now)

    def _start_admission(self, job: JobInfo, pods: int, status: Status | None, now: float) -> None:
        self._admitting[job.key] = pods  # before the task runs: the next pass sees it
        task = asyncio.create_task(self._admission(job, pods, status, now))
        self._admissions.add(task)
        task.add_done_callback(self._admissions.discard)

    async def _admission(self, job: JobInfo, pods: int, status: Status | None, now: float) -> None:
        try:
            await self._admit(job, pods, status, now)
        except REQUEST_ERRORS as exc:  # reading a Job to stamp its template
            WRITES.labels("admit", "error").inc()
            log.warning("admission failed", job=job.key, error=str(exc))
        finally:
            # Landed (the cache holds the admitted Job already) or failed (the job holds
            # nothing and is decided again): in the same step, so no pass sees it twice.
            self._admitting.pop(job.key, None)
            self._settled()

    def cancel_admissions(self) -> None:
        """Stops the admissions in flight (the daemon stops): a write already sent may land
        or not; the Job's suspend flag in the API says which, for whoever decides next."""
        for task in self._admissions:
            task.cancel()
        self._admitting.clear()  # (a task cancelled before it started runs no `finally`)

    async def _write(self, kind: str, call: Callable[[], Any]) -> Json | None:
        async with self._limit:
            if self._leading is not None and not self._leading.is_set():
                # Leadership lost while this write waited for a slot: the new leader
                # decides from what the API holds; writing now could over-commit.
                WRITES.labels(kind, "not_leading").inc()
                return None
            try:
                result: Json = await call()
            except ApiError as exc:
                outcome = "conflict" if exc.conflict else "not_found" if exc.not_found else "error"
                WRITES.labels(kind, outcome).inc()
                if outcome == "error":
                    log.warning("write failed", kind=kind, error=str(exc))
                return None
            except TRANSPORT_ERRORS as exc:
                WRITES.labels(kind, "error").inc()
                log.warning("write failed", kind=kind, error=str(exc))
                return None
        WRITES.labels(kind, "ok").inc()
        return result

    async def _admit(self, job: JobInfo, pods: int, status: Status | None, now: float) -> None:
        if job.gang and job.suspended and not await self._create_gang_service(job):
            return  # admitted by a later pass, once its Service exists
        body = admission_patch(job, pods, status, now)
        if job.suspended and not job.template_ready:
            body = await self._with_batch_template(job, body)
        written = await self._write(
            "admit", lambda: self._client.patch(JOBS, job.name, body, job.namespace)
        )
        if written is not None:
            held = self._jobs.store.get(job.key)
            self._jobs.apply_write(written)
            if job.suspended and (held is None or held.suspended):  # not already counted
                ADMISSIONS.labels(job.queue).inc()
                if job.gang:
                    GANGS_ADMITTED.labels(job.queue).inc()
                ADMISSION_WAIT.labels(job.queue).observe(max(now - job.created, 0.0))
            if status is not None:
                self._announce(job, status, now)

    async def _create_gang_service(self, job: JobInfo) -> bool:
        """The multi-node job's headless Service exists (created now, or already)."""
        async with self._limit:
            try:
                await self._client.create(SERVICES, gang_service(job), job.namespace)
            except REQUEST_ERRORS as exc:
                if isinstance(exc, ApiError) and exc.conflict:
                    return True  # created by an earlier admission (requeued since)
                WRITES.labels("service", "error").inc()
                log.warning("cannot create the gang's service", job=job.key, error=str(exc))
                return False
        WRITES.labels("service", "ok").inc()
        return True

    async def _with_batch_template(self, job: JobInfo, body: Json) -> Json:
        """A Job created suspended without the webhook: its pod template stamped now."""
        raw = await self._client.get(JOBS, job.name, job.namespace)
        body["spec"].update(batch_template_patch(job, raw["spec"]))
        return body

    async def _requeue(self, job: JobInfo, status: Status, now: float) -> None:
        body = requeue_patch(job, status, now)
        written = await self._write(
            "requeue", lambda: self._client.patch(JOBS, job.name, body, job.namespace)
        )
        if written is not None:
            self._jobs.apply_write(written)
            log.info(
                "job back in its queue", job=job.key, code=status.code.value, reason=status.reason
            )
            self._announce(job, status, now)

    async def _restart(self, job: JobInfo, restart: GangRestart, now: float) -> None:
        body = restart_patch(job, restart, now)
        written = await self._write(
            "restart", lambda: self._client.patch(JOBS, job.name, body, job.namespace)
        )
        if written is not None:
            self._jobs.apply_write(written)
            GANGS_RETRIED.labels(job.queue).inc()
            log.info(
                "gang attempt ended, retried as a whole", job=job.key, reason=restart.status.reason
            )
            self._announce(job, restart.status, now)

    async def _clear_indexes(self, job: JobInfo) -> None:
        """A suspended multi-node job's next attempt runs every node: no index completed.
        (The API server lets an Indexed Job with completions = parallelism lower
        status.succeeded.) Conditional on the Job as the pass saw it."""
        body = {
            "metadata": {"resourceVersion": job.resource_version},
            "status": {"completedIndexes": "", "succeeded": 0},
        }
        written = await self._write(
            "clear_indexes",
            lambda: self._client.patch(JOBS, job.name, body, job.namespace, subresource="status"),
        )
        if written is not None:
            self._jobs.apply_write(written)
            log.info(
                "completed indexes cleared for the next attempt",
                job=job.key,
                cleared=job.completed_indexes,
            )

    async def _fail(self, job: JobInfo, failure: Failure, now: float) -> None:
        body = failure_status(job, failure, now)
        written = await self._write(
            "fail",
            lambda: self._client.patch(
                JOBS, job.name, body, job.namespace, patch_type="strategic", subresource="status"
            ),
        )
        if written is not None:
            self._jobs.apply_write(written)
            log.info(
                "job failed by ebb", job=job.key, code=failure.code.value, reason=failure.message
            )

    async def _ungate(self, pod_key: str) -> None:
        namespace, name = pod_key.split("/", 1)

        async def call() -> Json:
            raw = await self._client.get(PODS, name, namespace)
            gates = raw.get("spec", {}).get("schedulingGates") or []
            kept = [g for g in gates if g.get("name") != keys.N_TO_N_GATE]
            patch = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": raw["metadata"]["resourceVersion"],
                },
                {"op": "replace", "path": "/spec/schedulingGates", "value": kept},
            ]
            return await self._client.patch(PODS, name, patch, namespace, patch_type="json")

        await self._write("ungate", call)

    # --- publications ------------------------------------------------------------------

    def _queue_publications(
        self, jobs: Mapping[str, JobInfo], decisions: Decisions, now: float
    ) -> None:
        for key, status in decisions.statuses.items():
            if key in decisions.admit or key in decisions.requeue or key in decisions.restart:
                continue  # published with the admission (or the suspension) itself
            job = jobs[key]
            annotations: dict[str, str] = {}
            if self._should_publish(job, status, now):
                annotations.update(status_annotations(job, status, now))
                self._last_reason[key] = now
            if annotations:
                self._enqueue(job, annotations)
                self._announce(job, status, now)
        details: dict[str, dict[str, str]] = {}
        for key, record in decisions.attempts.items():
            details.setdefault(key, {})[keys.ATTEMPTS] = record
        for key, counts in decisions.array_status.items():
            text = orjson.dumps(counts).decode()
            if text != jobs[key].array_status:
                details.setdefault(key, {})[keys.ARRAY_STATUS] = text
        for key, annotations in details.items():
            if key in self._pending or self._details_due(key, now):
                self._last_details[key] = now
                self._enqueue(jobs[key], annotations)

    def _details_due(self, key: str, now: float) -> bool:
        """Attempt records and array summaries change with every pod that ends. Each write
        changes the Job's resourceVersion, and the Job controller's next status update
        then conflicts and backs off; so they ride along with the job's next state or
        reason publication, or are written on their own at most once a refresh period."""
        last = self._last_details.setdefault(key, now)
        return now - last >= self._refresh

    def _should_publish(self, job: JobInfo, status: Status, now: float) -> bool:
        if status.state is not job.published_state or status.code.value != job.published_code:
            return True
        if status.reason == job.published_reason:
            return False
        last = self._last_reason.setdefault(job.key, now)  # after a restart: wait a period
        return now - last >= self._refresh

    def _announce(self, job: JobInfo, status: Status, now: float) -> None:
        """A state transition: an Event, and its metrics (once per transition)."""
        if self._announced.get(job.key) is status.state or status.state is job.published_state:
            return
        self._announced[job.key] = status.state
        before = job.published_state
        TRANSITIONS.labels(before.value if before else "NONE", status.state.value).inc()
        if before is State.PENDING and job.since is not None:
            DEPENDENCY_WAIT.labels(job.queue).observe(max(now - job.since, 0.0))
        ref = ObjectRef("batch/v1", "Job", job.name, job.namespace, job.uid)
        self._events.record(
            ref, status.state.value.title(), status.reason, warning=status.state is State.FAILED
        )

    def _enqueue(self, job: JobInfo, annotations: dict[str, str]) -> None:
        pending = self._pending.setdefault(job.key, {})
        pending.update(annotations)
        self._ready.set()

    def forget(self, key: str) -> None:
        self._last_reason.pop(key, None)
        self._last_details.pop(key, None)
        self._announced.pop(key, None)
        self._pending.pop(key, None)

    async def publish_forever(self) -> None:
        """Drain the publication queue with bounded concurrency."""
        workers = [asyncio.create_task(self._publisher()) for _ in range(self._concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()

    async def _publisher(self) -> None:
        while True:
            if not self._pending:
                self._ready.clear()
                await self._ready.wait()
                continue
            key, annotations = next(iter(self._pending.items()))
            del self._pending[key]
            job = self._jobs.store.get(key)
            if job is None or (job.uncounted and job.terminal is None) or key in self._admitting:
                # Gone, or see below, or its admission (which publishes its state) is being
                # written: a job is never written twice at once. The next pass decides again.
                continue
            written = await self._write("publish", self._publish_call(job, annotations))
            if written is not None:
                self._jobs.apply_write(written)

    def _publish_call(self, job: JobInfo, annotations: dict[str, str]) -> Callable[[], Any]:
        """A write on the Job as last seen, never while the Job controller is moving
        finished pods into its counters (uncountedTerminatedPods): a write between its
        two status updates makes the second conflict, and from its then stale view it
        runs the pod's slot again (kubernetes#130103). The version precondition makes
        that hold although the queue may hold a publication a while: if the Job changed
        since, the write conflicts and the next pass decides again."""
        body = {"metadata": {"resourceVersion": job.resource_version, "annotations": annotations}}
        return lambda: self._client.patch(JOBS, job.name, body, job.namespace)
