"""The job state machine: AWS Batch's states, on a Kubernetes Job.

Its edges, drawn (each `──►` is an edge from every state on its left to every state on
its right; tests/unit/jobs/test_lifecycle.py checks that the drawing is TRANSITIONS):

    SUBMITTED ──► PENDING ──► RUNNABLE ──► STARTING ──► RUNNING ──► SUCCEEDED
    SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING ──► FAILED
    STARTING, RUNNING ──► RUNNABLE    a failed attempt waits for its retry; or put back in its queue
    SUBMITTED ──► RUNNABLE, STARTING, RUNNING, SUCCEEDED    Ebb first sees the Job there
    PENDING ──► STARTING      admitted by the pass that saw its dependencies met
    RUNNABLE ──► RUNNING      a retry's pod ran before a pass saw it pending
    RUNNING ──► STARTING      a retry's pod was created before a pass saw the attempt fail
    RUNNABLE, STARTING ──► SUCCEEDED    its pod ran and succeeded between two passes

AWS Batch's path is the first line; FAILED is reached from every state that is not
final (cancelled while not admitted, terminated, timed out, a failed dependency, a
state time limit, attempts exhausted). The other edges are the same path seen by
passes that come a moment apart: a pass publishes the state it finds, not each one
the Job went through. `transition()` is the one way a decided state is checked
against this table (reconcile routes every status it decides through it).

SUBMITTED   the Job exists; Ebb has not looked at it yet (set by the webhook).
PENDING     waiting for its dependencies.
RUNNABLE    dependencies met, suspended, waiting for admission (queue order, quota);
            or admitted, with a failed attempt waiting for its retry (AWS Batch moves
            a job with attempts left back to RUNNABLE): the Job controller has not
            created the next attempt's pod yet. It keeps its admission meanwhile.
            Or admitted, then suspended again by Ebb: its environments changed so that
            no node they may have can hold its pods, and none was bound to a node.
STARTING    admitted (unsuspended); its pods exist, none running yet (being scheduled,
            capacity being launched).
RUNNING     at least one pod running, or (several pods) some have finished and the
            Job goes on; a job whose pod succeeded stays where it was until the Job is
            Complete.
SUCCEEDED   the Job is Complete.
FAILED      the Job Failed — attempts exhausted, an EXIT rule, a timeout, a failed
            dependency, cancelled or terminated.

An array parent whose children have started stays RUNNING until it ends (it never
goes back to STARTING), its children's states counted in ebb.dev/array-status (as
AWS Batch's array summary). RUNNING/STARTING → RUNNABLE is a failed attempt waiting
for its retry, a job put back in its queue, or someone suspending an admitted Job
again. While the Job controller has not yet counted a pod that finished, the state
does not move: the pod's outcome (success, retry, attempts exhausted) is not known yet.
Every state comes with a reason: a machine-readable code and a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ebb import keys


class State(Enum):
    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNABLE = "RUNNABLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED)


_S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    _S.SUBMITTED: frozenset(
        {_S.PENDING, _S.RUNNABLE, _S.STARTING, _S.RUNNING, _S.SUCCEEDED, _S.FAILED}
    ),
    _S.PENDING: frozenset({_S.RUNNABLE, _S.STARTING, _S.FAILED}),
    _S.RUNNABLE: frozenset({_S.STARTING, _S.RUNNING, _S.SUCCEEDED, _S.FAILED}),
    _S.STARTING: frozenset({_S.RUNNING, _S.RUNNABLE, _S.SUCCEEDED, _S.FAILED}),
    _S.RUNNING: frozenset({_S.STARTING, _S.RUNNABLE, _S.SUCCEEDED, _S.FAILED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
}


class IllegalTransition(ValueError):
    """A decided state that is no edge from the published one: a bug in the deciding
    code, or in the table."""

    def __init__(self, old: State, new: State) -> None:
        super().__init__(f"{old.value} → {new.value} is not a transition of the job state machine")
        self.old = old
        self.new = new


def allowed(old: State | None, new: State) -> bool:
    """Is `old → new` a transition of the state machine? (None: first sighting.)"""
    return old is None or old is new or new in TRANSITIONS[old]


def transition(old: State | None, new: State) -> State:
    """The state a job published as `old` (None: nothing published yet) moves to when a
    pass decides `new`: `new` itself (staying is no transition); IllegalTransition if
    `old → new` is no edge of the drawing above."""
    if old is None or allowed(old, new):
        return new
    raise IllegalTransition(old, new)


class Code(Enum):
    """Machine-readable reasons; the MISCONFIGURATION/CAPACITY ones are AWS Batch's,
    usable in a queue's jobStateTimeLimitActions."""

    SUBMITTED = "SUBMITTED"
    DEPENDENCY_WAIT = "DEPENDENCY:WAITING"
    DEPENDENCY_FAILED = "DEPENDENCY:FAILED"
    WAITING_FOR_CAPACITY = "CAPACITY:COMPUTE_ENVIRONMENT_FULL"
    INSUFFICIENT_CAPACITY = "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"
    FAIR_SHARE = "QUEUE:FAIR_SHARE"
    HEAD_OF_LINE = "QUEUE:RESERVED_FOR_HEAD_OF_LINE"
    MAX_RESOURCE = "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE"
    JOB_RESOURCE_REQUIREMENT = "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"
    NO_COMPUTE_ENVIRONMENT = "MISCONFIGURATION:COMPUTE_ENVIRONMENT_UNAVAILABLE"
    NO_QUEUE = "MISCONFIGURATION:JOB_QUEUE_NOT_FOUND"
    NAMESPACE_NOT_ALLOWED = "MISCONFIGURATION:NAMESPACE_NOT_ALLOWED"
    SHARE_NOT_ALLOWED = "MISCONFIGURATION:SHARE_IDENTIFIER_NOT_ALLOWED"
    NAMESPACE_TERMINATING = "NAMESPACE:TERMINATING"
    ADMITTED = "ADMITTED"
    PODS_PENDING = "STARTING:PODS_PENDING"
    RETRY_WAIT = keys.RETRY_WAIT_CODE
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    ATTEMPTS_EXHAUSTED = "FAILED:ATTEMPTS_EXHAUSTED"
    EXIT_RULE = "FAILED:EXIT_RULE"
    TIMEOUT = "FAILED:TIMEOUT"
    CANCELLED = "FAILED:CANCELLED"
    TERMINATED = "FAILED:TERMINATED"
    STATE_TIME_LIMIT = "FAILED:STATE_TIME_LIMIT"
    INVALID = "FAILED:INVALID_SPEC"
    FAILED = "FAILED"


@dataclass(slots=True)  # made once per job per pass: not frozen, for speed; do not mutate
class Status:
    """A job's published state and why. A waiting job's reason starts with its place in
    its queue; the text is only built when it is published (most passes do not)."""

    state: State
    code: Code
    detail: str
    position: int = 0
    queue: str = ""

    @property
    def reason(self) -> str:
        if self.position:
            return f"position {self.position} in queue {self.queue}: {self.detail}"
        return self.detail


# Job condition reasons Ebb writes when it fails a job itself (Failed/FailureTarget).
CONDITION_REASONS: dict[Code, str] = {
    Code.DEPENDENCY_FAILED: "EbbDependencyFailed",
    Code.CANCELLED: "EbbCancelled",
    Code.TERMINATED: "EbbTerminated",
    Code.TIMEOUT: "EbbAttemptTimedOut",
    Code.STATE_TIME_LIMIT: "EbbStateTimeLimit",
    Code.INVALID: "EbbInvalidSpec",
    # A multi-node job's attempts are Ebb's to count (the Job controller ignores its pods'
    # failures): it fails the job itself.
    Code.ATTEMPTS_EXHAUSTED: "EbbAttemptsExhausted",
    Code.EXIT_RULE: "EbbExitRule",
}
_CODE_BY_CONDITION = {v: k for k, v in CONDITION_REASONS.items()}


def failed_code(condition_reason: str) -> Code:
    """The code for a Job's Failed condition reason (Ebb's own, or the Job controller's)."""
    if condition_reason in _CODE_BY_CONDITION:
        return _CODE_BY_CONDITION[condition_reason]
    if condition_reason in ("BackoffLimitExceeded", "FailedIndexes"):
        return Code.ATTEMPTS_EXHAUSTED
    if condition_reason in ("PodFailurePolicy", "MaxFailedIndexesExceeded"):
        return Code.EXIT_RULE
    if condition_reason == "DeadlineExceeded":
        return Code.TIMEOUT
    return Code.FAILED
