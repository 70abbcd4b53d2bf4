"""Every attempt of a job, as recorded on the Job (annotation `ebb.dev/attempts`):
pod, node, array index, exit code, reason, AWS-style status reason, start and stop.
The Job controller's counters (status.succeeded + status.failed) give the total; the
record keeps the details of the most recent attempts.

An attempt whose host went away (the pod's DisruptionTarget condition) stopped when
that condition was set, and has no exit code (`exitCode: null`): its container never
exited, it was lost with the instance, and AWS Batch reports no exit code for a host
termination either. Its instance is the node's, or — the node being gone by then — the
one the condition's message names (Ebb's autoscaler writes it, ebb/nodeloss.py).

A multi-node job's entries carry the gang's attempt number (`attempt`), one entry per
node: when an attempt ends, the pods still running are recorded as stopped with it
(`GangAttemptEnded`, the status reason naming the node whose failure ended it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from ebb.model import PodInfo
from ebb.nodeloss import instance_in
from extender.jobs.retry import ATTEMPT_TIMED_OUT, status_reason_for

KEEP = 20


@dataclass(frozen=True, slots=True)
class Attempt:
    """Field names are those of the published JSON (camelCase, like AWS Batch's)."""

    pod: str
    node: str | None
    index: int | None
    exitCode: int | None
    reason: str
    statusReason: str
    startedAt: str | None
    stoppedAt: str | None
    attempt: int | None = None  # a multi-node job's attempt (its pods share it)


GANG_ATTEMPT_ENDED = "GangAttemptEnded"


@dataclass(frozen=True, slots=True)
class GangEnd:
    """A multi-node job's attempt ending: its unfinished pods are recorded as stopped."""

    attempt: int
    status_reason: str
    at: str


def from_pod(pod: PodInfo, instance_of: Mapping[str, str]) -> Attempt | None:
    """The attempt a finished pod was; None while it runs."""
    if pod.phase not in ("Succeeded", "Failed"):
        return None
    instance = (
        instance_of.get(pod.node_name or "") or instance_in(pod.disruption_message) or pod.node_name
    )
    if pod.reason == "DeadlineExceeded":
        status_reason = ATTEMPT_TIMED_OUT
    elif pod.phase == "Succeeded":
        status_reason = "Essential container in task exited"
    else:
        status_reason = status_reason_for(pod.disrupted, instance)
    exits = [e for e in pod.exits if e.exit_code != 0] or list(pod.exits)
    reason = pod.reason or (exits[0].reason if exits else "")
    if pod.disrupted and not reason:
        reason = "DisruptionTarget"
    return Attempt(
        pod=pod.name,
        node=pod.node_name,
        index=pod.completion_index,
        exitCode=None if pod.disrupted and not pod.exits else pod.exit_code,
        reason=reason,
        statusReason=status_reason,
        startedAt=pod.started,
        stoppedAt=pod.finished or (pod.disrupted_at if pod.disrupted else None),
    )


def parse(text: str) -> list[dict[str, Any]]:
    if not text:
        return []
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    return [a for a in doc if isinstance(a, dict)] if isinstance(doc, list) else []


def _stopped(pod: PodInfo, end: GangEnd) -> Attempt:
    return Attempt(
        pod=pod.name,
        node=pod.node_name,
        index=pod.completion_index,
        exitCode=None,
        reason=GANG_ATTEMPT_ENDED,
        statusReason=end.status_reason,
        startedAt=pod.started,
        stoppedAt=end.at,
        attempt=end.attempt,
    )


def merge(
    recorded: str,
    pods: Iterable[PodInfo],
    instance_of: Mapping[str, str],
    *,
    gang_attempt: int | None = None,
    end: GangEnd | None = None,
    keep: int = KEEP,
) -> str | None:
    """The new record if `pods` add or change attempts, else None (nothing to write).
    `gang_attempt`: a multi-node job's current attempt, given to pods not recorded yet;
    `end`: that attempt ends, its unfinished pods are recorded as stopped."""
    old = parse(recorded)
    by_pod = {a.get("pod"): a for a in old}
    for pod in pods:
        attempt = from_pod(pod, instance_of)
        if attempt is None and end is not None:
            attempt = _stopped(pod, end)
        if attempt is None:
            continue
        entry = asdict(attempt)
        # A pod keeps the attempt it was recorded in (an ended attempt's pods linger).
        number = by_pod.get(pod.name, {}).get("attempt") or entry["attempt"] or gang_attempt
        if number is None:
            del entry["attempt"]
        else:
            entry["attempt"] = number
        by_pod[pod.name] = entry
    ordered = sorted(by_pod.values(), key=lambda a: (a.get("stoppedAt") or "", a.get("pod") or ""))
    kept = ordered[-keep:]
    return None if kept == old else orjson.dumps(kept).decode()
