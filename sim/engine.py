"""The discrete-event engine: a workload on simulated EC2, on a virtual clock, decided by
Ebb's own pure decision code — the same functions the daemons call, with the daemons'
settings types (`Settings.scheduler`, `Settings.autoscaler`).

The actors, one module each (each module's docstring says what decides there):

- the scheduler daemon's Job controller — jobs, dependencies, admission, fair share,
  retries, states: `sim.scheduler`;
- kube-scheduler with Ebb's extender — the pods waiting for a node, placement:
  `sim.placement`;
- the autoscaler daemon and EC2 — launches, nodes, interruptions, scale-down:
  `sim.autoscaler` over a `sim.capacity.CapacityPolicy` (Ebb's, or a baseline), on the
  simulated EC2 of `sim.cloud`.

This module holds the clock and the event queue and runs them. No wall clock is read;
given a seed, a run is deterministic.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autoscaler.settings import AutoscalerSettings
from ebb.catalog import Catalog, shipped_catalog
from ebb.model import ComputeEnvironment, JobQueue, SchedulingPolicy
from extender.settings import SchedulerSettings
from sim.autoscaler import Autoscaler
from sim.capacity import CapacityPolicy
from sim.cloud import Cloud, CloudSettings
from sim.metrics import Recorder, Report
from sim.placement import Placement
from sim.scheduler import JobController
from sim.workloads import Workload


@dataclass(frozen=True)
class Settings:
    seed: int = 0
    cloud: CloudSettings = field(default_factory=CloudSettings)
    # The daemons' settings: every parameter of theirs the simulation uses is read from
    # these (starvation bound, pass period, batch window, drain grace, node overhead, ...).
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    autoscaler: AutoscalerSettings = field(default_factory=AutoscalerSettings)
    # The least time between two admission passes. The daemon spaces its passes by their
    # own wall time (docs/decisions/0003-spacing-scheduling-passes.md), which a virtual
    # clock does not have: this is the simulation's model of it, not a daemon setting.
    admission_interval: float = 2.0
    placement_candidates: int = 100  # kube-scheduler scores a sample of this many nodes
    sample_seconds: float = 0.0  # timeline resolution; 0: about 2,000 samples
    stall_seconds: float = 86400.0  # stop when nothing can happen for this long


class Simulation:
    def __init__(
        self,
        workload: Workload,
        policy_type: Callable[..., CapacityPolicy],
        settings: Settings = Settings(),
        catalog: Catalog | None = None,
    ) -> None:
        self.workload = workload
        self.s = settings
        self.catalog = catalog or shipped_catalog()
        # Each daemon sizes nodes with its own settings (the same defaults: test_defaults).
        self.overhead = settings.autoscaler.node_overhead()
        scenario = workload.scenario
        self.environments: dict[str, ComputeEnvironment] = {
            e.name: e for e in scenario.environments
        }
        self.queues: dict[str, JobQueue] = {q.name: q for q in scenario.queues}
        self.policies: dict[str, SchedulingPolicy] = {p.name: p for p in scenario.policies}
        self.policy = policy_type(
            self.environments,
            self.catalog,
            self.overhead,
            scenario.subnet_zones,
            settings.autoscaler,
        )
        self.rng = random.Random(settings.seed)
        self.cloud = Cloud(settings.cloud, self.rng)
        self.now = 0.0
        # (time, sequence, handler, subject): the sequence keeps equal times in order.
        self._events: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = itertools.count()
        self._last_progress = 0.0
        jobs = workload.jobs
        span = (jobs[-1].submit - jobs[0].submit) if jobs else 0.0
        self.recorder = Recorder(settings.sample_seconds or max(span / 2000.0, 60.0))
        self.jobs = JobController(self)
        self.placement = Placement(self)
        self.autoscaler = Autoscaler(self, self.policy)

    def run(self) -> Report:
        jobs = self.workload.jobs
        n, i = len(jobs), 0
        events = self._events
        submit = self.jobs.submit
        placement = self.placement
        if jobs:
            self.now = jobs[0].submit
            self.push(self.now, self._sample, None)
        while True:
            if i < n and (not events or jobs[i].submit < events[0][0]):
                self.now = jobs[i].submit
                submit(jobs[i])
                i += 1
            elif events:
                when, _, handler, subject = heapq.heappop(events)
                self.now = when
                handler(subject)
            else:
                break
            if placement.ready_groups:
                placement.schedule()
            if i == n and self._finished():
                break
        self.autoscaler.finish()
        return self.recorder.report(self.now, self.workload, self.policy, self.jobs.stuck())

    def push(self, when: float, handler: Callable[[Any], None], subject: Any) -> None:
        heapq.heappush(self._events, (when, next(self._seq), handler, subject))

    def progress(self) -> None:
        """Something happened (a job or pod moved, an instance came or went)."""
        self._last_progress = self.now

    def _finished(self) -> bool:
        instances = self.autoscaler.instances
        if self.jobs.open == 0 and not instances:
            return True
        # Nothing can happen any more (jobs that never fit, pods no policy provides for,
        # gangs that hold part of their nodes and can never get the rest).
        return self.now - self._last_progress > self.s.stall_seconds and not self.placement.running

    def _sample(self, _: object) -> None:
        self.recorder.sample(self.now, len(self.autoscaler.instances))
        self.push(self.now + self.recorder.sample_seconds, self._sample, None)


def simulate(
    workload: Workload,
    policy_type: Callable[..., CapacityPolicy],
    settings: Settings = Settings(),
) -> Report:
    return Simulation(workload, policy_type, settings).run()
