"""The capacity planner, on the shipped catalog: type choice per strategy, bin-packing,
maxvCpus, minvCpus, overflow between environments, GPU/CPU separation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.environments import Unavailable, environment
from autoscaler.planner import (
    INSUFFICIENT_CAPACITY,
    MAX_VCPUS_REACHED,
    REASON_MIN_VCPUS,
    Environment,
    Launch,
    PendingPod,
    Room,
    plan_launches,
    routed_pods,
)
from ebb.catalog import NodeOverheadSettings, shipped_catalog
from ebb.model import ComputeEnvironment
from ebb.resources import MIB, Resources

CATALOG = shipped_catalog()
OVERHEAD = NodeOverheadSettings().node_overhead()
SUBNETS = {"subnet-a": "us-east-1a", "subnet-b": "us-east-1b"}
GI = 1024 * MIB


def ce(name: str = "ce", **spec: Any) -> ComputeEnvironment:
    fields: dict[str, Any] = {
        "type": "EC2",
        "max_vcpus": 256,
        "instance_types": ("c6i", "m6i", "r6i"),
        "subnets": tuple(SUBNETS),
        "security_group_ids": ("sg-1",),
        "instance_role": "ebb-node",
    }
    fields.update(spec)
    return ComputeEnvironment(name=name, **fields)


def env(
    spec: ComputeEnvironment,
    *,
    vcpus: int = 0,
    unavailable: Sequence[Unavailable] = (),
) -> Environment:
    return environment(spec, CATALOG, OVERHEAD, SUBNETS, set(unavailable), vcpus=vcpus, gpus=0)


def pods(
    n: int,
    cpu: int = 1000,
    memory: int = 2 * GI,
    gpu: int = 0,
    *,
    envs: tuple[str, ...] = ("ce",),
    p: str = "p",
) -> list[PendingPod]:
    return [PendingPod(f"ns/{p}{i}", Resources(cpu, memory, gpu), tuple(envs)) for i in range(n)]


def price(instance_type: str) -> float:
    t = CATALOG.get(instance_type)
    assert t is not None
    return t.on_demand_price


def by_type(launches: Sequence[Launch]) -> dict[str, int]:
    out: dict[str, int] = {}
    for launch in launches:
        out[launch.instance_type] = out.get(launch.instance_type, 0) + launch.count
    return out


def test_one_small_pod_gets_the_cheapest_type_that_fits() -> None:
    plan = plan_launches({"ce": env(ce())}, pods(1, cpu=500, memory=1 * GI))
    assert by_type(plan.launches) == {"c6i.large": 1}
    (launch,) = plan.launches
    assert launch.zones == ("us-east-1a", "us-east-1b")
    assert launch.pods == 1
    assert launch.reason == "pending-pods"


def test_memory_heavy_pod_goes_where_it_really_fits() -> None:
    # 16 GiB nominal is not 16 GiB usable: kube-reserved, eviction and the VM's share.
    plan = plan_launches({"ce": env(ce(instance_types=("m6i",)))}, pods(1, cpu=500, memory=15 * GI))
    assert by_type(plan.launches) == {"m6i.2xlarge": 1}


def test_many_pods_are_bin_packed_not_one_node_each() -> None:
    plan = plan_launches({"ce": env(ce(instance_types=("c6i",)))}, pods(100))
    vcpus = sum(launch.vcpus for launch in plan.launches)
    assert sum(launch.pods for launch in plan.launches) == 100
    assert 100 <= vcpus <= 112  # 100 pods of 1 vCPU: little waste
    assert not plan.waiting


def test_cpu_and_memory_heavy_pods_share_balanced_types() -> None:
    mix = pods(40, cpu=4000, memory=2 * GI, p="c") + pods(40, cpu=500, memory=14 * GI, p="m")
    plan = plan_launches({"ce": env(ce())}, mix)
    assert sum(launch.pods for launch in plan.launches) == 80
    cost = sum(price(x.instance_type) * x.count for x in plan.launches)
    # Separately: 160 vCPUs of c6i and 560 GiB of r6i cost about 6.8 + 9.5 $/h.
    assert cost < 16.0


def test_gpu_pods_only_on_nvidia_gpu_types_and_cpu_pods_never_on_gpu_types() -> None:
    spec = ce(instance_types=("c6i", "g4dn", "g4ad", "p3"))
    mix = pods(3, 2000, 8 * GI, 1, p="g") + pods(5, p="c")
    plan = plan_launches({"ce": env(spec)}, mix)
    types = by_type(plan.launches)
    gpu_types = {t for t in types if CATALOG.get(t).gpus}  # type: ignore[union-attr]
    assert gpu_types and all(t.startswith(("g4dn", "p3")) for t in gpu_types)
    assert any(t.startswith("c6i") for t in types)
    assert sum(x.pods for x in plan.launches if x.instance_type in gpu_types) == 3


def test_cpu_pod_in_a_gpu_only_environment_waits_saying_why() -> None:
    spec = ce(instance_types=("g4dn",))
    plan = plan_launches({"ce": env(spec)}, pods(1))
    assert plan.launches == ()
    assert plan.waiting == {
        "ns/p0": "ce has only GPU types that fit it; a pod without GPUs never launches one"
    }


def test_gpu_pod_with_no_gpu_type_waits_with_a_reason() -> None:
    plan = plan_launches({"ce": env(ce())}, pods(1, gpu=1))
    assert not plan.launches
    assert "no instance type of ce fits" in plan.waiting["ns/p0"]


def test_max_vcpus_is_never_exceeded_and_the_rest_waits() -> None:
    plan = plan_launches({"ce": env(ce(max_vcpus=16), vcpus=4)}, pods(40))
    assert sum(launch.vcpus for launch in plan.launches) <= 12
    assert plan.waiting
    assert all("maxvCpus 16 of ce reached" in r for r in plan.waiting.values())
    assert plan.blocked == {"ce": MAX_VCPUS_REACHED}  # its CapacityAvailable condition


def test_an_environment_whose_types_ec2_has_no_capacity_for_is_blocked() -> None:
    gone = [Unavailable(t, z, "on-demand") for t in ("c6i.large",) for z in SUBNETS.values()]
    spec = ce(instance_types=("c6i.large",))
    plan = plan_launches({"ce": env(spec, unavailable=gone)}, pods(1, cpu=500, memory=GI))
    assert plan.blocked == {"ce": INSUFFICIENT_CAPACITY}
    # A pod that no type fits is the pod's problem, not the environment's capacity.
    assert plan_launches({"ce": env(spec)}, pods(1, cpu=64000)).blocked == {}


def test_higher_priority_pods_get_the_budget_first() -> None:
    low = [PendingPod(f"ns/low{i}", Resources(1000, GI), ("ce",), priority=1) for i in range(8)]
    high = [PendingPod(f"ns/hi{i}", Resources(1000, GI), ("ce",), priority=9) for i in range(8)]
    plan = plan_launches({"ce": env(ce(max_vcpus=8))}, low + high)
    assert all(f"ns/low{i}" in plan.waiting for i in range(8))
    assert sum(launch.pods for launch in plan.launches) == 16 - len(plan.waiting) >= 6


def test_overflow_to_the_next_environment_in_queue_order() -> None:
    envs = {
        "first": env(ce("first", max_vcpus=8, instance_types=("c6i",))),
        "second": env(ce("second", max_vcpus=64, instance_types=("c6i",))),
    }
    plan = plan_launches(envs, pods(20, envs=("first", "second")))
    per_env: dict[str, int] = {}
    for launch in plan.launches:
        per_env[launch.environment] = per_env.get(launch.environment, 0) + launch.pods
    assert per_env["first"] >= 4 and per_env["first"] + per_env["second"] == 20
    assert sum(x.vcpus for x in plan.launches if x.environment == "first") <= 8


def test_pending_pods_count_on_their_first_environment_until_a_plan_spills_them() -> None:
    waiting = pods(3, envs=("first", "second")) + pods(2, envs=("second",), p="q")
    assert routed_pods(waiting) == {"first": 3, "second": 2}
    assert routed_pods(pods(1, envs=())) == {}
    full = {"first": env(ce("first", max_vcpus=0)), "second": env(ce("second"))}
    # The plan adds the pods that the full first environment leaves to the second.
    assert plan_launches(full, waiting).pending == {"first": 3, "second": 5}
    # No pod pending: nothing is, anywhere (the status then reads 0, not its last value).
    assert routed_pods([]) == {} and plan_launches(full, []).pending == {}


def test_disabled_or_invalid_environment_launches_nothing() -> None:
    disabled = env(ce(state="DISABLED", min_vcpus=4))
    invalid = env(ce("bad", subnets=()))
    assert invalid.problem == "subnets: at least one subnet is required"
    plan = plan_launches({"ce": disabled, "bad": invalid}, pods(2) + pods(2, envs=("bad",), p="b"))
    assert plan.launches == ()
    assert plan.waiting["ns/p0"] == "compute environment ce is DISABLED"
    assert "is INVALID: subnets" in plan.waiting["ns/b0"]


def test_existing_room_is_used_before_launching() -> None:
    room = [
        Room("ce", Resources(4000, 16 * GI), 100, "node-a"),
        Room("ce", Resources(500, 16 * GI), 100, "too-small"),
        Room("ce", Resources(4000, 16 * GI), 100),  # booting: not a node yet
    ]
    plan = plan_launches({"ce": env(ce())}, pods(10), room)
    assert plan.on_existing == 8  # 8 vCPUs free, 1 vCPU each
    assert sum(launch.pods for launch in plan.launches) == 2
    # The node the pods are expected on (it must not scale down meanwhile).
    assert plan.awaited_nodes == {"node-a"}


def test_cpu_pods_do_not_count_room_on_gpu_nodes() -> None:
    room = [Room("ce", Resources(8000, 32 * GI, 1), 100)]
    plan = plan_launches({"ce": env(ce())}, pods(1), room)
    assert plan.on_existing == 0 and len(plan.launches) == 1


def test_min_vcpus_are_kept_warm_at_the_lowest_cost() -> None:
    plan = plan_launches({"ce": env(ce(min_vcpus=8, max_vcpus=64))}, [])
    assert sum(launch.vcpus for launch in plan.launches) == 8
    spot = ce(type="SPOT", instance_types=("c6i",), min_vcpus=2, max_vcpus=64)
    # c6i.16xlarge has the cheapest Spot vCPU, but 2 vCPUs cost least as one c6i.large.
    assert by_type(plan_launches({"ce": env(spot)}, []).launches) == {"c6i.large": 1}
    assert all(launch.reason == REASON_MIN_VCPUS for launch in plan.launches)
    assert plan_launches({"ce": env(ce(min_vcpus=8), vcpus=8)}, []).launches == ()


def test_best_fit_progressive_falls_back_when_the_first_choice_is_unavailable() -> None:
    gone = [Unavailable("c6i.large", z, "on-demand") for z in SUBNETS.values()]
    spec = ce(instance_types=("c6i.large", "m6i.large"))
    plan = plan_launches({"ce": env(spec, unavailable=gone)}, pods(1, cpu=500, memory=GI))
    assert by_type(plan.launches) == {"m6i.large": 1}


def test_best_fit_waits_instead_of_falling_back() -> None:
    gone = [Unavailable("c6i.large", z, "on-demand") for z in SUBNETS.values()]
    spec = ce(instance_types=("c6i.large", "m6i.large"), allocation_strategy="BEST_FIT")
    plan = plan_launches({"ce": env(spec, unavailable=gone)}, pods(1, cpu=500, memory=GI))
    assert plan.launches == ()
    assert "BEST_FIT waits for c6i.large" in plan.waiting["ns/p0"]
    assert plan.blocked == {"ce": INSUFFICIENT_CAPACITY}


def test_unavailable_zone_is_left_out_of_the_launch() -> None:
    gone = [Unavailable("c6i.large", "us-east-1a", "on-demand")]
    plan = plan_launches({"ce": env(ce(), unavailable=gone)}, pods(1, cpu=500, memory=GI))
    assert plan.launches[0].zones == ("us-east-1b",)


def test_spot_capacity_optimized_prefers_low_interruption_types() -> None:
    spec = ce(
        type="SPOT", instance_types=("c6i", "c7i"), allocation_strategy="SPOT_CAPACITY_OPTIMIZED"
    )
    plan = plan_launches({"ce": env(spec)}, pods(50))
    buckets = {CATALOG.get(t).interruption_bucket for t in by_type(plan.launches)}  # type: ignore[union-attr]
    assert buckets <= {0, 1}


def test_capacity_optimized_launches_within_a_small_max_vcpus() -> None:
    # The quietest pools are big types: above maxvCpus they can never be launched, so a
    # smaller type is, instead of nothing (an imported `optimal` Spot environment of 16
    # vCPUs launched nothing for a 1-vCPU pod).
    for families in (("optimal",), ("c6i", "m6i")):
        spec = ce(
            type="SPOT",
            instance_types=families,
            max_vcpus=16,
            allocation_strategy="SPOT_CAPACITY_OPTIMIZED",
        )
        plan = plan_launches({"ce": env(spec)}, pods(1, memory=GI))
        assert plan.waiting == {}, families
        assert plan.blocked == {}
        assert sum(launch.vcpus for launch in plan.launches) <= 16


def test_a_pod_only_types_above_the_budget_fit_waits_for_max_vcpus() -> None:
    spec = ce(instance_types=("c6i.large", "c6i.4xlarge"), max_vcpus=8)
    plan = plan_launches({"ce": env(spec)}, pods(1, cpu=6000, memory=GI))
    assert plan.launches == ()
    assert plan.waiting == {"ns/p0": "maxvCpus 8 of ce reached"}


def test_spot_price_capacity_optimized_weighs_price_with_risk() -> None:
    spec = ce(
        type="SPOT",
        instance_types=("c6i", "c7i"),
        allocation_strategy="SPOT_PRICE_CAPACITY_OPTIMIZED",
    )
    plan = plan_launches({"ce": env(spec)}, pods(50))
    for t in by_type(plan.launches):
        assert CATALOG.get(t).interruption_bucket != 4  # type: ignore[union-attr]


def test_bid_percentage_leaves_out_types_spot_would_not_fill() -> None:
    spec = ce(type="SPOT", instance_types=("c6i.large", "c6i.xlarge"), bid_percentage=38)
    e = env(spec)
    # c6i.large saves 63 % (37 % of On-Demand), c6i.xlarge 60 % (40 %).
    assert [o.name for o in e.offerings] == ["c6i.large"]


# --- properties -------------------------------------------------------------------------

shapes = st.tuples(
    st.sampled_from([250, 500, 1000, 2000, 3500, 8000, 30000]),
    st.sampled_from([256, 1024, 2048, 6144, 15000, 60000, 200000]),
    st.sampled_from([0, 0, 0, 1, 2, 4]),
    st.integers(1, 25),
)
families = st.lists(
    st.sampled_from(["c6i", "m6i", "r6i", "c7i", "g4dn", "g5", "p3", "t3", "g4ad"]),
    min_size=1,
    max_size=4,
    unique=True,
)


@settings(max_examples=120, deadline=None)
@given(
    st.lists(shapes, min_size=1, max_size=6),
    families,
    st.integers(1, 400),
    st.integers(0, 40),
    st.sampled_from(
        [
            "BEST_FIT",
            "BEST_FIT_PROGRESSIVE",
            "SPOT_CAPACITY_OPTIMIZED",
            "SPOT_PRICE_CAPACITY_OPTIMIZED",
        ]
    ),
)
def test_plans_respect_limits_and_every_pod_placed_fits(
    pod_shapes: list[tuple[int, int, int, int]],
    instance_families: list[str],
    max_vcpus: int,
    running: int,
    strategy: str,
) -> None:
    min_vcpus = min(max_vcpus, 8)
    spec = ce(
        type="SPOT",
        instance_types=tuple(instance_families),
        max_vcpus=max_vcpus,
        min_vcpus=min_vcpus,
        allocation_strategy=strategy,
    )
    e = env(spec, vcpus=min(running, max_vcpus))
    pending = [
        PendingPod(f"ns/s{j}-{i}", Resources(cpu, mem * MIB, gpu), ("ce",))
        for j, (cpu, mem, gpu, n) in enumerate(pod_shapes)
        for i in range(n)
    ]
    plan = plan_launches({"ce": e}, pending)
    total = e.vcpus + sum(launch.vcpus for launch in plan.launches)
    if e.problem is None:
        assert total <= max_vcpus  # never above maxvCpus
    else:
        assert plan.launches == ()
    placed = sum(launch.pods for launch in plan.launches)
    assert placed + len(plan.waiting) == len(pending)
    for launch in plan.launches:
        t = CATALOG.get(launch.instance_type)
        assert t is not None
        assert launch.vcpus == t.vcpus * launch.count
        assert launch.zones
        assert launch.pods or launch.reason == REASON_MIN_VCPUS
    budget = max_vcpus - e.vcpus
    if e.problem is None and any(
        o.vcpus <= budget
        and p.requests.fits_in(o.usable)
        and (o.instance_type.nvidia_gpus > 0 if p.requests.gpu else o.instance_type.gpus == 0)
        for o in e.offerings
        for p in pending
    ):
        assert placed, "a pod fits a type within maxvCpus, yet nothing was launched"
    smallest = min((o.vcpus for o in e.offerings), default=0)
    if e.problem is None and smallest:
        # minvCpus kept, unless the next instance would break maxvCpus.
        assert total >= min_vcpus or total + smallest > max_vcpus


@settings(max_examples=80, deadline=None)
@given(st.lists(shapes, min_size=1, max_size=5), families)
def test_every_pod_placed_fits_its_instance(
    pod_shapes: list[tuple[int, int, int, int]], instance_families: list[str]
) -> None:
    spec = ce(instance_types=tuple(instance_families), max_vcpus=100000)
    pending = [
        PendingPod(f"ns/s{j}-{i}", Resources(cpu, mem * MIB, gpu), ("ce",))
        for j, (cpu, mem, gpu, n) in enumerate(pod_shapes)
        for i in range(n)
    ]
    plan = plan_launches({"ce": env(spec)}, pending)
    for launch in plan.launches:
        t = CATALOG.get(launch.instance_type)
        assert t is not None
        total = Resources()
        for size, n in launch.per_instance:
            total += size * n
            assert bool(size.gpu) == bool(t.gpus)  # GPU pods on GPU types only, and back
        assert total.fits_in(OVERHEAD.usable(t))
        assert sum(n for _, n in launch.per_instance) <= OVERHEAD.max_pods
        assert launch.pods == launch.count * sum(n for _, n in launch.per_instance)
    placed = sum(launch.pods for launch in plan.launches)
    assert placed + len(plan.waiting) == len(pending)


# --- multi-node jobs (gangs): exclusive pods, all or nothing ---------------------------


def gang(
    n: int, cpu: int = 1000, memory: int = 2 * GI, *, job: str = "ns/train", priority: int = 0
) -> list[PendingPod]:
    return [
        PendingPod(
            f"{job}-{i}",
            Resources(cpu, memory),
            ("ce",),
            priority,
            exclusive=True,
            job=job,
        )
        for i in range(n)
    ]


def test_a_gang_of_small_pods_gets_an_instance_per_pod() -> None:
    plan = plan_launches({"ce": env(ce())}, gang(4, memory=GI))
    (launch,) = plan.launches
    # The cheapest type that holds one: several would fit a larger one, but a gang pod
    # takes a node to itself.
    assert (launch.instance_type, launch.count, launch.pods) == ("c6i.large", 4, 4)
    assert launch.per_instance == ((Resources(1000, GI), 1),)
    assert launch.reason == "multi-node-job" and launch.detail == "multi-node job ns/train"
    assert launch.zones == ("us-east-1a", "us-east-1b")  # one launch; the ledger picks one
    assert not plan.waiting


def test_a_gang_pod_takes_only_empty_room_and_nothing_goes_beside_it() -> None:
    room = [
        Room("ce", Resources(4000, 16 * GI), 100, "busy", zone="us-east-1b"),  # a Job's pod
        Room("ce", Resources(4000, 16 * GI), 100, "empty", empty=True, zone="us-east-1b"),
        Room("ce", Resources(4000, 16 * GI), 100, empty=True, zone="us-east-1b"),  # booting
    ]
    plan = plan_launches({"ce": env(ce())}, [*gang(3), *pods(2)], room)
    # Two gang pods on the empty node and the booting instance, the plain pods beside
    # the busy node's pod (not beside a gang pod), one new instance for the third.
    assert plan.on_existing == 4
    assert plan.awaited_nodes == {"busy", "empty"}
    (launch,) = plan.launches
    assert (launch.count, launch.detail) == (1, "multi-node job ns/train")
    assert launch.zones == ("us-east-1b",)  # beside the gang's other two
    # With no empty room, plain pods are not put beside gang pods on new instances.
    plan = plan_launches({"ce": env(ce())}, [*gang(2), *pods(3, cpu=250)])
    for launch in plan.launches:
        assert launch.detail == "" or launch.per_instance == ((Resources(1000, 2 * GI), 1),)


def test_a_gang_is_planned_whole_or_not_at_all() -> None:
    # maxvCpus 6: three c6i.large, not the four the gang needs beside the empty node.
    # The gang waits whole and takes none of that room; the plain pod behind it does.
    room = [Room("ce", Resources(4000, 16 * GI), 100, "empty", empty=True, zone="us-east-1a")]
    e = env(ce(max_vcpus=6))
    plan = plan_launches({"ce": e}, [*gang(5, priority=1), *pods(1)], room)
    assert plan.launches == () and plan.on_existing == 1 and plan.awaited_nodes == {"empty"}
    assert set(plan.waiting) == {f"ns/train-{i}" for i in range(5)}
    assert set(plan.waiting.values()) == {"maxvCpus 6 of ce reached"}
    # A pod of higher priority gets its room first; the gang still waits whole.
    plan = plan_launches({"ce": e}, [*pods(1, cpu=2000, memory=4 * GI), *gang(3, priority=-1)])
    assert sum(launch.pods for launch in plan.launches) == 1
    assert set(plan.waiting) == {f"ns/train-{i}" for i in range(3)}


def test_a_gang_overflows_whole_to_the_next_environment() -> None:
    envs = {"a": env(ce("a", max_vcpus=4)), "b": env(ce("b"))}
    pending = [dataclasses.replace(p, environments=("a", "b")) for p in gang(3)]
    plan = plan_launches(envs, pending)
    assert [(x.environment, x.count) for x in plan.launches] == [("b", 3)]


def test_a_gang_refused_for_insufficient_capacity_moves_on_whole() -> None:
    """Next zone, then next type, then next environment: each time one launch for all
    of it (EC2 launches it all or none), and nothing of it is left waiting."""
    pending = [dataclasses.replace(p, environments=("a", "b")) for p in gang(3, memory=GI)]
    spec_a, spec_b = (
        ce("a", instance_types=("c6i.large", "m6i.large")),
        ce("b", instance_types=("r6i",)),
    )
    refused: list[Unavailable] = []
    tried = []
    for _ in range(5):
        envs = {"a": env(spec_a, unavailable=refused), "b": env(spec_b, unavailable=refused)}
        plan = plan_launches(envs, pending)
        (launch,) = plan.launches
        assert (launch.count, launch.pods, launch.reason) == (3, 3, "multi-node-job")
        assert not plan.waiting
        zone = launch.zones[0]  # the ledger sends it to one of them; say the first
        tried.append((launch.environment, launch.instance_type, zone))
        refused.append(Unavailable(launch.instance_type, zone, "on-demand"))
    assert tried == [
        ("a", "c6i.large", "us-east-1a"),
        ("a", "c6i.large", "us-east-1b"),
        ("a", "m6i.large", "us-east-1a"),
        ("a", "m6i.large", "us-east-1b"),
        ("b", "r6i.large", "us-east-1a"),
    ]


def test_a_gang_on_existing_room_takes_it_in_one_zone_and_launches_the_rest_there() -> None:
    def empty(node: str, zone: str) -> Room:
        return Room("ce", Resources(4000, 16 * GI), 100, node, empty=True, zone=zone)

    room = [empty("a1", "us-east-1a"), empty("b1", "us-east-1b"), empty("b2", "us-east-1b")]
    plan = plan_launches({"ce": env(ce())}, gang(4), room)
    assert plan.awaited_nodes == {"b1", "b2"}  # the zone with the most of it
    (launch,) = plan.launches
    assert (launch.count, launch.zones, launch.reason) == (2, ("us-east-1b",), "multi-node-job")
    # No capacity left in that zone for any type that fits: the other zone holds the
    # gang (its one empty node and three launches there).
    refused = [Unavailable(t, "us-east-1b", "on-demand") for t in ("c6i.large", "m6i.large")]
    spec = ce(instance_types=("c6i.large", "m6i.large"))
    plan = plan_launches({"ce": env(spec, unavailable=refused)}, gang(4), room)
    assert plan.awaited_nodes == {"a1"}
    (launch,) = plan.launches
    assert (launch.count, launch.zones) == (3, ("us-east-1a",))
    # No capacity in either zone: the gang waits whole, and the room it would have taken
    # is left to scale-down (no idle node is held for it; once those nodes are gone it
    # launches anew, in one zone).
    refused += [Unavailable(t, "us-east-1a", "on-demand") for t in ("c6i.large", "m6i.large")]
    plan = plan_launches({"ce": env(spec, unavailable=refused)}, gang(4), room)
    assert plan.launches == () and not plan.awaited_nodes and plan.on_existing == 0
    assert set(plan.waiting.values()) == {
        "no capacity available for it in ce (insufficient capacity)"
    }
    # Room of unknown zone is never a gang's.
    plan = plan_launches({"ce": env(ce())}, gang(2), [empty("x", "")])
    assert plan.on_existing == 0 and plan.launches[0].count == 2


def test_a_gang_on_existing_room_stays_in_one_environment() -> None:
    """Empty room in the same zone of two environments, a and then b, holds the gang
    only together: it takes a's (the first) and launches the rest in a, in that zone,
    never b's room beside it (the extender's filter places a gang in one (CE, zone))."""

    def empty(environment: str, node: str) -> Room:
        return Room(environment, Resources(4000, 16 * GI), 100, node, empty=True, zone="us-east-1b")

    room = [empty("a", "a1"), empty("b", "b1"), empty("b", "b2")]
    pending = [dataclasses.replace(p, environments=("a", "b")) for p in gang(3)]
    plan = plan_launches({"a": env(ce("a")), "b": env(ce("b"))}, pending, room)
    assert plan.awaited_nodes == {"a1"}
    (launch,) = plan.launches
    assert (launch.environment, launch.count, launch.zones) == ("a", 2, ("us-east-1b",))


def two_environment_gang(n: int) -> list[PendingPod]:
    return [dataclasses.replace(p, environments=("a", "b")) for p in gang(n, memory=GI)]


def warm(environment: str, node: str, zone: str = "us-east-1a") -> Room:
    """An empty c6i.large that minvCpus keeps (room for one 1-vCPU gang pod)."""
    return Room(environment, Resources(1780, 2023 * MIB), 27, node, empty=True, zone=zone)


def test_a_gang_passes_over_an_environment_at_max_vcpus_whatever_empty_room_it_has() -> None:
    """a: one warm node (minvCpus 2 = maxvCpus 2) where one pod of the gang would fit, and
    nothing more to launch; b can launch the whole gang. It goes to b, whole: a cannot
    hold it, and its warm node is not taken (AWS Batch runs a multi-node job's nodes in
    one environment, trying them in order)."""
    envs = {"a": env(ce("a", max_vcpus=2, min_vcpus=2), vcpus=2), "b": env(ce("b"))}
    plan = plan_launches(envs, two_environment_gang(2), [warm("a", "warm-a")])
    assert [(x.environment, x.count, x.pods) for x in plan.launches] == [("b", 2, 2)]
    assert plan.launches[0].reason == "multi-node-job"
    assert not plan.waiting and plan.on_existing == 0 and not plan.awaited_nodes
    assert "a" not in plan.blocked  # a launches nothing for it: nothing waits on a
    assert plan.pending == {"a": 2, "b": 2}  # routed to a first, then b (as overflow is)


def test_a_gang_stays_in_the_first_environment_when_its_headroom_holds_the_rest() -> None:
    """a: maxvCpus 4, a warm c6i.large (2 vCPUs) empty. Room for one more c6i.large: a
    gang of 2 takes the warm node and launches one beside it in its zone; a gang of 3
    does not fit a (1 + 1), and goes to b whole."""
    envs = {"a": env(ce("a", max_vcpus=4, min_vcpus=2), vcpus=2), "b": env(ce("b"))}
    plan = plan_launches(envs, two_environment_gang(2), [warm("a", "warm-a")])
    assert plan.awaited_nodes == {"warm-a"}
    assert [(x.environment, x.count, x.zones) for x in plan.launches] == [("a", 1, ("us-east-1a",))]
    plan = plan_launches(envs, two_environment_gang(3), [warm("a", "warm-a")])
    assert not plan.awaited_nodes and not plan.waiting
    assert [(x.environment, x.count) for x in plan.launches] == [("b", 3)]


def test_a_gang_takes_a_later_environments_empty_nodes_that_hold_it_whole() -> None:
    """Nodes already up first (decision 0010), as the extender's filter places it: b's
    two empty nodes hold the gang, a would need a launch beside its one."""
    envs = {"a": env(ce("a")), "b": env(ce("b"))}
    room = [warm("a", "a1"), warm("b", "b1", "us-east-1b"), warm("b", "b2", "us-east-1b")]
    plan = plan_launches(envs, two_environment_gang(2), room)
    assert plan.launches == () and plan.awaited_nodes == {"b1", "b2"}


def test_a_gang_no_environment_holds_waits_saying_why_in_each() -> None:
    envs = {
        "a": env(ce("a", max_vcpus=2, min_vcpus=2), vcpus=2),
        "b": env(ce("b", max_vcpus=2)),
    }
    plan = plan_launches(envs, two_environment_gang(2), [warm("a", "warm-a")])
    assert plan.launches == () and plan.on_existing == 0 and not plan.awaited_nodes
    assert set(plan.waiting.values()) == {"a: maxvCpus 2 of a reached; b: maxvCpus 2 of b reached"}
    assert plan.blocked == {"a": MAX_VCPUS_REACHED, "b": MAX_VCPUS_REACHED}


def test_two_gangs_do_not_count_the_same_headroom() -> None:
    """a: two warm c6i.large, empty, and room under maxvCpus for one more. The first gang
    (2 pods) takes a warm node and that headroom; the second, which a's other warm node
    would also take, goes to b rather than being pinned to a and waiting there."""
    envs = {"a": env(ce("a", max_vcpus=6), vcpus=4), "b": env(ce("b"))}
    first = two_environment_gang(2)
    second = [dataclasses.replace(p, key=f"{p.key}-2", job="ns/second") for p in first]
    room = [warm("a", "a1"), warm("a", "a2", "us-east-1b")]
    plan = plan_launches(envs, [*first, *second], room)
    assert sorted((x.environment, x.count) for x in plan.launches) == [("a", 1), ("b", 2)]
    assert not plan.waiting


gangs = st.lists(
    st.tuples(
        st.sampled_from([250, 1000, 2000, 3500, 30000]),
        st.sampled_from([256, 2048, 15000]),
        st.sampled_from([0, 0, 1]),
        st.integers(1, 8),
    ),
    max_size=3,
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(shapes, max_size=4),
    gangs,
    st.lists(
        st.tuples(st.sampled_from([1000, 4000, 16000]), st.booleans(), st.sampled_from("ab")),
        max_size=6,
    ),
    families,
    st.integers(1, 200),
)
def test_gang_pods_never_share_an_instance_and_gangs_are_never_planned_in_part(
    pod_shapes: list[tuple[int, int, int, int]],
    gang_shapes: list[tuple[int, int, int, int]],
    rooms: list[tuple[int, bool, str]],
    instance_families: list[str],
    max_vcpus: int,
) -> None:
    spec = ce(instance_types=tuple(instance_families), max_vcpus=max_vcpus)
    plain = [
        PendingPod(f"ns/s{j}-{i}", Resources(cpu, mem * MIB, gpu), ("ce",))
        for j, (cpu, mem, gpu, n) in enumerate(pod_shapes)
        for i in range(n)
    ]
    # A gang pod's memory is one byte off any plain pod's: a launch's sizes tell them apart.
    gang_pods = [
        PendingPod(
            f"ns/g{j}-{i}", Resources(cpu, mem * MIB + 1, gpu), ("ce",), exclusive=True, job=f"g{j}"
        )
        for j, (cpu, mem, gpu, n) in enumerate(gang_shapes)
        for i in range(n)
    ]
    room = [
        Room("ce", Resources(cpu, 64 * GI), 100, f"n{i}", empty, f"us-east-1{zone}")
        for i, (cpu, empty, zone) in enumerate(rooms)
    ]
    plan = plan_launches({"ce": env(spec)}, [*gang_pods, *plain], room)
    launched_gang_pods = 0
    for launch in plan.launches:
        exclusive = [size for size, _ in launch.per_instance if size.memory % MIB]
        if exclusive:  # one gang pod per instance, nothing beside it
            assert launch.per_instance == ((exclusive[0], 1),) and launch.detail
            assert launch.reason == "multi-node-job"
            launched_gang_pods += launch.pods
        assert sum(x.vcpus for x in plan.launches) <= max_vcpus
    for j in range(len(gang_shapes)):
        keys = {p.key for p in gang_pods if p.key.startswith(f"ns/g{j}-")}
        assert keys <= plan.waiting.keys() or not keys & plan.waiting.keys()
    waiting_gang_pods = sum(1 for k in plan.waiting if k.startswith("ns/g"))
    gang_on_room = len(gang_pods) - waiting_gang_pods - launched_gang_pods
    assert 0 <= gang_on_room <= sum(1 for _, empty, _ in rooms if empty)
    placed = sum(x.pods for x in plan.launches)
    assert placed + plan.on_existing + len(plan.waiting) == len(plain) + len(gang_pods)
