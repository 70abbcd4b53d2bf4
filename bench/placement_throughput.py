"""Scheduling throughput of the real kube-scheduler with Ebb's extender against without it,
on one KWOK cluster, in one run. Run: python -m bench.placement_throughput

Brings up the local control plane (local_stack/cluster.py, its own state directory and ports),
creates --nodes KWOK nodes (the synthetic cluster: four compute environments and system
nodes) and starts Ebb's scheduler daemon. Then, per phase, creates --pods pending pods
(batch pods of queue `high` when the phase has Ebb's stanza, the same pods without the
queue label and batch-pod resource when not) for a scheduler profile nobody serves yet,
starts a kube-scheduler for that profile and times the bindings:

- with: Ebb's extender stanza exactly as local_stack/cluster.py configures it (filter and
  bind over HTTPS for pods with the batch-pod resource, nodeCacheCapable);
- without: the same KubeSchedulerConfiguration with no extender;
- bind / no-bind (optional): Ebb's stanza with / without `bindVerb: bind` (whether Ebb
  or kube-scheduler POSTs the bindings);
- two-calls (optional): Ebb's stanza with `prioritizeVerb: prioritize` (weight 5) as well,
  as it was before filter kept only the best nodes: two round trips per pod.

--phases runs them in the order given; a phase may repeat (ratios are against the mean
of the "without" phases).

Both schedulers have the same client QPS; Ebb's daemon runs in both phases (it is part
of the system either way). Rate = bindings per second between the first and the last
binding; the median is over consecutive windows of --window bindings. From the daemon's
/metrics: its mean server-side time per call of each verb during the phase. The phase's pods
are deleted (and gone) before the next phase starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import time
import urllib.request
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

import yaml

from bench import placement_cluster as synthetic
from ebb import kube
from ebb.kube import Event
from ebb.model import pod_from_raw
from local_stack import ROOT
from local_stack.cluster import binaries_path
from local_stack.extenders import kube_scheduler
from local_stack.harness import LocalCluster, cluster_command, scheduler_process

LABELS = {
    "without": "without extender",
    "with": "with Ebb's extender as local_stack/cluster.py configures it",
    "bind": "with Ebb's extender, bindVerb: bind",
    "no-bind": "with Ebb's extender, no bindVerb",
    "two-calls": "with Ebb's extender and prioritizeVerb (two calls per pod)",
}


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def gather_bounded(calls: Iterable[Awaitable[Any]], limit: int = 32) -> None:
    """Await the calls, at most `limit` at a time (a coroutine does nothing until awaited)."""
    semaphore = asyncio.Semaphore(limit)

    async def run(call: Awaitable[Any]) -> None:
        async with semaphore:
            await call

    await asyncio.gather(*(run(call) for call in calls))


def _pod(name: str, scheduler: str, batch: bool) -> dict[str, Any]:
    """A pod of queue `high` (with the batch-pod resource), or with `batch` false one
    without either: a kube-scheduler without Ebb's stanza, which makes it ignore the
    resource, would find no node for a batch pod."""
    queue = "high" if batch else None
    raw = synthetic.pod_object(name, queue, cpu="1", memory="2Gi", scheduler=scheduler)
    meta = raw["metadata"]
    for key in ("uid", "ownerReferences", "namespace"):  # the API server's to set
        meta.pop(key)
    # No Job owns these pods: without its labels Ebb's bind does not look the Job up for
    # the attempt number (a 404 that fails every bind).
    for label in ("batch.kubernetes.io/job-name", "job-name"):
        meta["labels"].pop(label)
    raw.pop("status")
    return raw


async def _phase(
    client: kube.KubeClient,
    cluster: LocalCluster,
    name: str,
    extenders: list[dict[str, Any]],
    *,
    args: argparse.Namespace,
    qps: int,
) -> dict[str, float]:
    pods, window, timeout = args.pods, args.window, args.timeout
    namespace = f"bench-{name}"  # also the scheduler profile: unique per phase
    await client.create(kube.NAMESPACES, {"metadata": {"name": namespace}})
    say(f"{name}: creating {pods:,} pending pods")
    await gather_bounded(
        client.create(kube.PODS, _pod(f"job-{i}-0", namespace, bool(extenders)), namespace)
        for i in range(pods)
    )
    served_before = _extender_seconds(cluster)
    bound_at: list[float] = []
    all_bound = asyncio.Event()
    reflector = kube.Reflector(client, kube.PODS, pod_from_raw, namespace=namespace, name=namespace)

    def on_pod(event: Event[Any]) -> None:
        if (
            event.new is not None
            and event.new.node_name
            and not (event.old and event.old.node_name)
        ):
            bound_at.append(time.monotonic())
            if len(bound_at) >= pods:
                all_bound.set()

    reflector.subscribe(on_pod)
    watch = asyncio.create_task(reflector.run())
    await reflector.wait_synced(120)
    say(f"{name}: starting kube-scheduler (profile {namespace}, {len(extenders)} extender(s))")
    try:
        port = cluster.port_base + 795
        async with kube_scheduler(cluster, namespace, extenders, port, qps=qps):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_bound.wait(), timeout)
    finally:
        reflector.stop()
        watch.cancel()
    if len(bound_at) < pods:
        raise SystemExit(f"{name}: only {len(bound_at):,} of {pods:,} pods bound in {timeout:g} s")
    times = sorted(bound_at)
    windows = [
        (window - 1) / (times[i + window - 1] - times[i])
        for i in range(0, len(times) - window + 1, window)
    ]
    served = _extender_seconds(cluster)
    result = {
        "overall": (len(times) - 1) / (times[-1] - times[0]),
        "median": statistics.median(windows),
        "seconds": times[-1] - times[0],
        **{
            f"{verb} ms": 1000
            * (total - served_before[verb][0])
            / max(1, count - served_before[verb][1])
            for verb, (total, count) in served.items()
        },
    }
    say(f"{name}: {result['overall']:.1f} pods/s overall, median window {result['median']:.1f}")
    # One by one with no grace period: a namespace's own deletion of 10,000 running KWOK
    # pods takes many minutes (its DeleteCollection times out and is retried).
    await gather_bounded(
        client.delete(kube.PODS, f"job-{i}-0", namespace, grace_period_seconds=0)
        for i in range(pods)
    )
    # The namespace stays: deleting it would delete its ~20,000 events during the next
    # phase (and its own deletion of them times out and retries for minutes).
    await _wait_no_pods(client, namespace, timeout)
    return result


def _extender_seconds(cluster: LocalCluster) -> dict[str, tuple[float, float]]:
    """(seconds, requests) Ebb's daemon has served per verb so far, from its /metrics."""
    url = f"http://127.0.0.1:{cluster.extender_port + 1}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    served = {}
    for verb in ("filter", "prioritize", "bind"):
        values = [
            float(line.rsplit(" ", 1)[1])
            for kind in ("sum", "count")
            for line in text.splitlines()
            if line.startswith(f'ebb_extender_request_duration_seconds_{kind}{{verb="{verb}"}}')
        ]
        served[verb] = (values[0], values[1]) if len(values) == 2 else (0.0, 0.0)
    return served


async def _wait_no_pods(client: kube.KubeClient, namespace: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    path, one = kube.PODS.path(namespace), {"limit": "1"}
    while (await client.request("GET", path, params=one)).get("items"):
        if time.monotonic() > deadline:
            raise SystemExit(f"pods of {namespace} still there after {timeout:g} s")
        await asyncio.sleep(2)


async def _populate(client: kube.KubeClient, nodes: int) -> None:
    for raw in synthetic.environment_objects():
        await client.create(kube.COMPUTE_ENVIRONMENTS, raw)
    for raw in synthetic.queue_objects():
        await client.create(kube.JOB_QUEUES, raw)
    say(f"creating {nodes:,} KWOK nodes")
    await gather_bounded(
        client.create(kube.NODES, raw) for raw in synthetic.node_objects(nodes, kwok=True)
    )
    deadline = time.monotonic() + 600
    while True:
        listed = await client.list(kube.NODES, page_size=1000)
        ready = sum(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n["status"].get("conditions") or ()
            )
            for n in listed.items
        )
        if ready >= nodes:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {ready} of {nodes} nodes Ready")
        await asyncio.sleep(2)


async def run(
    args: argparse.Namespace, cluster: LocalCluster
) -> list[tuple[str, dict[str, float]]]:
    access = kube.load_access(str(cluster.kubeconfig), None, {})
    # Ebb's extender stanza and client QPS, exactly as the cluster's own kube-scheduler has them.
    config = yaml.safe_load((cluster.state_dir / "kube-scheduler-config.yaml").read_text())
    (ebb,) = config["extenders"]
    no_bind = {k: v for k, v in ebb.items() if k != "bindVerb"}
    stanzas = {
        "without": [],
        "with": [ebb],
        "bind": [{**ebb, "bindVerb": "bind"}],
        "no-bind": [no_bind],
        "two-calls": [{**ebb, "prioritizeVerb": "prioritize", "weight": 5}],
    }
    qps = int(config["clientConnection"]["qps"])
    async with kube.KubeClient(access, user_agent="ebb-bench", max_connections=32) as client:
        await _populate(client, args.nodes)
        daemon = scheduler_process(cluster)
        daemon.ready_timeout = 300
        daemon.start()
        try:
            return [
                (
                    phase,
                    await _phase(
                        client, cluster, f"{phase}-{i}", stanzas[phase], args=args, qps=qps
                    ),
                )
                for i, phase in enumerate(args.phases)
            ]
        finally:
            daemon.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--window", type=int, default=1000, help="bindings per rate window")
    parser.add_argument(
        "--phases",
        nargs="+",
        default=["without", "with"],
        choices=list(LABELS),
        help="in this order",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per phase")
    parser.add_argument(
        "--port-base", type=int, default=int(os.environ.get("EBB_BENCH_PORT_BASE", "22500"))
    )
    parser.add_argument("--state-dir", default=str(ROOT / ".ebb-bench"))
    args = parser.parse_args(argv)
    state, path = Path(args.state_dir).resolve(), binaries_path()
    cluster = LocalCluster(state, args.port_base, state / "kubeconfig", path)
    say(f"cluster up in {state} (ports {args.port_base}+)")
    cluster_command("down", state, args.port_base, f"--bin-path={path}")
    shutil.rmtree(state, ignore_errors=True)  # a fresh cluster every run
    cluster_command("up", state, args.port_base, f"--bin-path={path}")
    started = time.monotonic()
    try:
        results = asyncio.run(run(args, cluster))
    finally:
        cluster_command("down", state, args.port_base, f"--bin-path={path}")
    print(
        f"{args.nodes:,} KWOK nodes, {args.pods:,} pods per phase, phases in order "
        f"{' then '.join(args.phases)}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at the end; {time.monotonic() - started:.0f} s in all"
    )
    print(
        "| kube-scheduler | pods/s (median of windows) | pods/s (first to last) | seconds "
        "| Ebb ms per filter / prioritize / bind (mean, server side) |"
    )
    print("|---|---:|---:|---:|---:|")
    for phase, r in results:
        served = " / ".join(f"{r[f'{verb} ms']:.2f}" for verb in ("filter", "prioritize", "bind"))
        print(
            f"| {LABELS[phase]} | {r['median']:.1f} | {r['overall']:.1f} | {r['seconds']:.1f} "
            f"| {served if phase != 'without' else '-'} |"
        )
    base = [r for phase, r in results if phase == "without"]
    if base:
        median = statistics.mean(r["median"] for r in base)
        overall = statistics.mean(r["overall"] for r in base)
        for i, (phase, r) in enumerate(results):
            if phase == "without":
                continue
            print(
                f"| ratio {phase} / without (mean of all) | {r['median'] / median:.2f} | "
                f"{r['overall'] / overall:.2f} | | |"
            )
            near = _nearest_without(results, i)
            print(
                f"| ratio {phase} / neighbouring without | "
                f"{r['median'] / statistics.mean(n['median'] for n in near):.2f} | "
                f"{r['overall'] / statistics.mean(n['overall'] for n in near):.2f} | | |"
            )
    return 0


def _nearest_without(results: list[tuple[str, dict[str, float]]], i: int) -> list[dict[str, float]]:
    """The "without" phases nearest to phase i in the run (both, if as near): the machine's
    load moves between phases, so neighbours are the fairest baseline."""
    at = [j for j, (phase, _) in enumerate(results) if phase == "without"]
    distance = min(abs(j - i) for j in at)
    return [results[j][1] for j in at if abs(j - i) == distance]


if __name__ == "__main__":
    sys.exit(main())
