"""Scale-down and garbage collection decisions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.scaledown import (
    IDLE,
    SPOT_INTERRUPTION,
    InstanceState,
    NodeAction,
    NodeActionKind,
    NodeRecord,
    NodeState,
    plan_garbage,
    plan_scale_down,
)
from ebb.model import ComputeEnvironment

CORDON, TERMINATE, UNCORDON = (
    NodeActionKind.CORDON,
    NodeActionKind.TERMINATE,
    NodeActionKind.UNCORDON,
)

CE = ComputeEnvironment(name="ce", type="SPOT", max_vcpus=64, instance_types=("c6i",))


def node(
    name: str,
    *,
    pods: int = 0,
    idle: float | None = 0.0,
    vcpus: int = 4,
    draining: str | None = None,
    draining_since: float | None = None,
) -> NodeState:
    idle_since = None if pods else idle
    return NodeState(name, "ce", vcpus, 0.1 * vcpus, pods, idle_since, draining, draining_since)


def plan(
    nodes: list[NodeState],
    now: float,
    envs: dict[str, ComputeEnvironment] | None = None,
    vcpus: int | None = None,
) -> list[NodeAction]:
    total = sum(n.vcpus for n in nodes) if vcpus is None else vcpus
    return plan_scale_down(
        nodes, envs or {"ce": CE}, {"ce": total}, now, grace_seconds=5, orphan_delay_seconds=30
    )


def test_idle_node_is_cordoned_only_after_the_delay() -> None:
    assert plan([node("a", idle=100)], now=150) == []
    (action,) = plan([node("a", idle=100)], now=160)
    assert (action.node, action.kind, action.reason) == ("a", CORDON, IDLE)


def test_node_with_a_batch_pod_is_never_chosen() -> None:
    assert plan([node("a", pods=1)], now=10**6) == []
    draining = node("b", pods=2, draining=SPOT_INTERRUPTION, draining_since=0)
    assert plan([draining], now=10**6) == []


def test_cordoned_node_is_terminated_after_grace_or_uncordoned_if_a_pod_came() -> None:
    cordoned = node("a", draining=IDLE, draining_since=100)
    assert plan([cordoned], now=103) == []
    assert [a.kind for a in plan([cordoned], now=105)] == [TERMINATE]
    raced = node("a", pods=1, draining=IDLE, draining_since=100)
    assert [a.kind for a in plan([raced], now=200)] == [UNCORDON]


def test_min_vcpus_are_kept() -> None:
    envs = {
        "ce": ComputeEnvironment(
            name="ce", type="SPOT", max_vcpus=64, instance_types=(), min_vcpus=4
        )
    }
    nodes = [node("a", idle=0), node("b", idle=0)]
    actions = plan(nodes, now=1000, envs=envs)
    assert len(actions) == 1 and actions[0].kind == CORDON


def test_nodes_of_a_deleted_environment_scale_down_after_the_orphan_delay() -> None:
    nodes = [NodeState("a", "gone", 4, 0.4, 0, 0.0)]
    kwargs = {"grace_seconds": 5, "orphan_delay_seconds": 30}
    assert plan_scale_down(nodes, {}, {"gone": 4}, 20, **kwargs) == []
    assert [a.kind for a in plan_scale_down(nodes, {}, {"gone": 4}, 30, **kwargs)] == [CORDON]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.sampled_from([2, 4, 8]), st.integers(0, 200), st.booleans()
        ),
        max_size=12,
    ),
    st.integers(0, 40),
    st.integers(0, 400),
)
def test_properties(raw: list[tuple[int, int, int, bool]], min_vcpus: int, now: int) -> None:
    envs = {
        "ce": ComputeEnvironment(
            name="ce",
            type="SPOT",
            max_vcpus=64,
            instance_types=(),
            min_vcpus=min_vcpus,
            scale_down_delay_seconds=60,
        )
    }
    nodes = [
        node(
            f"n{i}",
            pods=pods,
            vcpus=v,
            idle=float(idle),
            draining=IDLE if d else None,
            draining_since=float(idle) if d else None,
        )
        for i, (pods, v, idle, d) in enumerate(raw)
    ]
    total = sum(n.vcpus for n in nodes)
    actions = plan(nodes, now, envs, total)
    by_name = {n.name: n for n in nodes}
    removed = 0
    for a in actions:
        n = by_name[a.node]
        if a.kind in (CORDON, TERMINATE):
            assert n.batch_pods == 0  # never a node with a batch pod
        if a.kind == CORDON:
            assert now - (n.idle_since or 0) >= 60
            removed += n.vcpus
    draining_free = sum(n.vcpus for n in nodes if n.draining and not n.batch_pods)
    if removed:
        assert total - draining_free - removed >= min_vcpus  # minvCpus kept


def test_garbage() -> None:
    instances = [
        InstanceState("i-old", "running", launched=0, node=None),
        InstanceState("i-young", "pending", launched=90, node=None),
        InstanceState("i-node", "running", launched=0, node="n1"),
        InstanceState("i-dead", "terminated", launched=0, node=None),
    ]
    nodes = [
        NodeRecord("n1", "running", created=10),
        NodeRecord("n2", "terminated", created=10),
        NodeRecord("n3", "shutting-down", created=99),
    ]
    garbage = plan_garbage(
        instances, nodes, 100, registration_timeout_seconds=60, node_grace_seconds=5
    )
    assert garbage.terminate == ("i-old",)
    assert garbage.delete_nodes == ("n2",)
