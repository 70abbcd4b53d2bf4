"""Thousands of nodes and pods through Ebb end to end, against kube-scheduler alone.

    python -m bench.kwok_scale [--nodes 5000] [--pods 20000] [--pods-per-job 10]

Two phases, each on a fresh private cluster from the same binaries (`local_stack/cluster.py
up`), with `--nodes` KWOK nodes (32 vCPUs, 128 GiB, 110 pods each; five compute
environments' labels and the batch taint) and `--pods` pods in Indexed Jobs of
`--pods-per-job` pods (1 vCPU, 256 MiB, running `--run-seconds` under KWOK). KWOK keeps
no Node leases here: nothing reads them, and renewing 5,000 every 10 s would be most of
what the API server does on two cores:

- kube-scheduler alone: no extender, no Ebb; the Jobs are created unsuspended (with
  the batch toleration), the Job controller makes the pods, kube-scheduler places them,
  KWOK runs them to completion;
- Ebb: kube-scheduler with Ebb's extender and Ebb's scheduler daemon; the Jobs carry a
  queue label (10 queues over the 5 environments), Ebb's webhook suspends them, Ebb
  admits them, its extender filters and scores the nodes, KWOK runs the pods.

Each phase starts once KWOK has marked every node Ready and is timed from the first Job
created until every pod has succeeded, or until `--timeout`; pods/s is the pods that
succeeded ÷ that time, and the ratio Ebb ÷ kube-scheduler alone is reported.

What Ebb costs, over the same window: its scheduler daemon's CPU-seconds (utime + stime
from /proc/<pid>/stat), per 1,000 pods bound (the API server's successful pod bindings)
and per 1,000 Jobs admitted (unsuspended); the API server's requests (the deltas of its
`apiserver_request_total`, by verb and resource: every client), and the daemon's own
among them (its `ebb_api_requests_total`; the local API server runs without priority and
fairness, so it cannot tell its clients apart). `--profile` samples the daemon with
py-spy over the window and writes a speedscope file (https://speedscope.app).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from bench.admission_e2e import PORT_BASE, cpu_seconds, fresh_cluster
from bench.scheduler_memory import start_daemon
from ebb import keys, kube
from local_stack import builders
from local_stack.harness import create_node

CES, QUEUES = 5, 10


async def nodes(client: kube.KubeClient, count: int) -> None:
    semaphore = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with semaphore:
            await create_node(
                client,
                f"node-{i}",
                cpu="32",
                memory="128Gi",
                labels={
                    keys.COMPUTE_ENVIRONMENT_LABEL: f"ce-{i % CES}",
                    keys.CAPACITY_TYPE_LABEL: keys.CAPACITY_SPOT,
                    keys.INSTANCE_TYPE_LABEL: "c6i.8xlarge",
                },
                taints=[{"key": keys.BATCH_NODE_TAINT, "effect": "NoSchedule"}],
            )

    await asyncio.gather(*(one(i) for i in range(count)))


async def queues(client: kube.KubeClient) -> None:
    for i in range(CES):
        await client.create(
            kube.COMPUTE_ENVIRONMENTS, builders.compute_environment(f"ce-{i}", max_vcpus=1_000_000)
        )
    for q in range(QUEUES):
        environments = (f"ce-{q % CES}", f"ce-{(q + 1) % CES}")
        await client.create(
            kube.JOB_QUEUES, builders.job_queue(f"q{q}", *environments, priority=q % 3)
        )


def job(i: int, args: argparse.Namespace, ebb: bool) -> dict[str, Any]:
    return builders.job(
        f"job-{i}",
        f"q{i % QUEUES}" if ebb else None,
        run_seconds=args.run_seconds,
        completions=args.pods_per_job,
        parallelism=args.pods_per_job,
        indexed=True,
        tolerations=[dict(keys.BATCH_TOLERATION)],
    )


def node_ready(raw: dict[str, Any]) -> bool:
    conditions = (raw.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class JobProgress(NamedTuple):
    succeeded: int
    admitted: bool


def progress(raw: dict[str, Any]) -> JobProgress:
    return JobProgress(
        int((raw.get("status") or {}).get("succeeded") or 0),
        not (raw.get("spec") or {}).get("suspend"),
    )


_SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
BOUND = "pods bound"
SCRAPED = "(scraped)"  # present when that source's counters were read


def request_counts(metrics: str, name: str) -> dict[str, float]:
    """A request counter's samples summed by `VERB resource[/subresource]`; BOUND: the
    pod bindings that succeeded."""
    counts: defaultdict[str, float] = defaultdict(float)
    for line in metrics.splitlines():
        if not line.startswith(name + "{") or (match := _SAMPLE.match(line)) is None:
            continue
        labels, value = dict(_LABEL.findall(match[2])), float(match[3])
        resource = labels.get("resource") or "(none)"
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[f"{labels['verb']} {resource}"] += value
        if resource == "pods/binding" and labels.get("code") == "201":
            counts[BOUND] += value
    return counts


def daemon_metrics(ops_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/metrics", timeout=120) as r:
        return str(r.read().decode())


async def api_requests(client: kube.KubeClient, ops_port: int | None) -> dict[str, float]:
    """Every client's requests (the API server's counter) and, under `ebb `, the daemon's
    (with `ebb pods bound`: every pod of Ebb's phase is bound by Ebb). Either is left out
    when it does not answer within two minutes (said, not fatal: the other figures stand)."""
    counts: dict[str, float] = {}
    try:
        text = (await client.request_bytes("GET", "/metrics", timeout=120)).decode()
        counts.update(request_counts(text, "apiserver_request_total"))
        counts[SCRAPED] = 1.0
    except (TimeoutError, OSError, kube.ApiError, aiohttp.ClientError) as exc:
        print(f"  cannot read the API server's request counters: {exc!r}", flush=True)
    if ops_port is not None:
        try:
            text = await asyncio.to_thread(daemon_metrics, ops_port)
        except OSError as exc:
            print(f"  cannot read the daemon's request counters: {exc!r}", flush=True)
        else:
            ebb = request_counts(text, "ebb_api_requests_total")
            counts.update((f"ebb {key}", count) for key, count in ebb.items())
            counts[f"ebb {SCRAPED}"] = 1.0
    return counts


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the daemon without pausing it (--nonblocking), until interrupted."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--nonblocking",
            "--rate",
            "50",
            "--format",
            "speedscope",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def flow(
    state: Path, args: argparse.Namespace, ebb: bool, daemon: int | None
) -> dict[str, Any]:
    access = kube.load_access(str(state / "kubeconfig"), None, {})
    async with kube.KubeClient(access, user_agent="ebb-bench", max_connections=64) as client:
        started = time.perf_counter()
        await nodes(client, args.nodes)
        print(f"  {args.nodes:,} nodes in {time.perf_counter() - started:.0f} s", flush=True)
        if ebb:
            await queues(client)
        await client.create(kube.NAMESPACES, {"metadata": {"name": "bench"}})
        jobs = kube.Reflector(client, kube.JOBS, progress, namespace="bench", name="jobs")
        ready = kube.Reflector(client, kube.NODES, node_ready, name="nodes")
        watching = [asyncio.create_task(r.run()) for r in (jobs, ready)]
        await jobs.wait_synced(60)
        await ready.wait_synced(60)
        while True:  # KWOK marks them Ready, ~30/s here
            if sum(ready.store.values()) >= args.nodes:
                break
            await asyncio.sleep(2)
        print(f"  all nodes Ready after {time.perf_counter() - started:.0f} s", flush=True)
        ready.stop()
        semaphore = asyncio.Semaphore(48)

        async def one(i: int) -> None:
            async with semaphore:
                await client.create(kube.JOBS, job(i, args, ebb), "bench")

        ops_port = args.port_base + 901 if ebb else None
        requests_before = await api_requests(client, ops_port)
        cpu_before = cpu_seconds(daemon) if daemon is not None else 0.0
        profiler = None
        if daemon is not None and args.profile:
            profiler = start_profiler(daemon, args.profile)
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.pods // args.pods_per_job)))
        print(f"  submitted in {time.perf_counter() - start:.0f} s", flush=True)
        while True:
            done = sum(p.succeeded for p in jobs.store.values())
            elapsed = time.perf_counter() - start
            if done >= args.pods or elapsed > args.timeout:
                break
            print(f"  {elapsed:6.0f} s: {done:,} pods succeeded", flush=True)
            await asyncio.sleep(5)
        cpu = cpu_seconds(daemon) - cpu_before if daemon is not None else 0.0
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=120)
            print(f"  py-spy profile of the daemon: {args.profile}", flush=True)
        requests_after = await api_requests(client, ops_port)
        admitted = sum(p.admitted for p in jobs.store.values())
        jobs.stop()
        for task in watching:
            task.cancel()
    # Deltas of the sources read both at the start and at the end of the window.
    read = {
        source
        for source in (SCRAPED, f"ebb {SCRAPED}")
        if source in requests_before and source in requests_after
    }
    requests = {
        key: count - requests_before.get(key, 0.0)
        for key, count in requests_after.items()
        if (f"ebb {SCRAPED}" if key.startswith("ebb ") else SCRAPED) in read
        and key not in (SCRAPED, f"ebb {SCRAPED}")
    }
    # The API server's successful bindings; Ebb's own when the API server did not answer.
    bound = requests.pop(BOUND, None)
    bound = requests.pop(f"ebb {BOUND}", 0.0) if bound is None else bound
    return {
        "seconds": elapsed,
        "succeeded": float(done),
        "pods_per_s": done / elapsed,
        "bound": bound,
        "admitted": float(admitted),
        "daemon_cpu_s": cpu,
        "cpu_s_per_1000_pods_bound": 1000 * cpu / bound if bound else 0.0,
        "cpu_s_per_1000_jobs_admitted": 1000 * cpu / admitted if admitted else 0.0,
        "api_requests": {k: v for k, v in requests.items() if v > 0},
    }


# kube-controller-manager's log lines for the Job controller's status updates refused by
# a conflicting write (the first counts finished pods into uncountedTerminatedPods, the
# others move them into the counts), and for syncs it deferred while its caches were behind
# its own writes (Kubernetes 1.36's StaleControllerConsistencyJob).
JOB_CONTROLLER_LINES = {
    "conflicts adding finished pods": "adding uncounted pods to status: Operation cannot be",
    "conflicts, all": 'on jobs.batch \\"',
    "syncs deferred behind its own writes": "is not as new as written version",
}


def job_controller_counts(state: Path) -> dict[str, float]:
    log = (state / "logs" / "kube-controller-manager.log").read_text(errors="replace")
    conflicts = [line for line in log.splitlines() if "Operation cannot be fulfilled" in line]
    return {
        name: float(sum(marker in line for line in conflicts))
        if name.startswith("conflicts")
        else float(log.count(marker))
        for name, marker in JOB_CONTROLLER_LINES.items()
    }


def phase(args: argparse.Namespace, ebb: bool) -> dict[str, Any]:
    extender = f"--extender={'ebb' if ebb else 'none'}"
    with fresh_cluster(args.port_base, extender, "--node-lease-seconds=0") as state:
        daemon = start_daemon(state, args.port_base) if ebb else None
        try:
            pid = daemon.pid if daemon is not None else None
            return {**asyncio.run(flow(state, args, ebb, pid)), **job_controller_counts(state)}
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(timeout=30)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=20_000)
    parser.add_argument("--pods-per-job", type=int, default=10)
    parser.add_argument("--run-seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--port-base", type=int, default=PORT_BASE)
    parser.add_argument(
        "--phase",
        choices=("both", "kube-scheduler alone", "ebb"),
        default="both",
        help="run one phase only (no ratio then): e.g. the Job controller's counts under Ebb",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="sample Ebb's scheduler daemon with py-spy over Ebb's phase into FILE (speedscope)",
    )
    args = parser.parse_args(argv)
    if args.profile is not None:
        args.profile = args.profile.resolve()
    results = {}
    for name, ebb in (("kube-scheduler alone", False), ("ebb", True)):
        if args.phase not in ("both", name):
            continue
        print(f"{name}: {args.pods:,} pods on {args.nodes:,} KWOK nodes", flush=True)
        results[name] = phase(args, ebb)
        r = results[name]
        print(
            f"{name}: {r['succeeded']:,.0f} pods in {r['seconds']:.0f} s: {r['pods_per_s']:.2f}/s"
        )
        print(
            f"{name}: the Job controller's "
            + "; ".join(f"{key} {r[key]:,.0f}" for key in JOB_CONTROLLER_LINES)
        )
        print(f"{name}: {r['bound']:,.0f} pods bound, {r['admitted']:,.0f} Jobs admitted")
        if ebb:
            print(
                f"{name}: Ebb's scheduler daemon {r['daemon_cpu_s']:.1f} CPU-s "
                f"({100 * r['daemon_cpu_s'] / r['seconds']:.0f} % of a core): "
                f"{r['cpu_s_per_1000_pods_bound']:.1f} CPU-s per 1,000 pods bound, "
                f"{r['cpu_s_per_1000_jobs_admitted']:.1f} per 1,000 Jobs admitted"
            )
    report_requests(results)
    if len(results) < 2:
        return results
    ratio = results["ebb"]["pods_per_s"] / results["kube-scheduler alone"]["pods_per_s"]
    print(f"Ebb ÷ kube-scheduler alone (pods completed per second): {ratio:.2f}")
    return {**results, "ebb_over_kube_scheduler": ratio}


def report_requests(results: dict[str, dict[str, Any]]) -> None:
    """The API server's requests in each phase's window, side by side, the 25 busiest by
    verb and resource; then Ebb's daemon's own."""
    names = list(results)
    totals: defaultdict[str, float] = defaultdict(float)
    for r in results.values():
        for key, count in r["api_requests"].items():
            totals[key] += count
    busiest = sorted(totals, key=lambda k: -totals[k])
    every = [k for k in busiest if not k.startswith("ebb ")][:25]
    ebb = [k for k in busiest if k.startswith("ebb ")]
    print("API server requests in the window | " + " | ".join(names))
    for key in every + ebb:
        cells = " | ".join(f"{results[n]['api_requests'].get(key, 0):,.0f}" for n in names)
        print(f"  {key} | {cells}")


if __name__ == "__main__":
    main()
