"""The autoscaler's IAM policy (deploy/aws/ebb-iam.yaml, and autoscaler-policy.json
rendered from it) allows every AWS call the autoscaler's code makes, and nothing it does
not: the calls are read from the code (each boto3 client method, and each paginator,
mapped to its API operation by botocore's own service models)."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from functools import cache
from typing import Any

import botocore.session
import yaml
from botocore import xform_name

from autoscaler.settings import AutoscalerSettings
from ebb import keys
from local_stack import ROOT

AUTOSCALER = ROOT / "autoscaler"
# Where the autoscaler builds its boto3 clients, and the one module that calls them.
BUILDS_CLIENTS, CALLS_CLIENTS = AUTOSCALER / "app.py", AUTOSCALER / "aws.py"
POLICY = ROOT / "deploy" / "aws" / "autoscaler-policy.json"
TEMPLATE = ROOT / "deploy" / "aws" / "ebb-iam.yaml"
# The attributes autoscaler/aws.py keeps its boto3 clients in, and their services.
CLIENTS = {"_ec2": "ec2", "_ssm": "ssm", "_sqs": "sqs", "_pricing": "pricing"}
# Actions a call needs besides its own: (action, the call, what of it needs it).
IMPLIED = {
    "ec2:CreateTags": ("ec2:RunInstances", "TagSpecifications"),
    "iam:PassRole": ("ec2:RunInstances", "IamInstanceProfile"),
}


@cache
def calls_in_code() -> frozenset[str]:
    """Every `service:Operation` the autoscaler's code calls through its clients."""
    botocore_session = botocore.session.get_session()
    operations = {
        service: {
            xform_name(op): op for op in botocore_session.get_service_model(service).operation_names
        }
        for service in CLIENTS.values()
    }
    found: set[str] = set()
    for node in ast.walk(ast.parse(CALLS_CLIENTS.read_text())):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr in CLIENTS
        ):
            continue
        service = CLIENTS[node.func.value.attr]
        method = node.func.attr
        if method == "get_paginator":
            assert isinstance(node.args[0], ast.Constant), ast.unparse(node)
            method = str(node.args[0].value)
        assert method in operations[service], ast.unparse(node)
        found.add(f"{service}:{operations[service][method]}")
    return frozenset(found)


def statements() -> list[dict[str, Any]]:
    return list(json.loads(POLICY.read_text())["Statement"])


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def allowed(action: str) -> bool:
    return any(
        fnmatch.fnmatchcase(action, pattern)
        for s in statements()
        if s["Effect"] == "Allow"
        for pattern in actions(s)
    )


def test_the_code_makes_the_calls_this_test_reads() -> None:
    calls = calls_in_code()
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "sqs:ReceiveMessage"} <= calls
    assert "ec2:DescribeInstanceTypes" in calls  # through a paginator
    # Only app.py reaches boto3, to build the clients it hands to aws.Aws, whose calls are
    # the ones read above (other modules only catch botocore's exceptions)...
    talking = {
        path.name
        for path in AUTOSCALER.glob("*.py")
        if re.search(
            r"^(import|from) (boto3|botocore(?!\.exceptions))", path.read_text(), re.MULTILINE
        )
    }
    assert talking == {BUILDS_CLIENTS.name}
    # ...and the clients are the ones built in app.py, and no other.
    app = ast.parse(BUILDS_CLIENTS.read_text())
    built = {
        str(node.args[0].value)
        for node in ast.walk(app)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "client"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert built == set(CLIENTS.values())


def test_the_policy_allows_every_call_the_autoscaler_makes() -> None:
    missing = sorted(call for call in calls_in_code() if not allowed(call))
    assert missing == [], f"deploy/aws/ebb-iam.yaml does not allow {missing}"
    source = (AUTOSCALER / "aws.py").read_text()
    for action, (call, parameter) in IMPLIED.items():
        assert call in calls_in_code() and parameter in source
        assert allowed(action), f"{call} with {parameter} needs {action}"


def test_the_policy_allows_nothing_the_autoscaler_does_not_call() -> None:
    granted = {a for s in statements() for a in actions(s)}
    assert granted - calls_in_code() - IMPLIED.keys() == set()


def test_launches_and_terminations_are_held_to_this_clusters_tag() -> None:
    tag = keys.TAG_CLUSTER
    for statement in statements():
        condition = statement.get("Condition", {}).get("StringEquals", {})
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        if "ec2:TerminateInstances" in actions(statement):
            assert condition == {f"aws:ResourceTag/{tag}": "${ClusterName}"}
        if {"ec2:RunInstances", "ec2:CreateTags"} & set(actions(statement)) and any(
            ":instance/" in r or ":volume/" in r for r in resources
        ):
            assert condition[f"aws:RequestTag/{tag}"] == "${ClusterName}"
        if "ec2:CreateTags" in actions(statement):
            assert condition["ec2:CreateAction"] == "RunInstances"


def test_the_policy_reaches_the_default_images_and_the_stacks_queue() -> None:
    [ssm] = [s for s in statements() if "ssm:GetParameter" in actions(s)]
    prefix = AutoscalerSettings().image_parameter_prefix
    assert fnmatch.fnmatchcase(f"parameter{prefix}/x", str(ssm["Resource"]).split(":")[-1])
    template = yaml.safe_load(TEMPLATE.read_text())["Resources"]
    queue = template["InterruptionQueue"]["Properties"]["QueueName"]["Fn::Sub"]
    [sqs] = [s for s in statements() if "sqs:ReceiveMessage" in actions(s)]
    assert str(sqs["Resource"]).endswith(f":{queue}")
    role = template["NodeRole"]["Properties"]["RoleName"]["Fn::Sub"]
    [passrole] = [s for s in statements() if "iam:PassRole" in actions(s)]
    assert str(passrole["Resource"]).endswith(f":role/{role}")


def test_the_node_role_trusts_ec2_and_joins_the_cluster() -> None:
    trust = json.loads((POLICY.parent / "node-role-trust-policy.json").read_text())
    assert trust["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    template = yaml.safe_load(TEMPLATE.read_text())["Resources"]
    assert template["NodeAccessEntry"]["Properties"]["Type"] == "EC2_LINUX"
