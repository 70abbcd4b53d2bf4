"""Both daemons' Prometheus metrics, scraped around a real workload: the names, types and
units are consistent, they move, and every metric the Grafana dashboard queries exists."""

from __future__ import annotations

import importlib.metadata
import json
import re
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

import ebb
from ebb import keys, kube
from local_stack import ROOT, builders
from local_stack.aws import LocalAws, compute_environment
from local_stack.batch import wait_state
from local_stack.builders import job_queue
from local_stack.harness import Process, wait_for

Families = dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]

SCHEDULER = {
    "ebb_jobs": "gauge",
    "ebb_admissions": "counter",
    "ebb_admission_wait_seconds": "histogram",
    "ebb_dependency_wait_seconds": "histogram",
    "ebb_job_attempts": "counter",
    "ebb_job_transitions": "counter",
    "ebb_scheduling_pass_seconds": "histogram",
    "ebb_extender_requests": "counter",
    "ebb_extender_request_duration_seconds": "histogram",
    "ebb_extender_filtered_nodes": "counter",
    "ebb_webhook_reviews": "counter",
    "ebb_reflector_events": "counter",
    "ebb_leader": "gauge",
}
AUTOSCALER = {
    "ebb_autoscaler_pending_pods": "gauge",
    "ebb_autoscaler_desired_vcpus": "gauge",
    "ebb_autoscaler_requested_vcpus": "gauge",
    "ebb_autoscaler_provisioned_vcpus": "gauge",
    "ebb_autoscaler_requested_memory_bytes": "gauge",
    "ebb_autoscaler_provisioned_memory_bytes": "gauge",
    "ebb_autoscaler_requested_gpus": "gauge",
    "ebb_autoscaler_provisioned_gpus": "gauge",
    "ebb_autoscaler_instances": "gauge",
    "ebb_autoscaler_launches": "counter",
    "ebb_autoscaler_terminations": "counter",
    "ebb_autoscaler_interruptions": "counter",
    "ebb_autoscaler_cost_usd_per_hour": "gauge",
    "ebb_autoscaler_instance_seconds": "counter",
    "ebb_autoscaler_planner_seconds": "histogram",
}


def exposition(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def scrape(url: str) -> Families:
    out: Families = {}
    for family in text_string_to_metric_families(exposition(url)):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        out[family.name] = (family.type, samples)
    return out


def total(families: Families, name: str, suffix: str = "", **labels: str) -> float:
    _, samples = families.get(name, ("", {}))
    return sum(
        v
        for (sample, lbls), v in samples.items()
        if sample == name + suffix and all((k, v2) in lbls for k, v2 in labels.items())
    )


@pytest.mark.usefixtures("bridge")
async def test_metrics_are_named_typed_and_move(
    kube_client: kube.KubeClient,
    namespace: str,
    local_aws: LocalAws,
    scheduler_daemon: Process,
    autoscaler: Process,
) -> None:
    before_s, before_a = scrape(scheduler_daemon.ops_url), scrape(autoscaler.ops_url)
    ce = f"metrics-{uuid.uuid4().hex[:6]}"
    queue = f"{ce}-q"
    await kube_client.create(kube.COMPUTE_ENVIRONMENTS, compute_environment(ce, local_aws))
    await kube_client.create(kube.JOB_QUEUES, job_queue(queue, ce))
    try:
        await kube_client.create(kube.JOBS, builders.job("first", queue, run_seconds=2), namespace)
        await kube_client.create(
            kube.JOBS,
            builders.job("second", queue, run_seconds=1, annotations={keys.DEPENDS_ON: "first"}),
            namespace,
        )
        await kube_client.create(kube.JOBS, builders.job("broken", queue, exit_code=4), namespace)
        await wait_state(kube_client, namespace, "second", "SUCCEEDED", timeout=120)
        await wait_state(kube_client, namespace, "broken", "FAILED", timeout=120)
        after_s, after_a = scrape(scheduler_daemon.ops_url), scrape(autoscaler.ops_url)
    finally:
        await kube_client.delete(kube.JOB_QUEUES, queue)
        await kube_client.delete(kube.COMPUTE_ENVIRONMENTS, ce)

    for expected, families in ((SCHEDULER, after_s), (AUTOSCALER, after_a)):
        for name, kind in expected.items():
            assert name in families, f"{name} missing"
            assert families[name][0] == kind, f"{name} is a {families[name][0]}, not a {kind}"
    for families in (after_s, after_a):
        for name, (kind, samples) in families.items():
            if not name.startswith("ebb_"):
                continue
            names = {sample for sample, _ in samples}
            assert kind != "counter" or names <= {name + "_total"}
            if kind == "histogram":
                assert name.endswith("_seconds"), f"{name}: histograms here measure seconds"

    def moved(
        before: Families, after: Families, name: str, suffix: str = "_total", **labels: str
    ) -> bool:
        return total(after, name, suffix, **labels) > total(before, name, suffix, **labels)

    assert moved(before_s, after_s, "ebb_admissions", queue=queue)
    assert moved(before_s, after_s, "ebb_job_attempts", queue=queue, result="succeeded")
    assert moved(before_s, after_s, "ebb_job_attempts", queue=queue, result="exited")
    assert moved(before_s, after_s, "ebb_admission_wait_seconds", "_count", queue=queue)
    assert moved(before_s, after_s, "ebb_dependency_wait_seconds", "_count", queue=queue)
    assert moved(before_s, after_s, "ebb_extender_requests", verb="filter")
    assert moved(before_s, after_s, "ebb_webhook_reviews", webhook="mutate", verdict="allowed")
    assert total(after_s, "ebb_jobs", queue=queue, state="SUCCEEDED") == 2
    assert total(after_s, "ebb_jobs", queue=queue, state="FAILED") == 1
    assert total(after_s, "ebb_leader", lease="ebb-scheduler") == 1
    # Every state published so far (this session's daemon) was an edge of the state machine.
    assert total(after_s, "ebb_job_illegal_transitions", "_total") == 0
    assert moved(before_a, after_a, "ebb_autoscaler_launches", compute_environment=ce)
    assert moved(before_a, after_a, "ebb_autoscaler_instance_seconds")
    assert moved(before_a, after_a, "ebb_autoscaler_planner_seconds", "_count")

    # Every metric the dashboard queries is one the daemons export.
    dashboard = json.loads((ROOT / "manifests" / "grafana" / "ebb-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    assert len(exprs) >= 30
    exported = {name for f in (after_s, after_a) for name in f}
    for expr in exprs:
        for name in re.findall(r"\bebb_[a-z0-9_]+", expr):
            family = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert family in exported, f"dashboard queries {name}, which no daemon exports"


async def test_metrics_name_the_build_and_the_environment_limits_without_created_series(
    kube_client: kube.KubeClient,
    local_aws: LocalAws,
    scheduler_daemon: Process,
    autoscaler: Process,
) -> None:
    ce = f"limits-{uuid.uuid4().hex[:6]}"
    max_vcpus = "ebb_compute_environment_max_vcpus"

    async def limits_published() -> Families | None:
        families = scrape(autoscaler.ops_url)
        return families if total(families, max_vcpus, compute_environment=ce) else None

    await kube_client.create(
        kube.COMPUTE_ENVIRONMENTS, compute_environment(ce, local_aws, max_vcpus=48)
    )
    try:
        families = await wait_for(limits_published, timeout=60, message=f"{max_vcpus} of {ce}")
    finally:
        await kube_client.delete(kube.COMPUTE_ENVIRONMENTS, ce)
    assert families[max_vcpus][0] == "gauge"
    assert total(families, max_vcpus, compute_environment=ce) == 48
    assert total(families, "ebb_compute_environment_min_vcpus", compute_environment=ce) == 0

    for daemon in (scheduler_daemon, autoscaler):
        # Counters and histograms carry no `_created` series: a quarter of the samples once.
        assert "_created" not in exposition(daemon.ops_url)
        kind, samples = scrape(daemon.ops_url)["ebb_build_info"]
        assert kind == "gauge"
        [((_, labels), value)] = samples.items()
        assert dict(labels)["version"] == importlib.metadata.version(ebb.DISTRIBUTION)
        assert value == 1

    async def limits_removed() -> bool:
        _, samples = scrape(autoscaler.ops_url).get(max_vcpus, ("", {}))
        return not any(("compute_environment", ce) in labels for _, labels in samples)

    await wait_for(limits_removed, timeout=60, message=f"{max_vcpus} of deleted {ce} removed")
