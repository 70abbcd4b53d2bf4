"""status.conditions on Ebb's objects, as the Kubernetes API conventions have them: a list
keyed by type, each with status (True, False, Unknown), a CamelCase reason, a message,
lastTransitionTime and observedGeneration (the spec generation it was computed from).

`kubectl wait --for=condition=Ready`, Argo CD health checks and alerts read them. Each
daemon writes the whole list of the objects whose status it owns (the autoscaler:
ComputeEnvironments; the scheduler: JobQueues and SchedulingPolicies), built here from
what it decided and what it wrote last. Pure: the caller passes the time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

READY = "Ready"  # every Ebb object that has a status
CAPACITY_AVAILABLE = "CapacityAvailable"  # ComputeEnvironment: it can launch what pods ask
NAMESPACES_SELECTED = "NamespacesSelected"  # JobQueue: its selector selects some namespace


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str  # TRUE, FALSE or UNKNOWN
    reason: str  # CamelCase, for machines
    message: str  # for people
    last_transition_time: str = ""
    observed_generation: int = 0

    def to_raw(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
            "observedGeneration": self.observed_generation,
        }


def from_raw(status: Mapping[str, Any] | None) -> tuple[Condition, ...]:
    """The conditions of an object's status, as written."""
    return tuple(
        Condition(
            type=str(c.get("type", "")),
            status=str(c.get("status", UNKNOWN)),
            reason=str(c.get("reason", "")),
            message=str(c.get("message", "")),
            last_transition_time=str(c.get("lastTransitionTime", "")),
            observed_generation=int(c.get("observedGeneration") or 0),
        )
        for c in (status or {}).get("conditions") or ()
        if isinstance(c, Mapping)
    )


def _find(conditions: Iterable[Condition], kind: str) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)


def merge(
    previous: Sequence[Condition], current: Iterable[Condition], generation: int, now: str
) -> list[dict[str, Any]]:
    """The status.conditions to write (a writer owns the whole list): `current`, stamped
    with the generation they were computed from; lastTransitionTime is `now` only when a
    condition is new or its status changed, else it is kept from `previous`."""
    out = []
    for condition in current:
        before = _find(previous, condition.type)
        same = before is not None and before.status == condition.status
        since = before.last_transition_time if before is not None and same else ""
        stamped = replace(
            condition, last_transition_time=since or now, observed_generation=generation
        )
        out.append(stamped.to_raw())
    return out
