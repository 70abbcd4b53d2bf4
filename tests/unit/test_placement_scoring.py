"""The pure placement decisions: filter verdicts with reasons, and scores."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from ebb import keys
from ebb.model import ComputeEnvironment, JobQueue, NodeInfo, PodInfo
from ebb.resources import ZERO, Resources
from extender.placement.scoring import (
    MAX_SCORE,
    FilterVerdict,
    NodeState,
    NodeTable,
    RejectKind,
    filter_nodes,
    node_state,
    score_nodes,
)
from tests.unit.placement_objects import environment, node, pod, queue

GIB = 2**30

ENVIRONMENTS = {
    "spot-a": environment("spot-a", spot=True),
    "ondemand-b": environment("ondemand-b"),
    "gpu-spot": environment("gpu-spot", spot=True),
    "off": environment("off", enabled=False),
}
QUEUES = {"high": queue("high", "spot-a", "ondemand-b", "off")}


def states(*nodes: NodeInfo, used: dict[str, Resources] | None = None) -> dict[str, NodeState]:
    return {n.name: node_state(n, (used or {}).get(n.name, ZERO)) for n in nodes}


def run_filter(
    p: PodInfo, nodes: dict[str, NodeState], names: list[str] | None = None
) -> FilterVerdict:
    return filter_nodes(p, list(nodes) if names is None else names, nodes, QUEUES, ENVIRONMENTS)


def scores(p: PodInfo, nodes: dict[str, NodeState]) -> dict[str, int]:
    return dict(score_nodes(p, list(nodes), nodes, QUEUES, ENVIRONMENTS))


# --- filter: examples ---------------------------------------------------------------------


def test_pod_without_queue_label_passes_through_untouched() -> None:
    nodes = states(node("plain"), node("batch", "gpu-spot"))
    verdict = run_filter(pod("web", None, cpu="100"), nodes, ["plain", "batch", "ghost"])
    assert verdict.kept == ["plain", "batch", "ghost"]
    assert verdict.failed == verdict.unresolvable == {}
    assert scores(pod("web", None), nodes) == {"plain": 0, "batch": 0}


def test_each_rejected_node_gets_a_short_reason() -> None:
    nodes = states(
        node("fits", "spot-a", cpu="4"),
        node("busy", "spot-a", cpu="4"),
        node("small", "ondemand-b", cpu="2"),
        node("gpu", "gpu-spot"),
        node("plain"),
        node("disabled", "off"),
        node("cordoned", "spot-a", unschedulable=True),
        node("draining", "spot-a", draining=True),
        node("orphan", "deleted-ce"),
        used={"busy": Resources(cpu_milli=2500)},
    )
    verdict = run_filter(pod("job", "high", cpu="3"), nodes, [*nodes, "ghost"])
    assert verdict.kept == ["fits"]
    assert verdict.failed == {
        "busy": "cpu: need 3, free 1.5",
        "ghost": "node not in ebb's cache yet",
    }
    assert verdict.unresolvable == {
        "small": "cpu: need 3, allocatable 2",
        "gpu": "ce gpu-spot not in queue high",
        "plain": "not a batch node (no ebb.dev/compute-environment label)",
        "disabled": "ce off is DISABLED",
        "cordoned": "node is cordoned",
        "draining": "node is being drained by ebb",
        "orphan": "ce deleted-ce not in queue high",
    }
    assert verdict.rejected == {
        RejectKind.INSUFFICIENT: 1,
        RejectKind.UNKNOWN_NODE: 1,
        RejectKind.TOO_SMALL: 1,
        RejectKind.NOT_IN_QUEUE: 2,
        RejectKind.NOT_BATCH_NODE: 1,
        RejectKind.CE_DISABLED: 1,
        RejectKind.CORDONED: 1,
        RejectKind.DRAINING: 1,
    }
    orphans = {"orphans": queue("orphans", "deleted-ce")}
    orphan = filter_nodes(pod("job", "orphans"), ["orphan"], nodes, orphans, ENVIRONMENTS)
    assert orphan.unresolvable == {"orphan": "ce deleted-ce does not exist"}


def test_every_missing_resource_is_named() -> None:
    nodes = states(
        node("n", "spot-a", cpu="4", memory="8Gi", gpu=1), used={"n": Resources(3000, 6 * GIB, 1)}
    )
    verdict = run_filter(pod("job", "high", cpu="2", memory="4Gi", gpu=1), nodes)
    assert verdict.failed == {
        "n": "cpu: need 2, free 1; memory: need 4Gi, free 2Gi; gpu: need 1, free 0"
    }


def test_unknown_queue_rejects_every_node_for_good() -> None:
    nodes = states(node("n", "spot-a"))
    verdict = run_filter(pod("job", "nope"), nodes, ["n", "ghost"])
    assert verdict.kept == []
    assert verdict.unresolvable == {
        "n": "queue nope does not exist",
        "ghost": "queue nope does not exist",
    }
    assert verdict.rejected == {RejectKind.UNKNOWN_QUEUE: 2}


def test_an_overcommitted_node_has_nothing_free_and_a_zero_request_still_fits() -> None:
    n = node("n", "spot-a", cpu="4", memory="8Gi")
    nodes = states(n, used={"n": Resources(cpu_milli=5000)})
    assert nodes["n"].free == Resources(0, 8 * GIB, 0)
    assert run_filter(pod("job", "high", cpu="1"), nodes).failed == {"n": "cpu: need 1, free 0"}
    assert run_filter(pod("job", "high", cpu=None, memory="1Gi"), nodes).kept == ["n"]


# --- prioritize: examples -----------------------------------------------------------------


def test_first_environment_in_the_queue_order_scores_highest() -> None:
    nodes = states(
        node("first-full", "spot-a", cpu="4"),
        node("first-empty", "spot-a", cpu="4"),
        node("second-empty", "ondemand-b", cpu="4", capacity_type="on-demand"),
        node("outside", "gpu-spot"),
        used={"first-full": Resources(cpu_milli=3000)},
    )
    got = scores(pod("job", "high", cpu="1"), nodes)
    assert got["first-full"] > got["first-empty"] > got["second-empty"]
    assert got["outside"] == 0
    # Two tiers present: the first CE's band is 5..10, the second's 0..4; cpu full and
    # memory idle is half used.
    assert got == {"first-full": 8, "first-empty": 6, "second-empty": 1, "outside": 0}


def test_bin_packing_prefers_the_fuller_node_within_an_environment() -> None:
    nodes = states(
        *(node(f"n{i}", "spot-a", cpu="10", memory="10Gi") for i in range(4)),
        used={f"n{i}": Resources(i * 3000, i * 3 * GIB) for i in range(4)},
    )
    got = scores(pod("job", "high", cpu="1", memory="1Gi"), nodes)
    assert [got[f"n{i}"] for i in range(4)] == [1, 4, 7, 10]


def test_cpu_work_stays_off_gpu_nodes_but_gpu_work_goes_there() -> None:
    nodes = states(
        node("cpu", "spot-a", capacity_type="spot"),
        node("gpu", "spot-a", gpu=4, capacity_type="spot"),
    )
    cpu_job = scores(pod("job", "high"), nodes)
    assert cpu_job["cpu"] > cpu_job["gpu"]
    gpu_job = scores(pod("job", "high", gpu=1), nodes)
    assert gpu_job["gpu"] > 0
    assert run_filter(pod("job", "high", gpu=1), nodes).kept == ["gpu"]


def test_capacity_type_annotation_beats_the_queue_order_and_spot_wins_by_default() -> None:
    both = queue("both", "ondemand-b", "spot-a")
    nodes = states(
        node("od", "ondemand-b", capacity_type="on-demand"),
        node("spot", "spot-a", capacity_type="spot"),
    )
    queues = {"both": both}

    def score(annotation: str | None) -> dict[str, int]:
        p = pod("job", "both", capacity_type=annotation)
        return dict(score_nodes(p, list(nodes), nodes, queues, ENVIRONMENTS))

    assert score("spot")["spot"] > score("spot")["od"]
    assert score("on-demand")["od"] > score("on-demand")["spot"]
    # Without an annotation the queue's order rules; Spot only breaks ties below it.
    assert score(None)["od"] > score(None)["spot"]
    same_ce = states(
        node("od", "ondemand-b", capacity_type="on-demand"),
        node("spot", "ondemand-b", capacity_type="spot"),
    )
    p = pod("job", "both")
    got = dict(score_nodes(p, list(same_ce), same_ce, queues, ENVIRONMENTS))
    assert got["spot"] > got["od"]


def test_node_without_capacity_label_takes_its_environments_type() -> None:
    nodes = states(node("s", "spot-a"), node("o", "ondemand-b"))
    queues = {"q": queue("q", "spot-a", "ondemand-b")}
    got = dict(
        score_nodes(
            pod("job", "q", capacity_type="on-demand"), list(nodes), nodes, queues, ENVIRONMENTS
        )
    )
    assert got["o"] > got["s"]


def test_more_tiers_than_scores_still_order_the_first_ten() -> None:
    order = [f"ce{i}" for i in range(13)]
    envs = {name: environment(name) for name in order}
    queues = {"wide": queue("wide", *order)}
    nodes = states(*(node(f"n{i}", name) for i, name in enumerate(order)))
    got = [s for _, s in score_nodes(pod("job", "wide"), list(nodes), nodes, queues, envs)]
    assert got == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0]


# --- properties -----------------------------------------------------------------------------

CE_NAMES = ("a", "b", "c", "d")


Scenario = tuple[
    PodInfo, list[str], dict[str, NodeState], dict[str, JobQueue], dict[str, ComputeEnvironment]
]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    envs = {
        name: environment(name, spot=draw(st.booleans()), enabled=draw(st.booleans()))
        for name in draw(st.sets(st.sampled_from(CE_NAMES)))
    }
    order = draw(st.lists(st.sampled_from(CE_NAMES), unique=True, min_size=1, max_size=3))
    queues = {"q": queue("q", *order)}
    nodes: dict[str, NodeState] = {}
    # At most 10 nodes: fewer tiers than scores, so every tier gets its own band.
    for i in range(draw(st.integers(0, 10))):
        info = node(
            f"n{i}",
            draw(st.sampled_from((*CE_NAMES, None))),
            cpu=f"{draw(st.integers(0, 16000))}m",
            memory=str(draw(st.integers(0, 64)) * GIB),
            gpu=draw(st.integers(0, 2)),
            capacity_type=draw(
                st.sampled_from((None, keys.CAPACITY_SPOT, keys.CAPACITY_ON_DEMAND))
            ),
            unschedulable=draw(st.booleans()),
            draining=draw(st.booleans()),
        )
        used = Resources(
            draw(st.integers(0, 20000)), draw(st.integers(0, 80)) * GIB, draw(st.integers(0, 3))
        )
        nodes[info.name] = node_state(info, used)
    p = pod(
        "job",
        draw(st.sampled_from(("q", "q", "q", "other", None))),
        cpu=f"{draw(st.integers(0, 8000))}m",
        memory=str(draw(st.integers(0, 16)) * GIB),
        gpu=draw(st.integers(0, 1)),
        capacity_type=draw(st.sampled_from((None, "spot", "on-demand", "cheap"))),
    )
    names = draw(st.lists(st.sampled_from([*nodes, "ghost1", "ghost2"]), unique=True))
    return p, names, nodes, queues, envs


def _fits(p: PodInfo, state: NodeState) -> bool:
    free = state.info.allocatable - state.used
    r = p.requests
    return all(
        need == 0 or need <= have
        for need, have in (
            (r.cpu_milli, free.cpu_milli),
            (r.memory, free.memory),
            (r.gpu, free.gpu),
        )
    )


@given(scenarios())
def test_filter_partitions_the_candidates_and_keeps_only_nodes_that_may_take_the_pod(
    scenario: Scenario,
) -> None:
    p, names, nodes, queues, envs = scenario
    verdict = filter_nodes(p, names, nodes, queues, envs)
    kept, failed, unresolvable = set(verdict.kept), set(verdict.failed), set(verdict.unresolvable)
    assert kept | failed | unresolvable == set(names)
    assert not (kept & failed or kept & unresolvable or failed & unresolvable)
    assert sum(verdict.rejected.values()) == len(failed) + len(unresolvable)
    if p.queue is None:
        assert verdict.kept == names
        return
    q = queues.get(p.queue)
    for name in verdict.kept:
        state = nodes[name]
        assert q is not None and state.info.compute_environment in q.compute_environments
        assert envs[state.info.compute_environment].enabled
        assert not state.info.unschedulable and not state.info.draining
        assert _fits(p, state), "a pod is never accepted where it does not fit"
    for name in verdict.failed:
        # Only "not now" reasons are resolvable: the node is unknown, or would fit if emptied.
        assert name not in nodes or p.requests.fits_in(nodes[name].info.allocatable)
    assert all(message for message in (*verdict.failed.values(), *verdict.unresolvable.values()))


@given(scenarios())
def test_filter_keeping_the_best_keeps_what_prioritize_scores_highest(scenario: Scenario) -> None:
    """One extender call instead of two: with best_only, filter keeps exactly the nodes
    that filter then prioritize scored highest (kube-scheduler's plugins chose among
    those before and still do), and rejects the same nodes for the same reasons."""
    p, names, nodes, queues, envs = scenario
    full = filter_nodes(p, names, nodes, queues, envs)
    best = filter_nodes(p, names, nodes, queues, envs, best_only=True)
    assert (best.failed, best.unresolvable, best.rejected) == (
        full.failed,
        full.unresolvable,
        full.rejected,
    )
    scored = score_nodes(p, full.kept, nodes, queues, envs)
    top = max((score for _, score in scored), default=0)
    assert best.kept == [name for name, score in scored if score == top]


@given(scenarios(), st.randoms(use_true_random=False))
def test_a_table_kept_through_changes_decides_as_a_fresh_one(
    scenario: Scenario, rng: random.Random
) -> None:
    """The placement cache's table reuses the rows of deleted nodes and rewrites rows in
    place: after any churn it gives the very verdicts and scores a plain dict gives."""
    p, names, nodes, queues, envs = scenario
    table = NodeTable(1)
    order = list(nodes)
    for _ in range(3):
        rng.shuffle(order)
        for name in order:
            table[name] = nodes[rng.choice(order)]  # another node's state, rewritten later
        for name in rng.sample(order, len(order) // 2):
            table.pop(name)
    for name in order:
        table[name] = nodes[name]
    assert dict(table) == nodes
    for best_only in (False, True):
        assert filter_nodes(p, names, table, queues, envs, best_only=best_only) == filter_nodes(
            p, names, nodes, queues, envs, best_only=best_only
        )
    assert score_nodes(p, names, table, queues, envs) == score_nodes(p, names, nodes, queues, envs)


def _tier_inputs(p: PodInfo, state: NodeState, q: JobQueue) -> tuple[int, bool, str | None]:
    info = state.info
    assert info.compute_environment is not None
    return (
        q.compute_environments.index(info.compute_environment),
        info.allocatable.gpu > 0,
        info.capacity_type,
    )


@given(scenarios())
def test_scores_are_0_to_10_in_candidate_order_and_respect_the_queue_order(scenario) -> None:  # type: ignore[no-untyped-def]
    p, names, nodes, queues, envs = scenario
    scored = score_nodes(p, names, nodes, queues, envs)
    assert [name for name, _ in scored] == names
    assert all(0 <= score <= MAX_SCORE for _, score in scored)
    q = queues.get(p.queue) if p.queue else None
    if q is None:
        assert all(score == 0 for _, score in scored)
        return
    score = dict(scored)
    eligible = [
        n
        for n in names
        if n in nodes and nodes[n].info.compute_environment in q.compute_environments
    ]
    assert all(score[n] == 0 for n in names if n not in eligible)
    for a in eligible:
        for b in eligible:
            rank_a, gpu_a, cap_a = _tier_inputs(p, nodes[a], q)
            rank_b, gpu_b, cap_b = _tier_inputs(p, nodes[b], q)
            if cap_a is None or cap_a != cap_b:
                # The capacity-type preference may outrank the order: compare like with like.
                continue
            if rank_a < rank_b:
                assert score[a] > score[b], "an earlier compute environment scores higher"
            if rank_a == rank_b and not p.requests.gpu and not gpu_a and gpu_b:
                assert score[a] > score[b], "CPU work prefers nodes without GPUs"


@given(scenarios(), st.integers(0, 8), st.integers(1, 8))
def test_within_one_tier_the_fuller_node_never_scores_lower(
    scenario: Scenario, extra_cpu: int, cpu: int
) -> None:
    p, _, _, queues, envs = scenario
    p = replace(p, queue="q", requests=Resources(cpu_milli=1000))
    ce = queues["q"].compute_environments[0]
    base = node("empty", ce, cpu=str(cpu + extra_cpu + 1), memory="8Gi", capacity_type="spot")
    nodes = {
        "empty": node_state(base, ZERO),
        "fuller": node_state(replace(base, name="fuller"), Resources(cpu_milli=extra_cpu * 1000)),
    }
    got = dict(score_nodes(p, ["empty", "fuller"], nodes, queues, envs))
    assert got["fuller"] >= got["empty"]
