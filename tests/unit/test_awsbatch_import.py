"""`kubectl ebb import`'s translation of AWS Batch JSON (ebb/awsbatch_import.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebb import keys
from ebb.awsbatch_import import ImportRefused, kube_name, name_from_arn, parse_json, translate
from kubectl_ebb.main import main

SEED = Path(__file__).parent.parent / "data" / "awsbatch"
ARN = "arn:aws:batch:us-east-1:123456789012"


def one(doc: Any, **kw: Any) -> tuple[list[dict[str, Any]], list[str]]:
    out = translate([("f.json", doc, kw.pop("default_name", ""))], **kw)
    return out.objects, out.warnings


def seed_first(volumes: list[Any] | None = None) -> dict[str, Any]:
    text = (SEED / "hello-kubecon.json").read_text()
    doc = parse_json(text.replace('"schedulingPriority": 0,', '"schedulingPriority": 0'), "x")
    if volumes is not None:
        doc["eksProperties"]["podProperties"]["volumes"] = volumes
    assert isinstance(doc, dict)
    return doc


def test_managed_compute_environment_from_describe_output() -> None:
    doc = {
        "computeEnvironments": [
            {
                "computeEnvironmentName": "GPU_Spot",
                "computeEnvironmentArn": f"{ARN}:compute-environment/GPU_Spot",
                "type": "MANAGED",
                "state": "ENABLED",
                "status": "VALID",
                "serviceRole": "arn:aws:iam::1:role/batch",
                "computeResources": {
                    "type": "SPOT",
                    "minvCpus": 0,
                    "maxvCpus": 256,
                    "desiredvCpus": 4,
                    "instanceTypes": ["g5", "p3.2xlarge"],
                    "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED",
                    "bidPercentage": 60,
                    "subnets": ["subnet-0a1"],
                    "securityGroupIds": ["sg-0b2"],
                    "instanceRole": "ecsInstanceRole",
                    "placementGroup": "pg",
                    "ec2KeyPair": "kp",
                    "tags": {"team": "ml"},
                    "launchTemplate": {"launchTemplateName": "lt", "version": "$Latest"},
                    "ec2Configuration": [
                        {"imageType": "EKS_AL2_NVIDIA", "imageIdOverride": "ami-0abc"},
                        {"imageType": "EKS_AL2"},
                    ],
                },
            }
        ]
    }
    objects, warnings = one(doc)
    (ce,) = objects
    assert ce["kind"] == "ComputeEnvironment" and ce["metadata"] == {"name": "gpu-spot"}
    assert ce["spec"] == {
        "state": "ENABLED",
        "type": "SPOT",
        "minvCpus": 0,
        "maxvCpus": 256,
        "instanceTypes": ["g5", "p3.2xlarge"],
        "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED",
        "bidPercentage": 60,
        "subnets": ["subnet-0a1"],
        "securityGroupIds": ["sg-0b2"],
        "instanceRole": "ecsInstanceRole",
        "tags": {"team": "ml"},
        "placementGroup": "pg",
        "launchTemplate": {"launchTemplateName": "lt", "version": "$Latest"},
        "imageType": "EKS_AL2_NVIDIA",
        "imageId": "ami-0abc",
    }
    text = "\n".join(warnings)
    for field in (
        "computeEnvironmentArn",
        "status",
        "serviceRole",
        "computeResources.desiredvCpus",
        "computeResources.ec2KeyPair",
        "computeResources.ec2Configuration[1]",
    ):
        assert f"ComputeEnvironment gpu-spot: {field}: not carried" in text, field
    assert "'GPU_Spot' is named 'gpu-spot'" in text


def test_create_input_defaults_to_aws_allocation_strategy_and_unmanaged() -> None:
    (ce,), _ = one(
        {
            "computeEnvironmentName": "ce",
            "type": "MANAGED",
            "computeResources": {"type": "EC2", "maxvCpus": 8, "instanceTypes": ["optimal"]},
        }
    )
    assert ce["spec"]["allocationStrategy"] == "BEST_FIT"  # AWS Batch's default
    (unmanaged,), _ = one({"computeEnvironmentName": "u", "type": "UNMANAGED", "unmanagedvCpus": 4})
    assert unmanaged["spec"] == {"type": "UNMANAGED", "maxvCpus": 4}
    with pytest.raises(ImportRefused, match="ComputeEnvironment u: unmanagedvCpus: Ebb needs"):
        one({"computeEnvironmentName": "u", "type": "UNMANAGED"})
    fargate = {"computeEnvironmentName": "f", "computeResources": {"type": "FARGATE"}}
    with pytest.raises(ImportRefused, match=r"computeResources\.type: 'FARGATE' is not supported"):
        one(fargate)


def test_queue_maps_arns_to_names_and_keeps_time_limit_actions() -> None:
    action = {
        "reason": "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
        "state": "RUNNABLE",
        "maxTimeSeconds": 600,
        "action": "CANCEL",
    }
    (q,), warnings = one(
        {
            "jobQueueName": "High",
            "priority": 100,
            "state": "ENABLED",
            "schedulingPolicyArn": f"{ARN}:scheduling-policy/Fair_Share",
            "computeEnvironmentOrder": [
                {"order": 1, "computeEnvironment": f"{ARN}:compute-environment/Spot_CE"},
                {"order": 2, "computeEnvironment": "ondemand"},
            ],
            "jobStateTimeLimitActions": [action],
            "tags": {"a": "b"},
        }
    )
    assert q["spec"] == {
        "state": "ENABLED",
        "priority": 100,
        "jobStateTimeLimitActions": [action],
        "computeEnvironmentOrder": [
            {"order": 1, "computeEnvironment": "spot-ce"},
            {"order": 2, "computeEnvironment": "ondemand"},
        ],
        "schedulingPolicy": "fair-share",
    }
    assert any("JobQueue high: tags: not carried" in w for w in warnings)


def test_scheduling_policy_create_input() -> None:
    fairshare = {
        "shareDecaySeconds": 3600,
        "computeReservation": 25,
        "shareDistribution": [{"shareIdentifier": "a*", "weightFactor": 0.5}],
        "future": 1,
    }
    (p,), warnings = one({"name": "fs", "fairsharePolicy": fairshare, "tags": {"x": "y"}})
    assert p["kind"] == "SchedulingPolicy"
    del fairshare["future"]
    assert p["spec"] == {"fairsharePolicy": fairshare}
    assert any("fairsharePolicy.future: not carried" in w for w in warnings)
    assert any("SchedulingPolicy fs: tags: not carried" in w for w in warnings)


def test_seed_definitions_import() -> None:
    sleep = json.loads((SEED / "myjoboneks-sleep.json").read_text())
    gpu = json.loads((SEED / "mygpujoboneks-smi.json").read_text())
    first = seed_first([{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}])
    out = translate(
        [("a", first, "hello-kubecon"), ("b", sleep, "x"), ("c", gpu, "y")], namespace="ns"
    )
    names = [o["metadata"]["name"] for o in out.objects]
    assert names == ["hello-kubecon-1", "myjoboneks-sleep-1", "mygpujoboneks-smi-1"]
    hello = out.objects[0]
    assert hello["metadata"]["namespace"] == "ns"
    pod = hello["spec"]["eksProperties"]["podProperties"]
    assert pod["tolerations"] == [keys.BATCH_TOLERATION]
    assert pod["containers"][0]["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000}
    assert "securityContext" not in pod
    assert hello["spec"]["retryStrategy"] == {"attempts": 3}
    assert "timeout" not in hello["spec"]
    text = "\n".join(out.warnings)
    for expected in (
        "jobDefinitionName: empty (AWS Batch would refuse it); named after the file",
        "retryStrategy.retryStrategy: not carried",
        "timeout.attemptDurationSeconds: not carried: 0 is under AWS Batch's minimum of 60",
        "securityContext.fsGroup: not carried",
    ):
        assert expected in text, expected
    limits = out.objects[2]["spec"]["eksProperties"]["podProperties"]["containers"][0]
    assert limits["resources"]["limits"][keys.GPU_RESOURCE] == "1"


def test_seed_first_definition_refusals() -> None:
    with pytest.raises(
        ImportRefused, match=r"line 60 column 25: not valid JSON \(a trailing comma"
    ):
        parse_json((SEED / "hello-kubecon.json").read_text(), "hello-kubecon.json")
    with pytest.raises(
        ImportRefused,
        match=r"volumes\[0\]: size, storageClassName: not an AWS Batch volume",
    ):
        one(seed_first(), default_name="hello")


def test_bad_json_names_line_and_column() -> None:
    with pytest.raises(ImportRefused, match="f: line 2 column 8: not valid JSON"):
        parse_json('{\n  "a": x}', "f")


def test_revisions_next_or_unchanged() -> None:
    sleep = json.loads((SEED / "myjoboneks-sleep.json").read_text())
    (jd,), _ = one(sleep)
    spec = jd["spec"]
    (same,), _ = one(sleep, latest={"myjoboneks-sleep": (3, spec)})
    assert same["metadata"]["name"] == "myjoboneks-sleep-3"
    (changed,), _ = one(sleep, latest={"myjoboneks-sleep": (3, {"other": 1})})
    assert changed["metadata"]["name"] == "myjoboneks-sleep-4"
    described = {"jobDefinitions": [{**sleep, "revision": 7, "status": "ACTIVE"}]}
    (kept,), _ = one(described)
    assert kept["metadata"]["name"] == "myjoboneks-sleep-7"
    inactive = {"jobDefinitions": [{**sleep, "revision": 6, "status": "INACTIVE"}]}
    objects, warnings = one(inactive)
    assert objects == [] and "INACTIVE" in warnings[-1]


def test_refusals_name_the_field() -> None:
    ecs = {"jobDefinitionName": "ecs", "type": "container", "containerProperties": {}}
    with pytest.raises(ImportRefused, match="containerProperties: Ebb runs EKS job definitions"):
        one(ecs)
    sleep = json.loads((SEED / "myjoboneks-sleep.json").read_text())
    sleep["eksProperties"]["podProperties"]["containers"][0]["resources"]["limits"]["cpu"] = "x"
    with pytest.raises(ImportRefused, match=r"containers\[0\]\.resources\.limits\.cpu"):
        one(sleep)
    with pytest.raises(ImportRefused, match="not an AWS Batch document"):
        one({"something": 1})
    with pytest.raises(ImportRefused, match="jobQueueName: 'bad name' is not an AWS Batch name"):
        one({"jobQueueName": "bad name", "computeEnvironmentOrder": []})


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,60}[A-Za-z0-9]", fullmatch=True))
def test_names_become_kubernetes_names(aws: str) -> None:
    name = kube_name(aws, "x", [])
    assert name == name.lower() and "_" not in name
    assert name_from_arn(f"{ARN}:job-queue/{aws}") == aws
    assert name_from_arn(f"{ARN}:job-definition/{aws}:3") == aws


def test_cli_dry_run_prints_yaml_with_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "q.json"
    path.write_text(
        json.dumps(
            {
                "jobQueueName": "q",
                "priority": 1,
                "tags": {},
                "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "ce"}],
            }
        )
    )
    assert main(["import", "--dry-run", "-o", "yaml", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"# warning: {path}: JobQueue q: tags: not carried")
    assert "kind: JobQueue" in out.out
    assert "warning:" in out.err
    bad = tmp_path / "bad.json"
    bad.write_text("{,}")
    with pytest.raises(SystemExit, match=r"bad\.json: line 1 column 2"):
        main(["import", "--dry-run", str(bad)])
