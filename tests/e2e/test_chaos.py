"""Chaos, end to end: a workload of over a thousand Jobs (dependencies of every type,
arrays, n_to_n, retries decided by exit codes) runs on capacity the autoscaler
launches from zero on the local EC2, while the scheduler daemon and the autoscaler are
killed (-9) at random moments, kube-apiserver is restarted once (after an etcd
compaction, so every watch is cut and resumes from a version that is gone), and EC2
throttles and loses answers now and then.

What must hold at the end, decided up front from the workload:

- every Job is in the terminal state its exit codes, retry strategy and dependencies
  call for (Kubernetes' condition and Ebb's ebb.dev/state), with the reason code;
- no Job ran more attempts than its retry strategy allows: pods bound to a node are
  counted per Job and per array index (by a watch of this test's own, and by the Job
  controller's count);
- no instance runs without a node, no node is left without an instance, and everything
  scales back to zero.

The seed (printed) makes the schedule of kills and the workload repeatable:
EBB_CHAOS_SEED=<seed> reruns one.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import aiohttp
import orjson

from ebb import keys, kube
from local_stack import builders
from local_stack.aws import AWS_TIMEOUT_SECONDS, LocalAws, compute_environment, name
from local_stack.builders import job_queue
from local_stack.harness import LocalCluster, Process, wait_for

T = TypeVar("T")
KILLS_PER_DAEMON = 6
CHAOS_WINDOW_SECONDS = (4.0, 100.0)  # kills and the restart happen in this window
SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
# The Job controller defers a sync while its caches are behind its own writes
# (kube-controller-manager's log line for it; StaleControllerConsistencyJob, Kubernetes 1.36).
STALE_SYNC = "is not as new as written version"


@dataclass(frozen=True)
class Expected:
    """What one Job must end as."""

    state: str
    code: str
    pods_per_index: int  # attempts each pod slot (array index) must have run
    indexes: int = 1


@dataclass
class Workload:
    jobs: list[dict[str, Any]] = field(default_factory=list)
    expected: dict[str, Expected] = field(default_factory=dict)

    def add(self, body: dict[str, Any], expected: Expected) -> None:
        self.jobs.append(body)
        self.expected[body["metadata"]["name"]] = expected


def retry(attempts: int, exit_rules: list[dict[str, str]] | None = None) -> str:
    return orjson.dumps({"attempts": attempts, "evaluateOnExit": exit_rules or []}).decode()


def workload(queue: str, rng: random.Random) -> Workload:
    """1,085 Jobs, about 1,440 pods, each pod 250m CPU / 256Mi for 1-3 s."""
    w = Workload()

    def job(job_name: str, **kwargs: Any) -> dict[str, Any]:
        return builders.job(
            job_name, queue, cpu="250m", run_seconds=rng.choice((1, 2, 3)), **kwargs
        )

    ok = Expected(SUCCEEDED, "SUCCEEDED", 1)
    for i in range(700):
        w.add(job(f"ok-{i}"), ok)
    # Exit 3, two attempts: both fail.
    for i in range(100):
        w.add(
            job(f"retried-{i}", exit_code=3, annotations={keys.RETRY_STRATEGY: retry(2)}),
            Expected(FAILED, "FAILED:ATTEMPTS_EXHAUSTED", 2),
        )
    # Exit 4, up to three attempts, but EXIT on 4: one attempt.
    for i in range(50):
        exit_on_4 = retry(3, [{"onExitCode": "4", "action": "EXIT"}])
        w.add(
            job(f"exits-{i}", exit_code=4, annotations={keys.RETRY_STRATEGY: exit_on_4}),
            Expected(FAILED, "FAILED:EXIT_RULE", 1),
        )
    failed_dependency = Expected(FAILED, "DEPENDENCY:FAILED", 0)
    for i in range(40):
        after = {
            f"after-ok-{i}": (f"ok-{i}", ok),
            f"after-failed-{i}": (f"retried-{i}", failed_dependency),
            f"after-any-{i}": (f"retried-{i}:afterany", ok),
            f"after-not-ok-{i}": (f"exits-{i}:afternotok", ok),
            f"chained-{i}": (f"after-failed-{i}", failed_dependency),  # fails transitively
        }
        for job_name, (depends_on, expected) in after.items():
            w.add(job(job_name, annotations={keys.DEPENDS_ON: depends_on}), expected)
    array = {"completions": 10, "parallelism": 10, "indexed": True}
    for i in range(20):
        w.add(job(f"array-{i}", **array), Expected(SUCCEEDED, "SUCCEEDED", 1, 10))
    for i in range(10):
        w.add(
            job(f"n-to-n-{i}", annotations={keys.DEPENDS_ON: f"array-{i}:n_to_n"}, **array),
            Expected(SUCCEEDED, "SUCCEEDED", 1, 10),
        )
    for i in range(3):
        w.add(
            job(f"sequential-{i}", annotations={keys.ARRAY_DEPENDENCY: "SEQUENTIAL"}, **array),
            Expected(SUCCEEDED, "SUCCEEDED", 1, 10),
        )
    for i in range(2):  # every child fails twice
        w.add(
            job(
                f"array-retried-{i}",
                exit_code=3,
                annotations={keys.RETRY_STRATEGY: retry(2)},
                **array,
            ),
            Expected(FAILED, "FAILED:ATTEMPTS_EXHAUSTED", 2, 10),
        )
    rng.shuffle(w.jobs)  # dependents are often created before what they depend on
    return w


async def until_ok(call: Callable[[], Awaitable[T]], what: str, timeout: float = 120) -> T:
    """`call`, retried while the API server restarts (or a webhook is briefly away)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (kube.ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} kept failing: {exc}") from exc
            await asyncio.sleep(0.5)


async def submit(client: kube.KubeClient, namespace: str, bodies: list[dict[str, Any]]) -> int:
    """Create every Job, as a user retrying `kubectl create` would: a create refused
    because the webhook's daemon is down is sent again; one whose answer was lost (the
    API server restarting) may find the Job there. Returns how many creates were
    refused and repeated."""
    refused = 0
    slots = asyncio.Semaphore(12)

    async def create(body: dict[str, Any]) -> None:
        nonlocal refused
        async with slots:
            deadline = time.monotonic() + 300
            while True:
                try:
                    await client.create(kube.JOBS, body, namespace)
                    return
                except kube.ApiError as exc:
                    if exc.already_exists:
                        return
                    if exc.status < 500 and "failed calling webhook" not in exc.message:
                        raise
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                refused += 1
                assert time.monotonic() < deadline, f"{body['metadata']['name']}: not created"
                await asyncio.sleep(0.5)

    await asyncio.gather(*(create(b) for b in bodies))
    return refused


@dataclass
class Chaos:
    """Kills (-9) and restarts, at moments drawn from the seed."""

    rng: random.Random
    kills: dict[str, int] = field(default_factory=dict)
    apiserver_restarts: int = 0
    log: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def moments(self, count: int) -> list[float]:
        return sorted(self.rng.uniform(*CHAOS_WINDOW_SECONDS) for _ in range(count))

    async def at(self, moment: float) -> None:
        await asyncio.sleep(max(0.0, self.started + moment - time.monotonic()))

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:6.1f} s  {what}"
        self.log.append(line)
        print(line, flush=True)

    async def kill_repeatedly(self, daemon: Process) -> None:
        for moment in self.moments(KILLS_PER_DAEMON):
            await self.at(moment)
            daemon.kill()
            self.kills[daemon.name] = self.kills.get(daemon.name, 0) + 1
            down = self.rng.uniform(0, 3)
            self.note(f"kill -9 {daemon.name}; back in {down:.1f} s")
            await asyncio.sleep(down)
            await asyncio.to_thread(daemon.start)  # returns once it is ready
            self.note(f"{daemon.name} ready again")

    async def restart_apiserver(self, cluster: LocalCluster) -> None:
        (moment,) = self.moments(1)
        await self.at(moment)
        revision = await asyncio.to_thread(cluster.compact_etcd)
        self.note(f"etcd compacted at revision {revision}; restarting kube-apiserver")
        await asyncio.to_thread(cluster.restart, "kube-apiserver")
        self.apiserver_restarts += 1
        self.note("kube-apiserver ready again")


@dataclass(frozen=True)
class Pod:
    job: str
    index: int
    uid: str
    name: str
    node: str  # "" until bound
    phase: str
    created: float = 0.0  # epoch seconds


@dataclass
class PodLedger:
    """Every pod of the namespace ever seen, by this test's own watch. An attempt is a
    pod that was bound to a node (so its container could start); a pod the Job
    controller created and deleted again before it was placed ran nothing."""

    pods: dict[str, Pod] = field(default_factory=dict)  # by UID, with its node once bound

    def record(self, event: kube.Event[Pod]) -> None:
        pod = event.new
        if pod is not None:
            before = self.pods.get(pod.uid)
            if before is not None:  # what was seen stays seen
                pod = replace(pod, node=pod.node or before.node, phase=pod.phase or before.phase)
            self.pods[pod.uid] = pod

    def slot(self, job: str, index: int) -> list[Pod]:
        return [p for p in self.pods.values() if (p.job, p.index) == (job, index) and p.node]

    def attempts(self, job: str, index: int) -> int:
        return len(self.slot(job, index))

    def never_placed(self) -> list[str]:
        return sorted(p.name for p in self.pods.values() if not p.node)


@dataclass(frozen=True)
class JobVersion:
    name: str
    metadata_and_spec: int  # what Ebb writes (status is the Job controller's)
    running: bool  # a pod of it active or finishing: what the Job controller tracks


def job_version(raw: dict[str, Any]) -> JobVersion:
    meta, status = raw["metadata"], raw.get("status") or {}
    written = orjson.dumps(
        [meta.get("annotations"), meta.get("labels"), raw.get("spec")],
        option=orjson.OPT_SORT_KEYS,
    )
    running = bool(status.get("active") or status.get("uncountedTerminatedPods"))
    return JobVersion(str(meta["name"]), hash(written), running and not finished(raw))


@dataclass
class WriteLedger:
    """Writes to Jobs' metadata or spec (Ebb's; the Job controller writes status),
    counted by this test's own watch: all of them, and those while pods were in flight."""

    writes: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)

    def record(self, event: kube.Event[JobVersion]) -> None:
        old, new = event.old, event.new
        if old is None or new is None or old.metadata_and_spec == new.metadata_and_spec:
            return
        self.writes[new.name] = self.writes.get(new.name, 0) + 1
        if old.running:
            self.in_flight[new.name] = self.in_flight.get(new.name, 0) + 1


def pod_attempt(raw: dict[str, Any]) -> Pod:
    meta = raw["metadata"]
    labels = meta.get("labels") or {}
    index = (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", "0")
    return Pod(
        labels.get("batch.kubernetes.io/job-name", ""),
        int(index),
        str(meta["uid"]),
        str(meta["name"]),
        str((raw.get("spec") or {}).get("nodeName") or ""),
        str((raw.get("status") or {}).get("phase") or ""),
        datetime.fromisoformat(str(meta["creationTimestamp"])).timestamp(),
    )


def ebb_state(job: dict[str, Any]) -> tuple[str, str]:
    annotations = job["metadata"].get("annotations") or {}
    return annotations.get(keys.STATE, ""), annotations.get(keys.REASON_CODE, "")


def finished(job: dict[str, Any]) -> str:
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return SUCCEEDED if condition["type"] == "Complete" else FAILED
    return ""


async def orphans(client: kube.KubeClient, aws: LocalAws, ces: list[str]) -> list[str]:
    """Live instances of these environments without a node, and their nodes without a
    live instance. EC2 and the API server cannot be read at one instant, and a scale-down
    terminates an instance, then deletes its node: so each is read twice, interleaved
    (instances, nodes, instances, nodes), and only what both readings agree on counts."""

    async def live() -> set[str]:
        return {i["InstanceId"] for ce in ces for i in await asyncio.to_thread(aws.live, ce)}

    async def with_node() -> dict[str, str]:
        return {
            n["spec"].get("providerID", "").rsplit("/", 1)[-1]: n["metadata"]["name"]
            for n in await nodes_of(client, ces)
        }

    live_1, nodes_1 = await live(), await with_node()
    live_2, nodes_2 = await live(), await with_node()
    out = [
        f"instance {iid} has no node"
        for iid in sorted(live_1 & live_2)
        if iid not in nodes_1 and iid not in nodes_2
    ]
    out += [
        f"node {node} has no instance"
        for iid, node in sorted(nodes_1.items())
        if iid in nodes_2 and iid not in live_1 | live_2
    ]
    return out


async def test_chaos_loses_no_job_and_orphans_no_instance(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    *,
    local_aws: LocalAws,
    scheduler_daemon: Process,
    autoscaler: Process,
    setup: Any,
) -> None:
    seed = int(os.environ.get("EBB_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nchaos seed {seed} (rerun with EBB_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    spot, on_demand = name("chaos-spot"), name("chaos-od")
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(
            spot, local_aws, maxvCpus=48, instanceTypes=["c6i", "m6i"], scaleDownDelaySeconds=10
        ),
    )
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(
            on_demand,
            local_aws,
            type="EC2",
            maxvCpus=16,
            instanceTypes=["c6i"],
            scaleDownDelaySeconds=10,
        ),
    )
    queue = name("chaos")
    await setup(kube.JOB_QUEUES, job_queue(queue, spot, on_demand))
    local_aws.faults(
        # EC2 now and then loses an answer, and throttles Ebb's calls.
        [
            {
                "action": "RunInstances",
                "agent": "ebb-autoscaler",
                "delay_after": 2 * AWS_TIMEOUT_SECONDS,
                "probability": 0.1,
                "seed": seed,
            }
        ]
        + [
            {
                "action": action,
                "agent": "ebb-autoscaler",
                "error": "RequestLimitExceeded",
                "status": 503,
                "probability": 0.1,
            }
            for action in ("RunInstances", "DescribeInstances", "TerminateInstances")
        ]
    )
    work = workload(queue, rng)
    ledger = PodLedger()
    pods = kube.Reflector(kube_client, kube.PODS, pod_attempt, namespace=namespace, name="chaos")
    pods.subscribe(ledger.record)
    watch = asyncio.create_task(pods.run())
    writes = WriteLedger()
    job_watch = kube.Reflector(
        kube_client, kube.JOBS, job_version, namespace=namespace, name="chaos-jobs"
    )
    job_watch.subscribe(writes.record)
    job_watch_task = asyncio.create_task(job_watch.run())
    chaos = Chaos(rng)
    started = time.monotonic()
    disorder = asyncio.gather(
        chaos.kill_repeatedly(scheduler_daemon),
        chaos.kill_repeatedly(autoscaler),
        chaos.restart_apiserver(cluster),
    )
    try:
        refused = await submit(kube_client, namespace, work.jobs)
        chaos.note(f"{len(work.jobs)} jobs submitted ({refused} creates refused and repeated)")

        async def all_terminal() -> list[dict[str, Any]] | None:
            listed = await until_ok(lambda: kube_client.list(kube.JOBS, namespace), "list jobs")
            done = [
                j for j in listed.items if finished(j) and ebb_state(j)[0] in (SUCCEEDED, FAILED)
            ]
            return listed.items if len(done) == len(work.jobs) else None

        await disorder
        jobs = await wait_for(all_terminal, 600, interval=2, message="every job terminal")
        elapsed = time.monotonic() - started
        chaos.note("every job terminal")
        # Instances still booting, and nodes of instances just terminated, settle.
        await wait_for(
            lambda: no_orphans(kube_client, local_aws, [spot, on_demand]),
            60,
            message="every instance a node and every node an instance",
        )
        left = await orphans(kube_client, local_aws, [spot, on_demand])
    finally:
        disorder.cancel()
        for daemon in (scheduler_daemon, autoscaler):  # never leave the session without one
            if daemon.proc is None:
                await asyncio.to_thread(daemon.start)
        pods.stop()
        job_watch.stop()
        await asyncio.gather(watch, job_watch_task, return_exceptions=True)
        local_aws.faults([])

    lost, overrun, mismatched = [], [], []
    by_name = {j["metadata"]["name"]: j for j in jobs}
    assert set(by_name) == set(work.expected)
    for job_name, expected in work.expected.items():
        job = by_name[job_name]
        state, code = ebb_state(job)
        if (finished(job), state, code) != (expected.state, expected.state, expected.code):
            lost.append(f"{job_name}: {finished(job)}/{state}/{code}, expected {expected}")
        status = job.get("status") or {}
        counted = int(status.get("succeeded") or 0) + int(status.get("failed") or 0)
        want = expected.pods_per_index * expected.indexes
        seen = [ledger.attempts(job_name, i) for i in range(expected.indexes)]
        if any(n > expected.pods_per_index for n in seen) or counted > want:
            ran = sorted(
                f"{p.name}@{p.node}:{p.phase}" for p in ledger.pods.values() if p.job == job_name
            )
            overrun.append(
                f"{job_name}: {seen} pods per index, {counted} counted; allowed {want}: {ran}"
            )
        elif seen != [expected.pods_per_index] * expected.indexes or counted != want:
            mismatched.append(f"{job_name}: {seen} pods per index, {counted} counted; want {want}")
    pods_run = sum(1 for p in ledger.pods.values() if p.node)
    # Pods the Job controller created in excess and deleted before they were placed; they
    # ran nothing.
    unplaced = ledger.never_placed()
    deferred = (
        (cluster.state_dir / "logs" / "kube-controller-manager.log").read_text().count(STALE_SYNC)
    )
    print(
        f"chaos: seed {seed}; {len(work.jobs)} jobs, {pods_run} pods run in {elapsed:.0f} s "
        f"({len(unplaced)} more created and deleted unplaced: {unplaced[:5]}); "
        f"kills {chaos.kills}; kube-apiserver restarts {chaos.apiserver_restarts}; "
        f"lost {len(lost)}; over their attempts or run again {len(overrun)}; "
        f"other attempt counts {len(mismatched)}; orphans {len(left)}; "
        f"Job controller syncs deferred behind its own writes (session so far) {deferred}"
    )
    total_writes, in_flight = sum(writes.writes.values()), sum(writes.in_flight.values())
    print(
        f"chaos: writes to Jobs' metadata/spec (Ebb's) {total_writes}, "
        f"{total_writes / len(work.jobs):.2f} per Job; {in_flight} while the Job had pods "
        f"in flight ({in_flight / len(work.jobs):.2f} per Job)"
    )
    assert not lost, lost[:20]
    assert not overrun, overrun[:20]
    assert not mismatched, mismatched[:20]
    assert all(n >= 5 for n in chaos.kills.values()) and len(chaos.kills) == 2, chaos.kills
    assert chaos.apiserver_restarts == 1
    assert left == []

    # Everything ebbs back to zero: no instance, no node.
    async def at_zero() -> bool:
        gone = [not await asyncio.to_thread(local_aws.live, ce) for ce in (spot, on_demand)]
        return all(gone) and not await nodes_of(kube_client, [spot, on_demand])

    await wait_for(at_zero, 120, interval=1, message="every instance terminated, every node gone")


async def no_orphans(client: kube.KubeClient, aws: LocalAws, ces: list[str]) -> bool:
    return not await orphans(client, aws, ces)


async def nodes_of(client: kube.KubeClient, ces: list[str]) -> list[dict[str, Any]]:
    nodes = []
    for ce in ces:
        selector = f"{keys.COMPUTE_ENVIRONMENT_LABEL}={ce}"
        listed = await until_ok(
            partial(client.list, kube.NODES, label_selector=selector), "list nodes"
        )
        nodes += listed.items
    return nodes
