from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict, Unpack

from hypothesis import given, settings
from hypothesis import strategies as st

from ebb.model import SchedulingPolicy, ShareWeight
from ebb.resources import Resources
from extender.jobs.admission import CapacityLimit, Demand, QueueView, admit
from extender.jobs.lifecycle import Code

GIB = 2**30


def cpu(n: float) -> Resources:
    return Resources(int(n * 1000), GIB, 0)


def cap(vcpus: int, gpus: int = 2**40) -> CapacityLimit:
    return CapacityLimit(Resources(vcpus * 1000, 2**60, gpus))


class DemandFields(TypedDict, total=False):
    """The Demand fields a test may set beyond `demand`'s own parameters."""

    granted: int
    share: str
    priority: int
    runnable_since: float
    elastic: bool
    bound: Mapping[str, int] | None
    exclusive: bool


def demand(
    key: str,
    queue: str = "q",
    n: float = 1,
    t: float = 0,
    want: int = 1,
    **kw: Unpack[DemandFields],
) -> Demand:
    return Demand(key=key, queue=queue, request=cpu(n), want=want, submitted=t, **kw)


def test_fifo_until_the_compute_environment_is_full() -> None:
    queues = {"q": QueueView("q", 1, ("ce",))}
    demands = [demand(f"j{i}", t=i) for i in range(6)]
    result = admit(queues, {"ce": cap(4)}, demands, now=0)
    assert set(result.grants) == {"j0", "j1", "j2", "j3"}
    assert result.waiting["j4"].code is Code.WAITING_FOR_CAPACITY
    assert result.waiting["j4"].position == 1
    assert result.waiting["j5"].position == 2
    assert "ce 4/4 vCPUs in use" in result.waiting["j4"].detail
    assert result.used["ce"].cpu_milli == 4000


def test_higher_priority_queue_goes_first_on_a_shared_environment() -> None:
    queues = {"low": QueueView("low", 1, ("ce",)), "high": QueueView("high", 10, ("ce",))}
    demands = [demand(f"l{i}", "low", t=i) for i in range(3)]
    demands += [demand(f"h{i}", "high", t=100 + i) for i in range(3)]
    result = admit(queues, {"ce": cap(4)}, demands, now=0)
    assert set(result.grants) == {"h0", "h1", "h2", "l0"}


def test_equal_priority_queues_take_turns() -> None:
    queues = {"a": QueueView("a", 5, ("ce",)), "b": QueueView("b", 5, ("ce",))}
    demands = [demand(f"a{i}", "a", t=i) for i in range(4)]
    demands += [demand(f"b{i}", "b", t=10 + i) for i in range(4)]
    result = admit(queues, {"ce": cap(4)}, demands, now=0)
    assert set(result.grants) == {"a0", "a1", "b0", "b1"}


def test_overflow_to_the_next_environment_in_order() -> None:
    queues = {"q": QueueView("q", 1, ("first", "second"))}
    demands = [demand(f"j{i}", t=i) for i in range(5)]
    result = admit(queues, {"first": cap(2), "second": cap(2)}, demands, now=0)
    assert len(result.grants) == 4
    assert result.used["first"].cpu_milli == 2000
    assert result.used["second"].cpu_milli == 2000


def test_small_jobs_backfill_around_a_big_one_until_it_starves() -> None:
    queues = {"q": QueueView("q", 1, ("ce",))}
    held = demand("running", n=3, granted=1, bound={"ce": 1})
    big = demand("big", n=4, t=1, runnable_since=1000)
    small = demand("small", n=1, t=2)
    fresh = admit(queues, {"ce": cap(4)}, [held, big, small], now=1100)
    assert "small" in fresh.grants
    assert fresh.waiting["big"].code is Code.WAITING_FOR_CAPACITY
    starved = admit(queues, {"ce": cap(4)}, [held, big, small], now=1000 + 600)
    assert "small" not in starved.grants
    assert starved.waiting["small"].code is Code.HEAD_OF_LINE
    assert "job big" in starved.waiting["small"].detail


def test_a_job_that_can_never_fit_does_not_block_anyone() -> None:
    queues = {"q": QueueView("q", 1, ("ce",))}
    demands = [demand("huge", n=128, t=0, runnable_since=-(10**6)), demand("small", t=1)]
    result = admit(queues, {"ce": cap(64)}, demands, now=0)
    assert result.waiting["huge"].code is Code.MAX_RESOURCE
    assert "can never run" in result.waiting["huge"].detail
    assert "small" in result.grants


def test_gpu_limit() -> None:
    queues = {"q": QueueView("q", 1, ("cpu-only",))}
    gpu_job = Demand("g", "q", Resources(1000, GIB, 1), want=1)
    result = admit(queues, {"cpu-only": cap(64, gpus=0)}, [gpu_job], now=0)
    assert result.waiting["g"].code is Code.MAX_RESOURCE


def test_unavailable_environments() -> None:
    queues = {"q": QueueView("q", 1, ("off", "gone"))}
    capacity = {"off": CapacityLimit(cpu(64), unavailable="DISABLED")}
    result = admit(queues, capacity, [demand("j")], now=0)
    assert result.waiting["j"].code is Code.NO_COMPUTE_ENVIRONMENT
    assert result.waiting["j"].detail == (
        "no usable compute environment in queue q: off is DISABLED; gone does not exist"
    )


def test_array_jobs_get_what_fits_and_grow_later() -> None:
    queues = {"q": QueueView("q", 1, ("ce",))}
    array = demand("arr", want=10, elastic=True)
    first = admit(queues, {"ce": cap(4)}, [array], now=0)
    assert first.grants == {"arr": 4}
    assert first.waiting["arr"].detail == "6 more pods wait for capacity in queue q"
    grown = admit(queues, {"ce": cap(6)}, [demand("arr", want=10, elastic=True, granted=4)], now=1)
    assert grown.grants == {"arr": 6}


def test_inelastic_demands_are_all_or_nothing() -> None:
    queues = {"q": QueueView("q", 1, ("ce",))}
    result = admit(queues, {"ce": cap(4)}, [demand("gang", want=5)], now=0)
    assert result.grants == {}


def policy(*weights: tuple[str, float], reservation: int = 0) -> SchedulingPolicy:
    return SchedulingPolicy(
        "p", compute_reservation=reservation, shares=tuple(ShareWeight(s, w) for s, w in weights)
    )


def test_fair_share_splits_by_inverse_weight() -> None:
    queues = {"q": QueueView("q", 1, ("ce",), policy(("a", 1.0), ("b", 2.0)))}
    demands = [demand(f"a{i}", share="a", t=i) for i in range(20)]
    demands += [demand(f"b{i}", share="b", t=i) for i in range(20)]
    result = admit(queues, {"ce": cap(12)}, demands, now=0)
    granted = [k[0] for k in result.grants]
    assert granted.count("a") == 8
    assert granted.count("b") == 4


def test_scheduling_priority_orders_jobs_within_a_share() -> None:
    queues = {"q": QueueView("q", 1, ("ce",), policy(("a", 1.0)))}
    demands = [
        demand("old", share="a", t=0, priority=1),
        demand("urgent", share="a", t=5, priority=9),
    ]
    result = admit(queues, {"ce": cap(1)}, demands, now=0)
    assert set(result.grants) == {"urgent"}


def test_compute_reservation_keeps_room_for_inactive_shares() -> None:
    queues = {"q": QueueView("q", 1, ("ce",), policy(("a", 1.0), reservation=50))}
    demands = [demand(f"a{i}", share="a", t=i) for i in range(10)]
    result = admit(queues, {"ce": cap(8)}, demands, now=0)
    assert len(result.grants) == 4  # 50% held while one share is active
    assert result.waiting["a4"].code is Code.FAIR_SHARE
    demands.append(demand("b0", share="b", t=100))
    result = admit(queues, {"ce": cap(8)}, demands, now=0)
    assert "b0" in result.grants  # a newly active share starts at once
    assert len(result.grants) == 6  # 25% held with two active shares


# --- properties ----------------------------------------------------------------------

demands_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),  # queue
        st.integers(1, 8),  # vCPUs
        st.integers(0, 3),  # already granted
        st.integers(1, 6),  # want
        st.booleans(),  # elastic
        st.sampled_from(["x", "y", "z"]),  # share
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(demands_strategy, st.integers(1, 40), st.integers(1, 40))
def test_never_admits_beyond_capacity(
    specs: list[tuple[str, int, int, int, bool, str]], cap1: int, cap2: int
) -> None:
    queues = {
        "a": QueueView("a", 3, ("ce1",)),
        "b": QueueView("b", 1, ("ce1", "ce2"), policy(("x", 1.0), ("y", 3.0))),
        "c": QueueView("c", 1, ("ce2",)),
    }
    capacity = {"ce1": cap(cap1), "ce2": cap(cap2)}
    demands = []
    for i, (queue, vcpus, granted, want, elastic, share) in enumerate(specs):
        demands.append(
            Demand(
                f"j{i}",
                queue,
                cpu(vcpus),
                want=max(want, granted),
                granted=0,
                share=share,
                submitted=i,
                elastic=elastic,
            )
        )
    result = admit(queues, capacity, demands, now=0)
    total_granted = sum(
        result.grants[d.key] * d.request.cpu_milli for d in demands if d.key in result.grants
    )
    assert total_granted <= (cap1 + cap2) * 1000
    for ce, used in result.used.items():
        assert used.cpu_milli <= capacity[ce].limit.cpu_milli
    for d in demands:
        assert (d.key in result.grants) or (d.key in result.waiting)
        if d.key in result.grants:
            assert result.grants[d.key] <= d.want
            if not d.elastic:
                assert result.grants[d.key] == d.want


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from([(1.0, 1.0), (1.0, 2.0), (1.0, 3.0), (0.5, 2.0), (2.0, 1.0)]),
    st.sampled_from([0, 60]),
)
def test_long_run_shares_converge_to_weights(weights: tuple[float, float], decay: int) -> None:
    """Two shares always have work; jobs run 10 ticks. Over time each share's vCPU-time
    approaches capacity × (1/w) / Σ(1/w)."""
    from extender.jobs import fairshare

    pol = SchedulingPolicy(
        "p",
        share_decay_seconds=decay,
        shares=(ShareWeight("a", weights[0]), ShareWeight("b", weights[1])),
    )
    running: list[tuple[str, str, int]] = []  # (key, share, ends at)
    used = {"a": 0.0, "b": 0.0}
    decayed: dict[str, float] = {}
    serial = 0
    for tick in range(600):
        running = [r for r in running if r[2] > tick]
        now_vcpus = {"a": 0.0, "b": 0.0}
        for _, share, _ in running:
            now_vcpus[share] += 1
        decayed = fairshare.advance(decayed, now_vcpus, 1.0, decay)
        waiting = []
        for share in ("a", "b"):
            for _ in range(12):
                serial += 1
                waiting.append(demand(f"{share}{serial}", share=share, t=serial))
        held = [
            Demand(k, "q", cpu(1), want=1, granted=1, share=s, bound={"ce": 1})
            for k, s, _ in running
        ]
        view = {"q": QueueView("q", 1, ("ce",), pol, decayed)}
        result = admit(view, {"ce": cap(12)}, held + waiting, now=tick)
        for d in waiting:
            if d.key in result.grants:
                running.append((d.key, d.share, tick + 10))
        if tick >= 100:
            for _, share, _ in running:
                used[share] += 1
    inverse = {"a": 1 / weights[0], "b": 1 / weights[1]}
    expected_a = inverse["a"] / (inverse["a"] + inverse["b"])
    actual_a = used["a"] / (used["a"] + used["b"])
    assert abs(actual_a - expected_a) <= 0.1 * expected_a + 0.02


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.integers(1, 3))
def test_no_starvation_of_a_big_job_under_a_stream_of_small_ones(big: int, small: int) -> None:
    queues = {"q": QueueView("q", 1, ("ce",))}
    running: list[tuple[str, int, int]] = []  # (key, vcpus, ends at)
    for tick in range(400):
        running = [r for r in running if r[2] > tick]
        held = [Demand(k, "q", cpu(v), want=1, granted=1, bound={"ce": 1}) for k, v, _ in running]
        smalls = [demand(f"s{tick}-{i}", n=small, t=1000 + tick * 10 + i) for i in range(3)]
        big_job = demand("big", n=big, t=0, runnable_since=0)
        result = admit(
            queues, {"ce": cap(8)}, [*held, big_job, *smalls], now=tick, starvation_seconds=30
        )
        if "big" in result.grants:
            assert tick <= 30 + 20  # admitted soon after it starts to starve
            return
        for d in smalls:
            if d.key in result.grants:
                running.append((d.key, small, tick + 7))
    raise AssertionError("the big job was never admitted")


def test_admitted_pods_not_bound_yet_hold_the_first_environment_with_room() -> None:
    # Three admitted jobs wait for a node: 2 + 2 vCPUs fill "first", the third spills to
    # "second", and the new jobs find 3 vCPUs left there, none in "first".
    queues = {"q": QueueView("q", 1, ("first", "second"))}
    limits = {"first": cap(4), "second": cap(5)}
    admitted = [demand(f"a{i}", n=2, t=i, granted=1) for i in range(3)]
    waiting = [demand("big", n=2, t=10), demand("small", n=1, t=11)]
    result = admit(queues, limits, admitted + waiting, now=0)
    assert result.used["first"].cpu_milli == 4000
    assert result.used["second"].cpu_milli == 2000 + 2000 + 1000
    assert result.grants == {"big": 1, "small": 1}
    assert result.running_vcpus == {"q": {"": 9.0}}


def test_the_oldest_group_of_admitted_pods_is_placed_first() -> None:
    # Pods of one request shape are placed together, the group with the oldest job first:
    # the 3-vCPU group (oldest job at t=0) takes "first"; the 2-vCPU pods go to "second".
    queues = {"q": QueueView("q", 1, ("first", "second"))}
    limits = {"first": cap(4), "second": cap(8)}
    admitted = [demand("old", n=3, t=0, granted=1)]
    admitted += [demand(f"two{i}", n=2, t=1 + i, granted=1) for i in range(2)]
    result = admit(queues, limits, admitted, now=0)
    assert result.used["first"].cpu_milli == 3000
    assert result.used["second"].cpu_milli == 4000


@settings(max_examples=150, deadline=None)
@given(
    jobs=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),  # queue
            st.sampled_from([1, 2, 3]),  # vCPUs per pod
            st.integers(0, 3),  # pods admitted
            st.integers(0, 3),  # of which bound
            st.integers(0, 2),  # pods more wanted
        ),
        max_size=25,
    ),
    first=st.integers(0, 12),
    second=st.integers(0, 30),
)
def test_admitted_pods_are_all_held_and_none_counted_twice(
    jobs: list[tuple[str, int, int, int, int]], first: int, second: int
) -> None:
    queues = {"a": QueueView("a", 1, ("first", "second")), "b": QueueView("b", 1, ("second",))}
    limits = {"first": cap(first), "second": cap(second)}
    demands = [
        demand(
            f"j{i}",
            queue,
            n=vcpus,
            t=i,
            granted=granted,
            want=granted + more,
            bound={"second": min(bound, granted)} if bound and granted else None,
        )
        for i, (queue, vcpus, granted, bound, more) in enumerate(jobs)
    ]
    result = admit(queues, limits, demands, now=0)
    held = sum(d.request.cpu_milli * d.granted for d in demands)
    new = sum(
        d.request.cpu_milli * (result.grants[d.key] - d.granted)
        for d in demands
        if d.key in result.grants
    )
    # Every admitted pod and every new grant is charged exactly once.
    assert sum(u.cpu_milli for u in result.used.values()) == held + new
    # New grants never overfill: a CE goes over its limit only by pods admitted before.
    if new:
        for ce, used in result.used.items():
            assert used.cpu_milli <= limits[ce].limit.cpu_milli or used.cpu_milli - held <= 0
    running = sum(v for shares in result.running_vcpus.values() for v in shares.values())
    assert abs(running * 1000 - (held + new)) < 1e-6
