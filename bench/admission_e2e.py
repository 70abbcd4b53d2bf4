"""Admission throughput end to end, against the real local control plane.

    python -m bench.admission_e2e [--jobs 15000] [--queues 30] [--shares 5]

Brings up a private local cluster with the scheduler daemon, creates `--queues` job
queues (a third of them with a fair-share policy over `--shares` share identifiers)
over compute environments that are DISABLED, submits `--jobs` Jobs through the
webhook (all queue, none can start), then ENABLES the environments and measures how
long until every Job has been admitted (unsuspended by Ebb). KWOK nodes (`--nodes`,
enough pod slots for every Job) hold the pods so that the control plane does the real
work that follows admission, and the autoscaler has nothing to launch. Prints, over the
phase, the scheduler daemon's CPU-seconds, its writes and its extender requests. Goal:
≥ 250 admissions/s.

With `--bare`, the API server's own write rate is then measured on the same control
plane and the same Jobs: Ebb's daemons are stopped, every Job is suspended again and its
pods left to go, and a bare client — Ebb's identity and client library (so the same TLS,
and no webhook call, as for Ebb's writes), `--write-concurrency` patches at a time, as
Ebb's daemon writes — patches `suspend: false` on each Job, counted the same way. The
pods the Job controller then creates are not placed (the extender is stopped with Ebb),
so the control plane does less after each write than in Ebb's phase: the bare rate is
if anything flattered. (Keeping Ebb's daemons up to place them with every queue DISABLED
does not work: a disabled queue's RUNNABLE jobs are still dispatched, as in AWS Batch, so
Ebb admits the Jobs again.) Ebb's phase starts once its writes from the submission (the
publications of the Jobs' states) have stopped. Prints Ebb ÷ bare. Goal: ≥ 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ebb import keys, kube
from extender.jobs.controller import ControllerSettings
from local_stack import ROOT, builders
from local_stack.cluster import PORT_OFFSETS
from local_stack.harness import cluster_args, create_node

STATE = ROOT / ".ebb-bench"
# The benchmarks' private clusters: clear of `make run` (16,000) and the tests (17,000-30,000).
PORT_BASE = int(os.environ.get("EBB_BENCH_PORT_BASE", "26000"))


def cluster(command: str, state: Path, port_base: int, *extra: str) -> None:
    subprocess.run(cluster_args(command, state, port_base, *extra), check=True)


@contextlib.contextmanager
def fresh_cluster(port_base: int, *extra: str) -> Iterator[Path]:
    """A private local cluster in .ebb-bench (whatever an earlier run left there stopped and
    removed first), stopped when the block ends; yields its state directory."""
    if STATE.exists():
        cluster("down", STATE, port_base)
        shutil.rmtree(STATE)
    cluster("up", STATE, port_base, *extra)
    try:
        yield STATE
    finally:
        cluster("down", STATE, port_base)


async def setup(
    client: kube.KubeClient, queues: int, shares: int, nodes: int, aws: dict[str, Any]
) -> list[str]:
    """`aws`: the local EC2's subnets, security group and role, so that the autoscaler
    finds the environments VALID (admission holds nothing for an INVALID one)."""
    ces = [f"bench-ce-{i}" for i in range(5)]
    for ce in ces:
        await client.apply(
            kube.COMPUTE_ENVIRONMENTS,
            builders.compute_environment(
                ce, max_vcpus=100_000, state="DISABLED", **builders.ec2_networking(aws)
            ),
            field_manager="bench",
        )
    per_ce = nodes // len(ces)
    for i, ce in enumerate(ces):
        for n in range(per_ce):
            await create_node(
                client,
                f"bench-node-{i}-{n}",
                cpu="2000",
                memory="16Ti",
                labels={keys.COMPUTE_ENVIRONMENT_LABEL: ce},
                taints=[builders.BATCH_TAINT],
            )
    await client.apply(
        kube.SCHEDULING_POLICIES,
        builders.scheduling_policy(
            "bench-fair", [builders.share(f"share-{s}", 1 + s) for s in range(shares)]
        ),
        field_manager="bench",
    )
    names = []
    for q in range(queues):
        policy = {"schedulingPolicy": "bench-fair"} if q % 3 == 0 else {}
        await client.apply(
            kube.JOB_QUEUES,
            builders.job_queue(
                f"bench-q{q}", ces[q % 5], ces[(q + 1) % 5], priority=q % 3, **policy
            ),
            field_manager="bench",
        )
        names.append(f"bench-q{q}")
    await client.create(kube.NAMESPACES, {"metadata": {"name": "bench"}})
    return ces


async def submit(client: kube.KubeClient, jobs: int, queues: int, shares: int) -> float:
    bodies = (
        builders.job(
            f"job-{i}",
            f"bench-q{i % queues}",
            cpu="1",
            run_seconds=3600,
            share=f"share-{i % shares}",
        )
        for i in range(jobs)
    )
    return await create_jobs(client, bodies)


async def create_jobs(client: kube.KubeClient, bodies: Iterable[dict[str, Any]]) -> float:
    """Create the Jobs in namespace `bench`, 48 at a time, each retried up to five times
    (the API server and the webhook are busy); seconds it took."""
    semaphore = asyncio.Semaphore(48)

    async def one(body: dict[str, Any]) -> None:
        async with semaphore:
            for attempt in range(5):
                try:
                    await client.create(kube.JOBS, body, "bench")
                    return
                except kube.ApiError as exc:
                    if exc.already_exists:
                        return
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1)

    start = time.perf_counter()
    await asyncio.gather(*(one(body) for body in bodies))
    return time.perf_counter() - start


def admitted(raw: dict[str, Any]) -> bool:
    return not (raw.get("spec") or {}).get("suspend")


def holding_pods(raw: dict[str, Any]) -> bool:
    """A Job that is not suspended, or still has pods."""
    status = raw.get("status") or {}
    return admitted(raw) or bool(status.get("active") or status.get("terminating"))


async def count_until(
    jobs: kube.Reflector[bool], total: int, start: float, timeout: float
) -> dict[str, float]:
    """Counts the Jobs whose watched value is true every second from `start` until all
    `total` are (or `timeout`); prints the count and returns the time and rates."""
    marks = []
    while True:
        await asyncio.sleep(1.0)
        done = sum(jobs.store.values())
        elapsed = time.perf_counter() - start
        marks.append((elapsed, done))
        print(f"  {elapsed:6.1f} s: {done:,} admitted", flush=True)
        if done >= total or elapsed > timeout:
            break
    seconds = marks[-1][0]
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(marks) if b[1] > a[1]]
    median = statistics.median(rates) if rates else 0.0
    print(
        f"all {done:,} admitted in {seconds:.1f} s: {done / seconds:.0f} admissions/s "
        f"(median per-second rate {median:.0f}/s)"
    )
    return {
        "admit_seconds": seconds,
        "admitted": float(done),
        "admissions_per_s": done / seconds,
        "median_per_s": median,
    }


def stop_component(state: Path, name: str) -> None:
    """Stops one of the cluster's processes (its process group, as `cluster down` does)."""
    pid_file = state / "pids" / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            time.sleep(0.1)
            os.killpg(pid, 0)
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink()


async def patch_all(
    client: kube.KubeClient, names: list[str], body: dict[str, Any], concurrency: int
) -> None:
    """`body` patched onto every Job in `bench`, `concurrency` at a time."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with semaphore:
            await client.patch(kube.JOBS, name, body, "bench")

    await asyncio.gather(*(one(name) for name in names))


async def writes_settled(port_base: int, timeout: float = 300.0) -> None:
    """Returns once Ebb's daemon has written nothing to Jobs for 3 s (its publications of
    the submitted Jobs' states drained); prints how long that took."""
    start = time.perf_counter()
    last, still = None, 0
    while still < 3 and time.perf_counter() - start < timeout:
        total = sum((await asyncio.to_thread(daemon_counters, port_base))[WRITES].values())
        still = still + 1 if total == last else 0
        last = total
        await asyncio.sleep(1.0)
    print(f"Ebb's writes settled after {time.perf_counter() - start:.0f} s", flush=True)


async def bare(args: argparse.Namespace, state: Path) -> dict[str, float]:
    """The API server's write rate on the same Jobs (see the module's docstring)."""
    for name in ("ebb-autoscaler", "ebb-bridge", "ebb-scheduler"):
        stop_component(state, name)
    access = kube.load_access(str(state / "ebb-scheduler.kubeconfig"), None, {})
    async with kube.KubeClient(access, user_agent="ebb-bench-bare") as client:
        names = [f"job-{i}" for i in range(args.jobs)]
        settling = kube.Reflector(client, kube.JOBS, holding_pods, namespace="bench")
        watching = asyncio.create_task(settling.run())
        await settling.wait_synced(300)
        await patch_all(client, names, {"spec": {"suspend": True}}, args.write_concurrency)
        # The Job controller deletes their pods: on a loaded machine, as slowly as it
        # created them (up to --timeout).
        for _ in range(int(args.timeout)):
            if not sum(settling.store.values()):
                break
            await asyncio.sleep(1.0)
        left = sum(settling.store.values())
        assert left == 0, f"{left} Jobs still unsuspended or holding pods"
        settling.stop()
        watching.cancel()
        print(f"bare: all {args.jobs:,} Jobs suspended again, their pods gone", flush=True)
        jobs = kube.Reflector(client, kube.JOBS, admitted, namespace="bench", name="bench-jobs")
        watching = asyncio.create_task(jobs.run())
        await jobs.wait_synced(300)
        start = time.perf_counter()
        writes = asyncio.create_task(
            patch_all(client, names, {"spec": {"suspend": False}}, args.write_concurrency)
        )
        result = await count_until(jobs, args.jobs, start, args.timeout)
        await writes
        jobs.stop()
        watching.cancel()
    return result


async def run(args: argparse.Namespace, kubeconfig: Path) -> dict[str, float]:
    access = kube.load_access(str(kubeconfig), None, {})
    async with kube.KubeClient(access, user_agent="ebb-bench", max_connections=64) as client:
        aws = json.loads((kubeconfig.parent / "aws.json").read_text())
        ces = await setup(client, args.queues, args.shares, args.nodes, aws)
        submit_s = await submit(client, args.jobs, args.queues, args.shares)
        print(
            f"submitted {args.jobs:,} jobs through the webhook in {submit_s:.1f} s "
            f"({args.jobs / submit_s:.0f}/s)",
            flush=True,
        )
        jobs = kube.Reflector(client, kube.JOBS, admitted, namespace="bench", name="bench-jobs")
        watching = asyncio.create_task(jobs.run())
        await jobs.wait_synced(300)
        done = sum(jobs.store.values())
        assert done == 0, f"{done} jobs admitted while every environment was DISABLED"
        await writes_settled(args.port_base)
        before = await asyncio.to_thread(daemon_counters, args.port_base)
        daemon = int((kubeconfig.parent / "pids" / "ebb-scheduler.pid").read_text())
        cpu_before = cpu_seconds(daemon)
        start = time.perf_counter()
        for ce in ces:
            await client.patch(kube.COMPUTE_ENVIRONMENTS, ce, {"spec": {"state": "ENABLED"}})
        result = await count_until(jobs, args.jobs, start, args.timeout)
        cpu = cpu_seconds(daemon) - cpu_before
        jobs.stop()
        watching.cancel()
        after = await asyncio.to_thread(daemon_counters, args.port_base)
        for name, what in ((WRITES, "writes to Jobs and Pods"), (REQUESTS, "extender requests")):
            print(
                f"Ebb's {what} meanwhile: "
                + ", ".join(
                    f"{k} {n - before[name].get(k, 0):,.0f}"
                    for k, n in sorted(after[name].items())
                    if n > before[name].get(k, 0)
                ),
                flush=True,
            )
        print(
            f"Ebb's scheduler daemon meanwhile: {cpu:.1f} CPU-s "
            f"({cpu / result['admit_seconds']:.0%} of a core)",
            flush=True,
        )
        result["daemon_cpu_s"] = cpu
        return {"jobs": float(args.jobs), **result, "submit_per_s": args.jobs / submit_s}


# The daemon's counters the Ebb phase reports, and the two labels each is split by.
COUNTERS = {
    "ebb_job_writes_total": ("kind", "outcome"),
    "ebb_extender_requests_total": ("verb", "outcome"),
}
WRITES, REQUESTS = COUNTERS


def daemon_counters(port_base: int) -> dict[str, dict[str, float]]:
    """Ebb's scheduler daemon's COUNTERS, each by "label/label" (from its metrics port)."""
    port = port_base + PORT_OFFSETS["extender_port"] + 1
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, dict[str, float]] = {name: {} for name in COUNTERS}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in COUNTERS:
            labels, value = rest.split("} ")
            got = {k: v.strip('"') for k, v in (part.split("=") for part in labels.split(","))}
            first, second = COUNTERS[name]
            out[name][f"{got[first]}/{got[second]}"] = float(value)
    return out


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, all its threads, user + system (proc(5): fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=15_000)
    parser.add_argument("--queues", type=int, default=30)
    parser.add_argument("--shares", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=150)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--port-base", type=int, default=PORT_BASE)
    parser.add_argument("--bare", action="store_true", help="then the bare write rate (above)")
    parser.add_argument(
        "--write-concurrency",
        type=int,
        default=ControllerSettings().write_concurrency,
        help="the bare client's writes at a time (Ebb's daemon's default)",
    )
    args = parser.parse_args(argv)
    with fresh_cluster(args.port_base, "--ebb") as state:
        ebb = asyncio.run(run(args, state / "kubeconfig"))
        if not args.bare:
            return ebb
        print("\nbare: the same Jobs unsuspended by a bare client", flush=True)
        limit = asyncio.run(bare(args, state))
    ratio = ebb["admissions_per_s"] / limit["admissions_per_s"]
    print(
        f"\nEbb {ebb['admissions_per_s']:.0f} admissions/s, bare {limit['admissions_per_s']:.0f}"
        f"/s: Ebb ÷ bare {ratio:.2f} (goal ≥ 0.8)"
    )
    return {**ebb, "bare": limit, "ebb_over_bare": ratio}


if __name__ == "__main__":
    main()
