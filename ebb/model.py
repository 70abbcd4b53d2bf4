"""Ebb's object model: compute environments, job queues, scheduling policies, and the
compact projections of Nodes and Pods that both daemons keep in their caches.

Everything here is a frozen value built from a raw API object by a `*_from_raw`
function; decision code only ever sees these values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ebb import keys
from ebb.conditions import Condition
from ebb.conditions import from_raw as conditions_from_raw
from ebb.resources import ZERO, Resources, from_resource_list, pod_requests
from ebb.selector import LabelSelector, parse_or_closed

UNMANAGED = "UNMANAGED"
ENABLED = "ENABLED"
VALID = "VALID"
INVALID = "INVALID"

Raw = Mapping[str, Any]


def _meta(raw: Raw) -> Raw:
    return raw.get("metadata") or {}


# --- compute environments, queues, policies ---------------------------------------------


@dataclass(frozen=True, slots=True)
class LaunchTemplate:
    id: str | None
    name: str | None
    version: str | None


@dataclass(frozen=True, slots=True)
class ComputeEnvironment:
    name: str
    type: str  # "EC2" (On-Demand) or "SPOT"
    max_vcpus: int
    instance_types: tuple[str, ...]
    state: str = ENABLED
    min_vcpus: int = 0
    max_gpus: int | None = None
    allocation_strategy: str = "BEST_FIT_PROGRESSIVE"
    bid_percentage: int | None = None
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    instance_role: str | None = None
    image_type: str | None = None
    image_id: str | None = None
    launch_template: LaunchTemplate | None = None
    tags: tuple[tuple[str, str], ...] = ()
    scale_down_delay_seconds: int = 60
    placement_group: str | None = None  # a cluster placement group every launch goes into
    generation: int = 0
    uid: str = ""
    status: str = ""  # VALID / INVALID once the autoscaler has validated it
    status_reason: str = ""
    conditions: tuple[Condition, ...] = ()  # as the autoscaler last wrote them

    @property
    def enabled(self) -> bool:
        return self.state == ENABLED

    @property
    def capacity_type(self) -> str:
        return keys.CAPACITY_SPOT if self.type == "SPOT" else keys.CAPACITY_ON_DEMAND

    @property
    def managed(self) -> bool:
        """Ebb launches and terminates its capacity (EC2 or SPOT, not UNMANAGED)."""
        return self.type != UNMANAGED


def compute_environment_from_raw(raw: Raw) -> ComputeEnvironment:
    meta, spec = _meta(raw), raw.get("spec") or {}
    status = raw.get("status") or {}
    lt = spec.get("launchTemplate")
    return ComputeEnvironment(
        name=str(meta.get("name", "")),
        type=str(spec.get("type", "EC2")),
        state=str(spec.get("state", ENABLED)),
        min_vcpus=int(spec.get("minvCpus", 0)),
        max_vcpus=int(spec.get("maxvCpus", 0)),
        max_gpus=int(spec["maxGpus"]) if spec.get("maxGpus") is not None else None,
        instance_types=tuple(str(t) for t in spec.get("instanceTypes") or ()),
        allocation_strategy=str(spec.get("allocationStrategy", "BEST_FIT_PROGRESSIVE")),
        bid_percentage=int(spec["bidPercentage"]) if spec.get("bidPercentage") else None,
        subnets=tuple(spec.get("subnets") or ()),
        security_group_ids=tuple(spec.get("securityGroupIds") or ()),
        instance_role=spec.get("instanceRole"),
        image_type=spec.get("imageType"),
        image_id=spec.get("imageId"),
        placement_group=spec.get("placementGroup") or None,
        launch_template=LaunchTemplate(
            lt.get("launchTemplateId"), lt.get("launchTemplateName"), lt.get("version")
        )
        if lt
        else None,
        tags=tuple(sorted((str(k), str(v)) for k, v in (spec.get("tags") or {}).items())),
        scale_down_delay_seconds=int(spec.get("scaleDownDelaySeconds", 60)),
        generation=int(meta.get("generation", 0)),
        uid=str(meta.get("uid", "")),
        status=str(status.get("status", "")),
        status_reason=str(status.get("statusReason", "")),
        conditions=conditions_from_raw(status),
    )


@dataclass(frozen=True, slots=True)
class StateTimeLimitAction:
    reason: str
    state: str
    max_time_seconds: int
    action: str


@dataclass(frozen=True, slots=True)
class JobQueue:
    name: str
    priority: int
    compute_environments: tuple[str, ...]  # in computeEnvironmentOrder
    state: str = ENABLED
    scheduling_policy: str | None = None
    state_time_limit_actions: tuple[StateTimeLimitAction, ...] = ()
    generation: int = 0
    # Fair share history (decayed vCPU-seconds per share) as last persisted in status.
    share_usage: tuple[tuple[str, float], ...] = ()
    share_usage_time: str = ""
    # Which namespaces may submit to it (None: every namespace).
    namespace_selector: LabelSelector | None = None
    # A Job without ebb.dev/share takes its namespace's name as its share identifier.
    share_from_namespace: bool = False
    conditions: tuple[Condition, ...] = ()  # as the scheduler last wrote them

    @property
    def enabled(self) -> bool:
        return self.state == ENABLED

    def admits(self, namespace: Mapping[str, str]) -> bool:
        """Does namespaceSelector select a namespace with these labels?"""
        return self.namespace_selector is None or self.namespace_selector.matches(namespace)


def job_queue_from_raw(raw: Raw) -> JobQueue:
    meta, spec = _meta(raw), raw.get("spec") or {}
    status = raw.get("status") or {}
    usage = status.get("shareUsage") or {}
    order = sorted(
        spec.get("computeEnvironmentOrder") or (),
        key=lambda e: (int(e.get("order", 0)), str(e.get("computeEnvironment", ""))),
    )
    return JobQueue(
        name=str(meta.get("name", "")),
        state=str(spec.get("state", ENABLED)),
        priority=int(spec.get("priority", 0)),
        compute_environments=tuple(str(e.get("computeEnvironment", "")) for e in order),
        scheduling_policy=spec.get("schedulingPolicy") or None,
        state_time_limit_actions=tuple(
            StateTimeLimitAction(
                str(a.get("reason", "")),
                str(a.get("state", "RUNNABLE")),
                int(a.get("maxTimeSeconds", 600)),
                str(a.get("action", "CANCEL")),
            )
            for a in spec.get("jobStateTimeLimitActions") or ()
        ),
        generation=int(meta.get("generation", 0)),
        share_usage=tuple(
            sorted((str(k), float(v)) for k, v in (usage.get("vcpuSeconds") or {}).items())
        ),
        share_usage_time=str(usage.get("time", "")),
        namespace_selector=parse_or_closed(spec.get("namespaceSelector"), "spec.namespaceSelector"),
        share_from_namespace=bool(spec.get("shareIdentifierFromNamespace")),
        conditions=conditions_from_raw(status),
    )


@dataclass(frozen=True, slots=True)
class ShareWeight:
    identifier: str  # exact, or a prefix ending in "*"
    weight: float
    # Which namespaces may use the identifiers it governs (None: every namespace).
    namespace_selector: LabelSelector | None = None

    def matches(self, share: str) -> bool:
        if self.identifier.endswith("*"):
            return share.startswith(self.identifier[:-1])
        return share == self.identifier


@dataclass(frozen=True, slots=True)
class SchedulingPolicy:
    name: str
    share_decay_seconds: int = 0
    compute_reservation: int = 0
    shares: tuple[ShareWeight, ...] = ()
    generation: int = 0
    conditions: tuple[Condition, ...] = ()  # as the scheduler last wrote them

    def weight_for(self, share: str) -> float:
        """weightFactor of a share identifier (1, AWS Batch's default, if no entry
        governs it)."""
        found = self.entry_for(share)
        return found[1].weight if found is not None else 1.0

    def entry_for(self, share: str) -> tuple[int, ShareWeight] | None:
        """The shareDistribution entry (and its index) that governs a share identifier:
        an exact entry wins, then the longest matching wildcard prefix."""
        best: tuple[int, ShareWeight] | None = None
        for i, entry in enumerate(self.shares):
            if entry.identifier == share:
                return i, entry
            if entry.matches(share) and (
                best is None or len(entry.identifier) > len(best[1].identifier)
            ):
                best = i, entry
        return best


def scheduling_policy_from_raw(raw: Raw) -> SchedulingPolicy:
    meta = _meta(raw)
    fair = (raw.get("spec") or {}).get("fairsharePolicy") or {}
    return SchedulingPolicy(
        name=str(meta.get("name", "")),
        share_decay_seconds=int(fair.get("shareDecaySeconds", 0)),
        compute_reservation=int(fair.get("computeReservation", 0)),
        shares=tuple(
            ShareWeight(
                str(s["shareIdentifier"]),
                float(s.get("weightFactor", 1.0)),
                parse_or_closed(
                    s.get("namespaceSelector"),
                    f"spec.fairsharePolicy.shareDistribution[{i}].namespaceSelector",
                ),
            )
            for i, s in enumerate(fair.get("shareDistribution") or ())
            if s.get("shareIdentifier")
        ),
        generation=int(meta.get("generation", 0)),
        conditions=conditions_from_raw(raw.get("status")),
    )


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """What tenancy reads of a namespace: its labels, and whether it is being deleted."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    terminating: bool = False


def namespace_from_raw(raw: Raw) -> NamespaceInfo:
    meta = _meta(raw)
    return NamespaceInfo(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        terminating=meta.get("deletionTimestamp") is not None
        or (raw.get("status") or {}).get("phase") == "Terminating",
    )


# --- nodes and pods ---------------------------------------------------------------------


Toleration = tuple[str, str, str, str]  # (key, operator, value, effect)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    allocatable: Resources
    compute_environment: str | None  # None: not an Ebb batch node
    capacity_type: str | None
    instance_type: str | None
    zone: str | None
    provider_id: str | None
    unschedulable: bool
    draining: bool  # carries Ebb's draining taint
    ready: bool
    created: str
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)

    @property
    def instance_id(self) -> str | None:
        """The EC2 instance id from providerID aws:///<zone>/<instance-id>."""
        if self.provider_id and self.provider_id.startswith("aws://"):
            return self.provider_id.rsplit("/", 1)[-1] or None
        return None


def node_from_raw(raw: Raw) -> NodeInfo:
    meta, spec, status = _meta(raw), raw.get("spec") or {}, raw.get("status") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    taints = tuple(
        (str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", "")))
        for t in spec.get("taints") or ()
    )
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return NodeInfo(
        name=str(meta.get("name", "")),
        allocatable=from_resource_list(status.get("allocatable")),
        compute_environment=labels.get(keys.COMPUTE_ENVIRONMENT_LABEL),
        capacity_type=labels.get(keys.CAPACITY_TYPE_LABEL),
        instance_type=labels.get(keys.INSTANCE_TYPE_LABEL),
        zone=labels.get(keys.ZONE_LABEL),
        provider_id=spec.get("providerID"),
        unschedulable=bool(spec.get("unschedulable")),
        draining=any(t[0] == keys.DRAINING_TAINT for t in taints),
        ready=ready,
        created=str(meta.get("creationTimestamp", "")),
        labels=tuple(sorted(labels.items())),
        taints=taints,
    )


@dataclass(frozen=True, slots=True)
class ContainerExit:
    name: str
    exit_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    node_name: str | None
    phase: str
    requests: Resources
    queue: str | None
    job_name: str | None
    job_uid: str | None
    completion_index: int | None
    unschedulable: bool  # PodScheduled=False, reason Unschedulable
    scheduling_message: str  # kube-scheduler's word on why it is not placed
    scheduling_gated: bool
    terminating: bool
    disrupted: bool  # DisruptionTarget=True (node lost, preempted, evicted)
    disruption_message: str
    created: str
    started: str | None
    finished: str | None
    reason: str  # pod status reason (DeadlineExceeded, ...)
    exits: tuple[ContainerExit, ...] = ()
    disrupted_at: str | None = None  # when DisruptionTarget became True
    labels: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    tolerates_batch_taint: bool = False
    capacity_type_preference: str | None = None
    tolerations: tuple[Toleration, ...] = field(default=(), compare=False)
    # The Job controller's finalizer: on a finished pod, it has not counted the pod yet.
    job_tracking: bool = False
    gang_size: int | None = None  # a multi-node job's pod: its job's node count
    # The Job controller's count of its index's earlier failures (backoffLimitPerIndex).
    index_failures: int | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def active(self) -> bool:
        """Holds resources on its node: bound and not finished."""
        return self.node_name is not None and self.phase not in ("Succeeded", "Failed")

    @property
    def exit_code(self) -> int | None:
        for exit_ in self.exits:
            if exit_.exit_code != 0:
                return exit_.exit_code
        return self.exits[0].exit_code if self.exits else None


def _condition(status: Raw, kind: str) -> Raw | None:
    conditions: list[Raw] = status.get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
INDEX_FAILURE_COUNT = "batch.kubernetes.io/job-index-failure-count"


def pod_from_raw(raw: Raw) -> PodInfo:
    meta, spec, status = _meta(raw), raw.get("spec") or {}, raw.get("status") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    owner = next((o for o in meta.get("ownerReferences") or () if o.get("kind") == "Job"), None)
    scheduled = _condition(status, "PodScheduled") or {}
    disruption = _condition(status, "DisruptionTarget") or {}
    exits = []
    finished = None
    for cs in status.get("containerStatuses") or ():
        term = (cs.get("state") or {}).get("terminated")
        if term:
            exits.append(
                ContainerExit(
                    str(cs.get("name", "")),
                    int(term.get("exitCode", 0)),
                    str(term.get("reason", "")),
                )
            )
            finished = max(finished or "", str(term.get("finishedAt") or ""))
    index = annotations.get("batch.kubernetes.io/job-completion-index")
    tolerations = spec.get("tolerations") or ()
    return PodInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        node_name=spec.get("nodeName") or None,
        phase=str(status.get("phase", "Pending")),
        requests=pod_requests(spec) if spec else ZERO,
        queue=labels.get(keys.QUEUE_LABEL),
        job_name=owner.get("name") if owner else labels.get("batch.kubernetes.io/job-name"),
        job_uid=owner.get("uid") if owner else None,
        completion_index=int(index) if index and index.isdigit() else None,
        unschedulable=scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable",
        scheduling_message=str(scheduled.get("message", ""))
        if scheduled.get("status") == "False"
        else "",
        scheduling_gated=bool(spec.get("schedulingGates")),
        terminating=meta.get("deletionTimestamp") is not None,
        disrupted=disruption.get("status") == "True",
        disruption_message=str(disruption.get("message", "")),
        created=str(meta.get("creationTimestamp", "")),
        started=status.get("startTime"),
        finished=finished or None,
        reason=str(status.get("reason", "")),
        exits=tuple(exits),
        disrupted_at=disruption.get("lastTransitionTime")
        if disruption.get("status") == "True"
        else None,
        labels=tuple(sorted(labels.items())),
        tolerates_batch_taint=any(
            t.get("key") == keys.BATCH_NODE_TAINT
            or (t.get("operator") == "Exists" and not t.get("key"))
            for t in tolerations
        ),
        capacity_type_preference=annotations.get(keys.CAPACITY_TYPE_PREFERENCE),
        tolerations=tuple(
            (
                str(t.get("key", "")),
                str(t.get("operator") or "Equal"),
                str(t.get("value", "")),
                str(t.get("effect", "")),
            )
            for t in tolerations
        ),
        job_tracking=JOB_TRACKING_FINALIZER in (meta.get("finalizers") or ()),
        gang_size=int(gang) if (gang := labels.get(keys.NODES, "")).isdigit() else None,
        index_failures=int(count)
        if (count := annotations.get(INDEX_FAILURE_COUNT, "")).isdigit()
        else None,
    )
