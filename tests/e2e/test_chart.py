"""Ebb's Helm chart (charts/ebb) on the real control plane.

- Installed with `helm install` on a bare cluster of its own (the real API server, with
  none of Ebb's objects applied beforehand): every object the release names is there, the
  CRDs are established; then both daemons are run as processes with exactly the command,
  arguments and environment of the chart's Deployments (what the kubelet would start),
  as the chart's ServiceAccounts (a token of each), and become ready: the scheduler daemon
  creates its serving and kube-scheduler client Secrets and registers its webhooks at the
  chart's Service, and each wins its leader Lease in the release's namespace, through the
  chart's RBAC alone. What is not the chart's: the kubeconfig (in a pod: the mounted
  token), the ports and the TLS directory (in a pod: a container port and an emptyDir),
  and the stand-in for AWS (moto's endpoint and AMI parameters). No container runs (KWOK
  nodes run no images): the second kube-scheduler's pods are not started.
- `helm upgrade` changes a value in place; `helm uninstall` after the steps
  docs/operations.md gives removes every object of the release and keeps the CRDs.
- Every metric the PrometheusRule's alerts query is one the daemons (or, for webhook
  calls, kube-apiserver) export on their real /metrics, with the labels the rules use,
  and counters are only read through rate()/increase().
"""

from __future__ import annotations

import base64
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ebb import kube
from local_stack import builders, chart
from local_stack.aws import LocalAws
from local_stack.harness import LocalCluster, Process, cluster_command
from tests.e2e.test_metrics import exposition

NAMESPACE = chart.NAMESPACE
# The bare cluster's ports: above the session cluster's, below the next range.
PORT_OFFSET = 1000


@pytest.fixture(scope="module")
def bare_cluster(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """A second real cluster with nothing of Ebb's on it (no CRDs, RBAC or extender)."""
    state_dir = cluster.state_dir.with_name(f"{cluster.state_dir.name}-chart")
    port_base = cluster.port_base + PORT_OFFSET
    args = (f"--bin-path={cluster.bin_path}", "--extender=none", "--ebb-resources=false")
    shutil.rmtree(state_dir, ignore_errors=True)
    cluster_command("up", state_dir, port_base, *args)
    try:
        yield LocalCluster(state_dir, port_base, state_dir / "kubeconfig", cluster.bin_path, args)
    finally:
        cluster_command("down", state_dir, port_base, f"--bin-path={cluster.bin_path}")
        shutil.rmtree(state_dir, ignore_errors=True)


def helm(target: LocalCluster, *args: str) -> str:
    return chart.helm(target.bin_path, *args, f"--kubeconfig={target.kubeconfig}")


def service_account_kubeconfig(target: LocalCluster, account: str) -> Path:
    """A kubeconfig with a token of the chart's ServiceAccount, as a pod of it would have."""
    token = target.kubectl("create", "token", account, "-n", NAMESPACE).strip()
    config = yaml.safe_load(target.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": token}
    path = target.state_dir / f"chart-{account}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def daemon_from_deployment(
    deployment: dict[str, Any], name: str, log_dir: Path, out_of_cluster: list[str]
) -> Process:
    """The Deployment's container as a process: its command (the console script of the
    same name) with its arguments, then `out_of_cluster`; its environment, the pod's
    name standing in for a fieldRef."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    [command] = container["command"]
    mounted = {m["mountPath"] for m in container.get("volumeMounts", ())}
    # A flag naming a path mounted into the pod is replaced by out_of_cluster's.
    args = [a for a in container.get("args", ()) if a.split("=", 1)[-1] not in mounted]
    process = Process(
        name,
        [str(Path(sys.executable).parent / command), *args, *out_of_cluster],
        log_dir,
        ops_url=f"http://127.0.0.1:{out_of_cluster_port(out_of_cluster)}",
    )
    for env in container.get("env", ()):
        if "value" in env:
            process.env[env["name"]] = env["value"]
        else:
            assert env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, env
            process.env[env["name"]] = f"{deployment['metadata']['name']}-{uuid.uuid4().hex[:5]}"
    return process


def out_of_cluster_port(args: list[str]) -> int:
    """The ops port among the out-of-cluster flags (--ops-port, else --port)."""
    ports = dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--"))
    return int(ports.get("ops-port", ports["port"]))


def manifest_objects(target: LocalCluster) -> list[dict[str, Any]]:
    out = helm(target, "get", "manifest", "ebb", f"--namespace={NAMESPACE}")
    return [o for o in yaml.safe_load_all(out) if o]


def wait_for_leader(target: LocalCluster, lease: str, identity: str = "") -> str:
    """Until `identity` (or, if empty, anyone) holds the Lease: a replica is ready before
    it leads. Returns the holder."""
    deadline = time.monotonic() + 60
    holder = ""
    while time.monotonic() < deadline:
        holder = target.kubectl(
            "get",
            "lease",
            lease,
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity}",
            check=False,
        )
        if (holder == identity) if identity else (holder and "NotFound" not in holder):
            return holder
        time.sleep(0.5)
    raise AssertionError(
        f"{identity or 'nobody'} held Lease {NAMESPACE}/{lease} (last: {holder!r})"
    )


def kube_scheduler_from_chart(
    target: LocalCluster, deployment: dict[str, Any], port: int
) -> Process:
    """The chart's second kube-scheduler as a process of the cluster's own kube-scheduler
    binary (the version the chart pins the image to): its command and the configuration
    from the chart's ConfigMap, read from the cluster, with the mounted files (the
    ConfigMap, the client-certificate Secret the scheduler daemon keeps) written to disk
    where the pod would mount them, and the ServiceAccount's token for in-cluster config."""
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    files = target.state_dir / "chart-kube-scheduler"
    for volume in pod["volumes"]:
        if "configMap" in volume:
            kind, name = "configmap", volume["configMap"]["name"]
        else:
            kind, name = "secret", volume["secret"]["secretName"]
        data = yaml.safe_load(target.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "yaml"))
        directory = files / mounts[volume["name"]].strip("/")
        directory.mkdir(parents=True, exist_ok=True)
        for key, value in data["data"].items():
            text = base64.b64decode(value).decode() if kind == "secret" else value
            (directory / key).write_text(text)
    [command, config_flag] = container["command"]
    config_path = files / config_flag.removeprefix("--config=").strip("/")
    config = yaml.safe_load(config_path.read_text())
    for extender in config["extenders"]:
        extender["tlsConfig"] = {
            k: str(files / v.strip("/")) for k, v in extender["tlsConfig"].items()
        }
    kubeconfig = service_account_kubeconfig(target, pod["serviceAccountName"])
    config["clientConnection"] = {"kubeconfig": str(kubeconfig)}
    config_path.write_text(yaml.safe_dump(config))
    binary = next(
        Path(d) / command for d in target.bin_path.split(":") if (Path(d) / command).exists()
    )
    return Process(
        "chart-kube-scheduler",
        [
            str(binary),
            f"--config={config_path}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
        ],
        target.state_dir / "logs",
    )


# Stand-ins for the Prometheus Operator's CRDs (no schema): the API server stores the
# chart's ServiceMonitor and PrometheusRule as the operator's CRDs would let it.
def operator_crd(kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def test_the_chart_installs_and_both_daemons_become_ready_from_it(
    bare_cluster: LocalCluster,
) -> None:
    target = bare_cluster
    aws = LocalAws(target)
    aws.start()
    daemons: list[Process] = []
    try:
        target.kubectl(
            "apply",
            "-f",
            "-",
            input=yaml.safe_dump_all(
                [
                    operator_crd("ServiceMonitor", "servicemonitors"),
                    operator_crd("PrometheusRule", "prometheusrules"),
                ]
            ),
        )
        target.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        )
        server = yaml.safe_load(target.kubeconfig.read_text())["clusters"][0]["cluster"]
        out = helm(
            target,
            "install",
            "ebb",
            str(chart.CHART),
            f"--namespace={NAMESPACE}",
            "--create-namespace",
            "--set=cluster.name=chart-e2e,cluster.region=us-east-1",
            f"--set=cluster.endpoint={server['server']}",
            f"--set=cluster.ca={server['certificate-authority-data']}",
            f"--set=autoscaler.interruptionQueueUrl={aws.info['queueUrl']}",
            "--set=aws.roleArn=arn:aws:iam::123456789012:role/ebb-autoscaler",
            "--set=monitoring.serviceMonitor.enabled=true",
            "--set=monitoring.prometheusRule.enabled=true",
        )
        assert "STATUS: deployed" in out, out

        # Every object of the release is on the API server; the CRDs are established.
        objects = manifest_objects(target)
        listing = target.kubectl("get", "-f", "-", "-o", "name", input=yaml.safe_dump_all(objects))
        assert len(listing.split()) == len(objects)
        kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
        for name in ("ebb-scheduler", "ebb-autoscaler", "ebb-kube-scheduler"):
            assert ("Deployment", name) in kinds
            assert ("PodDisruptionBudget", name) in kinds
        assert {("ServiceMonitor", "ebb"), ("PrometheusRule", "ebb")} <= kinds
        crds = target.kubectl("get", "crd", "-o", "name")
        for plural in ("computeenvironments", "jobqueues", "schedulingpolicies", "jobdefinitions"):
            assert f"customresourcedefinition.apiextensions.k8s.io/{plural}.ebb.dev" in crds
        target.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/computeenvironments.ebb.dev",
            "crd/jobqueues.ebb.dev",
            "crd/schedulingpolicies.ebb.dev",
            "crd/jobdefinitions.ebb.dev",
        )

        # Both daemons, from the chart's Deployments, as the chart's ServiceAccounts.
        deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
        base = target.port_base + 900
        tls_dir = target.state_dir / "chart-ebb-tls"
        scheduler = daemon_from_deployment(
            deployments["ebb-scheduler"],
            "chart-ebb-scheduler",
            target.state_dir / "logs",
            [
                f"--kubeconfig={service_account_kubeconfig(target, 'ebb-scheduler')}",
                "--listen-host=127.0.0.1",
                f"--port={base}",
                f"--ops-port={base + 1}",
                f"--tls-dir={tls_dir}",
            ],
        )
        autoscaler = daemon_from_deployment(
            deployments["ebb-autoscaler"],
            "chart-ebb-autoscaler",
            target.state_dir / "logs",
            [
                f"--kubeconfig={service_account_kubeconfig(target, 'ebb-autoscaler')}",
                "--listen-host=127.0.0.1",
                f"--port={base + 2}",
                f"--aws-endpoint-url={aws.endpoint}",
                f"--image-parameter-prefix={aws.info['imageParameterPrefix']}",
            ],
        )
        for daemon in (scheduler, autoscaler):
            daemons.append(daemon)
            daemon.start()  # returns once /readyz answers 200

        wait_for_leader(target, "ebb-scheduler", scheduler.env["EBB_IDENTITY"])
        wait_for_leader(target, "ebb-autoscaler", autoscaler.env["EBB_IDENTITY"])

        # The second kube-scheduler: its image is the cluster's own version, and the real
        # kube-scheduler of that version takes the chart's configuration and, as the
        # chart's ServiceAccount, syncs its caches and leads (nothing forbidden).
        version = yaml.safe_load(target.kubectl("version", "-o", "yaml"))["serverVersion"]
        [kube_scheduler] = deployments["ebb-kube-scheduler"]["spec"]["template"]["spec"][
            "containers"
        ]
        assert kube_scheduler["image"] == (
            f"registry.k8s.io/kube-scheduler:{version['gitVersion']}"
        )
        second = kube_scheduler_from_chart(target, deployments["ebb-kube-scheduler"], base + 3)
        daemons.append(second)
        second.start()
        wait_for_leader(target, "ebb-kube-scheduler")
        assert "forbidden" not in second.log_path.read_text()
        secrets = target.kubectl("get", "secrets", "-n", NAMESPACE, "-o", "name")
        assert "secret/ebb-scheduler-tls" in secrets
        assert "secret/ebb-kube-scheduler-client" in secrets
        webhook = yaml.safe_load(
            target.kubectl("get", "validatingwebhookconfiguration", "ebb-scheduler", "-o", "yaml")
        )
        assert {w["clientConfig"]["service"]["name"] for w in webhook["webhooks"]} == {
            "ebb-scheduler"
        }
        assert {w["clientConfig"]["service"]["namespace"] for w in webhook["webhooks"]} == {
            NAMESPACE
        }
        assert "--scheduler-name=ebb-scheduler" in scheduler.args
        assert autoscaler.env["EBB_CLUSTER_NAME"] == "chart-e2e"
        account = yaml.safe_load(
            target.kubectl("get", "serviceaccount", "ebb-autoscaler", "-n", NAMESPACE, "-o", "yaml")
        )
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
            ":role/ebb-autoscaler"
        )

        # An upgrade changes a value in place.
        out = helm(
            target,
            "upgrade",
            "ebb",
            str(chart.CHART),
            f"--namespace={NAMESPACE}",
            "--reuse-values",
            "--set=scheduler.replicas=3",
        )
        assert "REVISION: 2" in out, out
        replicas = target.kubectl(
            "get", "deployment", "ebb-scheduler", "-n", NAMESPACE, "-o", "jsonpath={.spec.replicas}"
        )
        assert replicas == "3"
    finally:
        for daemon in daemons:
            daemon.stop()
        aws.process.stop()

    # Uninstall as docs/operations.md says: the webhooks the daemon registered first (with
    # no daemon left they would refuse every Job), then the release.
    target.kubectl(
        "delete",
        "mutatingwebhookconfiguration/ebb-scheduler",
        "validatingwebhookconfiguration/ebb-scheduler",
    )
    objects = manifest_objects(target)
    helm(target, "uninstall", "ebb", f"--namespace={NAMESPACE}", "--wait")
    left = target.kubectl(
        "get", "-f", "-", "-o", "name", "--ignore-not-found", input=yaml.safe_dump_all(objects)
    )
    assert left.split() == []
    crds = target.kubectl("get", "crd", "-o", "name")
    assert "jobqueues.ebb.dev" in crds, "helm keeps a chart's CRDs (and so every queue)"


# --- the alert rules against the real metric names -----------------------------------

PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}
)


def rules(bin_path: str) -> list[dict[str, Any]]:
    [rule_object] = chart.template(
        bin_path,
        "--set=monitoring.prometheusRule.enabled=true",
        "--show-only=templates/monitoring/prometheusrule.yaml",
    )
    return [r for group in rule_object["spec"]["groups"] for r in group["rules"]]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each metric the expression selects, with the label names its matchers use."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # range durations
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", stripped)
    found = []
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", stripped):
        name, matchers, call = match.groups()
        if call or name in PROMQL_WORDS:
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.append((name, labels))
    return found


Families = dict[str, tuple[str, set[str]]]


def families(exposition: str) -> Families:
    """Each sample name as /metrics shows it, with its family's type and the label names
    its samples carry; a family with no sample yet (a labelled one nothing has touched)
    by the name its TYPE line gives. Read from the text itself: client libraries differ
    on a counter's `_total` (Go's apiserver has none, prometheus_client adds it), and a
    rule must name what is really there."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE))
    out: Families = {}
    for line in exposition.splitlines():
        sample = re.match(r"([a-zA-Z_:][\w:]*)(\{.*\})?\s", line)
        if sample is None:
            continue
        name, labels = sample.groups()
        family = next(
            (f for f in (name, re.sub(r"_(bucket|sum|count)$", "", name)) if f in types), name
        )
        kind, carried = out.get(name, (types.get(family, "untyped"), set()))
        out[name] = (kind, carried | set(re.findall(r'(\w+)="(?:[^"\\]|\\.)*"', labels or "")))
    for family, kind in types.items():
        out.setdefault(family, (kind, set()))
    return out


async def test_every_alert_queries_metrics_the_daemons_export(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    scheduler_daemon: Process,
    autoscaler: Process,
) -> None:
    # A Job Ebb's webhook refuses: kube-apiserver then exports its webhook rejection counter.
    with pytest.raises(kube.ApiError) as refused:
        await kube_client.create(kube.JOBS, builders.job("refused", "no-such-queue"), namespace)
    assert "job queue 'no-such-queue' does not exist" in refused.value.message

    exported: Families = {}
    for daemon in (scheduler_daemon, autoscaler):
        exported |= families(exposition(daemon.ops_url))
    exported |= families(cluster.kubectl("get", "--raw", "/metrics"))

    alerts = rules(cluster.bin_path)
    assert {r["alert"] for r in alerts} >= {
        "EbbJobsStuckRunnable",
        "EbbComputeEnvironmentInvalid",
        "EbbLaunchesFailing",
        "EbbNoLeader",
        "EbbWebhookUnreachable",
    }
    for rule in alerts:
        used = selectors(rule["expr"])
        assert used, rule["expr"]
        for name, labels in used:
            assert name in exported, f"{rule['alert']} queries {name}, which nothing exports"
            kind, carried = exported[name]
            assert not carried or labels <= carried, (rule["alert"], name, labels, carried)
            if kind == "counter":
                assert re.search(rf"(rate|increase)\(\s*{name}\b", rule["expr"]), (
                    f"{rule['alert']} reads the counter {name} without rate()/increase()"
                )
