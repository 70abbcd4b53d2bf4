from __future__ import annotations

from dataclasses import replace

from ebb.catalog import NodeOverheadSettings, shipped_catalog
from ebb.model import ComputeEnvironment
from ebb.resources import Resources
from extender.jobs.capacity import capacity_limits

GIB = 2**30
CATALOG = shipped_catalog()


def ce(name: str, types: tuple[str, ...], max_vcpus: int = 64) -> ComputeEnvironment:
    return ComputeEnvironment(name=name, type="SPOT", max_vcpus=max_vcpus, instance_types=types)


def test_cpu_environment_holds_no_gpu_pods_and_no_pod_bigger_than_its_types() -> None:
    (limit,) = capacity_limits(
        [ce("c", ("c6i.large", "c6i.xlarge"))], CATALOG, NodeOverheadSettings().node_overhead()
    ).values()
    assert limit.limit.gpu == 0
    assert limit.holds_pod(Resources(3000, 4 * GIB, 0))  # c6i.xlarge: 4 vCPU, 8 GiB
    assert not limit.holds_pod(Resources(4000, 4 * GIB, 0))  # overhead leaves < 4 vCPUs
    assert not limit.holds_pod(Resources(1000, GIB, 1))
    assert limit.nodes is not None
    assert [n.name for n in limit.nodes] == ["c6i.large", "c6i.xlarge"]


def test_gpu_environment_limits_gpus_by_its_types_or_max_gpus() -> None:
    limits = capacity_limits(
        [
            ce("g", ("g5.xlarge", "g5.12xlarge"), max_vcpus=96),
            replace(ce("capped", ("g5.xlarge",)), max_gpus=2),
        ],
        CATALOG,
        NodeOverheadSettings().node_overhead(),
    )
    assert limits["g"].limit.gpu == 24  # 96 vCPUs of g5.12xlarge (48 vCPUs, 4 GPUs) = 8
    assert limits["g"].holds_pod(Resources(4000, 16 * GIB, 4))
    assert not limits["g"].holds_pod(Resources(1000, GIB, 0))  # CPU pods never on GPU types
    assert limits["capped"].limit.gpu == 2


def test_disabled_and_invalid_environments_hold_nothing() -> None:
    limits = capacity_limits(
        [
            replace(ce("off", ("c6i",)), state="DISABLED"),
            replace(ce("bad", ("c6i",)), status="INVALID", status_reason="subnets: not found"),
        ],
        CATALOG,
        NodeOverheadSettings().node_overhead(),
    )
    assert limits["off"].unavailable == "DISABLED"
    assert limits["bad"].unavailable == "INVALID (subnets: not found)"
