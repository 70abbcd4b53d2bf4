"""Decision time of one scheduling pass in the pure code (no API server).

    python -m bench.scheduling_pass [--jobs 100000]

100,000 queued (suspended, runnable) Jobs across 30 queues — 10 of them with a fair
share policy of 5 shares — over 10 compute environments, plus 2,000 admitted jobs
holding capacity. Reports the median of 5 passes of `reconcile` (everything a pass
decides: states, reasons, admissions) and of `admit` alone. Goal: ≤ 0.5 s per pass.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any
from unittest import mock

from ebb.catalog import NodeOverheadSettings, shipped_catalog
from ebb.model import ComputeEnvironment, JobQueue, SchedulingPolicy, ShareWeight
from extender.jobs.admission import QueueView, admit
from extender.jobs.capacity import capacity_limits
from extender.jobs.reconcile import Snapshot, reconcile
from extender.jobs.snapshot import job_from_raw

QUEUES = 30
SHARES = 5
CES = 10


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
        now=1.8e9,
        jobs=infos,
        pods_by_job={},
        queues=queues,
        policies=policies,
        capacity=capacity,
        node_compute_environment={},
    )


def median_seconds(fn: Any, runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args(argv)
    snap = build(args.jobs)
    gc.freeze()  # as the daemon does: long-lived cached objects are not re-scanned
    full = median_seconds(lambda: reconcile(snap))
    decisions = reconcile(snap)
    print(f"{args.jobs:,} queued jobs, {QUEUES} queues, {CES} compute environments")
    print(
        f"  reconcile (whole pass):  median {full:.3f} s   "
        f"({len(decisions.admit):,} admitted, {len(decisions.statuses):,} statuses)"
    )
    # The demands a pass hands to admission, as reconcile builds them.
    with mock.patch("extender.jobs.reconcile.admit", wraps=admit) as spy:
        reconcile(snap)
    demands = spy.call_args.args[2]
    views = {
        name: QueueView(
            name, q.priority, q.compute_environments, snap.policies.get(q.scheduling_policy or "")
        )
        for name, q in snap.queues.items()
    }
    alone = median_seconds(lambda: admit(views, snap.capacity, demands, snap.now))
    print(f"  admit (admission only):  median {alone:.3f} s")
    return {"reconcile_s": full, "admit_s": alone}


if __name__ == "__main__":
    main()
