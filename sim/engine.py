"""The discrete-event engine: a workload on simulated EC2, on a virtual clock, decided by
Ebb's own pure decision code.

What decides what (nothing here re-implements a decision):

- admission, fair share and the starvation bound: `extender.jobs.admission.admit`,
  with `fairshare.advance` for the decayed usage, over the limits of
  `extender.jobs.capacity.capacity_limits` — one pass whenever its inputs changed (at
  most every `admission_interval`, and every `admission_resync` while jobs wait);
- dependencies: `extender.jobs.dependencies.resolve`, when a job is submitted and when
  one it depends on ends;
- retries: the job's AWS-style retry strategy, rule by rule with
  `extender.jobs.retry.rule_matches` against the exit code or the status reason Ebb
  reports (`retry.status_reason_for`); a new attempt starts after the Job
  controller's back-off (10 s, doubling, at most 6 min);
- placement: `extender.placement.scoring.filter_nodes` and `score_nodes` over up to
  `placement_candidates` (100) nodes that fit the pod, taken from the queue's
  environments in order and, within one, round-robin (kube-scheduler likewise scores
  a sample of at least 100 feasible nodes, starting where the last pod left off); the
  best score wins (the first on ties); kube-scheduler's own scoring plugins are left
  out (the extender's weight dominates them);
- capacity: a `CapacityPolicy` (Ebb's planner and scale-down, or a baseline).

Pods wait for a node as in kube-scheduler: in creation order, and a pod that fits no
node is retried only when a node that could take it appears or frees room.

Modelling choices (beyond the workload's): pods start the moment they are bound
(image pulls are not modelled); a node's idle time counts from its last pod's end;
array jobs model Ebb's elastic admission (parallelism raised as capacity allows, a
finished child's slot reused by the next index) but not n_to_n dependencies or
SEQUENTIAL arrays; timeouts and cancellations are not modelled. Admitted jobs'
holdings are passed to `admit` summed per (queue, share, request, environment) when
their pods are bound — admission only adds them up — and one by one while unbound.

No wall clock is read here; given a seed, a run is deterministic.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autoscaler.batch_window import BatchWindow
from autoscaler.environments import Unavailable
from autoscaler.planner import PendingPod
from autoscaler.settings import AutoscalerSettings
from ebb.catalog import Catalog, NodeOverheadSettings, shipped_catalog
from ebb.jobspec import JobSpec, RetryAction
from ebb.model import ComputeEnvironment, JobQueue, PodInfo, SchedulingPolicy
from ebb.resources import Resources
from extender.jobs import fairshare
from extender.jobs.admission import CapacityLimit, Demand, QueueView, admit
from extender.jobs.capacity import capacity_limits
from extender.jobs.dependencies import resolve
from extender.jobs.lifecycle import Code, State
from extender.jobs.retry import rule_matches, status_reason_for
from extender.jobs.snapshot import JobInfo
from extender.placement import scoring
from extender.settings import SchedulerSettings
from sim.capacity import CapacityPolicy, ClusterView, Decision
from sim.cloud import Cloud, CloudSettings, Instance
from sim.metrics import Recorder, Report
from sim.workloads import SimJob, Workload

# Admission codes that mean a job can never start as configured.
_NEVER = frozenset(
    {Code.MAX_RESOURCE, Code.JOB_RESOURCE_REQUIREMENT, Code.NO_COMPUTE_ENVIRONMENT, Code.NO_QUEUE}
)
_BACKOFF_FIRST, _BACKOFF_MAX = 10.0, 360.0  # the Job controller's pod failure back-off
_NAMESPACE = "sim"
# The daemons' defaults, read from their settings types.
_SCHEDULER, _AUTOSCALER = SchedulerSettings(), AutoscalerSettings()


@dataclass(frozen=True)
class Settings:
    seed: int = 0
    cloud: CloudSettings = field(default_factory=CloudSettings)
    admission_interval: float = 2.0  # the least time between two admission passes
    admission_resync: float = 60.0  # a pass at least this often while jobs wait
    starvation_seconds: float = _SCHEDULER.starvation_seconds
    # plan once no new pending pod came for this long, or this long after the first one
    autoscaler_batch_idle: float = _AUTOSCALER.batch_idle_seconds
    autoscaler_batch_max: float = _AUTOSCALER.batch_max_seconds
    unavailable_seconds: float = _AUTOSCALER.unavailable_offering_seconds  # a refused offering
    placement_candidates: int = 100
    sample_seconds: float = 0.0  # timeline resolution; 0: about 2,000 samples
    stall_seconds: float = 86400.0  # stop when nothing can happen for this long
    # The node overhead model, as both daemons and the bridge build it.
    node_overhead: NodeOverheadSettings = field(default_factory=NodeOverheadSettings)


class _Job:
    """A submitted job's state. Arrays keep counters, not one record per child."""

    __slots__ = (
        "active",
        "bound",
        "demand",
        "failed",
        "granted",
        "key",
        "next_index",
        "retries",
        "runnable_since",
        "spec",
        "state",
        "succeeded",
        "tries",
    )

    def __init__(self, spec: SimJob) -> None:
        self.spec = spec
        self.key = spec.name
        self.state = State.SUBMITTED
        self.runnable_since = 0.0
        self.granted = 0  # pods admission granted (an array's parallelism)
        self.active = 0  # pods created and not ended (pending, in back-off or running)
        self.succeeded = 0  # children (or the single pod) that succeeded
        self.failed = 0  # children that failed for good
        self.next_index = 0  # the next array index never started
        self.retries: list[tuple[float, int, int]] = []  # heap of (due, index, attempt)
        self.tries: dict[int, int] = {}  # index → attempts made (only once retried)
        self.bound: dict[str, int] = {}  # environment → this array's pods bound there
        self.demand: Demand | None = None  # a waiting or unbound single job's demand

    @property
    def remaining(self) -> int:
        return self.spec.pods - self.succeeded - self.failed


class _Pod:
    __slots__ = ("attempt", "created", "end", "group", "index", "job", "node", "pending", "start")

    def __init__(self, job: _Job, index: int, attempt: int, created: float, group: _Group) -> None:
        self.job = job
        self.index = index
        self.attempt = attempt
        self.created = created
        self.group = group
        self.node: Instance | None = None
        self.start = 0.0
        self.end = 0.0
        self.pending: PendingPod | None = None


class _Group:
    """Pods waiting for a node that place alike (same queue and request), oldest first.
    Blocked: the head fit no node, so no pod of the group can, until room appears."""

    __slots__ = ("blocked", "environments", "fits", "info", "number", "pods", "queue", "request")

    def __init__(
        self, number: int, queue: JobQueue, request: Resources, environments: tuple[str, ...]
    ) -> None:
        self.number = number
        self.queue = queue
        self.request = request
        self.environments = environments
        self.pods: deque[_Pod] = deque()
        self.blocked = False
        self.fits = {env: _Fits() for env in environments}
        # What the placement functions read of a pod: its queue and requests.
        self.info = PodInfo(
            namespace=_NAMESPACE,
            name=f"{queue.name}-{request.cpu_milli}m-{request.memory}-{request.gpu}",
            uid="",
            node_name=None,
            phase="Pending",
            requests=request,
            queue=queue.name,
            job_name=None,
            job_uid=None,
            completion_index=None,
            unschedulable=False,
            scheduling_message="",
            scheduling_gated=False,
            terminating=False,
            disrupted=False,
            disruption_message="",
            created="",
            started=None,
            finished=None,
            reason="",
            tolerates_batch_taint=True,
        )


class _Fits:
    """The schedulable nodes of one environment that fit one group's pods, in a stable
    order, handed out as a window that moves round-robin (as kube-scheduler samples the
    feasible nodes it scores, starting where the last pod left off)."""

    __slots__ = ("at", "nodes", "turn")

    def __init__(self) -> None:
        self.nodes: list[Instance] = []
        self.at: dict[Instance, int] = {}
        self.turn = 0

    def add(self, node: Instance) -> None:
        self.at[node] = len(self.nodes)
        self.nodes.append(node)

    def discard(self, node: Instance) -> None:
        i = self.at.pop(node)
        last = self.nodes.pop()
        if last is not node:
            self.nodes[i] = last
            self.at[last] = i

    def window(self, out: list[str], limit: int) -> None:
        nodes = self.nodes
        n = len(nodes)
        take = min(limit - len(out), n)
        if take <= 0:
            return
        start = self.turn % n
        stop = start + take
        out.extend(node.id for node in nodes[start:stop])
        if stop > n:
            out.extend(node.id for node in nodes[: stop - n])
        self.turn = stop


class Simulation:
    def __init__(
        self,
        workload: Workload,
        policy_type: Callable[..., CapacityPolicy],
        settings: Settings = Settings(),
        catalog: Catalog | None = None,
    ) -> None:
        self.workload = workload
        self.s = settings
        self.catalog = catalog or shipped_catalog()
        self.overhead = settings.node_overhead.node_overhead()
        scenario = workload.scenario
        self.environments: dict[str, ComputeEnvironment] = {
            e.name: e for e in scenario.environments
        }
        self.queues: dict[str, JobQueue] = {q.name: q for q in scenario.queues}
        self.policies: dict[str, SchedulingPolicy] = {p.name: p for p in scenario.policies}
        self.policy = policy_type(
            self.environments,
            self.catalog,
            self.overhead,
            scenario.subnet_zones,
        )
        self.capacity: dict[str, CapacityLimit] = capacity_limits(
            self.environments.values(), self.catalog, self.overhead
        )
        self.rng = random.Random(settings.seed)
        self.cloud = Cloud(settings.cloud, self.rng)
        self.now = 0.0
        # (time, sequence, handler, subject): the sequence keeps equal times in order.
        self._events: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = itertools.count()
        self._jobs: dict[str, _Job] = {}
        self._dependents: dict[str, list[_Job]] = {}
        self._waiting: dict[str, Demand] = {}  # runnable single jobs not admitted
        self._unbound: dict[str, Demand] = {}  # admitted single jobs without a bound pod
        self._arrays: dict[str, _Job] = {}  # runnable arrays with children to run
        self._held: dict[tuple[str, str, Resources, str], int] = {}  # bound single pods
        self._groups: dict[tuple[str, Resources], _Group] = {}
        self._ready_groups: dict[_Group, None] = {}
        self._blocked_groups: dict[_Group, None] = {}
        self._groups_by_environment: dict[str, list[_Group]] = {}
        self._instances: dict[str, Instance] = {}  # live: booting or nodes
        self._booting: dict[Instance, None] = {}  # live, not ready yet (launch order)
        self._idle: dict[Instance, None] = {}  # ready without batch pods
        self._pods_on: dict[str, dict[_Pod, None]] = {}
        self._node_states: dict[str, scoring.NodeState] = {}
        self._unavailable: dict[Unavailable, float] = {}  # → until
        self._env_vcpus: dict[str, int] = dict.fromkeys(self.environments, 0)
        self._env_gpus: dict[str, int] = dict.fromkeys(self.environments, 0)
        self._usage: dict[str, dict[str, float]] = {}
        self._usage_time = 0.0
        self._admission_due = math.inf
        self._last_admission = -math.inf
        self._autoscaler_due = math.inf
        self._batch = BatchWindow(settings.autoscaler_batch_idle, settings.autoscaler_batch_max)
        self._instance_numbers = itertools.count(1)
        self._open_jobs = 0  # submitted and not terminal (nor never runnable)
        self._last_progress = 0.0
        jobs = workload.jobs
        span = (jobs[-1].submit - jobs[0].submit) if jobs else 0.0
        self.recorder = Recorder(settings.sample_seconds or max(span / 2000.0, 60.0))

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> Report:
        jobs = self.workload.jobs
        n, i = len(jobs), 0
        events = self._events
        if jobs:
            self.now = jobs[0].submit
            self._push(self.now, self._sample, None)
        while True:
            if i < n and (not events or jobs[i].submit < events[0][0]):
                self.now = jobs[i].submit
                self._submit(jobs[i])
                i += 1
            elif events:
                when, _, handler, subject = heapq.heappop(events)
                self.now = when
                handler(subject)
            else:
                break
            if self._ready_groups:
                self._schedule()
            if i == n and self._finished():
                break
        self._finish()
        return self.recorder.report(self.now, self.workload, self.policy, self._stuck())

    def _push(self, when: float, handler: Callable[[Any], None], subject: Any) -> None:
        heapq.heappush(self._events, (when, next(self._seq), handler, subject))

    def _finished(self) -> bool:
        if self._open_jobs == 0 and not self._instances:
            return True
        # Nothing can happen any more (jobs that never fit, pods no policy provides for).
        return self.now - self._last_progress > self.s.stall_seconds and not any(
            i.batch_pods for i in self._instances.values()
        )

    def _progress(self) -> None:
        self._last_progress = self.now

    def _finish(self) -> None:
        for instance in list(self._instances.values()):
            self._terminate(instance, "end of simulation")

    def _stuck(self) -> dict[str, int]:
        """Jobs left unfinished, by state."""
        out: dict[str, int] = {}
        for job in self._jobs.values():
            if not job.state.terminal:
                out[job.state.value] = out.get(job.state.value, 0) + 1
        return out

    # --- jobs ---------------------------------------------------------------------------------

    def _submit(self, spec: SimJob) -> None:
        job = _Job(spec)
        self._jobs[job.key] = job
        self._open_jobs += 1
        self._progress()
        self.recorder.submitted(spec)
        for dep in spec.depends_on:
            self._dependents.setdefault(dep.job, []).append(job)
        if spec.depends_on:
            job.state = State.PENDING
            self._check_dependencies(job)
        else:
            self._runnable(job)

    def _check_dependencies(self, job: _Job) -> None:
        verdict = resolve(self._job_info(job), self._lookup)
        if verdict.failed is not None:
            self._end_job(job, State.FAILED)
        elif verdict.ready:
            self._runnable(job)

    def _lookup(self, name: str) -> JobInfo | None:
        job = self._jobs.get(name)
        return self._job_info(job) if job is not None else None

    def _job_info(self, job: _Job) -> JobInfo:
        """What `dependencies.resolve` reads of a job, as the daemon's cache holds it."""
        terminal = {State.SUCCEEDED: "Complete", State.FAILED: "Failed"}.get(job.state)
        spec = job.spec
        return JobInfo(
            namespace=_NAMESPACE,
            name=spec.name,
            uid=spec.name,
            resource_version="",
            queue=spec.queue,
            share=spec.share,
            created=spec.submit,
            spec=JobSpec(depends_on=spec.depends_on),
            spec_error=None,
            cancel=None,
            terminate=None,
            suspended=job.granted == 0,
            parallelism=max(job.granted, 1),
            requested_parallelism=spec.pods,
            completions=spec.pods,
            indexed=spec.array_size > 0,
            pod_request=spec.request,
            template_ready=True,
            active=job.active,
            ready=job.active,
            succeeded=job.succeeded,
            failed=job.failed,
            uncounted=0,
            terminating=0,
            started=None,
            completed_indexes="",
            failed_indexes="",
            terminal=terminal,
            terminal_reason="",
            terminal_message="",
            failure_target=False,
            success_criteria_met=False,
            published_state=job.state,
            published_code="",
            published_reason="",
            since=None,
            admitted_at=None,
            attempts_json="",
            array_status="",
        )

    def _runnable(self, job: _Job) -> None:
        spec = job.spec
        job.state = State.RUNNABLE
        job.runnable_since = self.now
        self.recorder.queued(spec.request, spec.pods)
        if spec.array_size:
            self._arrays[job.key] = job
        else:
            job.demand = Demand(
                key=job.key,
                queue=spec.queue,
                request=spec.request,
                want=1,
                share=spec.share,
                priority=spec.priority,
                submitted=spec.submit,
                runnable_since=self.now,
            )
            self._waiting[job.key] = job.demand
        self._admission_wanted()

    def _end_job(self, job: _Job, state: State) -> None:
        if job.state is State.RUNNABLE and job.granted == 0:
            self.recorder.queued(job.spec.request, -job.remaining)
        job.state = state
        self._open_jobs -= 1
        self._progress()
        self._waiting.pop(job.key, None)
        self._unbound.pop(job.key, None)
        self._arrays.pop(job.key, None)
        job.demand = None
        self.recorder.ended(job.spec, state, self.now)
        self._admission_wanted()
        for dependent in self._dependents.get(job.key, ()):
            if dependent.state is State.PENDING:
                self._check_dependencies(dependent)

    # --- admission ---------------------------------------------------------------------------

    def _admission_wanted(self) -> None:
        due = max(self.now, self._last_admission + self.s.admission_interval)
        if due < self._admission_due:
            self._admission_due = due
            self._push(due, self._admission_event, None)

    def _admission_event(self, _: object) -> None:
        if self.now != self._admission_due:
            return  # superseded by an earlier pass
        self._admission_due = math.inf
        self._admission_pass()
        if self._waiting or any(j.granted < j.remaining for j in self._arrays.values()):
            due = self.now + self.s.admission_resync
            self._admission_due = due
            self._push(due, self._admission_event, None)

    def _admission_pass(self) -> None:
        now = self.now
        self._last_admission = now
        views = {}
        for name, q in self.queues.items():
            policy = self.policies.get(q.scheduling_policy) if q.scheduling_policy else None
            decayed = (
                fairshare.advance(
                    self._usage.get(name, {}),
                    {},
                    now - self._usage_time,
                    policy.share_decay_seconds,
                )
                if policy
                else {}
            )
            views[name] = QueueView(name, q.priority, q.compute_environments, policy, decayed)
        demands: list[Demand] = list(self._waiting.values())
        demands.extend(self._unbound.values())
        for (queue, share, request, env), pods in self._held.items():
            demands.append(
                Demand(
                    key=f"\0held/{queue}/{share}/{env}/{request}",
                    queue=queue,
                    request=request,
                    want=pods,
                    granted=pods,
                    share=share,
                    bound={env: pods},
                )
            )
        for job in self._arrays.values():
            demands.append(self._array_demand(job))
        result = admit(views, self.capacity, demands, now, self.s.starvation_seconds)
        for name, q in self.queues.items():
            policy = self.policies.get(q.scheduling_policy) if q.scheduling_policy else None
            if policy is not None:
                self._usage[name] = fairshare.advance(
                    self._usage.get(name, {}),
                    result.running_vcpus.get(name, {}),
                    now - self._usage_time,
                    policy.share_decay_seconds,
                )
        self._usage_time = now
        jobs = self._jobs
        for key, total in result.grants.items():
            if key in jobs:  # (not a summed holding)
                self._granted(jobs[key], total)
        for key, status in result.waiting.items():
            if status.code in _NEVER and key in jobs and jobs[key].granted == 0:
                self._never_runnable(jobs[key])

    def _array_demand(self, job: _Job) -> Demand:
        """An array as the daemon passes it to admission (reconcile._held for admitted
        ones): what it holds, where its pods are bound, and what more it wants."""
        spec = job.spec
        remaining = job.remaining
        holding = max(min(job.granted, remaining), job.active)
        return Demand(
            key=job.key,
            queue=spec.queue,
            request=spec.request,
            want=max(remaining, holding),
            granted=holding,
            share=spec.share,
            priority=spec.priority,
            submitted=spec.submit,
            runnable_since=job.runnable_since,
            elastic=True,
            bound=job.bound,
        )

    def _granted(self, job: _Job, total: int) -> None:
        new = total - job.granted
        if new <= 0:
            return
        if job.granted == 0:
            self.recorder.queued(job.spec.request, -job.remaining)
        job.granted = total
        job.state = State.STARTING
        if job.spec.array_size:
            self._fill_array(job)
            return
        demand = self._waiting.pop(job.key)
        demand.granted = demand.want = 1
        self._unbound[job.key] = demand
        self._new_pod(job, 0, 1)

    def _never_runnable(self, job: _Job) -> None:
        """Admission says it can never run here (misconfigured): it stays RUNNABLE, as in
        the daemon, but the simulation does not wait for it."""
        if job.key in self._waiting or job.key in self._arrays:
            self._waiting.pop(job.key, None)
            self._arrays.pop(job.key, None)
            self._open_jobs -= 1
            self.recorder.never_runnable()

    # --- pods ---------------------------------------------------------------------------------

    def _fill_array(self, job: _Job) -> None:
        """Create pods up to the parallelism admission granted (and what is left to run):
        due retries first, then indexes never started."""
        limit = min(job.granted, job.remaining)
        retries = job.retries
        while job.active < limit:
            if retries and retries[0][0] <= self.now:
                _, index, attempt = heapq.heappop(retries)
                self._new_pod(job, index, attempt)
            elif job.next_index < job.spec.array_size:
                self._new_pod(job, job.next_index, 1)
                job.next_index += 1
            else:
                break

    def _new_pod(self, job: _Job, index: int, attempt: int) -> None:
        spec = job.spec
        key = (spec.queue, spec.request)
        group = self._groups.get(key)
        if group is None:
            queue = self.queues[spec.queue]
            group = _Group(len(self._groups), queue, spec.request, queue.compute_environments)
            self._groups[key] = group
            for env in group.environments:
                self._groups_by_environment.setdefault(env, []).append(group)
            for node in self._instances.values():
                if node.environment in group.fits and self._takes(node, spec.request):
                    group.fits[node.environment].add(node)
        pod = _Pod(job, index, attempt, self.now, group)
        job.active += 1
        self.recorder.pending(spec.request, 1)
        group.pods.append(pod)
        if group.blocked:
            self._unschedulable()
        else:
            self._ready_groups[group] = None

    def _schedule(self) -> None:
        """kube-scheduler's queue: the oldest pod first; a group whose head fits nowhere
        waits (blocked) until room appears for it."""
        heap = [(g.pods[0].created, g.number, g) for g in self._ready_groups if g.pods]
        self._ready_groups.clear()
        heapq.heapify(heap)
        while heap:
            _, number, group = heap[0]
            pod = group.pods[0]
            if self._place(pod, group):
                group.pods.popleft()
                if group.pods:
                    heapq.heapreplace(heap, (group.pods[0].created, number, group))
                else:
                    heapq.heappop(heap)
            else:
                heapq.heappop(heap)
                group.blocked = True
                self._blocked_groups[group] = None
                self._unschedulable()

    def _place(self, pod: _Pod, group: _Group) -> bool:
        names: list[str] = []
        limit = self.s.placement_candidates
        for env in group.environments:  # the queue's first environments first
            group.fits[env].window(names, limit)
        if not names:
            return False
        states = self._node_states
        verdict = scoring.filter_nodes(group.info, names, states, self.queues, self.environments)
        if not verdict.kept:
            return False
        scores = scoring.score_nodes(
            group.info, verdict.kept, states, self.queues, self.environments
        )
        best, top = scores[0]
        for name, score in scores:
            if score > top:
                best, top = name, score
        self._bind(pod, self._instances[best])
        return True

    def _bind(self, pod: _Pod, node: Instance) -> None:
        job, request = pod.job, pod.group.request
        self._take(node, request, 1)
        pod.node = node
        pod.start = self.now
        self._pods_on[node.id][pod] = None
        env = node.environment
        if job.spec.array_size:
            job.bound[env] = job.bound.get(env, 0) + 1
        else:
            self._unbound.pop(job.key, None)
            held = (job.spec.queue, job.spec.share, request, env)
            self._held[held] = self._held.get(held, 0) + 1
        if job.state is State.STARTING:
            job.state = State.RUNNING
        if pod.attempt == 1:
            self.recorder.wait(job.spec, self.now - job.runnable_since)
        self.recorder.started(job.spec, request)
        self._progress()
        duration = job.spec.duration
        if job.spec.spread:
            duration *= 1.0 + job.spec.spread * (self.rng.random() - 0.5)
        pod.end = self.now + duration
        self._push(pod.end, self._pod_end, pod)

    def _unbind(self, pod: _Pod) -> None:
        node = pod.node
        assert node is not None
        job, request = pod.job, pod.group.request
        pod.node = None
        del self._pods_on[node.id][pod]
        env = node.environment
        if job.spec.array_size:
            job.bound[env] -= 1
            if not job.bound[env]:
                del job.bound[env]
        else:
            held = (job.spec.queue, job.spec.share, request, env)
            self._held[held] -= 1
            if not self._held[held]:
                del self._held[held]
        self.recorder.stopped(job.spec, request, self.now - pod.start)
        self._progress()
        if not node.gone:
            self._take(node, request, -1)

    def _take(self, node: Instance, request: Resources, pods: int) -> None:
        """Pods bound to (pods > 0) or gone from (< 0) a node: its room and score."""
        node.free_cpu -= request.cpu_milli * pods
        node.free_memory -= request.memory * pods
        node.free_gpu -= request.gpu * pods
        node.slots -= pods
        node.batch_pods += pods
        node.idle_since = None if node.batch_pods else self.now
        if node.batch_pods:
            self._idle.pop(node, None)
        else:
            self._idle[node] = None
        self._score_state(node)
        self._node_changed(node)
        if pods < 0 and not node.batch_pods:
            self._autoscaler_wanted(self.now + self.policy.idle_delay(node))

    def _score_state(self, node: Instance) -> None:
        """The node as placement scores it: allocatable, and what its pods (DaemonSet
        pods included) request."""
        if node.info is not None:
            a = node.allocatable
            used = Resources(
                a.cpu_milli - node.free_cpu, a.memory - node.free_memory, a.gpu - node.free_gpu
            )
            self._node_states[node.id] = scoring.node_state(node.info, used)

    @staticmethod
    def _takes(node: Instance, r: Resources) -> bool:
        """Could the node take a pod of `r` now (schedulable, room and a pod slot)?"""
        return (
            node.ready
            and not node.gone
            and node.draining is None
            and node.slots > 0
            and r.cpu_milli <= node.free_cpu
            and r.memory <= node.free_memory
            and r.gpu <= node.free_gpu
        )

    def _node_changed(self, node: Instance) -> None:
        """Keep each group's list of nodes that fit it; a blocked group that a node now
        fits is tried again."""
        env = node.environment
        for group in self._groups_by_environment.get(env, ()):
            fits = group.fits[env]
            if self._takes(node, group.request):
                if node not in fits.at:
                    fits.add(node)
                    if group.blocked:
                        group.blocked = False
                        del self._blocked_groups[group]
                        self._ready_groups[group] = None
            elif node in fits.at:
                fits.discard(node)

    def _pod_end(self, pod: _Pod) -> None:
        if pod.node is None:
            return  # its node went away first
        self._unbind(pod)
        code = pod.job.spec.exit_code
        if code == 0:
            self._attempt_succeeded(pod)
        else:
            self._attempt_failed(pod, code, status_reason_for(False, None))

    def _attempt_succeeded(self, pod: _Pod) -> None:
        job = pod.job
        job.active -= 1
        job.succeeded += 1
        self._attempt_done(job)

    def _attempt_failed(self, pod: _Pod, exit_code: int | None, status_reason: str) -> None:
        """The job's retry strategy, rule by rule (first match wins; no match retries)."""
        job = pod.job
        job.active -= 1
        strategy = job.spec.retry
        retry = strategy is not None and pod.attempt < strategy.attempts
        if retry and strategy is not None:
            for rule in strategy.rules:
                if rule_matches(rule, exit_code, status_reason):
                    retry = rule.action is RetryAction.RETRY
                    break
        if retry:
            self.recorder.retried()
            due = self.now + min(_BACKOFF_FIRST * 2 ** (pod.attempt - 1), _BACKOFF_MAX)
            if job.spec.array_size:
                heapq.heappush(job.retries, (due, pod.index, pod.attempt + 1))
            else:
                job.active += 1  # the single job holds its admission through the back-off
                if job.demand is not None:
                    self._unbound[job.key] = job.demand
            self._push(due, self._recreate, (job, pod.index, pod.attempt + 1))
        else:
            job.failed += 1
        self._attempt_done(job)

    def _attempt_done(self, job: _Job) -> None:
        if job.remaining == 0:
            ok = job.failed == 0
            self._end_job(job, State.SUCCEEDED if ok else State.FAILED)
            return
        if job.spec.array_size:
            if min(job.granted, job.remaining) < job.granted:
                self._admission_wanted()  # the array holds less than before
            self._fill_array(job)

    def _recreate(self, subject: tuple[_Job, int, int]) -> None:
        job, index, attempt = subject
        if job.state.terminal:
            return
        if job.spec.array_size:
            self._fill_array(job)
        else:
            job.active -= 1  # counted when the attempt failed
            self._new_pod(job, index, attempt)

    # --- instances ----------------------------------------------------------------------------

    def _launch(self, env_name: str, type_name: str, count: int, zone: str) -> None:
        spec = self.environments[env_name]
        t = self.catalog.get(type_name)
        if t is None or count <= 0:
            return
        capacity = spec.capacity_type
        if self.cloud.refuses(capacity):
            self._unavailable[Unavailable(type_name, zone, capacity)] = (
                self.now + self.s.unavailable_seconds
            )
            self.recorder.refused()
            self._autoscaler_wanted(self.now + 1.0)  # as the daemon: re-plan at once
            return
        allocatable = self.overhead.allocatable(t)
        usable = self.overhead.usable(t)
        for _ in range(count):
            instance = Instance(
                number=next(self._instance_numbers),
                environment=env_name,
                instance_type=t,
                capacity_type=capacity,
                zone=zone,
                launched=self.now,
                allocatable=allocatable,
                usable=usable,
                slots=self.policy.pod_slots,
            )
            self._instances[instance.id] = instance
            self._booting[instance] = None
            self._pods_on[instance.id] = {}
            self._env_vcpus[env_name] += t.vcpus
            self._env_gpus[env_name] += t.nvidia_gpus
            self.recorder.launched(instance, len(self._instances))
            self._push(self.now + self.cloud.boot_seconds(), self._ready, instance)
            after = self.cloud.interruption_after(instance)
            if after is not None:
                notice = self.now + max(after - self.s.cloud.interruption_notice_seconds, 0.0)
                self._push(notice, self._notice, instance)
                self._push(self.now + after, self._reclaim, instance)
        self._progress()

    def _ready(self, instance: Instance) -> None:
        if instance.gone:
            return
        instance.register()
        instance.idle_since = self.now
        del self._booting[instance]
        self._idle[instance] = None
        self._score_state(instance)
        self._node_changed(instance)
        self._autoscaler_wanted(self.now + self.policy.idle_delay(instance))

    def _cordon(self, instance: Instance, reason: str) -> None:
        if instance.draining is None:
            instance.draining_since = self.now
        instance.draining = reason
        self._node_changed(instance)

    def _notice(self, instance: Instance) -> None:
        """Spot's two-minute warning: the daemon cordons the node."""
        if not instance.gone:
            self._cordon(instance, "spot-interruption")
            self._autoscaler_wanted(self.now)

    def _reclaim(self, instance: Instance) -> None:
        if instance.gone:
            return
        self.recorder.interrupted(len(self._pods_on[instance.id]))
        self._terminate(instance, "spot-interruption")

    def _terminate(self, instance: Instance, reason: str) -> None:
        instance.gone = True
        self._node_changed(instance)
        for pod in list(self._pods_on[instance.id]):
            self._unbind(pod)
            self._attempt_failed(pod, None, status_reason_for(True, instance.id))
        del self._pods_on[instance.id]
        del self._instances[instance.id]
        self._booting.pop(instance, None)
        self._idle.pop(instance, None)
        self._node_states.pop(instance.id, None)
        self._env_vcpus[instance.environment] -= instance.type.vcpus
        self._env_gpus[instance.environment] -= instance.type.nvidia_gpus
        self.recorder.terminated(instance, self.now, reason)
        self._progress()

    # --- the autoscaler -----------------------------------------------------------------------

    def _unschedulable(self) -> None:
        """A pod was found to fit no node: batch arrivals as the daemon does (plan once
        none came for the idle window, or when the maximum window is over)."""
        self._batch = self._batch.arrived(self.now)
        self._autoscaler_wanted(self._batch.closes_at())

    def _autoscaler_wanted(self, when: float | None) -> None:
        if when is not None and when < self._autoscaler_due:
            self._autoscaler_due = when
            self._push(when, self._autoscaler_event, None)

    def _autoscaler_event(self, _: object) -> None:
        if self.now != self._autoscaler_due:
            return  # moved
        self._autoscaler_due = math.inf
        for key in [k for k, until in self._unavailable.items() if until <= self.now]:
            del self._unavailable[key]
        plan = self._batch.ready(self.now)
        closes_at = self._batch.closes_at()
        if plan:
            self._batch = self._batch.closed()
        # Between batches the pass only scales down (as the daemon's does).
        pending = self._pending_pods() if plan else []
        view = ClusterView(
            self.now,
            pending,
            self._instances.values(),
            self._unavailable.keys(),
            self._env_vcpus,
            self._env_gpus,
            self._booting.keys(),
            self._idle.keys(),
        )
        decision = self.policy.decide(view)
        self._apply(decision)
        if decision.due is not None:
            self._autoscaler_wanted(decision.due)
        if not plan:
            self._autoscaler_wanted(closes_at)
        elif self._blocked_groups:
            self._autoscaler_wanted(self.now + self.policy.resync_seconds)

    def _pending_pods(self) -> list[PendingPod]:
        out = []
        for group in self._blocked_groups:
            queue = group.queue
            for pod in group.pods:
                if pod.pending is None:
                    pod.pending = PendingPod(
                        f"{pod.job.key}/{pod.index}/{pod.attempt}",
                        group.request,
                        group.environments,
                        queue.priority,
                        f"{pod.created:016.3f}",
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

    # --- the timeline -------------------------------------------------------------------------

    def _sample(self, _: object) -> None:
        self.recorder.sample(self.now, len(self._instances))
        self._push(self.now + self.recorder.sample_seconds, self._sample, None)


def simulate(
    workload: Workload,
    policy_type: Callable[..., CapacityPolicy],
    settings: Settings = Settings(),
) -> Report:
    return Simulation(workload, policy_type, settings).run()
