"""Tiny workloads and runs for the simulator's tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ebb.model import ComputeEnvironment, JobQueue, SchedulingPolicy
from ebb.resources import Resources
from sim.capacity import CapacityPolicy, EbbCapacity
from sim.cloud import CloudSettings
from sim.engine import Settings, Simulation
from sim.metrics import Report
from sim.workloads import GIB, Scenario, SimJob, Workload, environment

# Deterministic EC2: every boot takes 60 s, nothing is interrupted or refused.
STEADY = CloudSettings(
    boot_seconds=(60.0, 60.0),
    interruption_scale=0.0,
    insufficient_capacity_spot=0.0,
    insufficient_capacity_on_demand=0.0,
)


def job(name: str, submit: float = 0.0, duration: float = 100.0, **kw: Any) -> SimJob:
    kw.setdefault("queue", "q")
    kw.setdefault("request", Resources(1000, GIB))
    return SimJob(name=name, submit=submit, duration=duration, **kw)


def workload(
    jobs: Sequence[SimJob],
    environments: Sequence[ComputeEnvironment] | None = None,
    queues: Sequence[JobQueue] | None = None,
    policies: Sequence[SchedulingPolicy] = (),
) -> Workload:
    envs = environments or [environment("od", "EC2", 64, ["c6i.large"])]
    qs = queues or [JobQueue("q", 1, tuple(e.name for e in envs))]
    return Workload(
        "test",
        sorted(jobs, key=lambda j: j.submit),
        Scenario(tuple(envs), tuple(qs), tuple(policies)),
    )


class Traced:
    """A run that also notes when each job first started and when it ended."""

    def __init__(
        self,
        w: Workload,
        policy: Callable[..., CapacityPolicy] = EbbCapacity,
        cloud: CloudSettings = STEADY,
        seed: int = 0,
    ) -> None:
        self.sim = Simulation(w, policy, Settings(seed=seed, cloud=cloud))
        self.starts: dict[str, list[float]] = {}
        self.ends: dict[str, tuple[float, str]] = {}
        self.peak_vcpus: dict[str, int] = {}
        recorder = self.sim.recorder
        started, ended, launched = recorder.started, recorder.ended, recorder.launched

        def on_start(spec: SimJob, request: Resources) -> None:
            self.starts.setdefault(spec.name, []).append(self.sim.now)
            started(spec, request)

        def on_end(spec: SimJob, state: Any, now: float) -> None:
            self.ends[spec.name] = (now, state.value)
            ended(spec, state, now)

        def on_launch(instance: Any, live: int) -> None:
            env = instance.environment
            vcpus = sum(
                i.type.vcpus for i in self.sim.autoscaler.instances.values() if i.environment == env
            )
            self.peak_vcpus[env] = max(self.peak_vcpus.get(env, 0), vcpus)
            launched(instance, live)

        recorder.started = on_start  # type: ignore[method-assign]
        recorder.ended = on_end  # type: ignore[method-assign]
        recorder.launched = on_launch  # type: ignore[method-assign]

    def run(self) -> Report:
        return self.sim.run()
