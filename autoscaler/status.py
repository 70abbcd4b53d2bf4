"""The status document of a compute environment, as the autoscaler writes it (what
`kubectl get computeenvironments`, `kubectl ebb` and `kubectl wait` read). Pure code."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from autoscaler.environments import Unavailable
from autoscaler.planner import INSUFFICIENT_CAPACITY, MAX_VCPUS_REACHED, Environment
from ebb import keys
from ebb.catalog import Catalog
from ebb.conditions import CAPACITY_AVAILABLE, FALSE, READY, TRUE, Condition, merge
from ebb.model import ComputeEnvironment


@dataclass(frozen=True, slots=True)
class LaunchFailure:
    """The last launch of an environment that failed (until one succeeds)."""

    at: str  # RFC 3339
    reason: str  # CamelCase: InsufficientCapacity, LaunchFailed, LaunchOutcomeUnknown
    message: str

    def __str__(self) -> str:
        return f"{self.at} {self.reason}: {self.message}"


def environment_status(
    view: Environment,
    catalog: Catalog,
    *,
    node_types: Iterable[str | None],
    pending_pods: int,
    unavailable: Iterable[Unavailable],
    launch_failure: LaunchFailure | None,
    blocked: str | None,
    previous: Sequence[Condition],
    now: str,
) -> dict[str, Any]:
    """`node_types`: the instance type of each of the environment's nodes; `unavailable`:
    every offering avoided for a while (those of this environment are listed); `blocked`:
    why the last plan could not launch for some of its pods (the planner's cause);
    `previous`: its conditions as last written."""
    types = list(node_types)
    offerings = sorted(
        str(u)
        for u in unavailable
        if u.capacity_type == view.spec.capacity_type
        and any(o.name == u.instance_type for o in view.offerings)
    )
    conditions = [
        _ready(view.spec, view.problem),
        _capacity_available(
            view,
            # A failed launch says something only while capacity is still asked for.
            launch_failure if pending_pods or view.vcpus < view.spec.min_vcpus else None,
            blocked,
            offerings,
        ),
    ]
    return {
        "status": "INVALID" if view.problem else "VALID",
        "statusReason": view.problem or "",
        "desiredvCpus": view.vcpus,
        "currentvCpus": sum(_vcpus(catalog, t) for t in types),
        "nodes": len(types),
        "pendingPods": pending_pods,
        "observedGeneration": view.spec.generation,
        "unavailableOfferings": offerings,
        "lastLaunchError": str(launch_failure) if launch_failure else "",
        "conditions": merge(previous, conditions, view.spec.generation, now),
    }


def unmanaged_status(
    spec: ComputeEnvironment, previous: Sequence[Condition], now: str
) -> dict[str, Any]:
    """An UNMANAGED environment's status: VALID, as AWS Batch shows one, and its Ready
    condition; no capacity figures (Ebb launches nothing for it)."""
    conditions = merge(previous, [_ready(spec, None)], spec.generation, now)
    return {
        "status": "VALID",
        "statusReason": "",
        "observedGeneration": spec.generation,
        "conditions": conditions,
    }


def _ready(spec: ComputeEnvironment, problem: str | None) -> Condition:
    if problem:
        return Condition(READY, FALSE, "Invalid", f"INVALID: {problem}")
    if not spec.enabled:
        what = "it launches nothing; its nodes drain" if spec.managed else "no new jobs go to it"
        return Condition(READY, FALSE, "Disabled", f"spec.state is DISABLED: {what}")
    if not spec.managed:
        return Condition(
            READY,
            TRUE,
            "Ready",
            f"UNMANAGED and ENABLED: jobs run on your nodes labelled "
            f"{keys.COMPUTE_ENVIRONMENT_LABEL}={spec.name}, within maxvCpus",
        )
    return Condition(READY, TRUE, "Ready", "VALID and ENABLED")


def _capacity_available(
    view: Environment,
    failure: LaunchFailure | None,
    blocked: str | None,
    unavailable: Sequence[str],
) -> Condition:
    """False when it cannot launch what its pods ask for now: not Ready, maxvCpus
    reached, EC2 short of capacity, or its last launch failed."""
    ready = _ready(view.spec, view.problem)
    if ready.status != TRUE:
        return Condition(CAPACITY_AVAILABLE, FALSE, ready.reason, ready.message)
    if blocked == MAX_VCPUS_REACHED:
        message = (
            f"pods wait: maxvCpus {view.spec.max_vcpus} reached "
            f"({view.vcpus} vCPUs running or launching)"
        )
        return Condition(CAPACITY_AVAILABLE, FALSE, MAX_VCPUS_REACHED, message)
    if failure is not None:
        return Condition(CAPACITY_AVAILABLE, FALSE, failure.reason, failure.message)
    if blocked == INSUFFICIENT_CAPACITY:
        message = "pods wait: EC2 has no capacity now for the instance types that fit them" + (
            f" (unavailable: {', '.join(unavailable)})" if unavailable else ""
        )
        return Condition(CAPACITY_AVAILABLE, FALSE, INSUFFICIENT_CAPACITY, message)
    message = f"{view.vcpus} of maxvCpus {view.spec.max_vcpus} running or launching"
    return Condition(CAPACITY_AVAILABLE, TRUE, "CapacityAvailable", message)


def _vcpus(catalog: Catalog, instance_type: str | None) -> int:
    t = catalog.get(instance_type or "")
    return t.vcpus if t else 0
