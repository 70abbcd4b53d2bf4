"""Resident memory of the scheduler daemon holding queued Jobs.

    python -m bench.scheduler_memory [--jobs 100000]

Brings up a private local cluster (`local_stack/cluster.py up`, its own state directory and
ports) and starts Ebb's scheduler daemon alone, as a process of its own. Creates one
compute environment that is DISABLED and one job queue over it, then submits `--jobs`
Jobs through the webhook: all stay queued (RUNNABLE), none can start. Waits until the
daemon's `ebb_jobs` gauge counts every one of them as RUNNABLE, lets a minute of passes
go by, and reads the daemon's resident memory (VmRSS) and its peak (VmHWM) from
/proc/<pid>/status. Goal: ≤ 1 GiB resident with 100,000 queued Jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.admission_e2e import PORT_BASE, fresh_cluster, submit
from ebb import kube
from local_stack import ROOT, builders

GOAL_MIB = 1024
_RUNNABLE = re.compile(r'^ebb_jobs\{queue="bench-q0",state="RUNNABLE"\} ([0-9.e+]+)$', re.M)


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def runnable(ops_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    match = _RUNNABLE.search(text)
    return int(float(match.group(1))) if match else 0


def start_daemon(state: Path, port_base: int) -> subprocess.Popen[bytes]:
    ops = port_base + 901
    log = (state / "logs" / "ebb-scheduler.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "extender",
            f"--kubeconfig={state / 'ebb-scheduler.kubeconfig'}",
            "--listen-host=127.0.0.1",
            f"--port={port_base + 900}",
            f"--ops-port={ops}",
            f"--tls-dir={state / 'ebb-tls'}",
            f"--webhook-url=https://127.0.0.1:{port_base + 900}",
            "--log-level=warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ops}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the scheduler daemon did not become ready; see {log.name}")


async def fill(state: Path, jobs: int) -> float:
    access = kube.load_access(str(state / "kubeconfig"), None, {})
    async with kube.KubeClient(access, user_agent="ebb-bench", max_connections=64) as client:
        await client.create(
            kube.COMPUTE_ENVIRONMENTS,
            builders.compute_environment("bench-ce", max_vcpus=100_000, state="DISABLED"),
        )
        await client.create(kube.JOB_QUEUES, builders.job_queue("bench-q0", "bench-ce"))
        await client.create(kube.NAMESPACES, {"metadata": {"name": "bench"}})
        return await submit(client, jobs, queues=1, shares=1)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--settle", type=float, default=60.0, help="seconds of passes to wait")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--port-base", type=int, default=PORT_BASE)
    args = parser.parse_args(argv)
    with fresh_cluster(args.port_base) as state:
        daemon: subprocess.Popen[bytes] | None = None
        try:
            daemon = start_daemon(state, args.port_base)
            empty = memory_mib(daemon.pid)
            print(f"daemon started: {empty['VmRSS']:.0f} MiB resident", flush=True)
            submit_s = asyncio.run(fill(state, args.jobs))
            print(f"submitted {args.jobs:,} Jobs in {submit_s:.0f} s", flush=True)
            start = time.monotonic()
            while (seen := runnable(args.port_base + 901)) < args.jobs:
                if time.monotonic() - start > args.timeout:
                    raise SystemExit(f"only {seen:,} Jobs RUNNABLE after {args.timeout:.0f} s")
                time.sleep(5)
            print(f"all {args.jobs:,} RUNNABLE {time.monotonic() - start:.0f} s after submission")
            time.sleep(args.settle)
            full = memory_mib(daemon.pid)
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(timeout=30)
    per_job = (full["VmRSS"] - empty["VmRSS"]) * 1024 * 1024 / args.jobs
    print(
        f"{args.jobs:,} queued Jobs: {full['VmRSS']:.0f} MiB resident (peak {full['VmHWM']:.0f} "
        f"MiB; {per_job:,.0f} bytes per Job) — goal ≤ {GOAL_MIB} MiB: "
        f"{'met' if full['VmHWM'] <= GOAL_MIB else 'NOT met'}"
    )
    return {"rss_mib": full["VmRSS"], "peak_mib": full["VmHWM"], "bytes_per_job": per_job}


if __name__ == "__main__":
    main()
