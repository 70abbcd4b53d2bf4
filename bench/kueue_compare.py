"""Ebb's admission against Kueue's, on the same local control plane, in one run.

    python -m bench.kueue_compare [--jobs 15000] [--queues 30] [--shares 5]

Two clusters, each fresh and private from the same binaries and settings
(`local_stack/cluster.py up --ebb`: the control plane, KWOK, Ebb's daemons):

1. Ebb: `bench.admission_e2e` as it is — `--queues` job queues over 5 compute
   environments (a third with fair share over `--shares` share identifiers, priorities
   0-2), `--jobs` Jobs queued while the environments are DISABLED; then they are ENABLED
   and the time until every Job is unsuspended is measured. Then (phase `bare`, on the
   same cluster: `bench.admission_e2e --bare`) the API server's own write rate on the
   same Jobs, suspended again and unsuspended by a bare client with Ebb's concurrency.
2. Kueue (built by `hack/build-binaries.sh --with-kueue`, run out of cluster, its CRDs'
   conversion webhooks pointed at it on 127.0.0.1 with a serving certificate for that
   address from its own CA): the same workload mapped onto Kueue — a ResourceFlavor
   per compute environment (its node label and the batch taint's toleration), a
   ClusterQueue per job queue (in one cohort, the two flavors of its environment
   order, each environment's 100,000 vCPUs split among the 12 queues that use it),
   a WorkloadPriorityClass per queue priority, a LocalQueue per queue — per share for
   the fair-share queues, whose ClusterQueues use Admission Fair Sharing with the
   shares' weights (Kueue: a higher weight is a larger share; Ebb: a lower
   weightFactor). The Jobs are created suspended with the LocalQueue label (Kueue's
   webhooks are not registered out of cluster); the ClusterQueues hold them
   (`stopPolicy: Hold`) until Kueue has a Workload for every Job, then are released,
   and the time until every Job is unsuspended is measured.

Kueue's CRDs serve v1beta2 only (as after the migration from v1beta1; `--serve-v1beta1`
serves both, as its release manifests do, at the cost `crds()` describes). Kueue runs
with the reconcile concurrency its shipped manager config sets (5 Jobs and 5
Workloads at a time) and without its client-side rate limit (qps -1) unless `--kueue-qps`
sets one (its shipped config: 50/s, burst 100); Ebb's client has none. Reports the times,
the rates, Ebb ÷ bare and Ebb ÷ Kueue (admissions per second), each from this run's phases.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench import admission_e2e
from bench.admission_e2e import PORT_BASE, fresh_cluster
from ebb import keys, kube, tls
from ebb.kube.resources import SECRETS
from local_stack import ROOT, builders
from local_stack.harness import create_node

KUEUE = "kueue.x-k8s.io"
WORKLOADS = kube.Resource(KUEUE, "v1beta2", "workloads", "Workload", True)
CLUSTER_QUEUES = kube.Resource(KUEUE, "v1beta2", "clusterqueues", "ClusterQueue", False)
LOCAL_QUEUES = kube.Resource(KUEUE, "v1beta2", "localqueues", "LocalQueue", True)
FLAVORS = kube.Resource(KUEUE, "v1beta2", "resourceflavors", "ResourceFlavor", False)
PRIORITY_CLASSES = kube.Resource(
    KUEUE, "v1beta2", "workloadpriorityclasses", "WorkloadPriorityClass", False
)
# The CRDs whose versions Kueue converts: its certificate rotator injects its CA there.
CONVERTED = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")
CES, USERS_PER_CE = 5, 12  # as bench.admission_e2e: queue q uses CEs q % 5 and (q + 1) % 5
CE_VCPUS = 100_000
SECRET = "kueue-webhook-server-cert"
# config/components/manager/controller_manager_config.yaml of Kueue v0.17.0
SHIPPED_CONCURRENCY = {
    "Job.batch": 5,
    "Pod": 5,
    "Workload.kueue.x-k8s.io": 5,
    "LocalQueue.kueue.x-k8s.io": 1,
    "Cohort.kueue.x-k8s.io": 1,
    "ClusterQueue.kueue.x-k8s.io": 1,
    "ResourceFlavor.kueue.x-k8s.io": 1,
}


def kueue_dir() -> Path:
    """Where the Kueue manager and its CRDs are (built if missing)."""
    out = subprocess.run(
        [str(ROOT / "hack" / "build-binaries.sh"), "--with-kueue", "--print-path"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.strip()
    return Path(out.splitlines()[-1].split(os.pathsep)[-1])


def crds(kueue_dir: Path, webhook_port: int, serve_v1beta1: bool) -> list[dict[str, Any]]:
    """Kueue's CRDs; those with converted versions point their conversion webhook at the
    manager on loopback (as its kustomize patches point it at its Service).

    Unless `serve_v1beta1`, the old version v1beta1 is not served — a cluster after the
    migration to v1beta2 (Kueue and this benchmark use v1beta2 only). Served, kube-apiserver
    keeps a second watch cache per CRD in v1beta1 and converts every write into it through
    the webhook, one event at a time (kubernetes#75731): 25,589 conversions in the first
    measured run, none without v1beta1. (Kueue's Workload status applies still time out on
    2 cores without them: BENCHMARKS.md, Scale and simulation (d).)"""
    out = []
    for path in sorted((kueue_dir / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            if version["name"] == "v1beta1" and not serve_v1beta1:
                version["served"] = False
        if crd["spec"]["names"]["plural"] in CONVERTED:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"url": f"https://127.0.0.1:{webhook_port}/convert"},
                    "conversionReviewVersions": ["v1"],
                },
            }
        out.append(crd)
    return out


def kueue_config(state: Path, port_base: int, qps: float) -> Path:
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": "kueue-system",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{port_base + 971}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {
            "host": "127.0.0.1",
            "port": port_base + 972,
            "certDir": str(state / "kueue-certs"),
        },
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": True},
        # As Kueue's shipped manager config sets them; without them controller-runtime
        # reconciles each kind one object at a time.
        "controller": {"groupKindConcurrency": SHIPPED_CONCURRENCY},
        "clientConnection": {"qps": qps, "burst": max(int(qps * 2), 1) if qps > 0 else 1000},
        "integrations": {"frameworks": ["batch/job"]},
        "manageJobsWithoutQueueName": False,
        "admissionFairSharing": {"usageHalfLifeTime": "1h", "usageSamplingInterval": "5m"},
    }
    path = state / "kueue-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_kueue(binary: Path, state: Path, port_base: int, qps: float) -> subprocess.Popen[bytes]:
    config = kueue_config(state, port_base, qps)
    log = (state / "logs" / "kueue.log").open("ab")
    return subprocess.Popen(
        [
            str(binary),
            f"--config={config}",
            f"--visibility-server-port={port_base + 973}",
            "--feature-gates=VisibilityOnDemand=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": str(state / "kubeconfig")},
        cwd=state,
    )


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def wait_kueue(
    client: kube.KubeClient, proc: subprocess.Popen[bytes], state: Path, port_base: int
) -> None:
    """Until Kueue is ready. Its certificate rotator makes a CA, injects it into the
    CRDs and issues a serving certificate for its Service's DNS name into a Secret that a
    pod would mount; out of cluster the API server calls it on 127.0.0.1, which that
    certificate does not name (every conversion would fail), so the serving certificate
    written into its certificate directory is one for 127.0.0.1 from the same CA."""
    certs = state / "kueue-certs"
    certs.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"kueue exited; see {state / 'logs' / 'kueue.log'}")
        data = (await client.get(SECRETS, SECRET, "kueue-system")).get("data") or {}
        if not (certs / "tls.crt").exists() and {"ca.crt", "ca.key"} <= data.keys():
            ca = tls.KeyPair(base64.b64decode(data["ca.crt"]), base64.b64decode(data["ca.key"]))
            serving = tls.issue(ca, "kueue-webhook", ip_addresses=("127.0.0.1",), server=True)
            serving.write(certs / "tls.crt", certs / "tls.key")
        if await asyncio.to_thread(_ready, f"http://127.0.0.1:{port_base + 971}/readyz"):
            return
        await asyncio.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"kueue did not become ready; see {state / 'logs' / 'kueue.log'}")


def queue_names(q: int, shares: int) -> list[str]:
    """The LocalQueues of job queue q: one per share for the fair-share queues."""
    if q % 3 == 0:
        return [f"q{q}-share-{s}" for s in range(shares)]
    return [f"q{q}"]


async def setup(client: kube.KubeClient, args: argparse.Namespace, kueue_dir: Path) -> None:
    for crd in crds(kueue_dir, args.port_base + 972, args.serve_v1beta1):
        await client.apply(kube.CUSTOM_RESOURCE_DEFINITIONS, crd, field_manager="bench")
    for ns in ("kueue-system", "bench"):
        await client.create(kube.NAMESPACES, {"metadata": {"name": ns}})
    # The certificate rotator fills this Secret in; Kueue's manifests create it empty.
    secret = {"metadata": {"name": SECRET, "namespace": "kueue-system"}}
    await client.create(SECRETS, secret, "kueue-system")
    await asyncio.sleep(2)  # let the CRDs become established


async def queues(client: kube.KubeClient, args: argparse.Namespace) -> list[str]:
    for i in range(CES):
        await client.create(
            FLAVORS,
            {
                "apiVersion": f"{KUEUE}/v1beta2",
                "kind": "ResourceFlavor",
                "metadata": {"name": f"ce-{i}"},
                "spec": {
                    "nodeLabels": {keys.COMPUTE_ENVIRONMENT_LABEL: f"bench-ce-{i}"},
                    "tolerations": [dict(keys.BATCH_TOLERATION)],
                },
            },
        )
    for p in range(3):
        await client.create(
            PRIORITY_CLASSES,
            {
                "apiVersion": f"{KUEUE}/v1beta2",
                "kind": "WorkloadPriorityClass",
                "metadata": {"name": f"priority-{p}"},
                "value": p,
            },
        )
    share = CE_VCPUS // USERS_PER_CE
    for q in range(args.queues):
        flavors = [
            {
                "name": f"ce-{ce}",
                "resources": [
                    {"name": "cpu", "nominalQuota": str(share)},
                    {"name": "memory", "nominalQuota": f"{share * 4}Gi"},
                ],
            }
            for ce in (q % CES, (q + 1) % CES)
        ]
        spec: dict[str, Any] = {
            "cohortName": "bench",
            "namespaceSelector": {},
            "stopPolicy": "Hold",
            "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": flavors}],
        }
        if q % 3 == 0:
            spec["admissionScope"] = {"admissionMode": "UsageBasedAdmissionFairSharing"}
        await client.create(
            CLUSTER_QUEUES,
            {
                "apiVersion": f"{KUEUE}/v1beta2",
                "kind": "ClusterQueue",
                "metadata": {"name": f"bench-q{q}"},
                "spec": spec,
            },
        )
        for s, name in enumerate(queue_names(q, args.shares)):
            lq: dict[str, Any] = {"clusterQueue": f"bench-q{q}"}
            if q % 3 == 0:  # Ebb's weightFactor 1 + s: Kueue's weight is its inverse
                lq["fairSharing"] = {"weight": f"{1000 // (1 + s)}m"}
            await client.create(
                LOCAL_QUEUES,
                {
                    "apiVersion": f"{KUEUE}/v1beta2",
                    "kind": "LocalQueue",
                    "metadata": {"name": name, "namespace": "bench"},
                    "spec": lq,
                },
                "bench",
            )
    per_ce = args.nodes // CES
    for i in range(CES):
        for n in range(per_ce):
            await create_node(
                client,
                f"bench-node-{i}-{n}",
                cpu="2000",
                memory="16Ti",
                labels={keys.COMPUTE_ENVIRONMENT_LABEL: f"bench-ce-{i}"},
                taints=[{"key": keys.BATCH_NODE_TAINT, "effect": "NoSchedule"}],
            )
    return [f"bench-q{q}" for q in range(args.queues)]


def job(i: int, args: argparse.Namespace) -> dict[str, Any]:
    q = i % args.queues
    local = queue_names(q, args.shares)
    labels = {
        f"{KUEUE}/queue-name": local[(i % args.shares) % len(local)],
        f"{KUEUE}/priority-class": f"priority-{q % 3}",
    }
    return builders.job(f"job-{i}", labels=labels, run_seconds=3600, suspend=True)


async def submit(client: kube.KubeClient, args: argparse.Namespace) -> float:
    return await admission_e2e.create_jobs(client, (job(i, args) for i in range(args.jobs)))


def unsuspended(raw: dict[str, Any]) -> bool:
    return not (raw.get("spec") or {}).get("suspend")


async def kueue_run(args: argparse.Namespace, state: Path, kueue_dir: Path) -> dict[str, float]:
    access = kube.load_access(str(state / "kubeconfig"), None, {})
    async with kube.KubeClient(access, user_agent="ebb-bench", max_connections=64) as client:
        await setup(client, args, kueue_dir)
        proc = start_kueue(kueue_dir / "kueue", state, args.port_base, args.kueue_qps)
        try:
            await wait_kueue(client, proc, state, args.port_base)
            names = await queues(client, args)
            submit_s = await submit(client, args)
            print(f"kueue: submitted {args.jobs:,} jobs in {submit_s:.1f} s", flush=True)
            jobs = kube.Reflector(client, kube.JOBS, unsuspended, namespace="bench", name="jobs")
            workloads = kube.Reflector(client, WORKLOADS, lambda _: True, namespace="bench")
            tasks = [asyncio.create_task(r.run()) for r in (jobs, workloads)]
            await jobs.wait_synced(300)
            await workloads.wait_synced(300)
            waited = time.perf_counter()
            while len(workloads.store) < args.jobs:
                if time.perf_counter() - waited > args.timeout:
                    raise SystemExit(f"kueue made only {len(workloads.store):,} workloads")
                await asyncio.sleep(1)
            print(f"kueue: a Workload for every Job after {time.perf_counter() - waited:.1f} s")
            assert sum(jobs.store.values()) == 0, "jobs admitted while the queues were held"
            start = time.perf_counter()
            for name in names:
                await release(client, name)
            while True:
                await asyncio.sleep(1.0)
                done = sum(jobs.store.values())
                elapsed = time.perf_counter() - start
                print(f"  {elapsed:6.1f} s: {done:,} admitted", flush=True)
                if done >= args.jobs or elapsed > args.timeout:
                    break
            for r in (jobs, workloads):
                r.stop()
            for t in tasks:
                t.cancel()
            conversions = await conversion_calls(client)
            print(f"kueue: conversion webhook calls: {conversions}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {
        "admit_seconds": elapsed,
        "admitted": float(done),
        "admissions_per_s": done / elapsed,
        **({} if conversions is None else {"conversion_calls": conversions}),
    }


async def release(client: kube.KubeClient, name: str) -> None:
    """Lets a held ClusterQueue admit; retried (it is idempotent) while a loaded API server
    times out."""
    for attempt in range(5):
        try:
            await client.patch(CLUSTER_QUEUES, name, {"spec": {"stopPolicy": "None"}})
            return
        except (TimeoutError, aiohttp.ClientError):
            if attempt == 4:
                raise
            await asyncio.sleep(1)


async def conversion_calls(client: kube.KubeClient) -> float | None:
    """How many objects kube-apiserver has sent through CRD conversion webhooks (None if
    an overloaded API server does not answer within a minute: the run's result stands)."""
    try:
        async with asyncio.timeout(60), client.stream("/metrics", {}) as content:
            text = (await content.read()).decode()
    except (TimeoutError, aiohttp.ClientError):
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("apiserver_crd_conversion_webhook_duration_seconds_count")
    )


def kueue_phase(args: argparse.Namespace) -> dict[str, float]:
    binaries = kueue_dir()
    with fresh_cluster(args.port_base, "--ebb") as state:
        return asyncio.run(kueue_run(args, state, binaries))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=15_000)
    parser.add_argument("--queues", type=int, default=30)
    parser.add_argument("--shares", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=150)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--kueue-qps", type=float, default=-1, help="-1: no client rate limit")
    parser.add_argument("--port-base", type=int, default=PORT_BASE)
    parser.add_argument(
        "--serve-v1beta1",
        action="store_true",
        help="serve Kueue's old API version too, as its release manifests do (see crds())",
    )
    parser.add_argument(
        "--phases",
        default="ebb,bare,kueue",
        help="which to run (ebb, bare: after ebb on its cluster, kueue)",
    )
    args = parser.parse_args(argv)
    phases = args.phases.split(",")
    results: dict[str, Any] = {}
    if "ebb" in phases:
        results["ebb"] = admission_e2e.main(
            [
                f"--jobs={args.jobs}",
                f"--queues={args.queues}",
                f"--shares={args.shares}",
                f"--nodes={args.nodes}",
                f"--timeout={args.timeout}",
                f"--port-base={args.port_base}",
                *(["--bare"] if "bare" in phases else []),
            ]
        )
    if "kueue" in phases:
        results["kueue"] = kueue_phase(args)
    ebb, kueue = results.get("ebb"), results.get("kueue")
    if ebb is None or kueue is None:
        return results
    ratio = ebb["admissions_per_s"] / kueue["admissions_per_s"]
    finished = (
        "" if kueue["admitted"] >= args.jobs else f" (Kueue admitted {kueue['admitted']:,.0f})"
    )
    print(
        f"\nall {args.jobs:,} admitted: Ebb {ebb['admit_seconds']:.1f} s "
        f"({ebb['admissions_per_s']:.0f}/s), Kueue {kueue['admit_seconds']:.1f} s "
        f"({kueue['admissions_per_s']:.0f}/s){finished}; Ebb ÷ Kueue throughput {ratio:.2f}"
    )
    if "bare" in ebb:
        print(f"Ebb ÷ bare {ebb['ebb_over_bare']:.2f}, in the same run")
    return {**results, "ebb_over_kueue": ratio}


if __name__ == "__main__":
    main()
