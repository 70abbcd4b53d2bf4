"""The AWS provider against botocore's Stubber: fault injection (throttling, capacity
errors), idempotent tagged launches, and the cluster-tag guard on termination."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from autoscaler.aws import Aws, AwsError, LaunchRequest
from ebb import keys
from ebb.catalog import shipped_catalog

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
def stubbed() -> Iterator[tuple[Aws, Stubber, list[float]]]:
    session = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    )
    ec2 = session.client("ec2")
    sleeps: list[float] = []
    aws = Aws(ec2, session.client("ssm"), session.client("sqs"), "c1", sleep=sleeps.append)
    with Stubber(ec2) as stub:
        yield aws, stub, sleeps
        stub.assert_no_pending_responses()


def instance(
    instance_id: str, cluster: str = "c1", lifecycle: str | None = "spot"
) -> dict[str, Any]:
    raw = {
        "InstanceId": instance_id,
        "InstanceType": "c6i.large",
        "Placement": {"AvailabilityZone": "us-east-1a"},
        "State": {"Name": "pending", "Code": 0},
        "LaunchTime": NOW,
        "PrivateDnsName": f"ip-{instance_id}.ec2.internal",
        "Tags": [
            {"Key": keys.TAG_CLUSTER, "Value": cluster},
            {"Key": keys.TAG_COMPUTE_ENVIRONMENT, "Value": "spot"},
            {"Key": keys.TAG_LAUNCH, "Value": "tok"},
        ],
    }
    if lifecycle:
        raw["InstanceLifecycle"] = lifecycle
    return raw


REQUEST = LaunchRequest(
    token="tok",
    environment="spot",
    instance_type="c6i.large",
    capacity_type=keys.CAPACITY_SPOT,
    count=2,
    subnet_id="subnet-1",
    image_id="ami-1",
    user_data="#!/bin/bash",
    security_group_ids=("sg-1",),
    instance_profile="ebb-node",
    tags=(("team", "ml"),),
    max_price="0.05",
    placement_group="training",
)


def test_launch_is_tagged_idempotent_and_spot(stubbed: tuple[Aws, Stubber, list[float]]) -> None:
    aws, stub, _ = stubbed
    expected = {
        "ImageId": "ami-1",
        "InstanceType": "c6i.large",
        "MinCount": 2,
        "MaxCount": 2,
        "SubnetId": "subnet-1",
        "UserData": ANY,
        "ClientToken": "tok",
        "MetadataOptions": {"HttpTokens": "required"},
        "Placement": {"GroupName": "training"},
        "SecurityGroupIds": ["sg-1"],
        "IamInstanceProfile": {"Name": "ebb-node"},
        "InstanceMarketOptions": {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
                "MaxPrice": "0.05",
            },
        },
        "TagSpecifications": ANY,
    }
    stub.add_response("run_instances", {"Instances": [instance("i-1"), instance("i-2")]}, expected)
    launched = aws.launch(REQUEST)
    assert [i.instance_id for i in launched] == ["i-1", "i-2"]
    assert launched[0].capacity_type == keys.CAPACITY_SPOT
    assert launched[0].launch_token == "tok" and launched[0].environment == "spot"


def test_throttling_is_retried_with_backoff(stubbed: tuple[Aws, Stubber, list[float]]) -> None:
    aws, stub, sleeps = stubbed
    for _ in range(3):
        stub.add_client_error("run_instances", "RequestLimitExceeded", "slow down", 503)
    stub.add_response("run_instances", {"Instances": [instance("i-1")]})
    assert len(aws.launch(REQUEST)) == 1
    assert len(sleeps) == 3 and sleeps[0] < sleeps[2]


def test_insufficient_capacity_is_reported_not_retried(
    stubbed: tuple[Aws, Stubber, list[float]],
) -> None:
    aws, stub, sleeps = stubbed
    stub.add_client_error("run_instances", "InsufficientInstanceCapacity", "none left", 500)
    with pytest.raises(AwsError) as info:
        aws.launch(REQUEST)
    assert info.value.insufficient_capacity and sleeps == []


def test_never_terminates_an_instance_without_the_cluster_tag(
    stubbed: tuple[Aws, Stubber, list[float]],
) -> None:
    aws, stub, _ = stubbed
    stub.add_response(
        "describe_instances",
        {"Reservations": [{"Instances": [instance("i-ours"), instance("i-other", "c2")]}]},
        {"InstanceIds": ["i-ours", "i-other"]},
    )
    stub.add_response("terminate_instances", {}, {"InstanceIds": ["i-ours"]})
    assert aws.terminate(["i-ours", "i-other"]) == ["i-ours"]


def test_unknown_subnets_are_left_out(stubbed: tuple[Aws, Stubber, list[float]]) -> None:
    aws, stub, _ = stubbed
    stub.add_response(
        "describe_subnets",
        {"Subnets": [{"SubnetId": "subnet-a", "AvailabilityZone": "us-east-1a"}]},
        {"SubnetIds": ["subnet-a"]},
    )
    stub.add_client_error("describe_subnets", "InvalidSubnetID.NotFound", "no", 400)
    assert aws.subnet_zones(["subnet-a", "subnet-b"]) == {"subnet-a": "us-east-1a"}
    assert aws.subnet_zones(["subnet-a"]) == {"subnet-a": "us-east-1a"}  # cached


def test_catalog_refresh_from_ec2_and_the_price_list(
    stubbed: tuple[Aws, Stubber, list[float]],
) -> None:
    aws, stub, _ = stubbed
    stub.add_response(
        "describe_instance_types",
        {
            "InstanceTypes": [
                {
                    "InstanceType": "g9.xlarge",
                    "VCpuInfo": {"DefaultVCpus": 4},
                    "MemoryInfo": {"SizeInMiB": 16384},
                    "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]},
                    "GpuInfo": {
                        "Gpus": [{"Name": "L4", "Count": 1, "MemoryInfo": {"SizeInMiB": 23034}}]
                    },
                },
                {
                    "InstanceType": "c6i.large",
                    "VCpuInfo": {"DefaultVCpus": 2},
                    "MemoryInfo": {"SizeInMiB": 4096},
                    "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]},
                },
            ]
        },
    )
    stub.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                {
                    "InstanceType": "c6i.large",
                    "SpotPrice": "0.031",
                    "AvailabilityZone": "us-east-1a",
                },
                {
                    "InstanceType": "c6i.large",
                    "SpotPrice": "0.029",
                    "AvailabilityZone": "us-east-1b",
                },
            ]
        },
    )
    specs = aws.instance_type_specs()
    spot = aws.spot_prices(["c6i.large"])
    assert spot == {"c6i.large": 0.029}
    assert aws.on_demand_prices("us-east-1") == {}  # no pricing client: keep the snapshot
    catalog = shipped_catalog().updated(specs=specs, spot_prices=spot)
    c6i = catalog.get("c6i.large")
    assert c6i is not None and c6i.spot_price == 0.029 and c6i.on_demand_price == 0.085
    assert catalog.get("g9.xlarge") is None  # no price known: not plannable
    priced = shipped_catalog().updated(specs=specs, on_demand_prices={"g9.xlarge": 1.5})
    g9 = priced.get("g9.xlarge")
    assert g9 is not None and (g9.gpus, g9.gpu_model, g9.on_demand_price) == (1, "L4", 1.5)
    assert g9.spot_price == 1.5 and g9.interruption_bucket is None
