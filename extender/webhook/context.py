"""What the webhook consults, and how it refuses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ebb import keys
from ebb.jobdefinition import JobDefinition
from ebb.model import JobQueue, NamespaceInfo, SchedulingPolicy
from extender.jobs import tenancy
from extender.jobs.admission import CapacityLimit
from extender.jobs.snapshot import JobInfo

Json = dict[str, Any]


@dataclass(frozen=True)
class WebhookContext:
    """What the webhook consults: live views kept by the daemon's reflectors."""

    queue: Callable[[str], JobQueue | None]
    queue_names: Callable[[], list[str]]
    # Objects created a moment ago may not have reached the caches: ask the API server.
    refresh_queue: Callable[[str], Awaitable[None]]
    refresh_job: Callable[[str, str], Awaitable[None]]  # (namespace, name)
    refresh_compute_environment: Callable[[str], Awaitable[None]]
    job: Callable[[str, str], JobInfo | None]  # (namespace, name)
    capacity: Callable[[], Mapping[str, CapacityLimit]]
    admitter: Callable[[], str]  # the username Ebb writes as
    scheduler_name: str = ""  # the kube-scheduler batch pods should use ("": the default)
    namespace: Callable[[str], NamespaceInfo | None] = lambda _: None
    refresh_namespace: Callable[[str], Awaitable[None]] = lambda _: _nothing()
    policy: Callable[[str], SchedulingPolicy | None] = lambda _: None
    # A namespace's JobDefinitions (every active revision), and a fresh read of them.
    definitions: Callable[[str], list[JobDefinition]] = lambda _: []
    refresh_definitions: Callable[[str], Awaitable[None]] = lambda _: _nothing()

    def tenancy_refusal(self, job: Json, queue: JobQueue) -> tenancy.Refusal | None:
        """Why the Job's namespace may not use its queue or its share (tenancy.check)."""
        meta = job.get("metadata") or {}
        name = str(meta.get("namespace", ""))
        namespace = self.namespace(name) or NamespaceInfo(name)
        policy = self.policy(queue.scheduling_policy) if queue.scheduling_policy else None
        return tenancy.check(namespace, queue, job_share(job, queue), policy)


async def _nothing() -> None:
    return None


def job_share(job: Json, queue: JobQueue | None) -> str:
    """The Job's effective share identifier (its label, or its namespace's name)."""
    meta = job.get("metadata") or {}
    share = str((meta.get("labels") or {}).get(keys.SHARE_LABEL, ""))
    return tenancy.effective_share(share, str(meta.get("namespace", "")), queue)


class Rejected(Exception):
    pass
