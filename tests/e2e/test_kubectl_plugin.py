"""`kubectl ebb`, run through kubectl's plugin mechanism against the real cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ebb import keys, kube
from local_stack import builders
from local_stack.batch import batch_env, unique, wait_state
from local_stack.harness import LocalCluster

pytestmark = pytest.mark.usefixtures("scheduler_daemon")


def run_kubectl_ebb(
    cluster: LocalCluster, kubeconfig: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = cluster.env()
    # kubectl finds plugins named kubectl-* on PATH: the package installs kubectl-ebb.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    return subprocess.run(
        ["kubectl", "ebb", f"--kubeconfig={kubeconfig}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def kubectl_ebb(cluster: LocalCluster, *args: str) -> str:
    proc = run_kubectl_ebb(cluster, cluster.kubeconfig, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def test_queues_jobs_why_describe_cancel(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=1)
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(kube.JOBS, builders.job("first", q, run_seconds=30), namespace)
        await kube_client.create(kube.JOBS, builders.job("second", q), namespace)
        await kube_client.create(
            kube.JOBS, builders.job("third", q, annotations={keys.DEPENDS_ON: "second"}), namespace
        )
        await wait_state(kube_client, namespace, "second", "RUNNABLE")
        await wait_state(kube_client, namespace, "third", "PENDING")

        queues = kubectl_ebb(cluster, "queues")
        assert q in queues and "RUNNABLE" in queues.splitlines()[0]
        assert ce in kubectl_ebb(cluster, "ces")
        jobs = orjson.loads(kubectl_ebb(cluster, "jobs", "-n", namespace, "-o", "json"))
        states = {j["name"]: j["state"] for j in jobs}
        assert states["first"] in ("STARTING", "RUNNING")
        assert (states["second"], states["third"]) == ("RUNNABLE", "PENDING")
        why = kubectl_ebb(cluster, "why", "second", "-n", namespace)
        assert why.startswith("RUNNABLE: position 1 in queue")
        assert f"{ce} 1/1 vCPUs in use" in why
        assert f"compute environment {ce}: ENABLED" in why
        why_pending = kubectl_ebb(cluster, "why", "third", "-n", namespace)
        assert "afterok second: RUNNABLE — position 1" in why_pending

        out = kubectl_ebb(
            cluster, "cancel", "second", "--reason", "changed my mind", "-n", namespace
        )
        assert "cancel requested" in out
        await wait_state(kube_client, namespace, "second", "FAILED")
        await wait_state(kube_client, namespace, "third", "FAILED")
        failed = kubectl_ebb(cluster, "jobs", "-n", namespace, "--state", "failed")
        assert "cancelled: changed my mind" in failed
        assert "dependency second failed" in failed

        out = kubectl_ebb(cluster, "terminate", "first", "--reason", "enough", "-n", namespace)
        done = await wait_state(kube_client, namespace, "first", "FAILED")
        assert done["metadata"]["annotations"][keys.REASON] == "terminated: enough"
        described = kubectl_ebb(cluster, "describe", "first", "-n", namespace)
        assert "State:    FAILED (FAILED:TERMINATED)" in described
        assert "POD" in described
