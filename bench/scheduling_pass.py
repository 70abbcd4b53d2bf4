"""Decision time of a scheduling pass in the pure code (no API server).

    python -m bench.scheduling_pass [--jobs 100000]

100,000 queued (suspended, runnable, published RUNNABLE a minute ago) Jobs across 30
queues — 10 of them with a fair share policy of 5 shares — over 10 compute environments,
plus 2,000 admitted jobs holding capacity. Reports, in one run:

- the full pass from a cold snapshot: `reconcile` (everything a pass decides: states,
  reasons, admissions), median of 5; goal ≤ 0.5 s; and building every status it decided,
  as the daemon does after each pass for its writer and metrics (not part of the goal);
- the incremental pass of the daemon's `Reconciler`, once the full pass's admissions
  are applied (the environments full): after one Job is added, and after one admitted
  Job ends (its room goes to a waiting one), median of 5 each; goal ≤ 50 ms. Each is
  checked against a full pass over the same snapshot with every status decided in turn
  (`settle=False`): the same decisions.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from ebb import keys
from ebb.catalog import NodeOverheadSettings, shipped_catalog
from ebb.model import ComputeEnvironment, JobQueue, SchedulingPolicy, ShareWeight
from extender.jobs.capacity import capacity_limits
from extender.jobs.lifecycle import State
from extender.jobs.reconcile import Decisions, Reconciler, Snapshot, reconcile
from extender.jobs.snapshot import JobInfo, format_time, job_from_raw

QUEUES = 30
SHARES = 5
CES = 10
NOW = 1.8e9
FULL_GOAL_S = 0.5
INCREMENTAL_GOAL_MS = 50.0


def raw_job(i: int, queue: int, admitted: bool) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"job-{i}",
            "namespace": f"team-{i % 20}",
            "uid": f"u{i}",
            "resourceVersion": str(i),
            "creationTimestamp": "2026-11-28T10:00:00Z",
            "labels": {"ebb.dev/queue": f"q{queue}", "ebb.dev/share": f"s{i % SHARES}"},
            "annotations": {
                "ebb.dev/state": "RUNNING" if admitted else "RUNNABLE",
                keys.STATE_SINCE: format_time(NOW - 60),
                "ebb.dev/scheduling-priority": str(i % 10),
            },
        },
        "spec": {
            "suspend": not admitted,
            "parallelism": 1,
            "completions": 1,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "m",
                            "resources": {
                                "requests": {"cpu": str(1 + i % 4), "memory": f"{1 + i % 8}Gi"}
                            },
                        }
                    ]
                }
            },
        },
        "status": {"active": 1, "startTime": "2026-11-28T10:00:01Z"} if admitted else {},
    }


def build(jobs: int) -> Snapshot:
    policies = {
        f"p{p}": SchedulingPolicy(
            f"p{p}",
            share_decay_seconds=3600,
            shares=tuple(ShareWeight(f"s{s}", 1.0 + s) for s in range(SHARES)),
        )
        for p in range(10)
    }
    queues = {
        f"q{q}": JobQueue(
            f"q{q}",
            priority=q % 5,
            compute_environments=(f"ce{q % CES}", f"ce{(q + 1) % CES}"),
            scheduling_policy=f"p{q % 10}" if q < 10 else None,
        )
        for q in range(QUEUES)
    }
    # As the daemon builds them: managed environments of the shipped catalog's types.
    capacity = capacity_limits(
        (
            ComputeEnvironment(f"ce{c}", "EC2", max_vcpus=2000, instance_types=("optimal",))
            for c in range(CES)
        ),
        shipped_catalog(),
        NodeOverheadSettings().node_overhead(),
    )
    infos = {}
    for i in range(jobs + 2000):
        info = job_from_raw(raw_job(i, i % QUEUES, admitted=i >= jobs))
        assert info is not None
        infos[info.key] = info
    return Snapshot(
        now=NOW,
        jobs=infos,
        pods_by_job={},
        queues=queues,
        policies=policies,
        capacity=capacity,
        node_compute_environment={},
    )


def median_seconds(fn: Callable[[], object], runs: int = 5) -> tuple[float, float]:
    """Median wall-clock and CPU seconds (the CPU time says what a pass costs when the
    machine is shared)."""
    wall, cpu = [], []
    for _ in range(runs):
        gc.freeze()  # as the daemon does before each pass: what lives on is not re-scanned
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def with_jobs(snap: Snapshot, jobs: dict[str, JobInfo], now: float) -> Snapshot:
    return dataclasses.replace(snap, jobs=jobs, now=now)


def admitted(snap: Snapshot, decisions: Decisions) -> Snapshot:
    """The snapshot once the pass's admissions are written (as the writer feeds them back)."""
    jobs = dict(snap.jobs)
    for key, pods in decisions.admit.items():
        jobs[key] = dataclasses.replace(
            jobs[key],
            suspended=False,
            parallelism=pods,
            published_state=State.STARTING,
            published_code="ADMITTED",
            since=snap.now,
            admitted_at=snap.now,
        )
    return with_jobs(snap, jobs, snap.now + 1)


def same(a: Decisions, b: Decisions) -> bool:
    return (
        dict(a.statuses.items()) == dict(b.statuses.items())
        and a.admit == b.admit
        and list(a.admit) == list(b.admit)
        and (a.fail, a.requeue, a.attempts, a.illegal) == (b.fail, b.requeue, b.attempts, b.illegal)
        and (a.running_vcpus, a.used) == (b.running_vcpus, b.used)
    )


def incremental(
    reconciler: Reconciler, snap: Snapshot, change: Callable[[dict[str, JobInfo], int], str]
) -> tuple[tuple[float, float], Snapshot, bool]:
    """Median wall-clock and CPU seconds of 5 passes, each after one `change` to the
    snapshot; whether the last one decided what a full pass decides."""
    wall, cpu = [], []
    decisions = Decisions()
    for n in range(5):
        jobs = dict(snap.jobs)
        key = change(jobs, n)
        snap = with_jobs(snap, jobs, snap.now + 1)
        gc.freeze()
        start, start_cpu = time.perf_counter(), time.process_time()
        decisions = reconciler.run(snap, {key})
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    medians = (statistics.median(wall), statistics.median(cpu))
    return medians, snap, same(decisions, reconcile(snap, settle=False))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args(argv)
    snap = build(args.jobs)
    full, full_cpu = median_seconds(lambda: reconcile(snap))
    decisions = reconcile(snap)
    print(f"{args.jobs:,} queued jobs, {QUEUES} queues, {CES} compute environments")
    print(
        f"  full pass (cold snapshot):   median {full:.3f} s, CPU {full_cpu:.3f} s   "
        f"(goal <= {FULL_GOAL_S} s; {len(decisions.admit):,} admitted, "
        f"{len(decisions.statuses):,} statuses)"
    )
    built, built_cpu = median_seconds(lambda: dict(decisions.statuses.items()))
    print(
        f"  every status built after it:  median {built:.3f} s, CPU {built_cpu:.3f} s   "
        "(the daemon does it after each pass, off the event loop, for its writer and metrics)"
    )
    steady = admitted(snap, decisions)
    reconciler = Reconciler()
    reconciler.run(steady)
    reconciler.run(steady, ())
    # The job to add: one still queued after the pass, or, when the environments
    # admitted every job (a small --jobs), one as it was submitted.
    template = next(
        (job for job in steady.jobs.values() if job.suspended),
        next(iter(snap.jobs.values())),
    )

    def add(jobs: dict[str, JobInfo], n: int) -> str:
        job = dataclasses.replace(template, name=f"new-{n}", uid=f"new-{n}", created=NOW + n)
        jobs[job.key] = job
        return job.key

    running = [key for key, job in steady.jobs.items() if key in decisions.admit]

    def end(jobs: dict[str, JobInfo], n: int) -> str:
        key = running[n]
        jobs[key] = dataclasses.replace(jobs[key], terminal="Complete", succeeded=1)
        return key

    added, steady, add_same = incremental(reconciler, steady, add)
    ended, steady, end_same = incremental(reconciler, steady, end)
    for what, (seconds, cpu), equal in (
        ("one Job added", added, add_same),
        ("one Job ended", ended, end_same),
    ):
        print(
            f"  incremental ({what}): median {seconds * 1000:.1f} ms, CPU {cpu * 1000:.1f} ms   "
            f"(goal <= {INCREMENTAL_GOAL_MS:.0f} ms; same decisions as a full pass: "
            f"{'yes' if equal else 'NO'})"
        )
    return {"reconcile_s": full, "added_ms": added[0] * 1000, "ended_ms": ended[0] * 1000}


if __name__ == "__main__":
    main()
