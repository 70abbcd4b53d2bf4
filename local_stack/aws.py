"""The local AWS (moto with fault injection, local_stack.ec2), the instance-boot bridge
and the autoscaler daemon as real subprocesses, for the autoscaler's end-to-end tests;
and what those tests create and read."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

import boto3

from ebb import keys, kube
from ebb.catalog import InstanceType, shipped_catalog
from local_stack import builders, interrupt
from local_stack.harness import LocalCluster, Process

CLUSTER_NAME = "ebb-e2e"
AWS_TIMEOUT_SECONDS = 5


class LocalAws:
    def __init__(self, cluster: LocalCluster) -> None:
        self.port = cluster.port_base + 950
        self.info_file = cluster.state_dir / "aws.json"
        self.process = Process(
            "moto",
            [
                sys.executable,
                "-m",
                "local_stack.ec2",
                f"--port={self.port}",
                f"--info-file={self.info_file}",
            ],
            cluster.state_dir / "logs",
        )
        self.info: dict[str, Any] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.info_file.unlink(missing_ok=True)
        self.process.start()
        deadline = time.monotonic() + 60
        while not self.info_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.process.wait_http(f"{self.endpoint}/_ebb/health")
        self.info = json.loads(self.info_file.read_text())

    def client(self, service: str) -> Any:
        session = boto3.session.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
        )
        return session.client(service, endpoint_url=self.endpoint)  # type: ignore[call-overload]

    async def interrupt(
        self, instance_id: str, notice_seconds: float
    ) -> asyncio.subprocess.Process:
        """Reclaim a Spot instance as EC2 would (local_stack.interrupt), in the background."""
        return await asyncio.create_subprocess_exec(
            *interrupt.command(
                instance_id,
                endpoint=self.endpoint,
                queue_url=self.info["queueUrl"],
                notice_seconds=notice_seconds,
            ),
            env={"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "PATH": ""},
        )

    def faults(self, rules: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/_ebb/faults", data=json.dumps(rules).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5):
            pass

    def instances(self, environment: str | None = None) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{keys.TAG_CLUSTER}", "Values": [CLUSTER_NAME]}]
        if environment:
            filters.append({"Name": f"tag:{keys.TAG_COMPUTE_ENVIRONMENT}", "Values": [environment]})
        pages = self.client("ec2").get_paginator("describe_instances").paginate(Filters=filters)
        return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]

    def live(self, environment: str | None = None) -> list[dict[str, Any]]:
        return [
            i for i in self.instances(environment) if i["State"]["Name"] in ("pending", "running")
        ]


def insufficient_capacity(
    instance_type: str, *, capacity: int | None = None, times: int | None = None
) -> dict[str, Any]:
    """A fault rule: EC2 answers RunInstances of `instance_type` with
    InsufficientInstanceCapacity (beyond `capacity` instances when given; `times` as in
    the fault seam, -1 for ever)."""
    rule: dict[str, Any] = {
        "action": "RunInstances",
        "match": {"InstanceType": instance_type},
        "error": "InsufficientInstanceCapacity",
        "status": 500,
    }
    if capacity is not None:
        rule["capacity"] = capacity
    if times is not None:
        rule["times"] = times
    return rule


def bridge_process(cluster: LocalCluster, aws: LocalAws) -> Process:
    return Process(
        "ebb-bridge",
        [
            sys.executable,
            "-m",
            "local_stack.bridge",
            f"--kubeconfig={cluster.kubeconfig}",
            f"--aws-endpoint-url={aws.endpoint}",
            f"--cluster-name={CLUSTER_NAME}",
            "--boot-seconds=1",
            "--poll-seconds=0.3",
        ],
        cluster.state_dir / "logs",
    )


def autoscaler_process(
    cluster: LocalCluster,
    aws: LocalAws,
    *,
    name: str = "ebb-autoscaler",
    port: int | None = None,
    extra: Sequence[str] = (),
) -> Process:
    """Ebb's autoscaler as a Process (`start` returns once it is ready); ops on `port`."""
    port = port or cluster.port_base + 951
    env_args = [
        f"--kubeconfig={cluster.state_dir / 'ebb-autoscaler.kubeconfig'}",
        "--listen-host=127.0.0.1",
        f"--port={port}",
        f"--cluster-name={CLUSTER_NAME}",
        f"--aws-endpoint-url={aws.endpoint}",
        f"--image-parameter-prefix={aws.info['imageParameterPrefix']}",
        f"--interruption-queue-url={aws.info['queueUrl']}",
        # Short, so that tests can hold an answer back past it (moto answers in ms).
        f"--aws-timeout-seconds={AWS_TIMEOUT_SECONDS}",
        "--batch-idle-seconds=0.5",
        "--batch-max-seconds=3",
        "--resync-seconds=2",
        "--drain-grace-seconds=1",
        "--node-grace-seconds=1",
        "--registration-timeout-seconds=15",
        "--unavailable-offering-seconds=120",
        "--catalog-refresh-seconds=0",  # moto's prices are placeholders
        "--log-level=debug",
        *extra,
    ]
    return Process(
        name,
        [sys.executable, "-m", "autoscaler", *env_args],
        cluster.state_dir / "logs",
        ops_url=f"http://127.0.0.1:{port}",
    )


def compute_environment(name: str, aws: LocalAws, **spec: Any) -> dict[str, Any]:
    """A Spot environment of c6i and m6i in the local AWS, scaling down after 3 s idle."""
    fields = {"scaleDownDelaySeconds": 3, **builders.ec2_networking(aws.info), **spec}
    return builders.compute_environment(name, instance_types=("c6i", "m6i"), **fields)


def batch_job(
    name: str,
    queue: str,
    *,
    pods: int = 1,
    cpu: str = "1",
    memory: str = "2Gi",
    gpu: int = 0,
    run_seconds: float = 2,
    exit_code: int = 0,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Job of `pods` pods of `queue` (its label on the pod template), each on a node of
    the environment named as the queue without its "-q"."""
    return builders.job(
        name,
        annotations=annotations,
        pod_labels={keys.QUEUE_LABEL: queue},
        run_seconds=run_seconds,
        exit_code=exit_code,
        parallelism=pods,
        completions=pods,
        containers=[builders.container(cpu, memory, gpu=gpu, limits=True)],
        tolerations=[keys.BATCH_TOLERATION],
        # Until the extender filters nodes by queue, keep tests off each other's nodes.
        nodeSelector={keys.COMPUTE_ENVIRONMENT_LABEL: queue.removesuffix("-q")},
    )


async def job_succeeded(client: kube.KubeClient, namespace: str, name: str) -> bool:
    job = await client.get(kube.JOBS, name, namespace)
    conditions = {c["type"]: c["status"] for c in job.get("status", {}).get("conditions") or ()}
    if conditions.get("Failed") == "True":
        raise AssertionError(f"job {name} failed: {job['status']}")
    return conditions.get("Complete") == "True"


async def pods_of(client: kube.KubeClient, namespace: str, job: str) -> list[dict[str, Any]]:
    listed = await client.list(
        kube.PODS, namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
    )
    return listed.items


async def environment_nodes(client: kube.KubeClient, environment: str) -> list[dict[str, Any]]:
    listed = await client.list(
        kube.NODES, label_selector=f"{keys.COMPUTE_ENVIRONMENT_LABEL}={environment}"
    )
    return listed.items


def launched_type(instance_type: str) -> InstanceType:
    """The catalog entry of a type the local AWS launched (the bridge boots only those)."""
    t = shipped_catalog().get(instance_type)
    if t is None:
        raise KeyError(f"{instance_type} is not in the shipped catalog")
    return t


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def metric(ops_url: str, line_start: str) -> float:
    """The sum of a daemon's metric samples whose line starts with `line_start`."""
    with urllib.request.urlopen(f"{ops_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)
    )


async def scaled_to_zero(client: kube.KubeClient, aws: LocalAws, ce: str) -> bool:
    return not aws.live(ce) and not await environment_nodes(client, ce)


async def status_is(client: kube.KubeClient, ce: str, **fields: Any) -> bool:
    status = (await client.get(kube.COMPUTE_ENVIRONMENTS, ce)).get("status") or {}
    return all(status.get(k) == v for k, v in fields.items())


async def events_of(client: kube.KubeClient, ce: str) -> list[dict[str, Any]]:
    listed = await client.list(kube.EVENTS, "default", field_selector=f"involvedObject.name={ce}")
    return listed.items


async def event_reasons(client: kube.KubeClient, ce: str) -> set[str]:
    return {e["reason"] for e in await events_of(client, ce)}


async def has_event(client: kube.KubeClient, ce: str, reason: str) -> bool:
    return reason in await event_reasons(client, ce)


async def as_async(value: Any) -> Any:
    return value


def launch_token(instance: dict[str, Any]) -> str:
    return str(next(t["Value"] for t in instance["Tags"] if t["Key"] == keys.TAG_LAUNCH))
