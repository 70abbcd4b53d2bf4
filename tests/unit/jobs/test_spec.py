from __future__ import annotations

import pytest

from ebb.jobspec import (
    Dependency,
    DependencyType,
    RetryAction,
    SpecError,
    parse_depends_on,
    parse_job_spec,
    parse_retry_strategy,
)


def test_depends_on_types_and_default() -> None:
    assert parse_depends_on("prep, train:afterany, shards:n_to_n ,x:AFTERNOTOK") == (
        Dependency("prep", DependencyType.AFTER_OK),
        Dependency("train", DependencyType.AFTER_ANY),
        Dependency("shards", DependencyType.N_TO_N),
        Dependency("x", DependencyType.AFTER_NOT_OK),
    )
    assert parse_depends_on(None) == ()
    assert parse_depends_on("  ") == ()


def test_depends_on_has_no_limit_of_20() -> None:
    names = ", ".join(f"job-{i}" for i in range(50))
    assert len(parse_depends_on(names)) == 50


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a,,b", "entry 2 is empty"),
        ("Bad_Name", "'Bad_Name' is not a Job name"),
        ("a:afterwards", "has type 'afterwards'; allowed: afterok, afterany, afternotok, n_to_n"),
        ("a, a:afterany", "'a' is listed twice"),
    ],
)
def test_bad_depends_on_names_the_annotation(value: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_depends_on(value)
    assert str(info.value).startswith("ebb.dev/depends-on: ")
    assert message in str(info.value)


def test_retry_strategy() -> None:
    strategy = parse_retry_strategy(
        '{"attempts": 3, "evaluateOnExit": [{"onExitCode": "1*", "action": "retry"},'
        ' {"onStatusReason": "Host EC2*", "action": "RETRY"}, {"onReason": "*", "action": "EXIT"}]}'
    )
    assert strategy is not None
    assert strategy.attempts == 3
    assert [r.action for r in strategy.rules] == [
        RetryAction.RETRY,
        RetryAction.RETRY,
        RetryAction.EXIT,
    ]
    assert strategy.rules[0].on_exit_code == "1*"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{", "ebb.dev/retry-strategy: not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"attempts": 0}', "ebb.dev/retry-strategy.attempts: 0 is not allowed (an integer 1-10)"),
        ('{"attempts": 11}', "attempts: 11 is not allowed"),
        ('{"attempts": "3"}', "attempts: '3' is not allowed"),
        ('{"attempts": true}', "attempts: True is not allowed"),
        ('{"attempts": 2, "retries": 1}', "unknown field(s) retries"),
        (
            '{"attempts": 2, "evaluateOnExit": [{"action": "RETRY"}]}',
            "evaluateOnExit[0]: needs at least one of onExitCode",
        ),
        (
            '{"attempts": 2, "evaluateOnExit": [{"onExitCode": "1*2", "action": "RETRY"}]}',
            "evaluateOnExit[0].onExitCode: '1*2' is not a valid glob",
        ),
        (
            '{"attempts": 2, "evaluateOnExit": [{"onExitCode": "1", "action": "MAYBE"}]}',
            "evaluateOnExit[0].action: 'MAYBE' is not allowed (RETRY or EXIT)",
        ),
        (
            '{"attempts": 2, "evaluateOnExit": [{"onStatusReason": "a|b", "action": "EXIT"}]}',
            "onStatusReason: 'a|b' is not a valid glob",
        ),
        (
            '{"attempts": 2, "evaluateOnExit": [{"onReason": "OutOfMemory*", "action": "EXIT"}]}',
            "onReason: matching the container's reason is not supported",
        ),
        (
            '{"attempts": 2, "evaluateOnExit": '
            + str([{"onExitCode": "1", "action": "EXIT"}] * 6).replace("'", '"')
            + "}",
            "at most 5 rules",
        ),
    ],
)
def test_bad_retry_strategies_name_the_field(value: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_retry_strategy(value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"ebb.dev/scheduling-priority": "high"}, "scheduling-priority: 'high' is not an integer"),
        ({"ebb.dev/scheduling-priority": "10000"}, "10000 is out of range (allowed: 0-9999)"),
        ({"ebb.dev/timeout-seconds": "59"}, "59 is below the minimum of 60 seconds"),
        ({"ebb.dev/timeout-seconds": "1h"}, "'1h' is not a whole number of seconds"),
        ({"ebb.dev/capacity-type": "reserved"}, "'reserved' is not allowed (allowed: spot"),
        ({"ebb.dev/array-dependency": "N_TO_N"}, "'N_TO_N' is not allowed (allowed: SEQUENTIAL)"),
    ],
)
def test_bad_annotations(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_job_spec(annotations)
    assert message in str(info.value)


def test_full_spec() -> None:
    spec = parse_job_spec(
        {
            "ebb.dev/depends-on": "a",
            "ebb.dev/scheduling-priority": "7",
            "ebb.dev/timeout-seconds": "120",
            "ebb.dev/capacity-type": "on-demand",
            "ebb.dev/array-dependency": "sequential",
            "ebb.dev/retry-strategy": '{"attempts": 2}',
        }
    )
    assert spec.scheduling_priority == 7
    assert spec.timeout_seconds == 120
    assert spec.capacity_type == "on-demand"
    assert spec.sequential
    assert spec.retry is not None
    assert spec.retry.attempts == 2
