"""The Helm chart (charts/ebb), with the helm hack/build-binaries.sh builds: it lints, the
committed renderings are current (manifests/install.yaml, deploy/aws/*.json), and its
values reach the objects as the README and docs/operations.md say. (Installed on the real
control plane, with both daemons run from it: tests/e2e/test_chart.py.)"""

from __future__ import annotations

import runpy
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from local_stack import ROOT, chart
from local_stack.cluster import binaries_path

Objects = list[dict[str, Any]]


@cache
def bin_path() -> str:
    return binaries_path()


def render(*args: str) -> Objects:
    return chart.template(bin_path(), "--kube-version=v1.36.3", *args)


def find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def container(objects: Objects, deployment: str) -> dict[str, Any]:
    spec = find(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    return dict(spec["containers"][0])


def test_the_chart_lints_with_default_and_with_every_option_on() -> None:
    out = chart.helm(bin_path(), "lint", "--strict", str(chart.CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    out = chart.helm(
        bin_path(),
        "lint",
        "--strict",
        str(chart.CHART),
        "--set=monitoring.serviceMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
        "--set=userRoles.viewAllUsers=true,namespace.create=true,aws.roleArn=arn:aws:iam::123456789012:role/r",
    )
    assert "0 chart(s) failed" in out


def test_the_committed_renderings_are_current() -> None:
    render_manifests = runpy.run_path(str(ROOT / "hack" / "render_manifests.py"))
    assert render_manifests["stale"]() == [], "run: make manifests"


def test_defaults_two_replicas_each_with_a_disruption_budget_spread_over_nodes() -> None:
    objects = render()
    for name in ("ebb-scheduler", "ebb-autoscaler", "ebb-kube-scheduler"):
        deployment = find(objects, "Deployment", name)
        assert deployment["spec"]["replicas"] == 2
        pod = deployment["spec"]["template"]["spec"]
        [term] = pod["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": name
        }
        budget = find(objects, "PodDisruptionBudget", name)
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert "--leader-election-namespace=ebb-system" in container(objects, "ebb-scheduler")["args"]
    assert "--leader-election-namespace=ebb-system" in container(objects, "ebb-autoscaler")["args"]
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "Namespace"}, "off by default"


def test_values_reach_the_daemons() -> None:
    objects = render(
        "--set=image.repository=registry.example/ebb,image.tag=9.9.9",
        "--set=cluster.name=prod,cluster.endpoint=https://k.example,cluster.ca=Q0E=",
        "--set=cluster.region=eu-west-1,aws.roleArn=arn:aws:iam::123456789012:role/ebb",
        "--set=autoscaler.interruptionQueueUrl=https://sqs.example/1/ebb-prod",
        "--set=scheduler.extraArgs={--log-level=debug}",
    )
    autoscaler = container(objects, "ebb-autoscaler")
    env = {e["name"]: e.get("value") for e in autoscaler["env"]}
    assert env["EBB_CLUSTER_NAME"] == "prod"
    assert env["EBB_CLUSTER_ENDPOINT"] == "https://k.example"
    assert env["EBB_CLUSTER_CA"] == "Q0E="
    assert env["EBB_REGION"] == "eu-west-1"
    assert env["EBB_INTERRUPTION_QUEUE_URL"] == "https://sqs.example/1/ebb-prod"
    assert autoscaler["image"] == "registry.example/ebb:9.9.9"
    account = find(objects, "ServiceAccount", "ebb-autoscaler")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ebb"
    }
    assert container(objects, "ebb-scheduler")["args"][-1] == "--log-level=debug"


def test_another_namespace_is_followed_everywhere_the_daemons_name_it() -> None:
    objects = chart.template(bin_path(), "--namespace=batch", "--kube-version=v1.36.3")
    text = yaml.safe_dump_all(objects)
    assert "ebb-system" not in text
    assert "--tls-names=ebb-scheduler.batch.svc" in container(objects, "ebb-scheduler")["args"]
    config = yaml.safe_load(find(objects, "ConfigMap", "ebb-kube-scheduler")["data"]["config.yaml"])
    assert config["extenders"][0]["urlPrefix"] == "https://ebb-scheduler.batch.svc:8443/scheduler"


@pytest.mark.parametrize(
    ("cluster_version", "image"),
    [
        ("v1.36.3", "registry.k8s.io/kube-scheduler:v1.36.3"),
        ("v1.35.2", "registry.k8s.io/kube-scheduler:v1.35.2"),
        # EKS's version string: the upstream release it is built from.
        ("v1.36.3-eks-4a5b6c7", "registry.k8s.io/kube-scheduler:v1.36.3"),
    ],
)
def test_the_second_kube_scheduler_follows_the_cluster_version(
    cluster_version: str, image: str
) -> None:
    objects = chart.template(bin_path(), f"--kube-version={cluster_version}")
    assert container(objects, "ebb-kube-scheduler")["image"] == image
    pinned = chart.template(
        bin_path(), f"--kube-version={cluster_version}", "--set=kubeScheduler.image.tag=v1.35.0"
    )
    assert container(pinned, "ebb-kube-scheduler")["image"].endswith(":v1.35.0")


def test_without_the_second_kube_scheduler_batch_pods_keep_the_default_scheduler() -> None:
    objects = render("--set=kubeScheduler.enabled=false")
    assert not [o for o in objects if "kube-scheduler" in o["metadata"]["name"]]
    args = container(objects, "ebb-scheduler")["args"]
    assert not [a for a in args if a.startswith("--scheduler-name")]


def test_the_extender_stanza_for_your_own_kube_scheduler_matches_the_charts() -> None:
    """manifests/scheduler-config/ is the same extender as the chart's second scheduler
    runs with, but for where its certificate files are."""
    config = yaml.safe_load(
        find(render(), "ConfigMap", "ebb-kube-scheduler")["data"]["config.yaml"]
    )
    snippet = yaml.safe_load(
        (ROOT / "manifests" / "scheduler-config" / "kube-scheduler-config.yaml").read_text()
    )
    [ours], [theirs] = config["extenders"], snippet["extenders"]
    assert {k: v for k, v in ours.items() if k != "tlsConfig"} == {
        k: v for k, v in theirs.items() if k != "tlsConfig"
    }
    assert set(ours["tlsConfig"]) == set(theirs["tlsConfig"])


def test_bad_values_are_refused_naming_the_value() -> None:
    done = subprocess.run(
        [
            str(Path(bin_path().split(":")[-1]) / "helm"),
            "template",
            "ebb",
            str(chart.CHART),
            "--set=aws.roleArn=my-role,autoscaler.replicas=0,cluster.nmae=prod",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "- at '/aws/roleArn': 'my-role' does not match pattern" in done.stderr
    assert "- at '/autoscaler/replicas': minimum: got 0, want 1" in done.stderr
    assert "- at '/cluster': additional properties 'nmae' not allowed" in done.stderr
