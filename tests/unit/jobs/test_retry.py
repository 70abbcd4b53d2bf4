from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ebb.jobspec import parse_retry_strategy
from extender.jobs.retry import (
    CONTAINER_EXITED,
    expand_exit_codes,
    rule_matches,
    status_reason_for,
    translate,
)


def test_exit_code_globs_expand_to_explicit_codes() -> None:
    assert expand_exit_codes("1*") == frozenset({1, *range(10, 20), *range(100, 200)})
    assert expand_exit_codes("3") == frozenset({3})
    assert expand_exit_codes("256") == frozenset()
    assert len(expand_exit_codes("*")) == 256


def test_retry_exit_1_twice_but_not_exit_2() -> None:
    strategy = parse_retry_strategy(
        '{"attempts": 3, "evaluateOnExit": [{"onExitCode": "1", "action": "RETRY"},'
        ' {"onExitCode": "*", "action": "EXIT"}]}'
    )
    assert strategy is not None
    fields = translate(strategy, per_index=False)
    assert fields.backoff_limit == 2
    assert fields.backoff_limit_per_index is None
    assert fields.pod_failure_policy == {
        "rules": [
            {"action": "Count", "onExitCodes": {"operator": "In", "values": [1]}},
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
        ]
    }


def test_host_ec2_status_reason_becomes_disruption_target() -> None:
    strategy = parse_retry_strategy(
        '{"attempts": 5, "evaluateOnExit": [{"onStatusReason": "Host EC2*", "action": "RETRY"},'
        ' {"onReason": "*", "action": "EXIT"}]}'
    )
    assert strategy is not None
    rules = translate(strategy, per_index=False).as_spec_patch()["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Count",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    # onReason "*" matches every failure: host terminations and container exits.
    assert [r["action"] for r in rules[1:]] == ["FailJob", "FailJob"]


def test_array_jobs_retry_each_child() -> None:
    strategy = parse_retry_strategy(
        '{"attempts": 2, "evaluateOnExit": [{"onExitCode": "2", "action": "EXIT"}]}'
    )
    assert strategy is not None
    fields = translate(strategy, per_index=True)
    assert fields.backoff_limit_per_index == 1
    assert fields.backoff_limit == 2**31 - 1
    assert fields.pod_failure_policy == {
        "rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [2]}}]
    }


def test_no_rules_means_plain_backoff_limit() -> None:
    strategy = parse_retry_strategy('{"attempts": 4}')
    assert strategy is not None
    assert translate(strategy, per_index=False).as_spec_patch() == {"backoffLimit": 3}


exit_globs = st.one_of(
    st.integers(0, 300).map(str),
    st.text("0123456789", min_size=0, max_size=3).map(lambda s: s + "*"),
)
status_globs = st.sampled_from(
    ["*", "Host EC2*", "Host*", "Essential*", "Essential container in task exited", "Task*"]
)


@given(
    exit_glob=st.one_of(st.none(), exit_globs),
    status_glob=st.one_of(st.none(), status_globs),
    action=st.sampled_from(["RETRY", "EXIT"]),
    exit_code=st.integers(1, 255),
    disrupted=st.booleans(),
)
def test_translation_agrees_with_aws_matching(
    exit_glob: str | None, status_glob: str | None, action: str, exit_code: int, disrupted: bool
) -> None:
    """The podFailurePolicy Kubernetes evaluates picks the same action AWS would."""
    if exit_glob is None and status_glob is None:
        return
    entry = {"action": action}
    if exit_glob is not None:
        entry["onExitCode"] = exit_glob
    if status_glob is not None:
        entry["onStatusReason"] = status_glob
    import json

    strategy = parse_retry_strategy(json.dumps({"attempts": 3, "evaluateOnExit": [entry]}))
    assert strategy is not None
    (rule,) = strategy.rules
    code = None if disrupted else exit_code
    aws = rule_matches(rule, code, status_reason_for(disrupted, "i-1"))
    policy = translate(strategy, per_index=False).pod_failure_policy or {"rules": []}
    k8s = any(_k8s_rule_matches(r, disrupted, exit_code) for r in policy["rules"])
    assert aws == k8s


def _k8s_rule_matches(rule: dict[str, object], disrupted: bool, exit_code: int) -> bool:
    if "onPodConditions" in rule:
        return disrupted
    codes = rule["onExitCodes"]
    assert isinstance(codes, dict)
    if disrupted:
        return False  # a host-terminated pod reports no exit code in this model
    inside = exit_code in codes["values"]
    return inside if codes["operator"] == "In" else not inside


def test_status_reasons() -> None:
    assert status_reason_for(True, "i-abc") == "Host EC2 (instance i-abc) terminated."
    assert status_reason_for(False, None) == CONTAINER_EXITED


def test_a_job_without_retry_strategy_runs_once_unless_its_author_chose_a_limit() -> None:
    from ebb.jobspec import JobSpec
    from extender.webhook.mutation import mutate
    from tests.unit.jobs.factories import raw_job

    def mutated(**spec: object) -> dict[str, object]:
        raw = raw_job("j")
        raw["spec"].update(spec)
        raw["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
        out = mutate(raw, JobSpec())
        pod_spec = out["spec"]["template"]["spec"]
        return {k: out["spec"].get(k) for k in ("backoffLimit", "backoffLimitPerIndex")} | {
            "restartPolicy": pod_spec["restartPolicy"]
        }

    # Kubernetes' default (what an admission webhook sees when none was written): AWS's one.
    once = {"backoffLimit": 0, "backoffLimitPerIndex": None, "restartPolicy": "Never"}
    assert mutated(backoffLimit=6) == once
    assert mutated() == once
    # Chosen by the author: kept, with the restart policy.
    assert mutated(backoffLimit=2) == {
        "backoffLimit": 2,
        "backoffLimitPerIndex": None,
        "restartPolicy": "OnFailure",
    }
    assert (
        mutated(backoffLimit=2**31 - 1, backoffLimitPerIndex=1, completionMode="Indexed")[
            "backoffLimitPerIndex"
        ]
        == 1
    )
    # An array: one attempt per child.
    assert mutated(backoffLimit=6, completionMode="Indexed", completions=3) == {
        "backoffLimit": 2**31 - 1,
        "backoffLimitPerIndex": 0,
        "restartPolicy": "Never",
    }
    # A retry strategy decides, whatever the limit.
    retried = mutate(raw_job("j"), JobSpec(retry=parse_retry_strategy('{"attempts": 3}')))
    assert retried["spec"]["backoffLimit"] == 2


def test_the_seeds_spot_only_strategy() -> None:
    """Retry host terminations (Spot reclaims) up to 3 attempts, fail on anything else:
    DisruptionTarget counts, then any other failure fails the job, in that order."""
    strategy = parse_retry_strategy(
        '{"attempts": 3, "evaluateOnExit": [{"onStatusReason": "Host EC2*", "action": "RETRY"},'
        ' {"onReason": "*", "action": "EXIT"}]}'
    )
    assert strategy is not None
    disruption = [{"type": "DisruptionTarget", "status": "True"}]
    assert translate(strategy, per_index=False).as_spec_patch() == {
        "backoffLimit": 2,
        "podFailurePolicy": {
            "rules": [
                {"action": "Count", "onPodConditions": disruption},
                {"action": "FailJob", "onPodConditions": disruption},
                {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
            ]
        },
        "podReplacementPolicy": "Failed",
    }
