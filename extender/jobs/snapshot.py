"""The compact view of a Job that the scheduler keeps for each of (up to 100,000s of)
managed Jobs, built from the raw object by `job_from_raw` (the reflector transform)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ebb import keys
from ebb.jobspec import JobSpec, SpecError, parse_job_spec
from ebb.resources import ZERO, Resources, pod_requests
from extender.jobs.lifecycle import State


def parse_time(value: str | None) -> float | None:
    """RFC 3339 (as the API server writes it) to epoch seconds."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def format_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class JobInfo:
    namespace: str
    name: str
    uid: str
    resource_version: str
    queue: str
    share: str
    created: float
    spec: JobSpec
    spec_error: str | None  # a malformed annotation: the job fails with this
    cancel: str | None
    terminate: str | None
    suspended: bool
    parallelism: int
    requested_parallelism: int
    completions: int | None
    indexed: bool
    pod_request: Resources
    template_ready: bool  # pod template carries the queue label and batch toleration
    # status
    active: int
    ready: int
    succeeded: int
    failed: int
    terminating: int
    uncounted: int  # finished pods the Job controller is still moving into its counters
    started: float | None
    completed_indexes: str
    failed_indexes: str
    terminal: str | None  # "Complete" or "Failed"
    terminal_reason: str
    terminal_message: str
    failure_target: bool
    success_criteria_met: bool  # the successPolicy is met: the Job controller completes it
    # what Ebb published last
    published_state: State | None
    published_code: str
    published_reason: str
    since: float | None
    admitted_at: float | None
    attempts_json: str
    array_status: str
    gang_attempt: int = 1
    # Derived from the fields above and read for every job in every pass, so built once
    # (the reflector builds a JobInfo per event; `dataclasses.replace` builds them anew).
    key: str = field(init=False, repr=False, compare=False)  # "namespace/name"
    # A multi-node parallel job: admitted and placed all or nothing, one pod per node.
    gang: bool = field(init=False, repr=False, compare=False)
    # More than one pod, not a gang: admitted pod by pod as capacity allows (its
    # parallelism raised as it grows) — plain Jobs have no gang semantics.
    elastic: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        gang = self.spec.multi_node is not None
        elastic = self.requested_parallelism > 1 and (self.completions or 2) > 1 and not gang
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")
        object.__setattr__(self, "gang", gang)
        object.__setattr__(self, "elastic", elastic)

    @property
    def is_array(self) -> bool:
        return self.indexed and (self.completions or 0) > 1 and not self.gang

    @property
    def remaining(self) -> int:
        """Pods still to run to completion (an upper bound on pods it can use): not the
        children that succeeded, nor those failed for good, which the Job controller never
        runs again (backoffLimitPerIndex)."""
        if self.completions is None:  # done as soon as one pod succeeds
            return self.parallelism if self.succeeded == 0 else 0
        failed = len(parse_index_ranges(self.failed_indexes)) if self.failed_indexes else 0
        return max(self.completions - self.succeeded - failed, 0)

    @property
    def admitted(self) -> bool:
        return not self.suspended


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int) else default


def job_from_raw(raw: Mapping[str, Any]) -> JobInfo | None:
    meta = raw.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    queue = labels.get(keys.QUEUE_LABEL)
    if not queue:
        return None
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    try:
        job_spec, spec_error = parse_job_spec(annotations), None
    except SpecError as exc:
        job_spec, spec_error = JobSpec(), str(exc)
    terminal, terminal_reason, terminal_message, failure_target = None, "", "", False
    success_criteria_met = False
    for cond in status.get("conditions") or ():
        if cond.get("status") != "True":
            continue
        kind = cond.get("type")
        if kind in ("Complete", "Failed"):
            terminal = kind
            terminal_reason = str(cond.get("reason", ""))
            terminal_message = str(cond.get("message", ""))
        elif kind == "FailureTarget":
            failure_target = True
        elif kind == "SuccessCriteriaMet":
            success_criteria_met = True
    template_spec = ((spec.get("template") or {}).get("spec")) or {}
    uncounted: Mapping[str, list[str]] = status.get("uncountedTerminatedPods") or {}
    published = annotations.get(keys.STATE)
    completions = spec.get("completions")
    return JobInfo(
        # (Names shared by many Jobs are interned, as their requests are shared below.)
        namespace=sys.intern(str(meta.get("namespace", ""))),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        queue=sys.intern(queue),
        share=sys.intern(labels.get(keys.SHARE_LABEL, "")),
        created=parse_time(meta.get("creationTimestamp")) or 0.0,
        spec=job_spec,
        spec_error=spec_error,
        cancel=annotations.get(keys.CANCEL),
        terminate=annotations.get(keys.TERMINATE),
        suspended=bool(spec.get("suspend")),
        parallelism=_int(spec.get("parallelism"), 1),
        requested_parallelism=_requested_parallelism(annotations, spec),
        completions=completions if isinstance(completions, int) else None,
        indexed=spec.get("completionMode") == "Indexed",
        pod_request=_shared(pod_requests(template_spec)) if template_spec else ZERO,
        template_ready=_template_ready(spec.get("template") or {}),
        active=_int(status.get("active"), 0),
        ready=_int(status.get("ready"), 0),
        succeeded=_int(status.get("succeeded"), 0),
        failed=_int(status.get("failed"), 0),
        terminating=_int(status.get("terminating"), 0),
        uncounted=sum(len(uids or ()) for uids in uncounted.values()),
        started=parse_time(status.get("startTime")),
        completed_indexes=str(status.get("completedIndexes") or ""),
        failed_indexes=str(status.get("failedIndexes") or ""),
        terminal=terminal,
        terminal_reason=terminal_reason,
        terminal_message=terminal_message,
        failure_target=failure_target,
        success_criteria_met=success_criteria_met,
        published_state=State(published) if published in State.__members__ else None,
        published_code=annotations.get(keys.REASON_CODE, ""),
        published_reason=annotations.get(keys.REASON, ""),
        since=parse_time(annotations.get(keys.STATE_SINCE)),
        admitted_at=parse_time(annotations.get(keys.ADMITTED_AT)),
        attempts_json=annotations.get(keys.ATTEMPTS, ""),
        array_status=annotations.get(keys.ARRAY_STATUS, ""),
        gang_attempt=_int_text(annotations.get(keys.GANG_ATTEMPT, ""), 1),
    )


def _shared(request: Resources) -> Resources:
    """One object for every Job of the same request: a pass reads each waiting Job's,
    and a few objects stay in the CPU's caches where 100,000 would not."""
    return _request(request.cpu_milli, request.memory, request.gpu)


@functools.lru_cache(maxsize=4096)  # past that, requests are merely not shared
def _request(cpu_milli: int, memory: int, gpu: int) -> Resources:
    return Resources(cpu_milli, memory, gpu)


def _int_text(text: str, default: int) -> int:
    return int(text) if text.isdigit() else default


def _template_ready(template: Mapping[str, Any]) -> bool:
    labels = (template.get("metadata") or {}).get("labels") or {}
    tolerations = (template.get("spec") or {}).get("tolerations") or ()
    return keys.QUEUE_LABEL in labels and any(
        t.get("key") == keys.BATCH_NODE_TAINT
        or (not t.get("key") and t.get("operator") == "Exists")
        for t in tolerations
    )


def _requested_parallelism(annotations: Mapping[str, str], spec: Mapping[str, Any]) -> int:
    return _int_text(
        annotations.get(keys.REQUESTED_PARALLELISM, ""), _int(spec.get("parallelism"), 1)
    )


def parse_index_ranges(text: str) -> set[int]:
    """The Job API's compressed index list ("1,3-5,7") as a set."""
    out: set[int] = set()
    for raw_part in text.split(","):
        part = raw_part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out
