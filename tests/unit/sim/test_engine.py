"""The simulator's engine on tiny workloads, with deterministic EC2 unless a test says."""

from __future__ import annotations

import pytest

from ebb.catalog import shipped_catalog
from ebb.jobspec import Dependency, DependencyType, RetryStrategy
from ebb.model import JobQueue, SchedulingPolicy, ShareWeight
from ebb.resources import Resources
from sim.capacity import EbbCapacity
from sim.cloud import CloudSettings
from sim.engine import Settings, simulate
from sim.workloads import GIB, SPOT_RETRY, burst, environment
from tests.unit.sim.helpers import STEADY, Traced, job, workload


def test_one_job_cost_and_vcpu_hours_add_up() -> None:
    """Submitted at 0, admitted at once; the pod fits nowhere, so the autoscaler plans
    after its 1 s batching window; the instance boots in 60 s; the pod runs 3,600 s; the
    node idles for the environment's 60 s delay, is cordoned, and goes after 5 s."""
    run = Traced(workload([job("a", duration=3600.0)]))
    report = run.run()
    m = report.metrics
    assert run.starts["a"] == [61.0]
    assert run.ends["a"] == (3661.0, "SUCCEEDED")
    life = 3726.0 - 1.0
    price = shipped_catalog().get("c6i.large")
    assert price is not None
    assert m["cost_usd"] == round(price.on_demand_price * life / 3600, 2)
    rec = run.sim.recorder
    assert rec.provisioned_vcpu_seconds == pytest.approx(2 * life)
    assert rec.requested_vcpu_seconds == pytest.approx(3600.0)
    assert m["vcpu_hours"]["utilisation"] == round(3600 / (2 * life), 4)
    assert m["wait_seconds"]["all"]["p50"] == 61.0
    assert m["makespan_seconds"] == 3661.0
    assert m["peak_instances"] == 1
    assert m["jobs"]["succeeded"] == 1


def test_no_environment_exceeds_max_vcpus() -> None:
    envs = [environment("od", "EC2", 10, ["c6i"])]
    jobs = [job(f"j{i}", duration=300.0) for i in range(40)]
    run = Traced(workload(jobs, envs))
    m = run.run().metrics
    assert m["jobs"]["succeeded"] == 40
    assert 0 < run.peak_vcpus["od"] <= 10
    # 40 one-vCPU jobs through at most 10 vCPUs take at least four rounds.
    assert m["makespan_seconds"] >= 4 * 300


def test_dependencies_start_only_after_they_end() -> None:
    afterok = DependencyType.AFTER_OK
    jobs = [
        job("prep", duration=200.0),
        job("train", depends_on=(Dependency("prep", afterok),)),
        job("report", depends_on=(Dependency("train", DependencyType.AFTER_ANY),)),
        job("bad", duration=50.0, exit_code=1),
        job("after-bad", depends_on=(Dependency("bad", afterok),)),
        job("cleanup", depends_on=(Dependency("bad", DependencyType.AFTER_NOT_OK),)),
        # Submitted before the job it names exists: it waits for it.
        job("early", depends_on=(Dependency("late", afterok),)),
        job("late", submit=500.0),
    ]
    run = Traced(workload(jobs))
    m = run.run().metrics
    ends, starts = run.ends, run.starts
    assert starts["train"][0] >= ends["prep"][0]
    assert starts["report"][0] >= ends["train"][0]
    assert starts["early"][0] >= ends["late"][0]
    assert ends["bad"][1] == "FAILED"
    assert ends["after-bad"] == (ends["bad"][0], "FAILED")
    assert "after-bad" not in starts
    assert starts["cleanup"][0] >= ends["bad"][0]
    assert ends["cleanup"][1] == "SUCCEEDED"
    assert m["jobs"]["failed"] == 2


def test_exit_codes_are_retried_by_the_strategy_with_back_off() -> None:
    jobs = [
        job("retried", duration=100.0, exit_code=3, retry=RetryStrategy(3)),
        job("exits", duration=100.0, exit_code=3, retry=SPOT_RETRY),  # EXIT on exit codes
    ]
    run = Traced(workload(jobs))
    m = run.run().metrics
    tries = run.starts["retried"]
    assert len(tries) == 3
    assert tries[1] >= tries[0] + 100.0 + 10.0  # the Job controller's back-off: 10 s, 20 s
    assert tries[2] >= tries[1] + 100.0 + 20.0
    assert len(run.starts["exits"]) == 1
    assert m["retries"] == 2
    assert m["jobs"]["failed"] == 2


def test_spot_interruptions_cause_retries() -> None:
    envs = [environment("spot", "SPOT", 64, ["c6i.large"])]
    jobs = [job(f"j{i}", duration=1800.0, retry=SPOT_RETRY) for i in range(8)]
    # A hazard this high interrupts most instances within minutes.
    cloud = CloudSettings(
        boot_seconds=(60.0, 60.0),
        interruption_scale=50_000.0,
        insufficient_capacity_spot=0.0,
    )
    run = Traced(workload(jobs, envs), cloud=cloud)
    m = run.run().metrics
    assert m["spot_interruptions"] > 0
    assert m["pods_interrupted"] > 0
    assert m["retries"] > 0
    for name, (_, state) in run.ends.items():
        attempts = len(run.starts[name])
        assert attempts <= 3
        if state == "FAILED":
            assert attempts == 3  # only a third lost host fails the job
    # Every interrupted pod was retried or was its job's third attempt.
    failed = m["jobs"].get("failed", 0)
    assert m["pods_interrupted"] == m["retries"] + failed


def test_refused_spot_launches_overflow_to_on_demand() -> None:
    envs = [
        environment("spot", "SPOT", 64, ["c6i.large"]),
        environment("od", "EC2", 64, ["c6i.large"]),
    ]
    queues = [JobQueue("q", 1, ("spot", "od"))]
    cloud = CloudSettings(boot_seconds=(60.0, 60.0), insufficient_capacity_spot=1.0)
    run = Traced(workload([job("a")], envs, queues), cloud=cloud)
    m = run.run().metrics
    assert m["launches_refused_insufficient_capacity"] == 3  # once per zone
    assert m["jobs"]["succeeded"] == 1
    assert set(m["cost_usd_by_capacity_type"]) == {"on-demand"}


def test_fair_share_favours_the_lower_weight_factor() -> None:
    envs = [environment("od", "EC2", 4, ["c6i.large"])]
    policy = SchedulingPolicy(
        "fair", share_decay_seconds=600, shares=(ShareWeight("a", 1.0), ShareWeight("b", 3.0))
    )
    queues = [JobQueue("q", 1, ("od",), scheduling_policy="fair")]
    jobs = [job(f"{s}{i}", share=s) for s in "ab" for i in range(30)]
    m = Traced(workload(jobs, envs, queues, [policy])).run().metrics
    waits = m["wait_seconds"]["by_share"]
    assert waits["q/a"]["mean"] < waits["q/b"]["mean"]


def test_a_job_that_can_never_fit_is_reported_not_waited_for() -> None:
    jobs = [job("huge", request=Resources(500_000, 2 * GIB)), job("small")]
    m = Traced(workload(jobs)).run().metrics
    assert m["jobs"]["never_runnable"] == 1
    assert m["jobs"]["unfinished"] == {"RUNNABLE": 1}
    assert m["jobs"]["succeeded"] == 1


def test_array_children_run_as_capacity_allows() -> None:
    envs = [environment("od", "EC2", 8, ["c6i.large"])]
    run = Traced(workload([job("arr", duration=60.0, array_size=20)], envs))
    m = run.run().metrics
    assert m["jobs"]["succeeded"] == 1
    assert m["jobs"]["with_array_children"] == 20
    assert m["wait_seconds"]["all"]["count"] == 20
    assert len(run.starts["arr"]) == 20
    assert run.peak_vcpus["od"] <= 8


def test_runs_are_deterministic_given_the_seed() -> None:
    w = burst(400, array_size=50, arrival_seconds=300)
    cloud = CloudSettings(interruption_scale=2000.0)
    first = simulate(w, EbbCapacity, Settings(seed=7, cloud=cloud)).metrics
    again = simulate(w, EbbCapacity, Settings(seed=7, cloud=cloud)).metrics
    other = simulate(w, EbbCapacity, Settings(seed=8, cloud=cloud)).metrics
    assert first == again
    assert first != other
    assert first["jobs"]["with_array_children"] == 400
    assert not first["jobs"]["unfinished"]
    assert STEADY.interruption_scale == 0.0


def test_an_admitted_array_that_wants_more_does_not_hold_capacity_against_later_jobs() -> None:
    """The starvation bound is for jobs not admitted (reconcile's `admitted_demand`): an
    array running what fits and wanting more does not, after `starvation_seconds`, stop
    smaller jobs behind it from using the room its pods cannot use."""
    envs = [environment("od", "EC2", 20, ["c6i.large", "c6i.4xlarge"])]
    big = Resources(10_000, 8 * GIB)  # one per c6i.4xlarge: 16 of maxvCpus' 20
    jobs = [job("arr", duration=1000.0, array_size=5, request=big)]
    jobs += [job(f"small{i}", submit=700.0, duration=100.0) for i in range(2)]
    run = Traced(workload(jobs, envs))
    m = run.run().metrics
    assert m["jobs"]["succeeded"] == 3
    # Admitted beside the array's running child, well before it ends (at about 5,000 s).
    for i in range(2):
        assert run.starts[f"small{i}"][0] < 1000.0
