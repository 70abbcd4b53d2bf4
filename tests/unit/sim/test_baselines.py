"""The baselines behave as BENCHMARKS.md states them."""

from __future__ import annotations

from typing import ClassVar

from ebb.catalog import NodeOverheadSettings, shipped_catalog
from sim.baselines import NodeGroups, OnePodPerInstance
from sim.capacity import ClusterView, Decision
from sim.cloud import CloudSettings
from sim.engine import Settings, simulate
from sim.workloads import burst, environment
from tests.unit.sim.helpers import STEADY, Traced, job, workload


def test_one_pod_per_instance_gives_each_pod_the_cheapest_type_that_fits() -> None:
    envs = [environment("od", "EC2", 64, ["c6i"])]
    jobs = [job(f"j{i}", duration=600.0) for i in range(5)]
    run = Traced(workload(jobs, envs), OnePodPerInstance)
    m = run.run().metrics
    assert m["instance_types"] == {"c6i.large": 5}
    assert m["peak_instances"] == 5
    assert m["jobs"]["succeeded"] == 5
    # Each instance lives for boot (after a 1 s batch) + its pod, then goes at once.
    price = shipped_catalog().get("c6i.large")
    assert price is not None
    assert m["cost_usd"] == round(5 * price.on_demand_price * (60 + 600) / 3600, 2)


def test_node_groups_are_fixed_types_per_family() -> None:
    env = environment("od", "EC2", 10_000, ["c6i", "g5"])
    policy = NodeGroups(
        {"od": env}, shipped_catalog(), NodeOverheadSettings().node_overhead(), {"subnet-a": "z"}
    )
    view = ClusterView(0.0, [], [], (), {}, {})
    names = [o.name for o in policy.groups(policy.views(view)["od"])]
    # c6i: the 4xlarge and the largest; g5: the cheapest with 1, 4 and 8 GPUs.
    assert names == ["c6i.4xlarge", "c6i.metal", "g5.12xlarge", "g5.48xlarge", "g5.xlarge"]


def test_cluster_autoscaler_picks_least_waste_and_scales_down_after_ten_minutes() -> None:
    envs = [environment("od", "EC2", 1000, ["c6i"])]
    jobs = [job(f"j{i}", duration=300.0) for i in range(5)]
    run = Traced(workload(jobs, envs), NodeGroups, STEADY)
    m = run.run().metrics
    # Five 1-vCPU pods waste least on one 16-vCPU node, not on a 128-vCPU one.
    assert m["instance_types"] == {"c6i.4xlarge": 1}
    assert m["jobs"]["succeeded"] == 5
    last_end = max(end for end, _ in run.ends.values())
    # The empty node stays 10 minutes (and 10 minutes after the scale-up) before it goes.
    assert m["simulated_seconds"] >= last_end + 600


def test_ebb_scales_down_sooner_than_cluster_autoscaler() -> None:
    envs = [environment("od", "EC2", 1000, ["c6i"])]
    jobs = [job(f"j{i}", duration=300.0) for i in range(5)]
    ebb = Traced(workload(jobs, envs)).run().metrics
    ca = Traced(workload(jobs, envs), NodeGroups).run().metrics
    assert ebb["cost_usd"] < ca["cost_usd"]
    assert ebb["simulated_seconds"] < ca["simulated_seconds"]


class _Checked(OnePodPerInstance):
    """One pod per instance that checks, at each pass, the engine's indexes of booting
    and idle instances against a scan of every instance."""

    seen: ClassVar[dict[str, int]] = {"booting": 0, "idle": 0}

    def decide(self, view: ClusterView) -> Decision:
        scan = ClusterView(
            view.now, view.pending, list(view.instances), view.unavailable, view.vcpus, view.gpus
        )
        assert list(view.booting()) == scan.booting()
        assert view.idle() == scan.idle()
        self.seen["booting"] += bool(scan.booting())
        self.seen["idle"] += bool(scan.idle())
        return super().decide(view)


def test_the_engine_keeps_booting_and_idle_instances_as_a_scan_finds_them() -> None:
    # Interruptions often enough to take back instances still booting.
    cloud = CloudSettings(interruption_scale=20_000.0, insufficient_capacity_spot=0.1)
    w = burst(400, array_size=50, arrival_seconds=300)
    m = simulate(w, _Checked, Settings(seed=3, cloud=cloud)).metrics
    assert m["spot_interruptions"] > 0
    assert _Checked.seen["booting"] > 0
    assert _Checked.seen["idle"] > 0
