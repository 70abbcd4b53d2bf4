"""AWS Batch retry strategies, translated into a Job's backoffLimit and podFailurePolicy.

AWS evaluates `evaluateOnExit` rules in order, first match wins, and retries when no
rule matches; Kubernetes evaluates podFailurePolicy rules in order, first match wins,
and counts unmatched failures against backoffLimit — the same shape. What differs is
what a rule can look at:

- `onExitCode` globs ("1*") are expanded into explicit codes (1, 10-19, 100-199).
- `onStatusReason` is matched against the status reasons Ebb reports: a pod whose node
  went away (Spot reclaim, instance failure: the DisruptionTarget condition) reports
  "Host EC2 (instance i-…) terminated."; any other failure reports "Essential
  container in task exited". A glob matching the first becomes a DisruptionTarget
  rule; one matching the second becomes an exit-code rule.
- Rules of both kinds must all match (AND); a host-terminated pod has no exit code,
  so a rule with both an exit-code glob and a host status reason never matches.

Array jobs (Indexed, more than one completion) retry each child on its own:
backoffLimitPerIndex, and EXIT fails the child (FailIndex), as AWS fails one child.

Multi-node jobs (gangs) are retried as a whole, which the Job controller cannot do: it
replaces one pod. Their pods' failures are all `Ignore`d by the Job controller (never
counted, never failing the Job), a successPolicy on the main node's index makes the
main node's success the Job's, and Ebb ends and retries the gang's attempts itself
(`gang_verdict`; docs/decisions/0008-gang-failure.md).

A job without a retry strategy runs once on AWS Batch; a Job without a backoffLimit is
retried 6 times by Kubernetes. A Job in an Ebb queue without `ebb.dev/retry-strategy`
whose backoffLimit is that default runs once, as if it carried `{"attempts": 1}`; any
other backoffLimit (or a backoffLimitPerIndex) is its author's and is kept. (Admission
webhooks see Jobs after defaulting: an explicit `backoffLimit: 6` is the default.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ebb.jobspec import ExitRule, RetryAction, RetryStrategy

HOST_TERMINATED = "Host EC2 (instance {instance}) terminated."
CONTAINER_EXITED = "Essential container in task exited"
ATTEMPT_TIMED_OUT = "Job attempt duration exceeded timeout"
_HOST_EXAMPLE = HOST_TERMINATED.format(instance="i-0123456789abcdef0")
_MAX_CODE = 255
_UNLIMITED = 2**31 - 1
KUBERNETES_DEFAULT_BACKOFF_LIMIT = 6
ONE_ATTEMPT = RetryStrategy(attempts=1)


def expand_exit_codes(glob: str) -> frozenset[int]:
    """Exit codes 0-255 whose decimal form matches an AWS exit-code glob."""
    if glob.endswith("*"):
        prefix = glob[:-1]
        return frozenset(c for c in range(_MAX_CODE + 1) if str(c).startswith(prefix))
    return frozenset({int(glob)}) if glob and int(glob) <= _MAX_CODE else frozenset()


def status_reason_for(disrupted: bool, instance_id: str | None) -> str:
    """The AWS-style status reason Ebb reports for a failed attempt."""
    if disrupted:
        return HOST_TERMINATED.format(instance=instance_id or "unknown")
    return CONTAINER_EXITED


def rule_matches(rule: ExitRule, exit_code: int | None, status_reason: str) -> bool:
    """Does an evaluateOnExit rule match one failed attempt? (All given fields must.)"""
    if rule.on_status_reason is not None and not fnmatchcase(status_reason, rule.on_status_reason):
        return False
    return rule.on_exit_code is None or (
        exit_code is not None and fnmatchcase(str(exit_code), rule.on_exit_code)
    )


@dataclass(frozen=True, slots=True)
class RetryFields:
    """What a retry strategy sets on the Job spec."""

    backoff_limit: int
    backoff_limit_per_index: int | None
    pod_failure_policy: dict[str, Any] | None
    success_policy: dict[str, Any] | None = None

    def as_spec_patch(self) -> dict[str, Any]:
        patch: dict[str, Any] = {"backoffLimit": self.backoff_limit}
        if self.backoff_limit_per_index is not None:
            patch["backoffLimitPerIndex"] = self.backoff_limit_per_index
        if self.pod_failure_policy is not None:
            patch["podFailurePolicy"] = self.pod_failure_policy
            # Required with a podFailurePolicy: replace a pod only once it has failed.
            patch["podReplacementPolicy"] = "Failed"
        if self.success_policy is not None:
            patch["successPolicy"] = self.success_policy
        return patch


def effective_strategy(
    strategy: RetryStrategy | None, job_spec: Mapping[str, Any]
) -> RetryStrategy | None:
    """The retry strategy Ebb applies to a Job (`job_spec`: its spec, after the API
    server's defaulting): its own; AWS Batch's one attempt if its author chose no
    retries; None if the author chose Kubernetes' (a backoffLimit other than the
    default, or a backoffLimitPerIndex)."""
    if strategy is not None:
        return strategy
    if job_spec.get("backoffLimitPerIndex") is not None:
        return None
    limit = job_spec.get("backoffLimit", KUBERNETES_DEFAULT_BACKOFF_LIMIT)
    return ONE_ATTEMPT if limit == KUBERNETES_DEFAULT_BACKOFF_LIMIT else None


def translate(
    strategy: RetryStrategy, *, per_index: bool, main_node: int | None = None
) -> RetryFields:
    """The backoffLimit(PerIndex) and podFailurePolicy that implement `strategy`
    (`main_node`: a multi-node job's main node index; Ebb retries those, see above)."""
    if main_node is not None:
        return _gang_fields(main_node)
    retries = strategy.attempts - 1
    fail_action = "FailIndex" if per_index else "FailJob"
    rules: list[dict[str, Any]] = []
    for rule in strategy.rules:
        rules.extend(_pod_failure_rules(rule, fail_action))
    policy = {"rules": rules} if rules else None
    if per_index:
        return RetryFields(_UNLIMITED, retries, policy)
    return RetryFields(retries, None, policy)


def _gang_fields(main_node: int) -> RetryFields:
    """No pod failure counts for the Job controller (Ebb ends the gang's attempt); the
    main node's success is the Job's."""
    ignored = [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [0]}},
    ]
    success = {"rules": [{"succeededIndexes": str(main_node)}]}
    return RetryFields(_UNLIMITED, None, {"rules": ignored}, success)


def verdict(strategy: RetryStrategy, exit_code: int | None, status_reason: str) -> RetryAction:
    """What AWS Batch does with a failed attempt: the first evaluateOnExit rule that
    matches decides; none matching retries. (Attempts left are the caller's to count.)"""
    for rule in strategy.rules:
        if rule_matches(rule, exit_code, status_reason):
            return rule.action
    return RetryAction.RETRY


def _pod_failure_rules(rule: ExitRule, fail_action: str) -> list[dict[str, Any]]:
    action = "Count" if rule.action is RetryAction.RETRY else fail_action
    glob = rule.on_status_reason
    host = glob is None or fnmatchcase(_HOST_EXAMPLE, glob)
    exited = glob is None or fnmatchcase(CONTAINER_EXITED, glob)
    out: list[dict[str, Any]] = []
    # A host-terminated attempt has no exit code, so an exit-code glob excludes it.
    if host and rule.on_exit_code is None:
        out.append(
            {"action": action, "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
        )
    if exited:
        if rule.on_exit_code is None or rule.on_exit_code == "*":
            out.append({"action": action, "onExitCodes": {"operator": "NotIn", "values": [0]}})
        else:
            # Kubernetes forbids 0 with In (a failed container has a non-zero code).
            codes = sorted(expand_exit_codes(rule.on_exit_code) - {0})
            if codes:
                out.append({"action": action, "onExitCodes": {"operator": "In", "values": codes}})
    return out
