"""Multi-node jobs (gangs) in the simulator: Ebb's all-or-nothing admission, placement
and retries, against the baseline that runs them pod by pod."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from ebb.resources import Resources
from sim.baselines import EbbWithoutGangs, PodByPodGangs
from sim.capacity import CapacityPolicy, EbbCapacity
from sim.cloud import CloudSettings, Instance
from sim.placement import Pod
from sim.workloads import GIB, SPOT_RETRY, SimJob, environment, gangs
from tests.unit.sim.helpers import STEADY, Traced, job, workload

# One pod of this per c6i.large (1.78 vCPUs usable): a node each, as a training pod.
NODE_POD = Resources(1500, GIB)
# Boots that take 60 to 120 s: a gang's instances become nodes one by one.
UNEVEN_BOOTS = CloudSettings(
    interruption_scale=0.0, insufficient_capacity_spot=0.0, insufficient_capacity_on_demand=0.0
)


@dataclass
class Binds:
    """Every bind of a run: when, which pod, on which node; and any node that ever held a
    gang pod beside another pod."""

    at: list[tuple[float, Pod, Instance]] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)


def traced(
    jobs_: list[SimJob],
    max_vcpus: int,
    policy: Callable[..., CapacityPolicy] = EbbCapacity,
    cloud: CloudSettings = STEADY,
) -> tuple[Traced, Binds]:
    envs = [environment("od", "EC2", max_vcpus, ["c6i.large"])]
    run = Traced(workload(jobs_, envs), policy, cloud)
    placement = run.sim.placement
    binds = Binds()
    bind = placement._bind

    def on_bind(pod: Pod, node: Instance) -> None:
        bind(pod, node)
        binds.at.append((run.sim.now, pod, node))
        if node.batch_pods > 1 and node.gang_pods:
            binds.shared.append(node.id)

    placement._bind = on_bind  # type: ignore[method-assign]
    return run, binds


def two_gangs_and_singles() -> list[SimJob]:
    """Two 4-node gangs that do not fit the environment (6 nodes) together, and single
    jobs beside them."""
    return [
        job("gang-a", 0.0, 1800.0, request=NODE_POD, nodes=4),
        job("gang-b", 10.0, 1800.0, request=NODE_POD, nodes=4),
        *(job(f"single-{i}", 20.0 + i, 600.0, request=NODE_POD) for i in range(3)),
    ]


def test_under_ebb_a_gang_is_bound_and_started_all_at_once_on_nodes_of_its_own() -> None:
    run, binds = traced(two_gangs_and_singles(), max_vcpus=12, cloud=UNEVEN_BOOTS)
    m = run.run().metrics
    assert m["jobs"]["succeeded"] == 5
    for name in ("gang-a", "gang-b"):
        times = {t for t, pod, _ in binds.at if pod.job.spec.name == name}
        assert len(times) == 1, f"{name} bound at {sorted(times)}"
        starts = run.starts[name]
        assert len(starts) == 4 and len(set(starts)) == 1
        nodes = {node.id for _, pod, node in binds.at if pod.job.spec.name == name}
        assert len(nodes) == 4
    assert binds.shared == []
    assert m["gang_held_node_hours"] == 0.0
    assert run.peak_vcpus["od"] <= 12
    # The second gang waited for the first: it could not have all its nodes before.
    assert run.starts["gang-b"][0] >= run.ends["gang-a"][0]


@pytest.mark.parametrize("policy", [PodByPodGangs, EbbWithoutGangs])
def test_without_gangs_nodes_are_held_idle_for_an_incomplete_gang(
    policy: Callable[..., CapacityPolicy],
) -> None:
    run, binds = traced(two_gangs_and_singles(), max_vcpus=12, policy=policy)
    m = run.run().metrics
    assert m["jobs"]["succeeded"] == 5
    bound_b = sorted(t for t, pod, _ in binds.at if pod.job.spec.name == "gang-b")
    # Pod by pod: part of gang-b took nodes long before the rest could, and waited there.
    assert bound_b[-1] - bound_b[0] > 1000
    assert m["gang_held_node_hours"] > 0.5
    assert binds.shared == []  # its pods still have nodes of their own
    assert len(set(run.starts["gang-b"])) == 1  # and start together (the rendezvous)


def test_one_nodes_interruption_restarts_the_whole_gang() -> None:
    envs = [environment("spot", "SPOT", 64, ["c6i.large"])]
    gang = job("gang", 0.0, 1800.0, request=NODE_POD, nodes=4, retry=SPOT_RETRY)
    run = Traced(workload([gang], envs))
    sim = run.sim
    lost: list[float] = []

    def reclaim_one(_: object) -> None:
        node = next(i for i in sim.autoscaler.instances.values() if i.gang_pods)
        lost.append(sim.now)
        sim.autoscaler._reclaim(node)  # EC2 takes one Spot instance back

    sim.push(600.0, reclaim_one, None)
    m = run.run().metrics
    assert m["spot_interruptions"] == 1 and m["pods_interrupted"] == 1
    assert m["retries"] == 1
    assert run.ends["gang"][1] == "SUCCEEDED"
    starts = sorted(run.starts["gang"])
    first, second = starts[:4], starts[4:]
    # Every node's pod ran twice: the attempt the lost node ended, then a whole new one.
    assert len(starts) == 8
    assert len(set(first)) == 1 and first[0] < lost[0]
    assert len(set(second)) == 1 and second[0] > lost[0]
    assert run.ends["gang"][0] >= second[0] + 1800.0
    assert m["gang_held_node_hours"] == 0.0


def test_the_gangs_workload_mixes_gang_sizes_and_single_jobs() -> None:
    w = gangs(100, seed=1)
    sizes = {j.nodes for j in w.jobs}
    assert sizes == {0, 4, 16, 64}
    assert all(j.pods == (j.nodes or 1) for j in w.jobs)
    assert gangs(100, seed=1).jobs == w.jobs
