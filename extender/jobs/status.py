"""What the scheduler daemon publishes on JobQueues and SchedulingPolicies. Pure: built
from plain snapshots, so that the printer columns and `kubectl ebb` show what the last
pass counted, nothing older.

The statuses are written as JSON merge patches, which keep any key a patch leaves out:
so every job state is always written (a state that fell to 0 reads 0), and a share
whose usage decayed away is written as null (which removes it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from ebb.conditions import FALSE, READY, TRUE, Condition, merge
from ebb.model import INVALID, VALID, ComputeEnvironment, JobQueue, SchedulingPolicy
from extender.jobs.lifecycle import State

STATES = tuple(State.__members__)
# The schema's bounds for weightFactor; an object stored before its CEL rule existed may
# still hold 0, which would give that share all the capacity.
MIN_WEIGHT, MAX_WEIGHT = 0.0001, 999.9999
_NAMES_SHOWN = 10  # queue names listed in a policy's statusReason


def count_states(
    queues: Iterable[str], jobs: Iterable[tuple[str, State]]
) -> dict[str, dict[str, int]]:
    """Jobs per queue and state (from (queue, state) pairs); every state of every queue
    is present, 0 included. Queues that only Jobs name are counted too."""
    counts = {queue: dict.fromkeys(STATES, 0) for queue in queues}
    for queue, state in jobs:
        per_queue = counts.get(queue)
        if per_queue is None:
            per_queue = counts[queue] = dict.fromkeys(STATES, 0)
        per_queue[state.value] += 1
    return counts


def queue_problem(
    queue: JobQueue, environments: Collection[str], policies: Collection[str]
) -> str | None:
    missing = [ce for ce in queue.compute_environments if ce not in environments]
    if missing:
        return f"computeEnvironmentOrder names missing environment(s): {', '.join(missing)}"
    if queue.scheduling_policy and queue.scheduling_policy not in policies:
        return f"schedulingPolicy {queue.scheduling_policy} does not exist"
    if queue.namespace_selector is not None and queue.namespace_selector.problem:
        return queue.namespace_selector.problem
    return None


def queue_ready(
    queue: JobQueue, problem: str | None, environments: Mapping[str, ComputeEnvironment]
) -> Condition:
    """Ready: VALID, ENABLED, and at least one of its compute environments can take its
    jobs (exists, ENABLED, not INVALID); else False with what stands in the way."""
    if problem:
        return Condition(READY, FALSE, "Invalid", problem)
    if not queue.enabled:
        return Condition(
            READY, FALSE, "Disabled", "spec.state is DISABLED: the queue accepts no new jobs"
        )
    usable, unusable = [], []
    for name in queue.compute_environments:
        ce = environments.get(name)
        if ce is None:
            unusable.append(f"{name} does not exist")
        elif not ce.enabled:
            unusable.append(f"{name} is DISABLED")
        elif ce.status == INVALID:
            unusable.append(f"{name} is INVALID ({ce.status_reason})")
        else:
            usable.append(name)
    if not usable:
        message = "no compute environment can run its jobs: " + "; ".join(unusable)
        return Condition(READY, FALSE, "NoUsableComputeEnvironment", message)
    message = f"VALID and ENABLED; compute environment(s) {', '.join(usable)} can run its jobs"
    return Condition(READY, TRUE, "Ready", message)


def queue_status(
    queue: JobQueue,
    counts: Mapping[str, int],
    problem: str | None,
    conditions: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A queue's status without its fair-share history (which is written on its own
    period): what users read, written whenever it changes."""
    body = {
        "status": INVALID if problem else VALID,
        "statusReason": problem or "",
        "observedGeneration": queue.generation,
        "jobs": {state: counts.get(state, 0) for state in STATES},
    }
    if conditions:
        body["conditions"] = list(conditions)
    return body


def share_usage_status(
    held: Iterable[str], usage: Mapping[str, float], time: str
) -> dict[str, Any] | None:
    """status.shareUsage for a merge patch: the shares in `usage`, and null for those the
    queue holds (`held`) that decayed away. None when there is nothing to write."""
    values: dict[str, float | None] = dict.fromkeys(held)
    values.update({share: round(v, 3) for share, v in usage.items()})
    if not values:
        return None
    return {"time": time, "vcpuSeconds": values}


def policy_problem(policy: SchedulingPolicy) -> str | None:
    first: dict[str, int] = {}
    for i, entry in enumerate(policy.shares):
        if not MIN_WEIGHT <= entry.weight <= MAX_WEIGHT:
            return (
                f"shareDistribution[{i}].weightFactor ({entry.identifier}) is {entry.weight:g}; "
                f"allowed: {MIN_WEIGHT} to {MAX_WEIGHT}"
            )
        if entry.namespace_selector is not None and entry.namespace_selector.problem:
            return entry.namespace_selector.problem
        # The API server keeps identifiers unique; an object stored before that rule
        # existed may not be: the first entry governs, the later one is a conflict.
        if entry.identifier in first:
            return (
                f"shareDistribution[{i}].shareIdentifier: {entry.identifier} is also "
                f"shareDistribution[{first[entry.identifier]}]; each identifier at most once"
            )
        first[entry.identifier] = i
    return None


def policy_status(
    policy: SchedulingPolicy,
    queues: Iterable[JobQueue],
    previous: Sequence[Condition],
    now: str,
) -> dict[str, Any]:
    """VALID with the queues that use the policy, or INVALID with what is wrong; Ready
    says the same. `previous`: the conditions as last written."""
    problem = policy_problem(policy)
    if problem:
        reason = problem
        ready = Condition(READY, FALSE, "Invalid", problem)
    else:
        users = sorted(q.name for q in queues if q.scheduling_policy == policy.name)
        shown = ", ".join(users[:_NAMES_SHOWN])
        more = f" and {len(users) - _NAMES_SHOWN} more" if len(users) > _NAMES_SHOWN else ""
        reason = f"used by queue(s) {shown}{more}" if users else "used by no queue"
        ready = Condition(READY, TRUE, "Valid", f"VALID, {reason}")
    return {
        "status": INVALID if problem else VALID,
        "statusReason": reason,
        "observedGeneration": policy.generation,
        "conditions": merge(previous, [ready], policy.generation, now),
    }
