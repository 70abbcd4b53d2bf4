"""One scheduling pass over a snapshot of every managed Job: pure, no I/O, no clock.

`reconcile(snapshot)` decides, for every job, its state and reason and what to do:
admit it (and with how many pods), put it back in its queue (admitted, but no node
its environments may have can hold its pods and none is placed), fail it (cancelled,
invalid, a failed dependency, a state time limit), terminate it (on request, or an
attempt that timed out), end a multi-node job's attempt when one of its nodes fails
(and retry the gang as a whole), lift n_to_n gates, and update its attempt record. The
controller applies the decisions. Every state decided goes through the state machine's
`transition()` before it leaves: one that is no edge from the published state is
reported (`Decisions.illegal`).
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from ebb.jobspec import RetryAction
from ebb.model import JobQueue, NamespaceInfo, PodInfo, SchedulingPolicy
from ebb.resources import Resources
from extender.jobs import attempts as attempt_records
from extender.jobs import tenancy
from extender.jobs.admission import (
    AdmissionResult,
    Backlog,
    CapacityLimit,
    Demand,
    Holdings,
    QueueView,
    Waiting,
    admit,
)
from extender.jobs.dependencies import DependencyVerdict, resolve
from extender.jobs.lifecycle import (
    Code,
    IllegalTransition,
    State,
    Status,
    failed_code,
    transition,
)
from extender.jobs.retry import ATTEMPT_TIMED_OUT, ONE_ATTEMPT, verdict
from extender.jobs.snapshot import JobInfo, format_time, parse_index_ranges, parse_time

# Enum member lookups are slow on Python 3.11 and these run once per job.
_RUNNABLE = State.RUNNABLE
_FINISHED = ("Succeeded", "Failed")
_NO_DEPENDENCIES = DependencyVerdict(ready=True)


@dataclass(frozen=True)
class Snapshot:
    now: float
    jobs: Mapping[str, JobInfo]  # "namespace/name" → job
    pods_by_job: Mapping[str, Sequence[PodInfo]]  # job key → its pods, all phases
    queues: Mapping[str, JobQueue]
    policies: Mapping[str, SchedulingPolicy]
    capacity: Mapping[str, CapacityLimit]  # CE → what it may hold
    node_compute_environment: Mapping[str, str]  # node → CE (batch nodes)
    node_instance: Mapping[str, str] = field(default_factory=dict)  # node → EC2 instance id
    # job key → its finished pods deleted before their attempt was published (a lost
    # node's pods are deleted at once): for the attempt record only.
    departed_by_job: Mapping[str, Sequence[PodInfo]] = field(default_factory=dict)
    decayed_usage: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    starvation_seconds: float = 600.0
    # name → namespace (tenancy: labels, Terminating); one not here has no labels.
    namespaces: Mapping[str, NamespaceInfo] = field(default_factory=dict)
    # job key → the pods (parallelism) its admission grants, for admissions whose write is
    # in flight: each holds them as an admitted job would, and nothing else is decided of
    # it (nor written) until its write lands or fails.
    in_flight: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failure:
    code: Code
    message: str
    started: bool  # the Job ran pods: stop them (FailureTarget), else fail it outright


@dataclass(frozen=True, slots=True)
class GangRestart:
    """A multi-node job's attempt ended and is retried as a whole: suspend the Job (the
    Job controller deletes every pod still running) with its next attempt number, its
    attempt record and the RUNNABLE status it waits in; admission starts it again."""

    attempt: int
    status: Status
    record: str


class Statuses(MutableMapping[str, Status]):
    """Every job's decided state and reason: those decided one by one, and the waiting
    jobs of queues whose rest admission settled (`Waiting`), built when read."""

    def __init__(self, eager: dict[str, Status] | None = None) -> None:
        self.eager: dict[str, Status] = {} if eager is None else eager
        self.waiting: Waiting | None = None
        self._demands: Mapping[str, Demand] = {}

    def settled(self, waiting: Waiting, demands: Mapping[str, Demand]) -> None:
        """Adds the settled tails' statuses of jobs not admitted (`demands`: by key)."""
        self.waiting, self._demands = waiting, demands

    def _lazy(self, key: str) -> Status | None:
        if self.waiting is None or key in self.waiting.eager:
            return None
        d = self._demands.get(key)
        if d is None or d.granted:
            return None
        return self.waiting.get(key)

    def __getitem__(self, key: str) -> Status:
        found = self.eager.get(key)
        if found is None:
            found = self._lazy(key)
            if found is None:
                raise KeyError(key)
        return found

    def get(self, key: str, default: Status | None = None) -> Status | None:  # type: ignore[override]
        found = self.eager.get(key)
        if found is None:
            found = self._lazy(key)
        return default if found is None else found

    def __contains__(self, key: object) -> bool:
        return key in self.eager or (isinstance(key, str) and self._lazy(key) is not None)

    def __setitem__(self, key: str, status: Status) -> None:
        self.eager[key] = status

    def __delitem__(self, key: str) -> None:
        del self.eager[key]

    def _tails(self) -> Iterator[tuple[str, Status]]:
        if self.waiting is None:
            return
        for tail in self.waiting.tails.values():
            for key, status in tail.items():
                if status.position and key not in self.eager:
                    yield key, status

    def __iter__(self) -> Iterator[str]:
        yield from self.eager
        for key, _ in self._tails():
            yield key

    def items(self) -> Iterator[tuple[str, Status]]:  # type: ignore[override]
        yield from self.eager.items()
        yield from self._tails()

    def __len__(self) -> int:
        return len(self.eager) + sum(1 for _ in self._tails())


@dataclass
class Decisions:
    statuses: MutableMapping[str, Status] = field(default_factory=Statuses)
    admit: dict[str, int] = field(default_factory=dict)  # job → pods (parallelism) granted
    # Admitted jobs to suspend again, with the RUNNABLE status they wait in: no node their
    # environments may have can hold their pods (changed since admission) and none is bound.
    requeue: dict[str, Status] = field(default_factory=dict)
    fail: dict[str, Failure] = field(default_factory=dict)
    restart: dict[str, GangRestart] = field(default_factory=dict)
    # Multi-node jobs waiting for their next attempt whose completed indexes (nodes that
    # exited 0 in the ended attempt) are to be cleared: the next attempt runs every node.
    clear_indexes: list[str] = field(default_factory=list)
    ungate: list[str] = field(default_factory=list)  # pod keys
    # Jobs with a finished pod the Job controller has not counted yet: nothing is decided
    # or written for them this pass (their attempt record included).
    counting: set[str] = field(default_factory=set)
    attempts: dict[str, str] = field(default_factory=dict)  # job → new attempts record
    array_status: dict[str, dict[str, int]] = field(default_factory=dict)
    running_vcpus: dict[str, dict[str, float]] = field(default_factory=dict)  # queue → share →
    used: dict[str, float] = field(default_factory=dict)  # CE → admitted vCPUs
    # Statuses whose state is no edge from the published one (a bug): published all the
    # same, as the state the Job's conditions and pods say; the controller reports them.
    illegal: dict[str, IllegalTransition] = field(default_factory=dict)


def reconcile(snap: Snapshot, *, settle: bool = True) -> Decisions:
    """One pass over the whole snapshot (`Reconciler` keeps what it can for the next)."""
    return Reconciler().run(snap, settle=settle)


class Reconciler:
    """Scheduling passes that redo only what changed since the last.

    What a pass decides of a job alone (its state outside admission, its demand, its
    attempt record, a failure it asks for...) depends on the job, its pods and the
    cluster's configuration (queues, policies, namespaces, environments, nodes): it is
    kept, and redone for the jobs `run` is told changed, for every job when the
    configuration changed, and on every pass for the few that read the clock or other
    jobs (dependencies, gangs, a wait not published yet). The waiting demands are kept
    sorted (`Backlog`); admission itself runs every pass, over what holds capacity and
    that sorted backlog, and builds the waiting statuses of settled queues only when
    read. Decides exactly what a fresh pass over the same snapshot decides."""

    def __init__(self) -> None:
        self._reset(None)

    def _reset(self, world: tuple[object, ...] | None) -> None:
        self._world = world
        self._nodes: tuple[dict[str, str], dict[str, str]] = ({}, {})
        self._base = Decisions(statuses={})  # what each job decided alone, before admission
        self._ungate: dict[str, list[str]] = {}  # job → pod keys to ungate
        self._clear: dict[str, None] = {}  # jobs whose completed indexes are cleared
        self._requeue: set[str] = set()
        self._holding = Holdings()  # jobs granted pods: what they hold
        self._backlog = Backlog()
        self._volatile: set[str] = set()  # redone every pass
        self._unpublished: set[str] = set()  # waiting, published as not RUNNABLE
        self._never = _NeverPlaced()
        self._refusal = _Refused()
        self._in_flight: Mapping[str, int] = {}

    def run(
        self, snap: Snapshot, changed: Collection[str] | None = None, *, settle: bool = True
    ) -> Decisions:
        """`changed`: the keys of the jobs added, changed or deleted since the last run, or
        whose pods (or departed pods) changed; None: any may have."""
        with _collector_paused():
            return self._run(snap, changed, settle)

    def _run(self, snap: Snapshot, changed: Collection[str] | None, settle: bool) -> Decisions:
        world = _world(snap)
        nodes = (dict(snap.node_compute_environment), dict(snap.node_instance))
        cold = changed is None or world != self._world
        if cold:
            self._reset(world)
            redo: Collection[str] = snap.jobs
        else:
            redo = {*changed, *self._volatile} if changed else set(self._volatile)
            # Admissions whose write went in flight, landed or failed since the last run.
            was, now_in = self._in_flight, snap.in_flight
            redo.update(k for k in was.keys() | now_in.keys() if was.get(k) != now_in.get(k))
            if nodes != self._nodes:  # read only for jobs' pods (where bound, attempts)
                redo.update(snap.pods_by_job, snap.departed_by_job)
            for key in redo:
                self._forget(key)
        self._nodes = nodes
        self._in_flight = dict(snap.in_flight)
        self._never.snap = self._refusal.snap = snap  # (their answers: the configuration's)
        added: list[Demand] = []
        jobs = snap.jobs
        for key in redo:
            job = jobs.get(key)
            if job is None:
                continue  # deleted
            demand = self._decide_alone(key, job, snap)
            if demand is not None and demand.want > demand.granted:
                added.append(demand)
        self._backlog = Backlog(added) if cold else self._backlog.updated(redo, added)
        for queue in self._backlog.growing.values():
            for key in queue:  # an admitted job's demand has waited for nothing
                self._backlog.demands[key].runnable_since = snap.now
        return self._admit(snap, settle)

    def _forget(self, key: str) -> None:
        base = self._base
        for table in (
            base.statuses,
            base.attempts,
            base.fail,
            base.restart,
            base.array_status,
            base.illegal,
            self._ungate,
            self._clear,
        ):
            table.pop(key, None)
        self._holding.remove(key)
        for keys in (base.counting, self._requeue, self._volatile, self._unpublished):
            keys.discard(key)

    def _decide_alone(self, key: str, job: JobInfo, snap: Snapshot) -> Demand | None:
        """What the pass decides of one job outside admission (kept in `_base`); returns
        its demand."""
        granted = snap.in_flight.get(key)
        if granted is not None:
            self._holding.add(_in_flight(job, granted, snap.pods_by_job.get(key, ()), snap))
            return None
        out = self._base
        ungated, cleared = len(out.ungate), len(out.clear_indexes)
        pods = snap.pods_by_job.get(key, ())
        departed = snap.departed_by_job.get(key, ())
        admitted = not job.suspended
        counting = False
        if admitted and job.terminal is None and _uncounted(job, pods):
            out.counting.add(key)
            counting = True
        elif pods or departed:
            finished = (*departed, *pods) if departed else pods
            record = _merge_record(job, finished, snap)
            if record is not None:
                out.attempts[key] = record
        status, demand = self._job(job, pods, snap, counting)
        if status is not None:
            out.statuses[key] = status
            _check_transition(key, job, status, out.illegal)
        if job.is_array and not counting:
            out.array_status[key] = _array_summary(job, pods, status)
        if len(out.ungate) > ungated:
            self._ungate[key] = out.ungate[ungated:]
            del out.ungate[ungated:]
        if len(out.clear_indexes) > cleared:
            self._clear[key] = None
            del out.clear_indexes[cleared:]
        if job.spec.depends_on or (admitted and job.gang):
            self._volatile.add(key)  # reads other jobs, or the clock
        if demand is not None:
            if demand.granted:
                self._holding.add(demand)
            elif not (job.published_state is _RUNNABLE and job.since):
                self._volatile.add(key)  # waits since now
            if not demand.granted and job.published_state is not _RUNNABLE:
                self._unpublished.add(key)
        return demand

    def _job(
        self, job: JobInfo, pods: Sequence[PodInfo], snap: Snapshot, counting: bool
    ) -> tuple[Status | None, Demand | None]:
        """The status of one job outside admission, and its demand if it wants pods.
        `counting`: a finished pod is not counted yet: its outcome is not known, the state
        stays. An admitted job to put back in its queue is added to `requeue`, its demand
        that of a job not admitted."""
        out, never, refusal, requeue = self._base, self._never, self._refusal, self._requeue
        key = job.key
        if job.terminal == "Complete":
            return Status(State.SUCCEEDED, Code.SUCCEEDED, _succeeded_reason(job)), None
        if job.terminal == "Failed":
            code = failed_code(job.terminal_reason)
            return Status(State.FAILED, code, _failed_reason(job, code)), None
        admitted = not job.suspended
        started = admitted or job.started is not None
        if job.failure_target:
            # Stopping: the Job controller is removing its pods and will mark it Failed.
            return None, _held(job, pods, snap) if admitted else None
        asked = _asked_failure(job, started)
        if asked is not None:
            out.fail[key] = asked
            return None, None
        verdict = (
            resolve(job, lambda name: snap.jobs.get(f"{job.namespace}/{name}"))
            if job.spec.depends_on
            else _NO_DEPENDENCIES
        )
        if verdict.failed is not None:
            out.fail[key] = Failure(Code.DEPENDENCY_FAILED, verdict.failed, started)
            return None, None
        if admitted:
            timed_out = _timed_out(job, pods)
            if timed_out is not None:
                out.fail[key] = Failure(Code.TIMEOUT, timed_out, True)
                return None, None
            if job.gang and not counting and _gang_attempt_ends(job, pods, snap, out):
                return out.restart[key].status if key in out.restart else None, None
            status = None if counting else _admitted_status(job, pods)
            if status is not None and status.state is State.STARTING and not job.ready:
                unplaceable = never(job)
                queued = _waiting(job, snap) if unplaceable and _unplaced(job, pods) else None
                if queued is not None:
                    requeue.add(key)
                    return None, queued
                status = unplaceable or status
            gated = [p for p in pods if p.scheduling_gated and p.completion_index is not None]
            out.ungate.extend(p.key for p in gated if p.completion_index in verdict.ungated_indexes)
            return status, _held(job, pods, snap)
        if not verdict.ready:
            return Status(
                State.PENDING, Code.DEPENDENCY_WAIT, "waiting for " + ", ".join(verdict.waiting_for)
            ), None
        share = _share(job, snap)
        refused = refusal(job, share)
        if refused is not None:
            return refused, None
        if job.gang and job.completed_indexes:
            # A node that exited 0 before its attempt ended keeps its index completed, and the
            # Job controller would start the next attempt without it: a gang short of a node
            # waits forever. AWS Batch runs every node anew, so the index is cleared first
            # (once the Job controller has counted every finished pod), then it is admitted.
            if not _uncounted(job, pods):
                out.clear_indexes.append(key)
            return None, None
        return None, waiting_demand(job, share, snap.now)

    def _admit(self, snap: Snapshot, settle: bool) -> Decisions:
        base = self._base
        statuses = Statuses(dict(base.statuses))
        out = Decisions(
            statuses=statuses,
            fail=dict(base.fail),
            restart=dict(base.restart),
            clear_indexes=list(self._clear),
            ungate=[pod for pods in self._ungate.values() for pod in pods],
            counting=set(base.counting),
            attempts=dict(base.attempts),
            array_status=dict(base.array_status),
            illegal=dict(base.illegal),
        )
        queue_views = {
            name: QueueView(
                name,
                q.priority,
                q.compute_environments,
                snap.policies.get(q.scheduling_policy) if q.scheduling_policy else None,
                snap.decayed_usage.get(name, {}),
            )
            for name, q in snap.queues.items()
        }
        backlog = self._backlog
        result = admit(
            queue_views,
            snap.capacity,
            (),
            snap.now,
            snap.starvation_seconds,
            backlog=backlog,
            holdings=self._holding,
            settle=settle,
        )
        out.running_vcpus = result.running_vcpus
        out.used = {ce: r.cpu_milli / 1000 for ce, r in result.used.items()}
        waiting = result.waiting
        assert isinstance(waiting, Waiting)
        statuses.settled(waiting, backlog.demands)
        decided = dict.fromkeys(result.grants)
        decided.update(dict.fromkeys(waiting.eager))
        decided.update(dict.fromkeys(self._requeue))
        for key in decided:
            d = backlog.demands.get(key) or self._holding.demands.get(key)
            if d is not None:
                _decide(
                    d,
                    result,
                    snap,
                    out,
                    requeued=key in self._requeue,
                    counting=key in out.counting,
                )
        for name, tail in waiting.tails.items():
            queue = snap.queues.get(name)
            if queue is None or not queue.state_time_limit_actions:
                continue
            for d in tail.demands():
                if not d.granted and d.key not in self._requeue:
                    _decide(d, result, snap, out, requeued=False, counting=False)
        # In the order admission granted them (queue priority, fair share, FIFO): a writer that
        # writes only the first ones writes those.
        out.admit = {key: out.admit[key] for key in result.grants if key in out.admit}
        jobs = snap.jobs
        for key in (*decided, *self._unpublished):
            status = out.statuses.get(key)
            if status is not None:
                _check_transition(key, jobs[key], status, out.illegal)
        return out


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A pass builds one demand per waiting job, 100,000s that live on, and no reference
    cycles: the cyclic collector, run every few hundred of them, would walk the growing
    heap again and again (a sixth of a cold pass). Paused for the pass (left as it was:
    a caller may have paused it itself)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _world(snap: Snapshot) -> tuple[object, ...]:
    """What a job's own decisions read besides the job, its pods and the nodes they are
    on. (Compared cheaply: the caches hand out the same objects until they change.)"""
    return (
        dict(snap.queues),
        dict(snap.policies),
        dict(snap.namespaces),
        dict(snap.capacity),
        snap.starvation_seconds,
    )


def _check_transition(
    key: str, job: JobInfo, status: Status, illegal: dict[str, IllegalTransition]
) -> None:
    old = job.published_state
    if status.state is not old:  # most jobs stay where they are: no call for them
        try:
            transition(old, status.state)
        except IllegalTransition as exc:
            illegal[key] = exc


def _decide(
    d: Demand,
    result: AdmissionResult,
    snap: Snapshot,
    out: Decisions,
    *,
    requeued: bool,
    counting: bool,
) -> None:
    """What admission's result means for one job: admitted (or grown), waiting with its
    reason (failed past its queue's state time limit), or suspended again."""
    job = snap.jobs[d.key]
    if requeued:
        # Asked for as a job not admitted: admission says why it waits (it grants
        # nothing, as no node can hold it), as it would of one just submitted.
        waiting = result.waiting.get(d.key)
        if waiting is not None:
            out.requeue[d.key] = out.statuses[d.key] = waiting
        return
    granted = result.grants.get(d.key)
    if granted is not None and granted > d.granted and not counting:
        out.admit[d.key] = granted
        if not job.admitted:
            out.statuses[d.key] = Status(
                State.STARTING,
                Code.ADMITTED,
                f"admitted to queue {d.queue} with {granted} pod(s) of {_text(d.request)}",
            )
    if job.admitted:
        return
    waiting = result.waiting.get(d.key)
    if waiting is None:
        return
    out.statuses[d.key] = waiting
    queue = snap.queues.get(job.queue)
    if queue is not None and queue.state_time_limit_actions:
        limit = _time_limit_exceeded(job, queue, waiting.code, snap.now)
        if limit is not None:
            out.fail[d.key] = Failure(Code.STATE_TIME_LIMIT, limit, started=False)


# Thousands admitted per pass, of a few shapes.
_text: Callable[[Resources], str] = functools.lru_cache(maxsize=1024)(str)


def _uncounted(job: JobInfo, pods: Sequence[PodInfo]) -> bool:
    """Has a pod of this Job finished that the Job controller has not counted yet? It
    lists such a pod in status.uncountedTerminatedPods, removes the pod's finalizer,
    then counts it in status.succeeded/failed. Any other write to the Job in between
    makes that last update conflict, and the Job controller then re-syncs from a
    cached Job that may predate its own first write: it sees neither the pod (no
    finalizer) nor its count, and starts the slot again (kubernetes#130103) — a second
    run of a success, or an attempt beyond the limit. Ebb writes nothing to such a Job
    until the count has landed."""
    return job.uncounted > 0 or any(p.job_tracking and p.phase in _FINISHED for p in pods)


class _NeverPlaced:
    """Why an admitted job's pods can never be placed (its queue's environments changed
    since it was accepted: no node they may have holds its pods), memoised per shape."""

    snap: Snapshot  # the pass's (what it reads of it is the configuration)

    def __init__(self) -> None:
        self._memo: dict[tuple[str, Resources], Status | None] = {}

    def __call__(self, job: JobInfo) -> Status | None:
        key = (job.queue, job.pod_request)
        if key not in self._memo:
            self._memo[key] = self._decide(job.queue, job.pod_request)
        return self._memo[key]

    def _decide(self, queue_name: str, request: Resources) -> Status | None:
        queue = self.snap.queues.get(queue_name)
        if queue is None:
            return None
        capacity = self.snap.capacity
        whys = []
        for ce in queue.compute_environments:
            why = capacity[ce].misfit(ce, request) if ce in capacity else None
            if why is None:
                return None
            whys.append(why)
        return Status(
            State.STARTING,
            Code.JOB_RESOURCE_REQUIREMENT,
            f"admitted, but no node can ever hold its pods, so they hold no capacity: "
            f"{'; '.join(whys)}",
        )


def _asked_failure(job: JobInfo, started: bool) -> Failure | None:
    """The failure a job's own annotations ask for, if any: invalid, terminated, or
    cancelled (AWS Batch cancels a job until it is STARTING: one put back in its queue
    too)."""
    if job.spec_error is not None:
        return Failure(Code.INVALID, f"invalid annotation: {job.spec_error}", started)
    if job.terminate is not None:
        return Failure(Code.TERMINATED, f"terminated: {job.terminate}", started)
    if job.cancel is not None and not job.admitted:
        return Failure(Code.CANCELLED, f"cancelled: {job.cancel}", started)
    return None


def _merge_record(
    job: JobInfo,
    pods: Sequence[PodInfo],
    snap: Snapshot,
    end: attempt_records.GangEnd | None = None,
) -> str | None:
    """The job's new attempt record (None: unchanged); a multi-node job's entries carry
    its attempt, and the record has room for two attempts of every node."""
    if job.spec.multi_node is None:
        return attempt_records.merge(job.attempts_json, pods, snap.node_instance)
    return attempt_records.merge(
        job.attempts_json,
        pods,
        snap.node_instance,
        gang_attempt=job.gang_attempt,
        end=end,
        keep=max(attempt_records.KEEP, 2 * job.spec.multi_node.nodes),
    )


def _gang_attempt_ends(
    job: JobInfo, pods: Sequence[PodInfo], snap: Snapshot, out: Decisions
) -> bool:
    """AWS Batch's multi-node semantics: one node's failure (its container failed, or its
    host was lost) ends the gang's attempt; the main node's success is the Job's (its
    successPolicy). An ended attempt is retried as a whole if the retry strategy allows
    (`out.restart`), else the job fails (`out.fail`). Pods of earlier attempts (created
    before this admission) linger finished and are not this attempt's."""
    multi_node = job.spec.multi_node
    assert multi_node is not None
    main = multi_node.main_node_index
    admitted_at = job.admitted_at or 0.0
    current = [
        p
        for p in (*snap.departed_by_job.get(job.key, ()), *pods)
        if (parse_time(p.created) or 0.0) >= admitted_at
    ]
    if job.success_criteria_met or any(
        p.completion_index == main and p.phase == "Succeeded" for p in current
    ):
        return False
    failed = [p for p in current if p.phase == "Failed"]
    if not failed:
        return False
    # The main node's failure decides; else the first node to fail.
    first = min(
        failed,
        key=lambda p: (p.completion_index != main, p.finished or p.disrupted_at or "", p.name),
    )
    ended = attempt_records.from_pod(first, snap.node_instance)
    assert ended is not None
    strategy = job.spec.retry or ONE_ATTEMPT
    number = job.gang_attempt
    how = (
        ended.statusReason
        if first.disrupted
        else f"exit code {ended.exitCode} ({ended.statusReason})"
    )
    what = (
        f"attempt {number} of {strategy.attempts} ended: node index {first.completion_index} "
        f"(pod {first.name} on node {first.node_name or '?'}): {how}"
    )
    end = attempt_records.GangEnd(
        number, f"Stopped: node index {first.completion_index} failed", format_time(snap.now)
    )
    record = _merge_record(job, current, snap, end)
    if verdict(strategy, ended.exitCode, ended.statusReason) is RetryAction.EXIT:
        failure = Failure(Code.EXIT_RULE, f"{what}; an evaluateOnExit rule says EXIT", True)
    elif number >= strategy.attempts:
        failure = Failure(
            Code.ATTEMPTS_EXHAUSTED, f"{what}; all {strategy.attempts} attempt(s) used", True
        )
    else:
        status = Status(
            _RUNNABLE,
            Code.RETRY_WAIT,
            f"{what}; the gang is retried as a whole: attempt {number + 1} waits for "
            f"its {multi_node.nodes} nodes",
        )
        out.restart[job.key] = GangRestart(number + 1, status, record or job.attempts_json)
        out.attempts.pop(job.key, None)  # written with the restart
        return True
    out.fail[job.key] = failure
    if record is not None:
        out.attempts[job.key] = record
    return True


def _waiting(job: JobInfo, snap: Snapshot) -> Demand | None:
    return waiting_demand(job, _share(job, snap), snap.now)


def waiting_demand(job: JobInfo, share: str, now: float) -> Demand | None:
    """The demand of a job not admitted (None: it wants no pod); a job RUNNABLE since a
    published time has waited since then, any other from `now`."""
    want = min(job.requested_parallelism, job.remaining)
    if want <= 0:
        return None
    since = job.since if job.published_state is _RUNNABLE and job.since else now
    # (Positional: a call with keywords costs twice as much, by the 100,000.)
    return Demand(
        job.key,
        job.queue,
        job.pod_request,
        want,
        0,
        share,
        job.spec.scheduling_priority,
        job.created,
        since,
        job.elastic,
        None,
        job.gang,
    )


def _share(job: JobInfo, snap: Snapshot) -> str:
    if job.share:  # (most jobs: no queue to look up)
        return job.share
    return tenancy.effective_share(job.share, job.namespace, snap.queues.get(job.queue))


class _Refused:
    """Why a job its namespace may not run in its queue, or with its share, is never
    admitted (it got past the webhook: created suspended, or labelled later): it waits
    RUNNABLE with why, and goes on once the namespace's labels (or the rules) allow it.
    Memoised per (namespace, queue, share): many jobs share them."""

    snap: Snapshot  # the pass's (what it reads of it is the configuration)

    def __init__(self) -> None:
        self._memo: dict[tuple[str, str, str], Status | None] = {}

    def __call__(self, job: JobInfo, share: str) -> Status | None:
        """(`share`: the job's effective share.)"""
        key = (job.namespace, job.queue, share)
        if key not in self._memo:
            self._memo[key] = self._decide(*key)
        return self._memo[key]

    def _decide(self, namespace_name: str, queue_name: str, share: str) -> Status | None:
        queue = self.snap.queues.get(queue_name)
        if queue is None:
            return None  # admission says the queue does not exist
        namespace = self.snap.namespaces.get(namespace_name) or NamespaceInfo(namespace_name)
        policies = self.snap.policies
        policy = policies.get(queue.scheduling_policy) if queue.scheduling_policy else None
        refusal = tenancy.check(namespace, queue, share, policy)
        if refusal is None:
            return None
        return Status(_RUNNABLE, refusal.code, f"not admitted: {refusal}", 0, queue_name)


def _unplaced(job: JobInfo, pods: Sequence[PodInfo]) -> bool:
    """May this admitted job be suspended again without stopping anything that runs?
    Suspending a Job makes the Job controller delete its unfinished pods (uncounted: it
    removes their finalizer first), so: no pod bound to a node, and each unfinished pod
    one kube-scheduler found no node for (or still gated). Every pod the Job counts as
    active must be in view: one the pod cache has not seen yet may be bound. (The
    write's resourceVersion precondition keeps a pod that became ready meanwhile.)"""
    unfinished = 0
    for pod in pods:
        if pod.phase in _FINISHED:
            continue
        if pod.node_name or pod.phase != "Pending":
            return False
        if not (pod.unschedulable or pod.scheduling_gated or pod.terminating):
            return False
        unfinished += 1
    return unfinished >= job.active


def _held(job: JobInfo, pods: Sequence[PodInfo], snap: Snapshot) -> Demand:
    bound: dict[str, int] = {}
    active = 0
    for pod in pods:
        if pod.phase in ("Succeeded", "Failed") or pod.terminating:
            continue
        active += 1
        ce = snap.node_compute_environment.get(pod.node_name or "")
        if ce is not None:
            bound[ce] = bound.get(ce, 0) + 1
    return admitted_demand(job, _share(job, snap), active, bound, snap.now)


def _in_flight(job: JobInfo, granted: int, pods: Sequence[PodInfo], snap: Snapshot) -> Demand:
    """The demand of a job whose admission (`granted` pods in all) is being written: it
    holds them as it will once admitted, and wants no more until the write settles (a
    job in flight is never written twice)."""
    held = _held(replace(job, parallelism=granted), pods, snap)
    return replace(held, want=held.granted)


def admitted_demand(
    job: JobInfo, share: str, active: int, bound: Mapping[str, int], now: float
) -> Demand:
    """An admitted job's demand: what it holds (`active`: its pods not finished, `bound`
    of them per CE), and (elastic jobs) what more it wants. It has no waiting time: the
    starvation bound is for jobs not admitted."""
    holding = max(min(job.parallelism, job.remaining), active)
    want = max(min(job.requested_parallelism, job.remaining), holding) if job.elastic else holding
    return Demand(
        key=job.key,
        queue=job.queue,
        request=job.pod_request,
        want=want,
        granted=holding,
        share=share,
        priority=job.spec.scheduling_priority,
        submitted=job.created,
        runnable_since=now,
        elastic=job.elastic,
        bound=bound,
        exclusive=job.gang,
    )


def _admitted_status(job: JobInfo, pods: Sequence[PodInfo]) -> Status | None:
    """An admitted job's state from its pods, once the Job controller has counted every
    finished one. None: it stays where it is."""
    running = [p for p in pods if p.phase == "Running" and not p.terminating]
    several = (job.completions or 1) > 1
    if running:
        where = ", ".join(sorted({p.node_name or "?" for p in running})[:3])
        text = f"{len(running)} pod(s) running on {where}"
        return Status(State.RUNNING, Code.RUNNING, _progress(job) + text if several else text)
    live = [p for p in pods if p.phase == "Pending" and not p.terminating]
    code, detail = _pending(live)
    if several and (job.succeeded or job.failed):
        # Children ran and more are to come: the parent stays RUNNING until the Job ends.
        return Status(State.RUNNING, Code.RUNNING, _progress(job) + detail)
    if job.succeeded:
        return None  # its pod succeeded: the Job is Complete in a moment
    if job.failed and not live:
        return Status(State.RUNNABLE, Code.RETRY_WAIT, _retry_wait(job, pods))
    attempt = f"attempt {job.failed + 1}" if job.failed else "admitted"
    return Status(State.STARTING, code, f"{attempt}; {detail}")


def _progress(job: JobInfo) -> str:
    failed = f", {job.failed} failed attempt(s)" if job.failed else ""
    return f"{job.succeeded} of {job.completions} succeeded{failed}; "


def _pending(live: Sequence[PodInfo]) -> tuple[Code, str]:
    """What an admitted job's pods that are not running yet wait for."""
    unplaced = [p for p in live if p.unschedulable]
    if unplaced:
        message = unplaced[0].scheduling_message
        return Code.PODS_PENDING, f"{len(unplaced)} pod(s) waiting for a node: {message}"
    gated = [p for p in live if p.scheduling_gated]
    if gated:
        return Code.PODS_PENDING, f"{len(gated)} child pod(s) wait for their n_to_n dependency"
    return Code.ADMITTED, "pods starting"


def _retry_wait(job: JobInfo, pods: Sequence[PodInfo]) -> str:
    """Which attempt failed and how, and what the next one waits for."""
    failed = [p for p in pods if p.phase == "Failed"]
    last = max(failed, key=lambda p: p.finished or "", default=None)
    how = ""
    if last is not None and last.disrupted:
        how = " (host terminated)"
    elif last is not None:
        how = (
            f" (exit code {last.exit_code})" if last.exit_code is not None else f" ({last.reason})"
        )
    return (
        f"attempt {job.failed} failed{how}; attempt {job.failed + 1} waits for the Job "
        "controller to create its pod (its retry backoff)"
    )


def _timed_out(job: JobInfo, pods: Sequence[PodInfo]) -> str | None:
    """AWS Batch does not retry an attempt that ran past its timeout."""
    if job.spec.timeout_seconds is None:
        return None
    for pod in pods:
        if pod.phase == "Failed" and pod.reason == "DeadlineExceeded":
            return (
                f"{ATTEMPT_TIMED_OUT}: pod {pod.name} ran longer than {job.spec.timeout_seconds} s"
            )
    return None


def _time_limit_exceeded(job: JobInfo, queue: JobQueue, code: Code, now: float) -> str | None:
    since = job.since if job.published_code == code.value and job.since else None
    if since is None:
        return None
    for action in queue.state_time_limit_actions:
        if action.reason == code.value and now - since >= action.max_time_seconds:
            return (
                f"cancelled by queue {queue.name}: RUNNABLE for {code.value} longer than "
                f"{action.max_time_seconds} s"
            )
    return None


def _succeeded_reason(job: JobInfo) -> str:
    if job.is_array:
        return f"all {job.completions} children succeeded"
    return f"succeeded after {job.succeeded + job.failed} attempt(s)"


def _failed_reason(job: JobInfo, code: Code) -> str:
    base = job.terminal_message or job.terminal_reason
    last = attempt_records.parse(job.attempts_json)[-1:] if job.attempts_json else []
    if code in (Code.ATTEMPTS_EXHAUSTED, Code.EXIT_RULE) and last:
        a = last[0]
        return (
            f"{base}; last attempt: pod {a.get('pod')} exit code {a.get('exitCode')}"
            f" ({a.get('statusReason')})"
        )
    return base


def _array_summary(job: JobInfo, pods: Sequence[PodInfo], status: Status | None) -> dict[str, int]:
    """Children per state, as AWS Batch summarises an array parent."""
    counts = dict.fromkeys(("PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"), 0)
    counts["SUCCEEDED"] = job.succeeded
    running = sum(1 for p in pods if p.phase == "Running" and not p.terminating)
    starting = sum(1 for p in pods if p.phase == "Pending" and not p.terminating)
    counts["RUNNING"], counts["STARTING"] = running, starting
    total = job.completions or 0
    failed_children = len(parse_index_ranges(job.failed_indexes))
    counts["FAILED"] = failed_children
    left = max(total - job.succeeded - failed_children - running - starting, 0)
    state = status.state if status else job.published_state
    counts["PENDING" if state is State.PENDING else "RUNNABLE"] = left
    if job.terminal == "Failed":
        counts["FAILED"] += counts["RUNNABLE"] + counts["PENDING"]
        counts["RUNNABLE"] = counts["PENDING"] = 0
    return counts
