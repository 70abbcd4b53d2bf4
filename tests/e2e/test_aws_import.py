"""`kubectl ebb import` on the real control plane: an environment, a fair-share policy, a
queue and the seed's three EKS job definitions, as AWS Batch JSON files, become Ebb objects
that run jobs to SUCCEEDED (the GPU one on a GPU node)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from ebb import keys, kube
from ebb.kube.resources import SERVICE_ACCOUNTS
from local_stack.aws import LocalAws, pods_of, scaled_to_zero, status_is
from local_stack.batch import unique, wait_state
from local_stack.harness import LocalCluster, create_node, wait_for
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


@pytest.mark.usefixtures("autoscaler")
async def test_an_imported_managed_environment_scales_from_zero_and_back(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    tmp_path: Path,
    local_aws: LocalAws,
) -> None:
    """`describe-compute-environments` output for a Spot and a GPU On-Demand environment,
    with the queue that orders them: imported, they are VALID, launch from zero for the
    seed's definitions (the GPU one on a GPU instance) and go back to zero."""
    spot, gpu, queue = unique("Imp_Spot"), unique("Imp_Gpu"), unique("Imp_Q")
    spot_name, gpu_name, queue_name = (n.lower().replace("_", "-") for n in (spot, gpu, queue))
    info = local_aws.info

    def managed(name: str, capacity: str, types: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "computeEnvironmentName": name,
            "computeEnvironmentArn": f"{ARN}:compute-environment/{name}",
            "ecsClusterArn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{name}",
            "type": "MANAGED",
            "state": "ENABLED",
            "status": "VALID",
            "statusReason": "ComputeEnvironment Healthy",
            "containerOrchestrationType": "EKS",
            "eksConfiguration": {
                "eksClusterArn": "arn:aws:eks:us-east-1:123456789012:cluster/ebb",
                "kubernetesNamespace": "aws-batch",
            },
            "computeResources": {
                "type": capacity,
                "minvCpus": 0,
                "maxvCpus": 16,
                "desiredvCpus": 0,
                "instanceTypes": types,
                "subnets": info["subnets"],
                "securityGroupIds": [info["securityGroup"]],
                "instanceRole": (
                    f"arn:aws:iam::123456789012:instance-profile/{info['instanceRole']}"
                ),
                **extra,
            },
            "serviceRole": "arn:aws:iam::123456789012:role/aws-service-role/batch.amazonaws.com",
        }

    listing = {
        "computeEnvironments": [
            managed(spot, "SPOT", ["optimal"], allocationStrategy="SPOT_CAPACITY_OPTIMIZED"),
            managed(
                gpu,
                "EC2",
                ["g4dn"],
                allocationStrategy="BEST_FIT_PROGRESSIVE",
                ec2Configuration=[{"imageType": "EKS_AL2_NVIDIA"}],
            ),
        ]
    }
    queues = {
        "jobQueues": [
            {
                "jobQueueName": queue,
                "jobQueueArn": f"{ARN}:job-queue/{queue}",
                "state": "ENABLED",
                "status": "VALID",
                "priority": 1,
                "computeEnvironmentOrder": [
                    {"order": 1, "computeEnvironment": f"{ARN}:compute-environment/{spot}"},
                    {"order": 2, "computeEnvironment": f"{ARN}:compute-environment/{gpu}"},
                ],
            }
        ]
    }
    paths = []
    for file, doc in (("ces.json", listing), ("queues.json", queues)):
        (tmp_path / file).write_text(json.dumps(doc))
        paths.append(str(tmp_path / file))
    seeds = [str(SEED / "myjoboneks-sleep.json"), str(SEED / "mygpujoboneks-smi.json")]
    proc = run_kubectl_ebb(cluster, cluster.kubeconfig, "import", "-n", namespace, *paths, *seeds)
    assert proc.returncode == 0, proc.stderr
    assert "desiredvCpus: not carried" in proc.stderr
    try:
        for ce in (spot_name, gpu_name):
            ce_spec = (await kube_client.get(kube.COMPUTE_ENVIRONMENTS, ce))["spec"]
            assert ce_spec["minvCpus"] == 0 and ce_spec["maxvCpus"] == 16
            await wait_for(
                partial(status_is, kube_client, ce, status="VALID"), 60, message=f"{ce} VALID"
            )
            assert not local_aws.live(ce)  # minvCpus 0: nothing runs before a job
        # The only Ebb field AWS Batch has not: how long an idle node stays (default 60 s).
        for ce in (spot_name, gpu_name):
            await kube_client.patch(
                kube.COMPUTE_ENVIRONMENTS, ce, {"spec": {"scaleDownDelaySeconds": 3}}
            )

        # One after the other: submitted together, the CPU job may take the GPU node that
        # comes up first (Ebb places a pod on room that exists in any of its queue's
        # environments before waiting for a launch).
        for job, definition in (("sleep", "myjoboneks-sleep"), ("smi", "mygpujoboneks-smi")):
            kubectl_ebb(
                cluster,
                *("submit", "-n", namespace, "--job-name", job, "--job-queue", queue_name),
                *("--job-definition", definition),
            )
            await wait_state(kube_client, namespace, job, "RUNNING", "SUCCEEDED", timeout=150)
        for job in ("sleep", "smi"):
            await wait_state(kube_client, namespace, job, "SUCCEEDED", timeout=150)
        ran_on = {
            job: (await pods_of(kube_client, namespace, job))[0]["spec"]["nodeName"]
            for job in ("sleep", "smi")
        }
        # A node is named after its instance's private DNS name; EC2 still lists an
        # instance after it is terminated (an idle node may be gone by now).
        spot_nodes = {i["PrivateDnsName"] for i in local_aws.instances(spot_name)}
        gpu_nodes = {i["PrivateDnsName"] for i in local_aws.instances(gpu_name)}
        assert ran_on["sleep"] in spot_nodes, (ran_on, spot_nodes)
        assert ran_on["smi"] in gpu_nodes, (ran_on, gpu_nodes)
        spot_types = {i["InstanceType"] for i in local_aws.instances(spot_name)}
        gpu_types = {i["InstanceType"] for i in local_aws.instances(gpu_name)}
        assert spot_types and {t.split(".")[0] for t in spot_types} <= {"m6i", "c6i", "r6i", "c7i"}
        assert all(i.get("InstanceLifecycle") == "spot" for i in local_aws.instances(spot_name))
        assert gpu_types and {t.split(".")[0] for t in gpu_types} == {"g4dn"}
        for ce in (spot_name, gpu_name):
            await wait_for(
                partial(scaled_to_zero, kube_client, local_aws, ce), 90, message=f"{ce} at 0"
            )
    finally:
        for res, name in (
            (kube.JOB_QUEUES, queue_name),
            (kube.COMPUTE_ENVIRONMENTS, spot_name),
            (kube.COMPUTE_ENVIRONMENTS, gpu_name),
        ):
            await kube_client.delete(res, name)
