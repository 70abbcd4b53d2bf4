"""The status document of a compute environment, as the autoscaler writes it (what
`kubectl get computeenvironments` and `kubectl ebb` show). Pure code."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from autoscaler.environments import Unavailable
from autoscaler.planner import Environment
from ebb.catalog import Catalog


def environment_status(
    view: Environment,
    catalog: Catalog,
    *,
    node_types: Iterable[str | None],
    pending_pods: int,
    unavailable: Iterable[Unavailable],
    last_launch_error: str,
) -> dict[str, Any]:
    """`node_types`: the instance type of each of the environment's nodes; `unavailable`:
    every offering avoided for a while (those of this environment are listed)."""
    types = list(node_types)
    return {
        "status": "INVALID" if view.problem else "VALID",
        "statusReason": view.problem or "",
        "desiredvCpus": view.vcpus,
        "currentvCpus": sum(_vcpus(catalog, t) for t in types),
        "nodes": len(types),
        "pendingPods": pending_pods,
        "observedGeneration": view.spec.generation,
        "unavailableOfferings": sorted(
            str(u)
            for u in unavailable
            if u.capacity_type == view.spec.capacity_type
            and any(o.name == u.instance_type for o in view.offerings)
        ),
        "lastLaunchError": last_launch_error,
    }


def _vcpus(catalog: Catalog, instance_type: str | None) -> int:
    t = catalog.get(instance_type or "")
    return t.vcpus if t else 0
