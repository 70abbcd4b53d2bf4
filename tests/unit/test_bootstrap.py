"""Node images and user data; EventBridge notices."""

from __future__ import annotations

import orjson
import pytest

from autoscaler.bootstrap import ClusterInfo, image_parameter, node_labels, user_data
from autoscaler.interruptions import (
    REBALANCE,
    SPOT_INTERRUPTION,
    STATE_CHANGE,
    NoticeError,
    event,
    parse_notice,
)
from ebb.catalog import NodeOverheadSettings, shipped_catalog

CATALOG = shipped_catalog()
CLUSTER = ClusterInfo("prod", "https://api.example", "Q0E=", "10.100.0.0/16", "1.35")


def t(name: str):  # type: ignore[no-untyped-def]
    found = CATALOG.get(name)
    assert found is not None
    return found


def test_gpu_types_get_the_nvidia_image_whatever_the_image_type() -> None:
    prefix = "/aws/service/eks/optimized-ami"
    assert image_parameter(prefix, "1.35", None, t("g5.xlarge")) == (
        f"{prefix}/1.35/amazon-linux-2023/x86_64/nvidia/recommended/image_id"
    )
    assert image_parameter(prefix, "1.35", "EKS_AL2023", t("c7g.large")).endswith(
        "amazon-linux-2023/arm64/standard/recommended/image_id"
    )
    assert image_parameter(prefix, "1.29", "EKS_AL2", t("p3.2xlarge")).endswith(
        "1.29/amazon-linux-2-gpu/recommended/image_id"
    )
    assert image_parameter(prefix, "1.29", "EKS_AL2_NVIDIA", t("c6i.large")).endswith(
        "1.29/amazon-linux-2/recommended/image_id"
    )


def test_user_data_joins_with_labels_taint_and_the_planned_reservations() -> None:
    labels = node_labels("gpu", "spot")
    for image_type in ("EKS_AL2023", "EKS_AL2"):
        text = user_data(
            CLUSTER, image_type, labels, t("c6i.large"), NodeOverheadSettings().node_overhead()
        )
        assert "--node-labels=ebb.dev/capacity-type=spot,ebb.dev/compute-environment=gpu" in text
        assert "--register-with-taints=ebb.dev/batch-node=:NoSchedule" in text
        assert "70m" in text and "1465Mi" in text  # kube-reserved: 2 vCPUs, 110 pods
        assert "https://api.example" in text


def test_eventbridge_notices_are_parsed() -> None:
    for kind in (SPOT_INTERRUPTION, REBALANCE):
        notice = parse_notice(orjson.dumps(event(kind, "i-0abc1234", region="us-east-1")))
        assert (notice.kind, notice.instance_id) == (kind, "i-0abc1234")
    change = parse_notice(
        orjson.dumps(event(STATE_CHANGE, "i-0abc1235", region="us-east-1", state="terminated"))
    )
    assert change.state == "terminated"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "body: not valid JSON"),
        (b"[1]", "body: must be an EventBridge event object, not list"),
        (b'{"source": "aws.s3", "detail-type": "x"}', "source: 'aws.s3' is not aws.ec2"),
        (b'{"source": "aws.ec2", "detail-type": 7}', "detail-type: 7 is not one of"),
        (
            b'{"source": "aws.ec2", "detail-type": "EC2 Spot Instance Interruption Warning"}',
            "detail: must be an object",
        ),
        (
            orjson.dumps({**event(STATE_CHANGE, "i-0abc1234", region="r"), "detail": {"x": 1}}),
            "detail.instance-id: None is not an instance id",
        ),
        (
            orjson.dumps(event(STATE_CHANGE, "i-0abc1234", region="r")),
            "detail.state: None is not an instance state",
        ),
    ],
)
def test_anything_else_is_refused_naming_the_field(body: bytes, message: str) -> None:
    with pytest.raises(NoticeError) as info:
        parse_notice(body)
    assert str(info.value).startswith(message)
