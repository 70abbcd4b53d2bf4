"""Tenancy: which namespaces may use a queue and a share identifier. Pure.

AWS Batch guards a job queue with IAM and a share identifier with the
`batch:ShareIdentifier` condition key; Ebb with namespace selectors:

- `JobQueue.spec.namespaceSelector`: the namespaces whose Jobs the queue takes
  (absent: every namespace).
- `SchedulingPolicy.spec.fairsharePolicy.shareDistribution[].namespaceSelector`: the
  namespaces that may use the share identifiers the entry governs — the entry that gives
  an identifier its weight (the exact one, else the longest matching wildcard), so
  overlapping entries never disagree: the most specific one decides, for the weight and
  for who may use it. An identifier no entry governs is open to every namespace.
- `JobQueue.spec.shareIdentifierFromNamespace`: a Job without `ebb.dev/share` takes its
  namespace's name as its share (one team per namespace needs no label).

The webhook refuses such Jobs; the scheduler never admits one that got past it (created
suspended, or labelled later): it stays RUNNABLE with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ebb import keys
from ebb.conditions import FALSE, NAMESPACES_SELECTED, TRUE, Condition
from ebb.model import JobQueue, NamespaceInfo, SchedulingPolicy
from extender.jobs.lifecycle import Code


@dataclass(frozen=True, slots=True)
class Refusal:
    code: Code
    field: str  # the Job's field at fault, as the webhook names it
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def effective_share(share: str, namespace: str, queue: JobQueue | None) -> str:
    """The Job's share identifier: its label, else (if its queue says so) its namespace."""
    if share or queue is None or not queue.share_from_namespace:
        return share
    return namespace


def check(
    namespace: NamespaceInfo,
    queue: JobQueue,
    share: str,
    policy: SchedulingPolicy | None,
) -> Refusal | None:
    """Why a Job of `namespace` may not run in `queue` with `share` (its effective
    share), or None. Names the queue, the selector and the namespace — never other
    queues."""
    name = namespace.name
    if namespace.terminating:
        return Refusal(
            Code.NAMESPACE_TERMINATING,
            "metadata.namespace",
            f"namespace {name} is being deleted (Terminating): its Jobs are not admitted",
        )
    if not queue.admits(namespace.labels):
        return Refusal(
            Code.NAMESPACE_NOT_ALLOWED,
            f"metadata.labels[{keys.QUEUE_LABEL}]",
            f"job queue {queue.name} does not admit Jobs from namespace {name}: its "
            f"spec.namespaceSelector ({queue.namespace_selector}) does not select it",
        )
    if policy is None or not share:
        return None
    found = policy.entry_for(share)
    if found is None:
        return None
    index, entry = found
    selector = entry.namespace_selector
    if selector is None or selector.matches(namespace.labels):
        return None
    origin = (
        f" (namespace {name}'s name: queue {queue.name} has shareIdentifierFromNamespace)"
        if share == name and queue.share_from_namespace
        else ""
    )
    return Refusal(
        Code.SHARE_NOT_ALLOWED,
        f"metadata.labels[{keys.SHARE_LABEL}]",
        f"share identifier {share!r}{origin} may not be used from namespace {name}: "
        f"scheduling policy {policy.name} spec.fairsharePolicy.shareDistribution[{index}] "
        f"({entry.identifier}) has namespaceSelector ({selector}), which does not select it",
    )


def namespaces_condition(queue: JobQueue, namespaces: Iterable[NamespaceInfo]) -> Condition:
    """The queue's NamespacesSelected condition: False (with the field named) when its
    namespaceSelector is invalid or selects no namespace — no Job can be submitted to it."""
    selector = queue.namespace_selector
    if selector is None:
        return Condition(
            NAMESPACES_SELECTED, TRUE, "AllNamespaces", "no namespaceSelector: every namespace"
        )
    if selector.problem:
        return Condition(NAMESPACES_SELECTED, FALSE, "InvalidSelector", selector.problem)
    n = sum(1 for ns in namespaces if not ns.terminating and selector.matches(ns.labels))
    if n:
        message = f"spec.namespaceSelector ({selector}) selects {n} namespace(s)"
        return Condition(NAMESPACES_SELECTED, TRUE, "Selected", message)
    message = (
        f"spec.namespaceSelector ({selector}) selects no namespace: no Job can be "
        "submitted to this queue"
    )
    return Condition(NAMESPACES_SELECTED, FALSE, "NoNamespaceSelected", message)
