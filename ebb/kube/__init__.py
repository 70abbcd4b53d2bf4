"""Kubernetes access: connection settings, a small async API client and the reflector.

Public surface: `ClusterAccess`/`load_access` (how to reach the API server),
`KubeClient` (requests), `ApiError`, the `Resource` descriptors, and `Reflector`
(the only code that opens watches).
"""

from ebb.kube.client import (
    REQUEST_ERRORS,
    TRANSPORT_ERRORS,
    ApiError,
    KubeClient,
    ListResult,
    until_reachable,
)
from ebb.kube.config import ClusterAccess, ConfigError, load_access
from ebb.kube.reflector import Event, EventType, Reflector, Store
from ebb.kube.resources import (
    COMPUTE_ENVIRONMENTS,
    CUSTOM_RESOURCE_DEFINITIONS,
    EVENTS,
    JOB_DEFINITIONS,
    JOB_QUEUES,
    JOBS,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    SCHEDULING_POLICIES,
    SERVICES,
    Resource,
)

__all__ = [
    "COMPUTE_ENVIRONMENTS",
    "CUSTOM_RESOURCE_DEFINITIONS",
    "EVENTS",
    "JOBS",
    "JOB_DEFINITIONS",
    "JOB_QUEUES",
    "LEASES",
    "NAMESPACES",
    "NODES",
    "PODS",
    "REQUEST_ERRORS",
    "SCHEDULING_POLICIES",
    "SERVICES",
    "TRANSPORT_ERRORS",
    "ApiError",
    "ClusterAccess",
    "ConfigError",
    "Event",
    "EventType",
    "KubeClient",
    "ListResult",
    "Reflector",
    "Resource",
    "Store",
    "load_access",
    "until_reachable",
]
