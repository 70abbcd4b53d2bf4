"""Multi-node jobs (gangs): annotation parsing, all-or-nothing admission, node-exclusive
placement."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.environments import environment as planner_environment
from autoscaler.planner import Environment, PendingPod, Room, plan_launches
from ebb import keys
from ebb.catalog import NodeOverheadSettings, shipped_catalog
from ebb.gang_site import Site, choose_site
from ebb.jobspec import MultiNode, SpecError, parse_job_spec
from ebb.model import ComputeEnvironment
from ebb.resources import ZERO, Resources
from extender.jobs.admission import CapacityLimit, Demand, NodeShape, QueueView, admit
from extender.jobs.lifecycle import Code
from extender.placement.scoring import (
    FilterVerdict,
    NodeState,
    RejectKind,
    filter_nodes,
    node_state,
)
from tests.unit.placement_objects import environment, node, pod, queue

GIB = 2**30


@pytest.mark.parametrize(
    ("annotations", "error"),
    [
        ({keys.NODES: "four"}, "ebb.dev/nodes: 'four' is not an integer (allowed: 1-1000)"),
        ({keys.NODES: "0"}, "ebb.dev/nodes: 0 is out of range (allowed: 1-1000)"),
        ({keys.MAIN_NODE_INDEX: "1"}, "ebb.dev/main-node-index: needs ebb.dev/nodes"),
        (
            {keys.NODES: "4", keys.MAIN_NODE_INDEX: "4"},
            "ebb.dev/main-node-index: 4 is out of range (allowed: 0-3, the job has 4 nodes)",
        ),
        ({keys.NODES: "4", keys.MAIN_NODE_INDEX: "x"}, "ebb.dev/main-node-index: 'x' is not"),
    ],
)
def test_bad_multi_node_annotations_name_the_field(annotations: dict[str, str], error: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_job_spec(annotations)
    assert str(raised.value).startswith(error)


def test_multi_node_annotations_parse() -> None:
    assert parse_job_spec({keys.NODES: "4"}).multi_node == MultiNode(4, 0)
    spec = parse_job_spec({keys.NODES: "4", keys.MAIN_NODE_INDEX: "2"})
    assert spec.multi_node == MultiNode(4, 2)
    assert parse_job_spec({}).multi_node is None


# --- admission ------------------------------------------------------------------------

XLARGE = NodeShape("c6i.xlarge", 4, Resources(3900, 7 * GIB, 0), 58)


def managed(max_vcpus: int) -> CapacityLimit:
    return CapacityLimit(
        Resources(max_vcpus * 1000, 2**60, 0), nodes=(XLARGE,), counts_instances=True
    )


def gang(key: str, nodes: int, t: float = 0.0, granted: int = 0) -> Demand:
    return Demand(
        key, "q", Resources(1000, GIB, 0), nodes, granted=granted, submitted=t, exclusive=True
    )


QUEUES = {"q": QueueView("q", 1, ("ce",))}


def test_a_gang_takes_a_whole_node_per_pod_and_all_or_nothing() -> None:
    # 1 vCPU pods, but each on a c6i.xlarge of its own: 16 maxvCpus hold 4 of them.
    result = admit(QUEUES, {"ce": managed(16)}, [gang("a", 3), gang("b", 2, t=1)], now=0)
    assert result.grants == {"a": 3}
    waiting = result.waiting["b"]
    assert waiting.code is Code.WAITING_FOR_CAPACITY
    assert "needs 2 nodes in one compute environment" in waiting.reason
    assert "ce: it takes 2 x c6i.xlarge, 8 vCPUs of maxvCpus 16; 12 taken" in waiting.reason


def test_a_gang_no_environment_can_hold_never_runs() -> None:
    result = admit(QUEUES, {"ce": managed(8)}, [gang("a", 3)], now=0)
    assert result.grants == {}
    assert result.waiting["a"].code is Code.MAX_RESOURCE
    assert "at most 2 nodes" in result.waiting["a"].reason


@given(
    st.lists(st.tuples(st.integers(1, 6), st.integers(0, 6)), min_size=1, max_size=8),
    st.integers(4, 40),
)
def test_a_gang_is_never_admitted_in_part(gangs: list[tuple[int, int]], max_vcpus: int) -> None:
    demands = []
    for i, (nodes, granted) in enumerate(gangs):
        held = nodes if granted >= nodes else 0  # an admitted gang holds all of its pods
        demands.append(gang(f"g{i}", nodes, t=i, granted=held))
    result = admit(QUEUES, {"ce": managed(max_vcpus)}, demands, now=0)
    for d in demands:
        grant = result.grants.get(d.key)
        assert grant is None or grant == d.want, (d, grant)
    # New grants never exceed what the environment may hold.
    new = sum(result.grants.values())
    held = sum(d.granted for d in demands)
    if new:
        assert (new + held) * 4 <= max_vcpus or held * 4 > max_vcpus


# --- placement ------------------------------------------------------------------------

QUEUE = {"q": queue("q", "ce")}
ENVIRONMENTS = {"ce": environment("ce")}


def test_a_gang_pod_fits_only_empty_nodes_and_nothing_joins_a_gang_node() -> None:
    nodes = {
        "empty": node_state(node("empty", "ce"), Resources(0, 0, 0)),
        "busy": node_state(node("busy", "ce"), Resources(1000, 0, 0), job_pods=1),
        "gang": node_state(node("gang", "ce"), Resources(1000, 0, 0), job_pods=1, gang_pods=1),
    }
    names = list(nodes)
    member = dataclasses.replace(pod("m", "q"), gang_size=2, job_uid="job-1")
    verdict = filter_nodes(member, names, nodes, QUEUE, ENVIRONMENTS, gang_unplaced=1)
    assert verdict.kept == ["empty"]
    assert "no other job's pods" in verdict.unresolvable["busy"]
    plain = filter_nodes(pod("p", "q"), names, nodes, QUEUE, ENVIRONMENTS)
    assert plain.kept == ["empty", "busy"]
    assert "multi-node job's pod" in plain.unresolvable["gang"]


def test_no_gang_pod_is_placed_until_nodes_exist_for_all() -> None:
    nodes = {n: node_state(node(n, "ce"), Resources(0, 0, 0)) for n in ("a", "b")}
    member = dataclasses.replace(pod("m", "q"), gang_size=4, job_uid="job-1")
    verdict = filter_nodes(member, list(nodes), nodes, QUEUE, ENVIRONMENTS, gang_unplaced=4)
    assert verdict.kept == []
    assert verdict.failed["a"] == (
        "multi-node job needs 4 empty nodes for its 4 unplaced pods; 2 empty nodes fit"
    )
    ready = filter_nodes(member, list(nodes), nodes, QUEUE, ENVIRONMENTS, gang_unplaced=2)
    assert ready.kept == ["a", "b"]


TWO_CES = {"q": queue("q", "ce", "ce2")}
TWO_ENVIRONMENTS = {"ce": environment("ce"), "ce2": environment("ce2")}


def empty_nodes(ce: str, zone: str, count: int) -> dict[str, NodeState]:
    names = (f"{ce}-{zone}-{i}" for i in range(count))
    return {n: node_state(dataclasses.replace(node(n, ce), zone=zone), ZERO) for n in names}


def gang_filter(
    nodes: dict[str, NodeState], unplaced: int, placed_in: tuple[str, str] | None = None
) -> FilterVerdict:
    """A pod of a 3-node gang of queue q (ce, then ce2), filtered over `nodes`."""
    member = dataclasses.replace(pod("m", "q"), gang_size=3, job_uid="job-1")
    return filter_nodes(
        member,
        list(nodes),
        nodes,
        TWO_CES,
        TWO_ENVIRONMENTS,
        gang_unplaced=unplaced,
        gang_group=placed_in,
    )


def test_a_gang_is_never_split_across_compute_environments_or_zones() -> None:
    # 2 empty nodes in each environment, 1 + 1 in two zones of ce2: 4 in all, 2 at most in one.
    nodes = {
        **empty_nodes("ce", "a", 2),
        **empty_nodes("ce2", "a", 1),
        **empty_nodes("ce2", "b", 1),
    }
    verdict = gang_filter(nodes, 3)
    assert verdict.kept == []
    assert verdict.failed["ce2-b-0"] == (
        "multi-node job needs 3 empty nodes in one compute environment and zone for its 3 "
        "unplaced pods; 4 empty nodes fit, at most 2 in one (ce ce, zone a)"
    )
    assert verdict.rejected == {RejectKind.GANG_SHORT: 4}


def test_a_gang_goes_to_the_first_environment_then_the_zone_with_most_room() -> None:
    nodes = {
        **empty_nodes("ce", "a", 1),
        **empty_nodes("ce2", "a", 2),
        **empty_nodes("ce2", "b", 3),
        **empty_nodes("ce", "b", 2),
    }
    verdict = gang_filter(nodes, 2)
    assert verdict.kept == ["ce-b-0", "ce-b-1"]
    assert verdict.unresolvable["ce2-b-0"] == (
        "multi-node job's pods all go to ce ce, zone b: the first of its queue's "
        "environments with 2 empty nodes that fit in one zone"
    )
    three = gang_filter(nodes, 3)
    assert three.kept == ["ce2-b-0", "ce2-b-1", "ce2-b-2"]
    assert three.rejected[RejectKind.GANG_ELSEWHERE] == 5


def test_the_rest_of_a_gang_goes_where_its_first_pods_are() -> None:
    nodes = {**empty_nodes("ce", "a", 1), **empty_nodes("ce2", "a", 3)}
    rest = gang_filter(nodes, 2, ("ce", "a"))
    assert rest.kept == []
    assert rest.failed["ce-a-0"] == (
        "multi-node job needs 2 empty nodes for its 2 unplaced pods in ce ce, zone a, "
        "where its other pods are; 1 empty nodes fit there"
    )
    assert rest.unresolvable["ce2-a-0"] == (
        "multi-node job's pods all go to ce ce, zone a, where its other pods are"
    )
    there = gang_filter(nodes, 2, ("ce2", "a"))
    assert there.kept == ["ce2-a-0", "ce2-a-1", "ce2-a-2"]


# --- the planner and the extender choose one site for a gang --------------------------


def test_the_site_rule_nodes_that_hold_it_first_then_the_first_environment_that_can() -> None:
    order = ("a", "b")
    a_1a, a_1b = Site("a", "1a", 1, launchable=1), Site("a", "1b", 0, launchable=5)
    b_1a = Site("b", "1a", 3)
    # b's empty nodes hold 3 pods now: nodes already up first, before a's launches.
    assert choose_site(order, [a_1a, a_1b, b_1a], 3) == b_1a
    # 2 pods: a holds them in 1a (its empty node and one launch) and 1b (two launches);
    # the zone with the most empty nodes.
    assert choose_site(order, [a_1b, a_1a, Site("b", "1a", 1)], 2) == a_1a
    # 4 pods: a holds them only by launching in 1b; b not at all.
    assert choose_site(order, [a_1a, a_1b, b_1a], 4) == a_1b
    assert choose_site(order, [a_1a, b_1a], 4) is None


# c6i.large (2 vCPUs) only: a gang pod of 1 vCPU takes one, empty or new.
SITE_ENVIRONMENTS = ("a", "b")
SITE_ZONES = ("us-east-1a", "us-east-1b")


def _planner_environment(ce: str, max_vcpus: int, warm: int) -> Environment:
    spec = ComputeEnvironment(
        name=ce,
        type="EC2",
        max_vcpus=max_vcpus,
        instance_types=("c6i.large",),
        subnets=("subnet-a", "subnet-b"),
        security_group_ids=("sg-1",),
        instance_role="ebb-node",
    )
    subnets = dict(zip(("subnet-a", "subnet-b"), SITE_ZONES, strict=True))
    catalog, overhead = shipped_catalog(), NodeOverheadSettings().node_overhead()
    return planner_environment(spec, catalog, overhead, subnets, set(), vcpus=2 * warm, gpus=0)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 4),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.integers(0, 6), st.integers(0, 6)),
)
def test_a_gang_goes_to_the_first_environment_that_holds_it_whole_in_both_daemons(
    size: int, empty: tuple[int, int, int, int], headroom: tuple[int, int]
) -> None:
    """Queue a then b, each with empty c6i.large nodes in two zones (`empty`: a/1a, a/1b,
    b/1a, b/1b) and room under maxvCpus for `headroom` more. The planner provides for
    the gang exactly when an environment holds it whole (empty nodes in one zone, plus
    launches there), in the first such environment (unless another's empty nodes hold it
    already: nodes already up first), never in part, never in two zones; and when empty
    nodes hold it, the extender's filter keeps the very (environment, zone) the planner
    put it on."""
    counts = dict(zip(((e, z) for e in SITE_ENVIRONMENTS for z in SITE_ZONES), empty, strict=True))
    room = [
        Room(e, Resources(1780, 2023 * 2**20), 27, f"{e}-{z}-{i}", empty=True, zone=z)
        for (e, z), n in counts.items()
        for i in range(n)
    ]
    environments = {
        e: _planner_environment(e, 2 * (warm + extra), warm)
        for e, extra in zip(SITE_ENVIRONMENTS, headroom, strict=True)
        for warm in [counts[e, SITE_ZONES[0]] + counts[e, SITE_ZONES[1]]]
    }
    pending = [
        PendingPod(f"ns/g-{i}", Resources(1000, GIB), SITE_ENVIRONMENTS, exclusive=True, job="ns/g")
        for i in range(size)
    ]
    plan = plan_launches(environments, pending, room)
    site_of = {r.node: (r.environment, r.zone) for r in room}
    # What holds it, worked out here from the numbers alone.
    whole_on_nodes = [(e, z) for (e, z), n in counts.items() if n >= size]
    holds = [
        e
        for e, extra in zip(SITE_ENVIRONMENTS, headroom, strict=True)
        if extra >= size or any(counts[e, z] + extra >= size for z in SITE_ZONES)
    ]
    sites = {site_of[node] for node in plan.awaited_nodes} | {
        (x.environment, zone) for x in plan.launches for zone in x.zones
    }
    environments_used = {e for e, _ in sites}
    if not holds:
        assert set(plan.waiting) == {p.key for p in pending} and not sites, plan
        return
    assert not plan.waiting, plan
    assert sum(x.pods for x in plan.launches) + plan.on_existing == size
    expected = whole_on_nodes[0][0] if whole_on_nodes else holds[0]
    assert environments_used == {expected}, (plan, holds, whole_on_nodes)
    if plan.awaited_nodes:  # the rest launched beside them, in their zone
        assert len({z for _, z in sites}) == 1, plan
    # The extender, over the same empty nodes, with no launches to count on.
    nodes = {
        r.node: node_state(dataclasses.replace(node(r.node, r.environment), zone=r.zone), ZERO)
        for r in room
    }
    member = dataclasses.replace(pod("m", "q"), gang_size=size, job_uid="job-g")
    verdict = filter_nodes(
        member,
        list(nodes),
        nodes,
        {"q": queue("q", *SITE_ENVIRONMENTS)},
        {e: environment(e) for e in SITE_ENVIRONMENTS},
        gang_unplaced=size,
    )
    kept = {site_of[name] for name in verdict.kept}
    if whole_on_nodes:
        assert kept == sites and not plan.launches, (kept, plan)
    else:
        assert kept == set(), verdict
