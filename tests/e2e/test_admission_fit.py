"""Admission counts what the nodes a compute environment may have can hold (maxvCpus
counts instance vCPUs, pods request what the node overhead leaves), and the webhook
refuses — naming the resource and the largest node — what no node can hold. The real
control plane, the local AWS, the bridge and the autoscaler: the node overhead is the
real one."""

from __future__ import annotations

import asyncio
import subprocess
import time
from functools import partial
from typing import Any

import orjson
import pytest

from ebb import keys, kube
from local_stack.aws import (
    LocalAws,
    batch_job,
    compute_environment,
    insufficient_capacity,
    name,
    pods_of,
    scaled_to_zero,
)
from local_stack.batch import annotation
from local_stack.builders import job_queue
from local_stack.harness import LocalCluster, wait_for
from tests.e2e.test_kubectl_plugin import kubectl_ebb
from tests.e2e.test_truth import parse_tables

ROUNDS = 10
RUN = 0.5  # seconds each job runs


def job(job_name: str, queue: str, ce: str, **kw: Any) -> dict[str, Any]:
    body = batch_job(job_name, queue, **{"memory": "512Mi", **kw})  # CPU is what binds
    body["spec"]["template"]["spec"]["nodeSelector"] = {keys.COMPUTE_ENVIRONMENT_LABEL: ce}
    return body


class Watch:
    """Polls the namespace's Jobs and pods: when each job started (a pod Running or done,
    first seen) and the most jobs admitted and unfinished at once."""

    def __init__(self, client: kube.KubeClient, namespace: str) -> None:
        self.client, self.namespace = client, namespace
        self.started: dict[str, float] = {}
        self.peak_admitted = 0

    async def poll(self) -> dict[str, dict[str, Any]]:
        listed = await self.client.list(kube.JOBS, self.namespace)
        jobs = {j["metadata"]["name"]: j for j in listed.items}
        admitted = [j for j in jobs.values() if not j["spec"].get("suspend") and not done(j)]
        self.peak_admitted = max(self.peak_admitted, len(admitted))
        now = time.monotonic()
        for pod in (await self.client.list(kube.PODS, self.namespace)).items:
            owner = pod["metadata"]["labels"].get("batch.kubernetes.io/job-name", "")
            if pod.get("status", {}).get("phase") in ("Running", "Succeeded"):
                self.started.setdefault(owner, now)
        return jobs

    async def started_all(self, names: list[str], at_least: int) -> bool:
        await self.poll()
        return sum(n in self.started for n in names) >= at_least

    async def finished_all(self, names: list[str]) -> dict[str, dict[str, Any]] | None:
        jobs = await self.poll()
        return jobs if all(done(jobs[n]) for n in names) else None


def done(job: dict[str, Any]) -> bool:
    return bool((job.get("status") or {}).get("succeeded"))


async def test_a_higher_priority_queue_is_served_before_jobs_the_nodes_cannot_hold_yet(
    kube_client: kube.KubeClient, namespace: str, local_aws: LocalAws, setup: Any
) -> None:
    """maxvCpus 4 of c6i: its instances hold three 1-vCPU pods (c6i.xlarge leaves 3.77
    vCPUs). Eight low-priority jobs, then four high-priority ones: only three low jobs
    are ever admitted at once (so none holds capacity its nodes cannot give it, to start
    ahead of the high ones), and every high job is admitted before every low job that was
    still RUNNABLE when the high ones arrived — in each of ROUNDS rounds."""
    ce = name("four")
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(ce, local_aws, type="EC2", maxvCpus=4, instanceTypes=["c6i"]),
    )
    low, high = f"{ce}-low", f"{ce}-high"
    await setup(kube.JOB_QUEUES, job_queue(low, ce, priority=1))
    await setup(kube.JOB_QUEUES, job_queue(high, ce, priority=100))
    watch = Watch(kube_client, namespace)
    for r in range(ROUNDS):
        lows = [f"r{r}-low{i}" for i in range(8)]
        highs = [f"r{r}-high{i}" for i in range(4)]
        for j in lows:
            await kube_client.create(kube.JOBS, job(j, low, ce, run_seconds=RUN), namespace)

        await wait_for(
            partial(watch.started_all, lows, 3),
            60,
            interval=0.1,
            message=f"round {r}: 3 low jobs running",
        )
        for j in highs:
            await kube_client.create(kube.JOBS, job(j, high, ce, run_seconds=RUN), namespace)
        # Still RUNNABLE (suspended) once every high-priority job exists.
        jobs = await watch.poll()
        waiting_lows = [j for j in lows if jobs[j]["spec"].get("suspend")]
        assert waiting_lows, f"round {r}: every low job was admitted before the high ones came"

        jobs = await wait_for(
            partial(watch.finished_all, lows + highs),
            90,
            interval=0.1,
            message=f"round {r}: all jobs done",
        )
        # Served in order: ebb.dev/admitted-at is the time of the pass that admitted a job
        # (one pass may admit the last high job and the next low ones together, when
        # several slots free up at once; which pod KWOK then marks Running first is noise).
        admitted = {j: annotation(jobs[j], keys.ADMITTED_AT) for j in highs + waiting_lows}
        last_high = max(admitted[j] for j in highs)
        early = [j for j in waiting_lows if admitted[j] < last_high]
        assert watch.peak_admitted <= 3, f"round {r}: {watch.peak_admitted} jobs admitted at once"
        assert not early, f"round {r}: {early} admitted before a high-priority job ({admitted})"
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 60, message="to zero")


def kubectl_create(
    cluster: LocalCluster, namespace: str, body: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "create", "-f", "-"],
        input=orjson.dumps(body).decode(),
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_webhook_names_what_does_not_fit_and_warns_about_unknown_keys(
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    setup: Any,
    cluster: LocalCluster,
) -> None:
    ce = name("sixteen")
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(ce, local_aws, type="EC2", maxvCpus=16, instanceTypes=["c6i", "m6i"]),
    )
    q = f"{ce}-q"
    await setup(kube.JOB_QUEUES, job_queue(q, ce))
    # 16 vCPUs: c6i.4xlarge and m6i.4xlarge have 16, of which 15.74 are left for pods.
    with pytest.raises(kube.ApiError) as refused:
        await kube_client.create(kube.JOBS, job("wide", q, ce, cpu="16"), namespace)
    assert (
        f"requests.cpu 16 vCPUs exceeds what any node of compute environment {ce} within "
        "maxvCpus 16 can hold: m6i.4xlarge has 15.74 vCPUs usable"
    ) in refused.value.message
    with pytest.raises(kube.ApiError) as refused:
        await kube_client.create(kube.JOBS, job("huge", q, ce, memory="2Ti"), namespace)
    assert "requests.memory 2048Gi of memory exceeds what any node" in refused.value.message
    assert "m6i.4xlarge has" in refused.value.message
    assert "requests.cpu" not in refused.value.message
    assert not (await kube_client.list(kube.JOBS, namespace)).items

    misspelt = job("typo", q, ce, run_seconds=0.5)
    misspelt["metadata"]["annotations"] = {"ebb.dev/retry-stratgy": '{"attempts": 2}'}
    created = await asyncio.to_thread(kubectl_create, cluster, namespace, misspelt)
    assert created.returncode == 0, created.stderr
    assert (
        "Warning: metadata.annotations[ebb.dev/retry-stratgy]: not a key Ebb knows; ignored "
        "(did you mean ebb.dev/retry-strategy?)"
    ) in created.stderr
    plain = await asyncio.to_thread(
        kubectl_create, cluster, namespace, job("plain", q, ce, run_seconds=0.5)
    )
    assert plain.returncode == 0 and "Warning" not in plain.stderr, plain.stderr


def ebb_job(cluster: LocalCluster, namespace: str, job_name: str) -> dict[str, Any]:
    """The state, reason and reason code of the job as `kubectl ebb jobs -o json` shows it
    (kubectl's List of the Jobs; Ebb's account of each is in its annotations)."""
    listed = orjson.loads(kubectl_ebb(cluster, "jobs", "-n", namespace, "-o", "json"))
    job = next(j for j in listed["items"] if j["metadata"]["name"] == job_name)
    annotations = job["metadata"]["annotations"]
    return {
        "state": annotations.get(keys.STATE),
        "reason": annotations.get(keys.REASON),
        "reasonCode": annotations.get(keys.REASON_CODE),
    }


async def test_an_admitted_job_its_environment_can_no_longer_hold_waits_runnable_until_widened(
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    setup: Any,
    cluster: LocalCluster,
) -> None:
    """A 6-vCPU job is admitted to c6i.2xlarge (7.77 vCPUs for pods), which EC2 cannot
    launch now, so its pod waits for a node; then the environment is narrowed to
    c6i.xlarge (3.77). As in AWS Batch, the job goes back to RUNNABLE with
    MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT and the largest node named, its pod gone
    (nothing left for the autoscaler to launch for) and the counts say so; widened to
    c6i.4xlarge, it is admitted again and runs."""
    ce = name("shrink")
    local_aws.faults([insufficient_capacity("c6i.2xlarge", times=-1)])
    await setup(
        kube.COMPUTE_ENVIRONMENTS,
        compute_environment(ce, local_aws, type="EC2", maxvCpus=16, instanceTypes=["c6i.2xlarge"]),
    )
    q = f"{ce}-q"
    await setup(kube.JOB_QUEUES, job_queue(q, ce))
    await kube_client.create(kube.JOBS, job("six", q, ce, cpu="6", run_seconds=0.5), namespace)

    async def admitted_and_unplaced() -> bool:
        pods = await pods_of(kube_client, namespace, "six")
        return any(
            c.get("reason") == "Unschedulable"
            for p in pods
            for c in (p.get("status") or {}).get("conditions") or ()
        )

    await wait_for(admitted_and_unplaced, 60, message="six admitted, its pod unplaced")
    await kube_client.patch(
        kube.COMPUTE_ENVIRONMENTS, ce, {"spec": {"instanceTypes": ["c6i.xlarge"]}}
    )

    async def back_in_its_queue() -> dict[str, Any] | None:
        shown = await asyncio.to_thread(ebb_job, cluster, namespace, "six")
        return shown if shown["state"] == "RUNNABLE" else None

    shown = await wait_for(back_in_its_queue, 60, message="six RUNNABLE again")
    assert shown["reasonCode"] == "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT", shown
    why = await asyncio.to_thread(kubectl_ebb, cluster, "why", "six", "-n", namespace)
    assert (
        f"RUNNABLE: position 1 in queue {q}: needs cpu=6 memory=512Mi per pod but requests.cpu "
        f"6 vCPUs exceeds what any node of compute environment {ce} within maxvCpus 16 can "
        "hold: c6i.xlarge has 3.77 vCPUs usable"
    ) in why, why
    raw = await kube_client.get(kube.JOBS, "six", namespace)
    assert raw["spec"]["suspend"] is True

    async def settled_waiting() -> bool:
        queues = parse_tables(cluster.kubectl("get", "jq", q, "-o", "wide"))
        row = next(iter(queues.values()))[q]
        environments = parse_tables(kubectl_ebb(cluster, "ces"))[""]
        return (
            not await pods_of(kube_client, namespace, "six")
            and (row["RUNNABLE"], row["STARTING"]) == ("1", "0")
            and environments[ce]["PENDING-PODS"] == "0"
        )

    await wait_for(settled_waiting, 60, message="no pod left; RUNNABLE 1, STARTING 0, 0 pending")

    await kube_client.patch(
        kube.COMPUTE_ENVIRONMENTS, ce, {"spec": {"instanceTypes": ["c6i.4xlarge"]}}
    )

    async def succeeded() -> bool:
        shown = await asyncio.to_thread(ebb_job, cluster, namespace, "six")
        return bool(shown["state"] == "SUCCEEDED")

    await wait_for(succeeded, 90, message="six SUCCEEDED once widened")
    await wait_for(lambda: scaled_to_zero(kube_client, local_aws, ce), 60, message="to zero")
