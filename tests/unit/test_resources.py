from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebb.resources import (
    QuantityError,
    Resources,
    cpu_millis,
    fmt_cpu,
    memory_bytes,
    pod_requests,
)


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("1", 1000),
        ("500m", 500),
        ("0.25", 250),
        ("1.5", 1500),
        ("2k", 2_000_000),
        ("100u", 1),
        ("1e3", 1_000_000),
        (2, 2000),
        (0.5, 500),
    ],
)
def test_cpu_quantities(text: str | int | float, millis: int) -> None:
    assert cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("128Mi", 128 * 2**20),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("1000", 1000),
        ("1.5Ki", 1536),
        ("1e6", 10**6),
        ("100m", 1),
    ],
)
def test_memory_quantities(text: str, value: int) -> None:
    assert memory_bytes(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", "5 Gi", "1Zi", "--1", "Mi"])
def test_bad_quantities_are_rejected_with_the_value(bad: str) -> None:
    with pytest.raises(QuantityError, match="not a quantity"):
        memory_bytes(bad)


def test_pod_requests_take_init_containers_sidecars_limits_and_overhead() -> None:
    spec = {
        "containers": [
            {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
            {"resources": {"limits": {"cpu": "500m", "memory": "512Mi", "nvidia.com/gpu": "1"}}},
        ],
        "initContainers": [
            {"resources": {"requests": {"cpu": "4", "memory": "256Mi"}}},
            {"restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
        ],
        "overhead": {"cpu": "50m"},
    }
    # app + sidecar = 1.6 CPU; the plain init container alone needs 4 CPU.
    assert pod_requests(spec) == Resources(4050, 1536 * 2**20, 1)


def test_shortfall_explains_what_does_not_fit() -> None:
    need, free = Resources(4000, 2**30, 1), Resources(1500, 2**31, 0)
    assert need.shortfall(free) == ["cpu: need 4, free 1.5", "gpu: need 1, free 0"]
    assert not need.fits_in(free)
    assert Resources(1500, 2**30, 0).fits_in(free)


resources = st.builds(Resources, st.integers(0, 10**6), st.integers(0, 10**12), st.integers(0, 16))


@given(resources, resources)
def test_addition_and_subtraction_are_inverse(a: Resources, b: Resources) -> None:
    assert (a + b) - b == a
    assert a.fits_in(a + b)


@given(st.integers(0, 10**7))
def test_cpu_format_round_trips(millis: int) -> None:
    assert cpu_millis(fmt_cpu(millis)) == millis


@given(st.integers(1, 10**7))
def test_cpu_format_of_a_negative_is_the_negated_positive(millis: int) -> None:
    # e.g. an over-committed environment's free room: -1500m is "-1.5", not "-2.5"
    assert fmt_cpu(-millis) == "-" + fmt_cpu(millis)
