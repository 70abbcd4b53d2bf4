"""Latency and throughput of the extender's filter at 5,000 nodes (nodeCacheCapable: true).
Run: python -m bench.placement_extender

A server process pinned to one CPU serves Ebb's extender exactly as the daemon does (the
HTTP shell, protocol, placement cache and decisions, over HTTPS) with a cache of
--nodes nodes and --pods bound pods. This process, pinned to the other CPU, sends what
kube-scheduler sends: filter with the NodeNames of a window of candidates that moves on
every call (as the scheduler's next-start-node index does). (Ebb's stanza has no
prioritize: filter keeps only the nodes it prefers; docs/decisions/0011.)

- latency: one call at a time (kube-scheduler's scheduling cycle is serial); server
  time is the handler's own (body read, decode, decide, encode), from the Server-Timing
  header; round trip is what the client saw; kept is how many nodes filter kept.
- throughput: --concurrency calls in flight for --seconds; requests per second of wall
  time, and per second of the server's CPU time (requests per CPU-second: what one core
  sustains however busy the machine is).

--names is the number of candidates per call: kube-scheduler sends about 10% of a
5,000-node cluster (500; its adaptive percentageOfNodesToScore), all 5,000 only when
percentageOfNodesToScore is 100.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from bench import placement_cluster as synthetic
from ebb import logs, tls
from ebb.kube import Event, EventType
from ebb.model import (
    PodInfo,
    compute_environment_from_raw,
    job_queue_from_raw,
    node_from_raw,
    pod_from_raw,
)
from extender.placement.cache import PlacementCache
from extender.placement.protocol import BindingArgs
from extender.placement.routes import add_routes
from extender.placement.service import Binding, EbbExtender

REQUESTS = [("1", "2Gi"), ("2", "4Gi"), ("4", "8Gi"), ("500m", "1Gi")]


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def _extender(node_count: int, pod_count: int, seed: int) -> EbbExtender:
    rng = random.Random(seed)
    nodes = synthetic.node_objects(node_count)
    cache = PlacementCache()
    for raw in nodes:
        info = node_from_raw(raw)
        cache.on_node(Event(EventType.ADDED, info.name, None, info))
    pods: dict[str, PodInfo] = {}
    for i in range(pod_count):
        cpu, memory = rng.choice(REQUESTS)
        node = nodes[rng.randrange(node_count)]["metadata"]["name"]
        pod = pod_from_raw(
            synthetic.pod_object(f"bound-{i}-x", "high", cpu=cpu, memory=memory, node=node)
        )
        pods[pod.key] = pod
        cache.on_pod(Event(EventType.ADDED, pod.key, None, pod))

    async def no_binding(args: BindingArgs, annotations: Mapping[str, str]) -> None:
        raise RuntimeError("the benchmark does not bind")

    async def no_failures(namespace: str, name: str) -> int:
        raise RuntimeError("the benchmark does not bind")

    return EbbExtender(
        cache,
        pods,
        {q["metadata"]["name"]: job_queue_from_raw(q) for q in synthetic.queue_objects()},
        {
            e["metadata"]["name"]: compute_environment_from_raw(e)
            for e in synthetic.environment_objects()
        },
        binding=Binding(no_binding, no_failures, concurrency=1, wait=1.0, assumed_pod_ttl=30.0),
        ready=lambda: True,
    )


def serve(args: argparse.Namespace) -> None:
    """The server process: build the cache, serve until SIGTERM."""
    _pin(args.server_cpu)
    logs.configure("info")
    extender = _extender(args.nodes, args.pods, args.seed)
    gc.freeze()  # as the daemon does once its caches have synced
    app = web.Application()
    add_routes(app, lambda: extender, max_body_bytes=32 * 2**20, read_timeout=10.0)
    context = tls.server_context(Path(args.tls_dir) / "tls.crt", Path(args.tls_dir) / "tls.key")

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(
            runner, "127.0.0.1", args.port, ssl_context=context, reuse_address=True
        ).start()
        print("READY", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    def __init__(
        self, session: aiohttp.ClientSession, url: str, names: list[str], window: int, seed: int
    ) -> None:
        self.session, self.url, self.names, self.window = session, url, names, window
        rng = random.Random(seed)
        self.pods = []
        for i in range(64):
            cpu, memory = rng.choice(REQUESTS)
            self.pods.append(synthetic.pod_object(f"new-{i}-x", "high", cpu=cpu, memory=memory))
        self.start = 0
        self.calls = 0

    def filter_body(self) -> bytes:
        self.calls += 1
        names = [self.names[(self.start + i) % len(self.names)] for i in range(self.window)]
        self.start = (self.start + self.window) % len(self.names)
        pod = self.pods[self.calls % len(self.pods)]
        return orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})

    async def post(self, body: bytes) -> tuple[float, float, bytes]:
        """A filter call: (server ms, round-trip ms, reply)"""
        started = time.perf_counter()
        async with self.session.post(f"{self.url}/filter", data=body) as resp:
            reply = await resp.read()
            assert resp.status == 200, reply[:200]
            timing = resp.headers["Server-Timing"]
        rtt = (time.perf_counter() - started) * 1000
        return float(timing.split("dur=")[1]), rtt, reply


async def _latency(client: Client, count: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("server", "rtt", "kept")}
    for i in range(count + 200):
        server, rtt, reply = await client.post(client.filter_body())
        if i >= 200:  # warm-up
            out["server"].append(server)
            out["rtt"].append(rtt)
            out["kept"].append(len(orjson.loads(reply)["NodeNames"]))
    return out


async def _throughput(
    client: Client, seconds: float, concurrency: int, server_pid: int
) -> tuple[float, float]:
    bodies = [client.filter_body() for _ in range(256)]
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            await client.post(bodies[i % len(bodies)])
            done += 1
            i += concurrency

    cpu_before, wall_before = _cpu_seconds(server_pid), time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    cpu, wall = _cpu_seconds(server_pid) - cpu_before, time.perf_counter() - wall_before
    return done / wall, done / cpu if cpu else float("inf")


async def measure(args: argparse.Namespace, server_pid: int, ca: Path) -> list[tuple[str, ...]]:
    names = [n["metadata"]["name"] for n in synthetic.node_objects(args.nodes)]
    # kube-scheduler walks its nodes zone by zone, not grouped by compute environment.
    random.Random(args.seed).shuffle(names)
    context = ssl.create_default_context(cafile=str(ca))
    rows: list[tuple[str, ...]] = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context, limit=args.concurrency)
    ) as session:
        url = f"https://localhost:{args.port}/scheduler"
        for window in args.names:
            client = Client(session, url, names, window, args.seed)
            lat = await _latency(client, args.requests)
            wall_rps, cpu_rps = await _throughput(
                client, args.seconds, args.concurrency, server_pid
            )
            server, rtt = lat["server"], lat["rtt"]
            rows.append(
                (
                    f"{window:,}",
                    f"{statistics.median(lat['kept']):,.0f}",
                    f"{statistics.median(server):.3f}",
                    f"{_percentile(server, 0.99):.3f}",
                    f"{statistics.median(rtt):.3f}",
                    f"{_percentile(rtt, 0.99):.3f}",
                    f"{wall_rps:,.0f}",
                    f"{cpu_rps:,.0f}",
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=10000, help="pods bound across the nodes")
    parser.add_argument(
        "--names", type=int, nargs="+", default=[500, 5000], help="candidates per call"
    )
    parser.add_argument("--requests", type=int, default=2000, help="calls for latency")
    parser.add_argument("--seconds", type=float, default=10.0, help="for throughput")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=23450)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
        return 0
    _pin(1 - args.server_cpu)
    with tempfile.TemporaryDirectory() as tls_dir:
        tls.load_or_create_serving(Path(tls_dir), "bench", ("localhost",), ("127.0.0.1",))
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.placement_extender",
                "--serve",
                f"--tls-dir={tls_dir}",
                *_forward(args),
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != b"READY":
                raise SystemExit("benchmark server did not start")
            rows = asyncio.run(measure(args, server.pid, Path(tls_dir) / "ca.crt"))
        finally:
            server.terminate()
            server.wait(30)
    _report(args, rows)
    return 0


def _forward(args: argparse.Namespace) -> list[str]:
    return [
        f"--nodes={args.nodes}",
        f"--pods={args.pods}",
        f"--port={args.port}",
        f"--seed={args.seed}",
        f"--server-cpu={args.server_cpu}",
    ]


def _report(args: argparse.Namespace, rows: list[tuple[str, ...]]) -> None:
    load = os.getloadavg()[0]
    print(
        f"{args.nodes:,} nodes, {args.pods:,} bound pods, nodeCacheCapable, HTTPS; "
        f"server on 1 CPU; {args.requests:,} filter calls (latency), {args.seconds:g} s x "
        f"{args.concurrency} in flight (throughput); load average {load:.2f} on "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        "candidates",
        "kept (median)",
        "server p50 ms",
        "server p99 ms",
        "round trip p50 ms",
        "round trip p99 ms",
        "req/s (wall)",
        "req/s per CPU-second",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
