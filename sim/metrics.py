"""What a run measured: cost, vCPU-hours requested and provisioned, waits per queue and
share, makespan, peaks, interruptions and retries, and a timeline for the plots.

Definitions:
- cost: every instance's price (Spot or On-Demand, from the catalog) × its life from
  launch to termination, billed per second with a one-minute minimum;
- vCPU-hours provisioned: instances' vCPUs × their life (booting included);
  requested: pods' vCPU requests × the time they ran (attempts lost to an interruption
  included); utilisation = requested ÷ provisioned;
- wait: from the moment a job (an array: each child) became RUNNABLE — submitted, its
  dependencies met — until its first attempt started on a node; percentiles are
  nearest-rank;
- makespan: from the first submission to the end of the last job;
- gang-held node-hours: nodes held by a multi-node job's pod that could not start
  because its gang was not all bound yet (from the pod's bind until its gang started,
  or until it was stopped): idle nodes that are paid for and can take nothing else.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ebb import keys
from ebb.resources import Resources
from extender.jobs.lifecycle import State
from sim.cloud import Instance
from sim.workloads import SimJob, Workload


class _Named(Protocol):
    name: str
    description: str


@dataclass
class Timeline:
    seconds: list[float] = field(default_factory=list)
    instances: list[int] = field(default_factory=list)
    provisioned_vcpus: list[float] = field(default_factory=list)
    running_vcpus: list[float] = field(default_factory=list)  # requests of running pods
    pending_vcpus: list[float] = field(default_factory=list)  # admitted, not running yet
    queued_vcpus: list[float] = field(default_factory=list)  # runnable, not admitted
    shares: list[dict[str, float]] = field(default_factory=list)  # "queue/share" → running


@dataclass
class Report:
    metrics: dict[str, Any]
    timeline: Timeline
    waits: dict[str, array[float]]  # "queue/share" → seconds


def share_label(queue: str, share: str) -> str:
    return f"{queue}/{share}" if share else queue


def percentiles(values: array[float] | list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}

    def rank(p: float) -> float:
        return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]

    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 3),
        "p50": round(rank(50), 3),
        "p95": round(rank(95), 3),
        "p99": round(rank(99), 3),
        "max": round(ordered[-1], 3),
    }


class Recorder:
    def __init__(self, sample_seconds: float) -> None:
        self.sample_seconds = sample_seconds
        self.timeline = Timeline()
        self.waits: dict[str, array[float]] = {}
        self.first_submit: float | None = None
        self.last_end = 0.0
        self.jobs = self.pods = 0
        self.outcomes: dict[str, int] = {}
        self.never = 0
        self.cost: dict[str, float] = {}
        self.provisioned_vcpu_seconds = 0.0
        self.requested_vcpu_seconds = 0.0
        self.instances = self.launches = 0
        self.live_vcpus = 0
        self.peak_instances = self.peak_vcpus = 0
        self.types: dict[str, int] = {}
        self.terminations: dict[str, int] = {}  # reason → instances
        self.refusals = self.interruptions = self.pods_interrupted = self.retries = 0
        self.running_milli = self.pending_milli = self.queued_milli = 0
        self.running_by_share: dict[str, int] = {}
        self.held_node_seconds = 0.0

    # --- jobs and pods -----------------------------------------------------------------

    def submitted(self, spec: SimJob) -> None:
        if self.first_submit is None:
            self.first_submit = spec.submit
        self.jobs += 1
        self.pods += spec.pods

    def queued(self, request: Resources, pods: int) -> None:
        self.queued_milli += request.cpu_milli * pods

    def pending(self, request: Resources, pods: int) -> None:
        self.pending_milli += request.cpu_milli * pods

    def wait(self, spec: SimJob, seconds: float) -> None:
        label = share_label(spec.queue, spec.share)
        samples = self.waits.get(label)
        if samples is None:
            samples = self.waits[label] = array("d")
        samples.append(seconds)

    def started(self, spec: SimJob, request: Resources) -> None:
        self.pending_milli -= request.cpu_milli
        self.running_milli += request.cpu_milli
        label = share_label(spec.queue, spec.share)
        self.running_by_share[label] = self.running_by_share.get(label, 0) + request.cpu_milli

    def stopped(self, spec: SimJob, request: Resources, seconds: float) -> None:
        self.running_milli -= request.cpu_milli
        label = share_label(spec.queue, spec.share)
        self.running_by_share[label] -= request.cpu_milli
        self.requested_vcpu_seconds += request.cpu_milli / 1000 * seconds

    def ended(self, spec: SimJob, state: State, now: float) -> None:
        """A job (`spec`) reached SUCCEEDED or FAILED."""
        self.outcomes[state.value] = self.outcomes.get(state.value, 0) + 1
        self.last_end = max(self.last_end, now)

    def held(self, seconds: float) -> None:
        """A gang pod held its node `seconds` without running."""
        self.held_node_seconds += seconds

    def never_runnable(self) -> None:
        self.never += 1

    def retried(self) -> None:
        self.retries += 1

    # --- instances ----------------------------------------------------------------------

    def launched(self, instance: Instance, live: int) -> None:
        self.launches += 1
        self.types[instance.type.name] = self.types.get(instance.type.name, 0) + 1
        self.live_vcpus += instance.type.vcpus
        self.peak_instances = max(self.peak_instances, live)
        self.peak_vcpus = max(self.peak_vcpus, self.live_vcpus)

    def terminated(self, instance: Instance, now: float, reason: str) -> None:
        self.terminations[reason] = self.terminations.get(reason, 0) + 1
        billed = instance.billed_seconds(now)
        kind = instance.capacity_type
        self.cost[kind] = self.cost.get(kind, 0.0) + instance.price * billed / 3600
        self.provisioned_vcpu_seconds += instance.type.vcpus * (now - instance.launched)
        self.live_vcpus -= instance.type.vcpus

    def refused(self) -> None:
        self.refusals += 1

    def interrupted(self, pods: int) -> None:
        self.interruptions += 1
        self.pods_interrupted += pods

    # --- timeline and report -------------------------------------------------------------

    def sample(self, now: float, live: int) -> None:
        t = self.timeline
        t.seconds.append(now)
        t.instances.append(live)
        t.provisioned_vcpus.append(float(self.live_vcpus))
        t.running_vcpus.append(self.running_milli / 1000)
        t.pending_vcpus.append(self.pending_milli / 1000)
        t.queued_vcpus.append(self.queued_milli / 1000)
        t.shares.append({k: v / 1000 for k, v in self.running_by_share.items() if v})

    def report(
        self, now: float, workload: Workload, policy: _Named, unfinished: Mapping[str, int]
    ) -> Report:
        start = self.first_submit or 0.0
        requested = self.requested_vcpu_seconds / 3600
        provisioned = self.provisioned_vcpu_seconds / 3600
        by_queue: dict[str, list[float]] = {}
        for label, samples in self.waits.items():
            by_queue.setdefault(label.split("/", 1)[0], []).extend(samples)
        everything = [w for samples in self.waits.values() for w in samples]
        metrics: dict[str, Any] = {
            "workload": workload.name,
            "description": workload.description,
            "policy": policy.name,
            "policy_description": policy.description,
            "jobs": {
                "submitted": self.jobs,
                "with_array_children": self.pods,
                **{k.lower(): v for k, v in sorted(self.outcomes.items())},
                "never_runnable": self.never,
                "unfinished": dict(sorted(unfinished.items())),
            },
            "cost_usd": round(sum(self.cost.values()), 2),
            "cost_usd_by_capacity_type": {k: round(v, 2) for k, v in sorted(self.cost.items())},
            "vcpu_hours": {
                "requested": round(requested, 1),
                "provisioned": round(provisioned, 1),
                "utilisation": round(requested / provisioned, 4) if provisioned else 0.0,
            },
            "wait_seconds": {
                "all": percentiles(everything),
                "by_queue": {q: percentiles(v) for q, v in sorted(by_queue.items())},
                "by_share": {s: percentiles(v) for s, v in sorted(self.waits.items())},
            },
            "makespan_seconds": round(self.last_end - start, 1),
            "gang_held_node_hours": round(self.held_node_seconds / 3600, 2),
            "simulated_seconds": round(now - start, 1),
            "peak_instances": self.peak_instances,
            "peak_vcpus": self.peak_vcpus,
            "instances_launched": self.launches,
            "instances_terminated": dict(sorted(self.terminations.items())),
            "launches_refused_insufficient_capacity": self.refusals,
            "spot_interruptions": self.interruptions,
            "pods_interrupted": self.pods_interrupted,
            "retries": self.retries,
            "instance_types": dict(sorted(self.types.items(), key=lambda kv: -kv[1])[:12]),
            "spot_share_of_cost": round(
                self.cost.get(keys.CAPACITY_SPOT, 0.0) / sum(self.cost.values()), 4
            )
            if self.cost
            else 0.0,
        }
        return Report(metrics, self.timeline, self.waits)
