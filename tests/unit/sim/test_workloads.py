"""Workload loaders on tiny files in the traces' formats, and the synthetic burst."""

from __future__ import annotations

from pathlib import Path

from ebb.jobspec import DependencyType
from ebb.resources import MIB, Resources
from sim.workloads import GIB, alibaba, burst, swf

HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)
ALIBABA = (
    HEADER
    + """\
openb-pod-0001,6000,12288,1,460,,LS,Running,500,1500,520
openb-pod-0000,12000,16384,0,0,,BE,Failed,100,400,100
openb-pod-0002,4000,8192,2,1000,,Burstable,Pending,300,360,
"""
)

SWF = """; Version: 2.2
; MaxProcs: 128
    1        0     -1   1451  128     -1    -1   -1     -1    -1 -1   1   1  -1 -1 -1 -1 -1
    2     1460     -1   3726   4     -1    -1   -1     -1    -1  0   7   2  -1 -1 -1 -1 -1
    3     1500     -1     0    0     -1    -1   -1     -1    -1  1   8   1  -1 -1 -1 -1 -1
"""


def test_alibaba_pods_become_jobs(tmp_path: Path) -> None:
    path = tmp_path / "pods.csv"
    path.write_text(ALIBABA)
    w = alibaba(path)
    by_name = {j.name: j for j in w.jobs}
    assert [j.name for j in w.jobs] == ["openb-pod-0000", "openb-pod-0002", "openb-pod-0001"]
    shared = by_name["openb-pod-0001"]
    assert shared.queue == "ls"
    assert shared.request == Resources(6000, 12288 * MIB, 1)  # a shared GPU is a whole one
    assert (shared.submit, shared.duration) == (500.0, 980.0)  # deletion - scheduled
    failed = by_name["openb-pod-0000"]
    assert (failed.queue, failed.exit_code, failed.request.gpu) == ("be", 1, 0)
    never_scheduled = by_name["openb-pod-0002"]
    assert (never_scheduled.queue, never_scheduled.duration) == ("burstable", 60.0)
    assert {q.name for q in w.scenario.queues} == {"ls", "burstable", "be"}


def test_swf_lines_become_jobs(tmp_path: Path) -> None:
    path = tmp_path / "log.swf"
    path.write_text(SWF)
    w = swf(path)
    assert [j.name for j in w.jobs] == ["swf-1", "swf-2"]  # no processors: skipped
    first, second = w.jobs
    assert (first.queue, first.share, first.request) == (
        "users",
        "user-1",
        Resources(128_000, 256 * GIB),
    )
    assert (second.queue, second.share, second.exit_code) == ("system", "", 1)
    assert second.duration == 3726.0
    (policy,) = w.scenario.policies
    assert [s.identifier for s in policy.shares] == ["user-1"]


def test_burst_has_arrays_chains_and_gpu_jobs_over_the_arrival_window() -> None:
    w = burst(10_000, array_size=1000, arrival_seconds=600, seed=3)
    assert w.pods == 10_000
    arrays = [j for j in w.jobs if j.array_size]
    assert len(arrays) == 6
    assert all(j.array_size == 1000 for j in arrays)
    chains = [j for j in w.jobs if j.name.startswith("chain-")]
    assert len(chains) == 1000
    reports = [j for j in chains if j.name.endswith("-report")]
    assert all([d.type for d in r.depends_on] == [DependencyType.AFTER_ANY] * 2 for r in reports)
    assert sum(1 for j in w.jobs if j.request.gpu) == 200
    assert 0 < w.jobs[-1].submit <= 700
    assert [j.submit for j in w.jobs] == sorted(j.submit for j in w.jobs)
    assert burst(10_000, array_size=1000, arrival_seconds=600, seed=3).jobs == w.jobs
