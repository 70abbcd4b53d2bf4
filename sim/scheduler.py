"""The scheduler daemon's Job controller in the simulation: jobs, their dependencies,
admission and fair share, and the Kubernetes Job controller's pods and retries.

What decides (the daemon's own functions, called as reconcile calls them):

- a job's demand: `extender.jobs.reconcile.waiting_demand` and `admitted_demand`;
- admission, fair share and the starvation bound: `extender.jobs.admission.admit` over
  the limits of `extender.jobs.capacity.capacity_limits`, with the fair-share history
  of `extender.jobs.fairshare.UsageHistory` — one pass whenever its inputs changed (at
  most every `Settings.admission_interval`), and every `resync_seconds` of the
  scheduler's settings while jobs wait;
- dependencies: `extender.jobs.dependencies.resolve`, when a job is submitted and when
  one it depends on ends;
- retries: the job's AWS-style retry strategy, its first matching rule
  (`extender.jobs.retry.verdict`) against the exit code or the status reason Ebb
  reports (`retry.status_reason_for`); a new attempt starts after the Job
  controller's back-off (10 s, doubling, at most 6 min);
- each state change: `extender.jobs.lifecycle.transition`.

Multi-node jobs (gangs) as the daemon runs them (docs/decisions/0008): the demand of a
Job with `ebb.dev/nodes` (`JobInfo.gang`), so admission grants all its pods at once or
none; its pods start once all are bound; the first to fail (its exit code, or its node
lost) ends the attempt: every other pod is stopped and the retry strategy
(`extender.jobs.retry.verdict`, the attempts counted per gang) either fails the job or
sends the whole gang back to its queue for admission again; the main node's (index 0)
success is the job's. Under a policy that is not gang-aware (a baseline) the same Job
has no `ebb.dev/nodes`: a plain Indexed Job, admitted pod by pod as capacity allows
(elastic), its pods still waiting for each other to start (the training framework's
rendezvous) and failing together.

Array jobs model Ebb's elastic admission (parallelism raised as capacity allows, a
finished child's slot reused by the next index) but not n_to_n dependencies or
SEQUENTIAL arrays; timeouts and cancellations are not modelled. Admitted single jobs'
holdings are passed to `admit` summed per (queue, share, request, environment) when
their pods are bound — admission only adds them up — and one by one while unbound.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

from ebb.jobspec import JobSpec, MultiNode, RetryAction
from ebb.resources import Resources
from extender.jobs import fairshare
from extender.jobs.admission import CapacityLimit, Demand, QueueView, admit
from extender.jobs.capacity import capacity_limits
from extender.jobs.dependencies import resolve
from extender.jobs.lifecycle import Code, State, transition
from extender.jobs.reconcile import admitted_demand, waiting_demand
from extender.jobs.retry import ONE_ATTEMPT, verdict
from extender.jobs.snapshot import JobInfo
from sim.workloads import SimJob

if TYPE_CHECKING:
    from sim.engine import Simulation
    from sim.placement import Pod

# Admission codes that mean a job can never start as configured.
_NEVER = frozenset(
    {Code.MAX_RESOURCE, Code.JOB_RESOURCE_REQUIREMENT, Code.NO_COMPUTE_ENVIRONMENT, Code.NO_QUEUE}
)
_BACKOFF_FIRST, _BACKOFF_MAX = 10.0, 360.0  # the Job controller's pod failure back-off
NAMESPACE = "sim"


class Job:
    """A submitted job's state. Arrays keep counters, not one record per child."""

    __slots__ = (
        "active",
        "attempt_pods",
        "bound",
        "demand",
        "failed",
        "gang_attempt",
        "granted",
        "key",
        "multi_node",
        "next_index",
        "retries",
        "runnable_since",
        "spec",
        "state",
        "succeeded",
        "tries",
    )

    def __init__(self, spec: SimJob, gang_aware: bool = True) -> None:
        self.spec = spec
        # A multi-node job as the webhook parses `ebb.dev/nodes` (None: not one, or a
        # baseline's plain Indexed Job).
        self.multi_node = MultiNode(spec.nodes) if spec.nodes and gang_aware else None
        self.gang_attempt = 1
        self.attempt_pods: list[Pod] = []  # a gang's pods of this attempt, not ended
        self.key = f"{NAMESPACE}/{spec.name}"  # as the daemon keys Jobs (namespace/name)
        self.state = State.SUBMITTED
        self.runnable_since = 0.0
        self.granted = 0  # pods admission granted (an array's parallelism)
        self.active = 0  # pods created and not ended (pending, in back-off or running)
        self.succeeded = 0  # children (or the single pod) that succeeded
        self.failed = 0  # children that failed for good
        self.next_index = 0  # the next array index never started
        self.retries: list[tuple[float, int, int]] = []  # heap of (due, index, attempt)
        self.tries: dict[int, int] = {}  # index → attempts made (only once retried)
        self.bound: dict[str, int] = {}  # environment → its pods bound there (array, gang)
        self.demand: Demand | None = None  # a waiting or unbound single job's demand

    @property
    def remaining(self) -> int:
        return self.spec.pods - self.succeeded - self.failed

    def info(self) -> JobInfo:
        """The job as the daemon's cache holds it (what reconcile's functions read)."""
        terminal = {State.SUCCEEDED: "Complete", State.FAILED: "Failed"}.get(self.state)
        spec = self.spec
        return JobInfo(
            namespace=NAMESPACE,
            name=spec.name,
            uid=spec.name,
            resource_version="",
            queue=spec.queue,
            share=spec.share,
            created=spec.submit,
            spec=JobSpec(
                depends_on=spec.depends_on,
                scheduling_priority=spec.priority,
                multi_node=self.multi_node,
            ),
            spec_error=None,
            cancel=None,
            terminate=None,
            suspended=self.granted == 0,
            parallelism=max(self.granted, 1),
            requested_parallelism=spec.pods,
            completions=spec.pods,
            indexed=spec.array_size > 0 or spec.nodes > 0,
            pod_request=spec.request,
            template_ready=True,
            active=self.active,
            ready=self.active,
            succeeded=self.succeeded,
            failed=self.failed,
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
            published_state=self.state,
            published_code="",
            published_reason="",
            since=None,
            admitted_at=None,
            attempts_json="",
            array_status="",
            gang_attempt=self.gang_attempt,
        )


class JobController:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.capacity: dict[str, CapacityLimit] = capacity_limits(
            sim.environments.values(), sim.catalog, sim.s.scheduler.node_overhead()
        )
        self.jobs: dict[str, Job] = {}
        self._dependents: dict[str, list[Job]] = {}
        self._waiting: dict[str, Demand] = {}  # runnable single jobs not admitted
        self._unbound: dict[str, Demand] = {}  # admitted single jobs without a bound pod
        self._arrays: dict[str, Job] = {}  # runnable arrays with children to run
        self._gangs: dict[str, Job] = {}  # admitted multi-node jobs (their attempt)
        self._held: dict[tuple[str, str, Resources, str], int] = {}  # bound single pods
        self._usage = fairshare.UsageHistory()
        self._half_lives = fairshare.half_lives(sim.queues, sim.policies)
        self._admission_due = math.inf
        self._last_admission = -math.inf
        self.open = 0  # submitted and not terminal (nor never runnable)

    def stuck(self) -> dict[str, int]:
        """Jobs left unfinished, by state."""
        out: dict[str, int] = {}
        for job in self.jobs.values():
            if not job.state.terminal:
                out[job.state.value] = out.get(job.state.value, 0) + 1
        return out

    # --- jobs ---------------------------------------------------------------------------------

    def submit(self, spec: SimJob) -> None:
        job = Job(spec, self.sim.policy.gang_aware)
        self.jobs[job.key] = job
        self.open += 1
        self.sim.progress()
        self.sim.recorder.submitted(spec)
        for dep in spec.depends_on:
            self._dependents.setdefault(dep.job, []).append(job)
        if spec.depends_on:
            job.state = transition(job.state, State.PENDING)
            self._check_dependencies(job)
        else:
            self._runnable(job)

    def _check_dependencies(self, job: Job) -> None:
        verdict = resolve(job.info(), self._lookup)
        if verdict.failed is not None:
            self._end_job(job, State.FAILED)
        elif verdict.ready:
            self._runnable(job)

    def _lookup(self, name: str) -> JobInfo | None:
        job = self.jobs.get(f"{NAMESPACE}/{name}")
        return job.info() if job is not None else None

    def _runnable(self, job: Job) -> None:
        spec = job.spec
        now = self.sim.now
        job.state = transition(job.state, State.RUNNABLE)
        job.runnable_since = now
        self.sim.recorder.queued(spec.request, spec.pods)
        if spec.array_size:
            self._arrays[job.key] = job
        else:
            demand = waiting_demand(job.info(), spec.share, now)
            assert demand is not None  # a single job not started wants its pod
            job.demand = self._waiting[job.key] = demand
        self.admission_wanted()

    def _end_job(self, job: Job, state: State) -> None:
        if job.state is State.RUNNABLE and job.granted == 0:
            self.sim.recorder.queued(job.spec.request, -job.remaining)
        job.state = transition(job.state, state)
        self.open -= 1
        self.sim.progress()
        self._waiting.pop(job.key, None)
        self._unbound.pop(job.key, None)
        self._arrays.pop(job.key, None)
        self._gangs.pop(job.key, None)
        job.demand = None
        self.sim.recorder.ended(job.spec, state, self.sim.now)
        self.admission_wanted()
        for dependent in self._dependents.get(job.spec.name, ()):
            if dependent.state is State.PENDING:
                self._check_dependencies(dependent)

    # --- admission ---------------------------------------------------------------------------

    def admission_wanted(self) -> None:
        sim = self.sim
        due = max(sim.now, self._last_admission + sim.s.admission_interval)
        if due < self._admission_due:
            self._admission_due = due
            sim.push(due, self._admission_event, None)

    def _admission_event(self, _: object) -> None:
        sim = self.sim
        if sim.now != self._admission_due:
            return  # superseded by an earlier pass
        self._admission_due = math.inf
        self._admission_pass()
        if self._waiting or any(
            j.granted < j.remaining for j in (*self._arrays.values(), *self._gangs.values())
        ):
            due = sim.now + sim.s.scheduler.resync_seconds
            self._admission_due = due
            sim.push(due, self._admission_event, None)

    def _admission_pass(self) -> None:
        sim = self.sim
        now = sim.now
        self._last_admission = now
        decayed = self._usage.decayed(now, self._half_lives)
        views = {}
        for name, q in sim.queues.items():
            policy = sim.policies.get(q.scheduling_policy) if q.scheduling_policy else None
            views[name] = QueueView(
                name, q.priority, q.compute_environments, policy, decayed.get(name, {})
            )
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
            demand = self._array_demand(job)
            if demand is not None:
                demands.append(demand)
        for job in self._gangs.values():
            demands.append(admitted_demand(job.info(), job.spec.share, job.active, job.bound, now))
        result = admit(views, self.capacity, demands, now, sim.s.scheduler.starvation_seconds)
        self._usage = self._usage.advanced(result.running_vcpus, now, self._half_lives)
        jobs = self.jobs
        for key, total in result.grants.items():
            if key in jobs:  # (not a summed holding)
                self._granted(jobs[key], total)
        for key, status in result.waiting.items():
            if status.code in _NEVER and key in jobs and jobs[key].granted == 0:
                self._never_runnable(jobs[key])

    def _array_demand(self, job: Job) -> Demand | None:
        """An array as reconcile passes it to admission: what it holds, where its pods
        are bound, and what more it wants (once admitted), or what it wants (before)."""
        info = job.info()
        if job.granted:
            return admitted_demand(info, job.spec.share, job.active, job.bound, self.sim.now)
        return waiting_demand(info, job.spec.share, self.sim.now)

    def _granted(self, job: Job, total: int) -> None:
        new = total - job.granted
        if new <= 0:
            return
        if job.granted == 0:
            self.sim.recorder.queued(job.spec.request, -job.remaining)
        job.granted = total
        if job.state is State.RUNNABLE:  # an array granted more stays where it is
            job.state = transition(job.state, State.STARTING)
        if job.spec.array_size:
            self._fill_array(job)
            return
        if job.spec.nodes:
            self._waiting.pop(job.key, None)
            self._gangs[job.key] = job
            for _ in range(new):  # a gang-aware admission grants them all at once
                pod = self.sim.placement.new_pod(job, job.next_index, job.gang_attempt)
                job.attempt_pods.append(pod)
                job.next_index += 1
            return
        del self._waiting[job.key]
        job.demand = admitted_demand(job.info(), job.spec.share, 0, {}, self.sim.now)
        self._unbound[job.key] = job.demand
        self.sim.placement.new_pod(job, 0, 1)

    def _never_runnable(self, job: Job) -> None:
        """Admission says it can never run here (misconfigured): it stays RUNNABLE, as in
        the daemon, but the simulation does not wait for it."""
        if job.key in self._waiting or job.key in self._arrays:
            self._waiting.pop(job.key, None)
            self._arrays.pop(job.key, None)
            self.open -= 1
            self.sim.recorder.never_runnable()

    # --- pods ---------------------------------------------------------------------------------

    def _fill_array(self, job: Job) -> None:
        """Create pods up to the parallelism admission granted (and what is left to run):
        due retries first, then indexes never started."""
        limit = min(job.granted, job.remaining)
        retries = job.retries
        new_pod = self.sim.placement.new_pod
        while job.active < limit:
            if retries and retries[0][0] <= self.sim.now:
                _, index, attempt = heapq.heappop(retries)
                new_pod(job, index, attempt)
            elif job.next_index < job.spec.array_size:
                new_pod(job, job.next_index, 1)
                job.next_index += 1
            else:
                break

    def bound(self, job: Job, request: Resources, env: str, pods: int) -> None:
        """`pods` of the job bound to (> 0) or gone from (< 0) a node of `env`."""
        if job.spec.array_size or job.spec.nodes:
            n = job.bound.get(env, 0) + pods
            if n:
                job.bound[env] = n
            else:
                del job.bound[env]
            return
        if pods > 0:
            self._unbound.pop(job.key, None)
        held = (job.spec.queue, job.spec.share, request, env)
        n = self._held.get(held, 0) + pods
        if n:
            self._held[held] = n
        else:
            del self._held[held]

    def started(self, job: Job) -> None:
        if job.state is State.STARTING:
            job.state = transition(job.state, State.RUNNING)

    def gang_pod_bound(self, pod: Pod) -> None:
        """A gang's pods start once every one of them is bound."""
        job = pod.job
        pods = job.attempt_pods
        if len(pods) == job.spec.nodes and all(p.node is not None for p in pods):
            for p in pods:
                self.sim.placement.start(p)

    def attempt_succeeded(self, pod: Pod) -> None:
        job = pod.job
        job.active -= 1
        if job.spec.nodes:
            job.attempt_pods.remove(pod)
            if pod.index == 0:  # the main node's success is the job's
                self._stop_gang(job)
                job.succeeded = job.spec.nodes
                self._end_job(job, State.SUCCEEDED)
            return
        job.succeeded += 1
        self._attempt_done(job)

    def attempt_failed(self, pod: Pod, exit_code: int | None, status_reason: str) -> None:
        """The job's retry strategy, rule by rule (first match wins; no match retries)."""
        job = pod.job
        job.active -= 1
        if job.spec.nodes:
            self._gang_attempt_ends(pod, exit_code, status_reason)
            return
        strategy = job.spec.retry
        if (
            strategy is not None
            and pod.attempt < strategy.attempts
            and verdict(strategy, exit_code, status_reason) is RetryAction.RETRY
        ):
            self.sim.recorder.retried()
            due = self.sim.now + min(_BACKOFF_FIRST * 2 ** (pod.attempt - 1), _BACKOFF_MAX)
            if job.spec.array_size:
                heapq.heappush(job.retries, (due, pod.index, pod.attempt + 1))
            else:
                job.active += 1  # the single job holds its admission through the back-off
                if job.demand is not None:
                    self._unbound[job.key] = job.demand
            self.sim.push(due, self._recreate, (job, pod.index, pod.attempt + 1))
        else:
            job.failed += 1
        self._attempt_done(job)

    def _gang_attempt_ends(self, pod: Pod, exit_code: int | None, status_reason: str) -> None:
        """One pod failed: the gang's attempt ends; retried as a whole if its strategy
        allows (AWS Batch's multi-node semantics; the daemon's `_gang_attempt_ends`)."""
        job = pod.job
        job.attempt_pods.remove(pod)
        self._stop_gang(job)
        self._gangs.pop(job.key, None)
        job.granted = job.next_index = 0
        strategy = job.spec.retry or ONE_ATTEMPT
        if (
            verdict(strategy, exit_code, status_reason) is RetryAction.EXIT
            or job.gang_attempt >= strategy.attempts
        ):
            job.failed = job.spec.nodes
            self._end_job(job, State.FAILED)
            return
        self.sim.recorder.retried()
        job.gang_attempt += 1
        self._runnable(job)

    def _stop_gang(self, job: Job) -> None:
        """Every pod of the gang's attempt still there is stopped (bound) or deleted."""
        placement = self.sim.placement
        for p in job.attempt_pods:
            if p.node is not None:
                placement.unbind(p)
            else:
                placement.withdraw(p)
        job.active -= len(job.attempt_pods)
        job.attempt_pods = []

    def _attempt_done(self, job: Job) -> None:
        if job.remaining == 0:
            ok = job.failed == 0
            self._end_job(job, State.SUCCEEDED if ok else State.FAILED)
            return
        if job.spec.array_size:
            if min(job.granted, job.remaining) < job.granted:
                self.admission_wanted()  # the array holds less than before
            self._fill_array(job)

    def _recreate(self, subject: tuple[Job, int, int]) -> None:
        job, index, attempt = subject
        if job.state.terminal:
            return
        if job.spec.array_size:
            self._fill_array(job)
        else:
            job.active -= 1  # counted when the attempt failed
            self.sim.placement.new_pod(job, index, attempt)
