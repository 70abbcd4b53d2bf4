"""`kubectl ebb import` on the real control plane: an environment, a fair-share policy, a
queue and the seed's three EKS job definitions, as AWS Batch JSON files, become Ebb objects
that run jobs to SUCCEEDED (the GPU one on a GPU node)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebb import keys, kube
from ebb.kube.resources import SERVICE_ACCOUNTS
from tests.e2e.batch import unique, wait_state
from tests.e2e.cluster import LocalCluster, create_node, wait_for
from tests.e2e.test_kubectl_plugin import kubectl_ebb, run_kubectl_ebb

pytestmark = pytest.mark.usefixtures("scheduler_daemon")
SEED = Path(__file__).parent.parent / "data" / "awsbatch"
ARN = "arn:aws:batch:us-east-1:123456789012"


async def test_import_aws_batch_json_and_run_the_seed_definitions(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str, tmp_path: Path
) -> None:
    ce, policy, queue = unique("Import_CE"), unique("Import_FS"), unique("Import_Q")
    ce_name, policy_name, queue_name = (n.lower().replace("_", "-") for n in (ce, policy, queue))
    files = {
        # create-compute-environment's input: an UNMANAGED environment (KWOK nodes below).
        "ce.json": {
            "computeEnvironmentName": ce,
            "type": "UNMANAGED",
            "unmanagedvCpus": 16,
            "state": "ENABLED",
            "serviceRole": f"arn:aws:iam::123456789012:role/{ce}",
        },
        # describe-scheduling-policies' output.
        "policy.json": {
            "schedulingPolicies": [
                {
                    "name": policy,
                    "arn": f"{ARN}:scheduling-policy/{policy}",
                    "fairsharePolicy": {
                        "shareDecaySeconds": 3600,
                        "computeReservation": 10,
                        "shareDistribution": [{"shareIdentifier": "team", "weightFactor": 1.0}],
                    },
                }
            ]
        },
        # describe-job-queues' output, naming the others by ARN.
        "queue.json": {
            "jobQueues": [
                {
                    "jobQueueName": queue,
                    "jobQueueArn": f"{ARN}:job-queue/{queue}",
                    "state": "ENABLED",
                    "status": "VALID",
                    "priority": 10,
                    "schedulingPolicyArn": f"{ARN}:scheduling-policy/{policy}",
                    "computeEnvironmentOrder": [
                        {"order": 1, "computeEnvironment": f"{ARN}:compute-environment/{ce}"}
                    ],
                }
            ]
        },
    }
    paths = []
    for name, doc in files.items():
        (tmp_path / name).write_text(json.dumps(doc))
        paths.append(str(tmp_path / name))

    # The seed's first definition as written is invalid JSON: refused, naming the comma.
    seed_first = SEED / "hello-kubecon.json"
    proc = run_kubectl_ebb(cluster, cluster.kubeconfig, "import", "-n", namespace, str(seed_first))
    assert proc.returncode != 0
    assert "line 60 column 25: not valid JSON (a trailing comma)" in proc.stderr
    # Without the comma, its storageClassName + size volume is refused, naming the field.
    fixed = seed_first.read_text().replace('"schedulingPriority": 0,', '"schedulingPriority": 0')
    first = tmp_path / "hello-kubecon.json"
    first.write_text(fixed)
    proc = run_kubectl_ebb(cluster, cluster.kubeconfig, "import", "-n", namespace, str(first))
    assert proc.returncode != 0
    assert "eksProperties.podProperties.volumes[0]: size, storageClassName: not an AWS" in (
        proc.stderr
    )
    # With an emptyDir for scratch, it imports (what it cannot carry said as warnings).
    doc = json.loads(fixed)
    doc["eksProperties"]["podProperties"]["volumes"] = [
        {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}
    ]
    await kube_client.create(
        SERVICE_ACCOUNTS, {"metadata": {"name": "myBatchEksServiceAccount".lower()}}, namespace
    )
    doc["eksProperties"]["podProperties"]["serviceAccountName"] = "mybatcheksserviceaccount"
    first.write_text(json.dumps(doc))

    seeds = [str(first), str(SEED / "myjoboneks-sleep.json"), str(SEED / "mygpujoboneks-smi.json")]
    proc = run_kubectl_ebb(cluster, cluster.kubeconfig, "import", "-n", namespace, *paths, *seeds)
    assert proc.returncode == 0, proc.stderr
    assert "serviceRole: not carried" in proc.stderr
    assert "securityContext.fsGroup: not carried" in proc.stderr
    assert f"jobqueues.ebb.dev/{queue_name} imported" in proc.stdout
    # Importing again changes nothing (no new revisions).
    again = kubectl_ebb(cluster, "import", "-n", namespace, *paths, *seeds)
    assert "hello-kubecon-1 imported" in again

    try:
        for node, gpu in ((f"{ce_name}-cpu", 0), (f"{ce_name}-gpu", 1)):
            await create_node(
                kube_client,
                node,
                cpu="8",
                memory="32Gi",
                gpu=gpu,
                labels={keys.COMPUTE_ENVIRONMENT_LABEL: ce_name},
                taints=[{"key": keys.BATCH_NODE_TAINT, "effect": "NoSchedule"}],
            )
        # A compute environment's status is the autoscaler's (not run here).
        for res, name in (
            (kube.JOB_QUEUES, queue_name),
            (kube.SCHEDULING_POLICIES, policy_name),
        ):

            async def valid(res: kube.Resource = res, name: str = name) -> bool:
                obj = await kube_client.get(res, name)
                return (obj.get("status") or {}).get("status") == "VALID"

            await wait_for(valid, 60, message=f"{res.kind} {name} VALID")
        q = await kube_client.get(kube.JOB_QUEUES, queue_name)
        assert q["spec"]["schedulingPolicy"] == policy_name
        assert q["spec"]["computeEnvironmentOrder"] == [{"order": 1, "computeEnvironment": ce_name}]

        for job, definition in (
            ("hello", "hello-kubecon"),
            ("sleep", "myjoboneks-sleep"),
            ("smi", "mygpujoboneks-smi"),
        ):
            kubectl_ebb(
                cluster,
                *("submit", "-n", namespace, "--job-name", job, "--job-queue", queue_name),
                *("--job-definition", definition, "--share", "team"),
            )
        for job in ("hello", "sleep", "smi"):
            await wait_state(kube_client, namespace, job, "SUCCEEDED")
        pods = await kube_client.list(
            kube.PODS, namespace, label_selector="batch.kubernetes.io/job-name=smi"
        )
        assert pods.items[0]["spec"]["nodeName"] == f"{ce_name}-gpu"
    finally:
        for res, name in (
            (kube.JOB_QUEUES, queue_name),
            (kube.SCHEDULING_POLICIES, policy_name),
            (kube.COMPUTE_ENVIRONMENTS, ce_name),
            (kube.NODES, f"{ce_name}-cpu"),
            (kube.NODES, f"{ce_name}-gpu"),
        ):
            await kube_client.delete(res, name)
