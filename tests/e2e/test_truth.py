"""Every status users read is true: after a mixed workload has ended, and again after
its compute environment scaled to zero, each printer column (`kubectl get jq,ce,sp -o
wide`), each `kubectl ebb` table and each gauge on both daemons' /metrics matches the
Jobs, pods, nodes and instances listed at that moment."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ebb import keys, kube
from ebb.resources import cpu_millis
from local_stack import builders
from local_stack.aws import (
    LocalAws,
    compute_environment,
    environment_nodes,
    launched_type,
    name,
)
from local_stack.builders import job_queue
from local_stack.harness import LocalCluster, Process
from tests.e2e.test_kubectl_plugin import kubectl_ebb
from tests.e2e.test_metrics import scrape, total

STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
SCALE_DOWN_DELAY = 30  # long enough to look at the idle nodes before they go

Table = dict[str, dict[str, str]]  # row name -> column -> cell


def parse_tables(text: str) -> dict[str, Table]:
    """Tables as kubectl (and `kubectl ebb`) print them, cut at the header's column
    starts (cells may be empty or hold spaces); several tables, separated by blank
    lines, are keyed by their resource prefix ("jobqueue.ebb.dev" etc., "" for none)."""
    out: dict[str, Table] = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        header, *lines = block.splitlines()
        starts = [m.start() for m in re.finditer(r"\S+", header)]
        names = header.split()
        for line in lines:
            cells = [
                line[start : starts[i + 1] if i + 1 < len(starts) else None].strip()
                for i, start in enumerate(starts)
            ]
            cells = ["" if c == "<none>" else c for c in cells]  # kubectl's empty cell
            row = dict(zip(names, cells, strict=True))
            kind, _, row_name = row["NAME"].rpartition("/")
            out.setdefault(kind, {})[row_name] = row
    return out


async def truth(
    client: kube.KubeClient, aws: LocalAws, namespace: str, queues: list[str], ce: str
) -> dict[str, Any]:
    """What is, from the API server and EC2: Job counts per queue and state (from the
    states Ebb published on the Jobs), and the environment's nodes, instances and pods."""
    jobs = (await client.list(kube.JOBS, namespace, label_selector=keys.QUEUE_LABEL)).items
    counts = {q: dict.fromkeys(STATES, 0) for q in queues}
    states = {}
    for job in jobs:
        state = (job["metadata"].get("annotations") or {}).get(keys.STATE, "SUBMITTED")
        counts[job["metadata"]["labels"][keys.QUEUE_LABEL]][state] += 1
        states[job["metadata"]["name"]] = state
    nodes = await environment_nodes(client, ce)
    node_names = {n["metadata"]["name"] for n in nodes}
    pods = (await client.list(kube.PODS, namespace)).items
    node_types = [n["metadata"]["labels"][keys.INSTANCE_TYPE_LABEL] for n in nodes]
    live = aws.live(ce)
    active_on_nodes = [
        p
        for p in pods
        if p["spec"].get("nodeName") in node_names
        and p["status"].get("phase") not in ("Succeeded", "Failed")
    ]
    return {
        "counts": counts,
        "states": states,
        "pods": {p["metadata"]["name"] for p in pods},
        "nodes": len(nodes),
        "current_vcpus": sum(launched_type(t).vcpus for t in node_types),
        "memory": sum(launched_type(t).memory_mib * 2**20 for t in node_types),
        "desired_vcpus": sum(launched_type(i["InstanceType"]).vcpus for i in live),
        "instances": len(aws.live()),
        "cost": sum(launched_type(i["InstanceType"]).price(keys.CAPACITY_SPOT) for i in live),
        # Every queue here routes to `ce` only.
        "pending_pods": sum(
            1
            for p in pods
            if p["status"].get("phase") == "Pending" and not p["spec"].get("nodeName")
        ),
        "requested_vcpus": sum(
            cpu_millis(c["resources"].get("requests", {}).get("cpu", "0"))
            for p in active_on_nodes
            for c in p["spec"]["containers"]
        )
        / 1000,
    }


@dataclass(frozen=True)
class Workload:
    namespace: str
    queues: dict[str, str]  # queue -> its scheduling policy ("" for none)
    ce: str
    policy: str


@dataclass(frozen=True)
class Readers:
    """Where users read: kubectl (the cluster's binary) and both daemons' /metrics."""

    cluster: LocalCluster
    scheduler: Process
    autoscaler: Process


@pytest.fixture
def readers(cluster: LocalCluster, scheduler_daemon: Process, autoscaler: Process) -> Readers:
    return Readers(cluster, scheduler_daemon, autoscaler)


def mismatches(readers: Readers, t: dict[str, Any], w: Workload) -> list[str]:
    """Every published value that differs from `t`, as "where: published != true" (a
    column or gauge that is not there reads None)."""
    out: list[str] = []

    def check(where: str, published: object, true: object) -> None:
        if str(published) != str(true):
            out.append(f"{where}: {published!r} != {true!r}")

    cluster, namespace, queues, ce, policy = readers.cluster, w.namespace, w.queues, w.ce, w.policy
    got = parse_tables(cluster.kubectl("get", "jq,ce,sp", "-o", "wide"))
    jq = got["jobqueue.ebb.dev"]
    sp = got["schedulingpolicy.ebb.dev"][policy]
    for q, q_policy in queues.items():
        row = jq[q]
        check(f"jq {q} STATUS", row.get("STATUS"), "VALID")
        check(f"jq {q} POLICY", row.get("POLICY"), q_policy)
        for state in STATES:
            check(f"jq {q} {state}", row.get(state), t["counts"][q][state])
    row = got["computeenvironment.ebb.dev"][ce]
    check("ce STATUS", row.get("STATUS"), "VALID")
    check("ce DESIREDVCPUS", row.get("DESIREDVCPUS"), t["desired_vcpus"])
    check("ce CURRENTVCPUS", row.get("CURRENTVCPUS"), t["current_vcpus"])
    check("ce NODES", row.get("NODES"), t["nodes"])
    check("ce PENDINGPODS", row.get("PENDINGPODS"), t["pending_pods"])
    check("sp STATUS", sp.get("STATUS"), "VALID")
    users = sorted(q for q, p in queues.items() if p == policy)
    check("sp REASON", sp.get("REASON"), f"used by queue(s) {', '.join(users)}")

    cli = parse_tables(kubectl_ebb(cluster, "queues"))[""]
    for q in queues:
        for state in STATES:
            check(f"ebb queues {q} {state}", cli[q].get(state), t["counts"][q][state])
    cli_ce = parse_tables(kubectl_ebb(cluster, "ces"))[""][ce]
    check("ebb ces DESIRED", cli_ce.get("DESIRED"), t["desired_vcpus"])
    check("ebb ces CURRENT", cli_ce.get("CURRENT"), t["current_vcpus"])
    check("ebb ces NODES", cli_ce.get("NODES"), t["nodes"])
    check("ebb ces PENDING-PODS", cli_ce.get("PENDING-PODS"), t["pending_pods"])
    jobs = parse_tables(kubectl_ebb(cluster, "jobs", "-n", namespace)).get("", {})
    # (The plugin lists jobs by creation time, the truth by name.)
    check("ebb jobs", sorted((j, r["STATE"]) for j, r in jobs.items()), sorted(t["states"].items()))
    for job in [
        j for j, state in t["states"].items() if state in ("STARTING", "RUNNING", "FAILED")
    ]:
        for line in kubectl_ebb(cluster, "why", job, "-n", namespace).splitlines():
            pod = re.match(r"\s*pod (\S+):", line)
            if pod and pod.group(1) not in t["pods"]:
                out.append(f"ebb why {job}: names pod {pod.group(1)}, which does not exist")

    scheduler, autoscaler = (scrape(d.ops_url) for d in (readers.scheduler, readers.autoscaler))
    for q in queues:
        for state in STATES:
            check(
                f"ebb_jobs {q} {state}",
                int(total(scheduler, "ebb_jobs", queue=q, state=state)),
                t["counts"][q][state],
            )
    for gauge, true in (
        ("pending_pods", t["pending_pods"]),
        ("nodes", t["nodes"]),
        ("desired_vcpus", t["desired_vcpus"]),
        ("provisioned_vcpus", t["current_vcpus"]),
        ("provisioned_memory_bytes", t["memory"]),
        ("provisioned_gpus", 0),
        ("requested_vcpus", t["requested_vcpus"]),
        ("requested_gpus", 0),
    ):
        name_ = f"ebb_autoscaler_{gauge}"
        check(name_, float(total(autoscaler, name_, compute_environment=ce)), float(true))
    check(
        "ebb_autoscaler_instances",
        int(total(autoscaler, "ebb_autoscaler_instances")),
        t["instances"],
    )
    check(
        "ebb_autoscaler_cost_usd_per_hour",
        round(total(autoscaler, "ebb_autoscaler_cost_usd_per_hour", compute_environment=ce), 6),
        round(float(t["cost"]), 6),
    )
    return out


async def settled(
    read: Callable[[], Awaitable[tuple[dict[str, Any], list[str]]]], timeout: float, what: str
) -> dict[str, Any]:
    """Published values catch up within a few passes; fail with what still differs."""
    deadline = time.monotonic() + timeout
    while True:
        t, wrong = await read()
        if not wrong:
            return t
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: published values are not true:\n" + "\n".join(wrong))
        await asyncio.sleep(1)


@pytest.mark.usefixtures("bridge")
async def test_every_status_is_true_after_the_work_and_after_scale_to_zero(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any, readers: Readers
) -> None:
    ce = name("truth")
    policy = f"{ce}-fair"
    fair_q, fifo_q = f"{ce}-fair-q", f"{ce}-fifo-q"
    queues = {fair_q: policy, fifo_q: ""}
    workload = Workload(namespace, queues, ce, policy)
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(ce, local_aws, scaleDownDelaySeconds=SCALE_DOWN_DELAY),
    )
    await setup(kube.SCHEDULING_POLICIES, builders.scheduling_policy(policy, [builders.share("a")]))
    await setup(kube.JOB_QUEUES, job_queue(fair_q, ce, schedulingPolicy=policy))
    await setup(kube.JOB_QUEUES, job_queue(fifo_q, ce))

    jobs = [
        builders.job("ok-1", fair_q, share="a", run_seconds=3),
        builders.job("ok-2", fair_q, share="a", run_seconds=2),
        builders.job("broken", fair_q, share="a", exit_code=3),
        builders.job("ok-3", fifo_q, run_seconds=2),
        builders.job("array", fifo_q, completions=4, parallelism=4, indexed=True, run_seconds=2),
    ]
    for body in jobs:
        body["spec"]["template"]["spec"]["nodeSelector"] = {keys.COMPUTE_ENVIRONMENT_LABEL: ce}
        await kube_client.create(kube.JOBS, body, namespace)

    async def read() -> tuple[dict[str, Any], list[str]]:
        t = await truth(kube_client, local_aws, namespace, list(queues), ce)
        wrong = await asyncio.to_thread(mismatches, readers, t, workload)
        return t, wrong

    async def ended() -> bool:
        t = await truth(kube_client, local_aws, namespace, list(queues), ce)
        return all(s in ("SUCCEEDED", "FAILED") for s in t["states"].values())

    deadline = time.monotonic() + 120
    while not await ended():
        assert time.monotonic() < deadline, "the workload did not end in 120 s"
        await asyncio.sleep(0.5)

    # Every job has ended; the idle nodes are still up (scale-down waits 30 s).
    t = await settled(read, 20, "after the work")
    assert t["counts"][fair_q] == {**dict.fromkeys(STATES, 0), "SUCCEEDED": 2, "FAILED": 1}
    assert t["counts"][fifo_q] == {**dict.fromkeys(STATES, 0), "SUCCEEDED": 2}
    assert t["nodes"] > 0 and t["pending_pods"] == 0

    deadline = time.monotonic() + SCALE_DOWN_DELAY + 60
    while (await truth(kube_client, local_aws, namespace, list(queues), ce))["nodes"]:
        assert time.monotonic() < deadline, "the environment did not scale to zero"
        await asyncio.sleep(1)
    t = await settled(read, 20, "after scale to zero")
    assert (t["nodes"], t["desired_vcpus"], t["current_vcpus"]) == (0, 0, 0)
