"""A multi-node job's failure is the gang's: the pure decisions of reconcile."""

from __future__ import annotations

from typing import Any

import orjson

from ebb import keys
from ebb.jobspec import RetryStrategy
from ebb.model import JobQueue, PodInfo
from ebb.resources import Resources
from extender.jobs.admission import CapacityLimit
from extender.jobs.lifecycle import Code, State
from extender.jobs.reconcile import Decisions, Snapshot, reconcile
from extender.jobs.retry import translate
from extender.jobs.snapshot import JobInfo
from tests.unit.jobs.factories import job, pod

NOW = 1_767_225_600.0 + 300  # 2026-01-01T00:05:00Z
SPOT_IDIOM = orjson.dumps(
    {
        "attempts": 3,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }
).decode()


def gang(attempt: int = 1, strategy: str = SPOT_IDIOM, **extra: Any) -> JobInfo:
    annotations = {
        keys.NODES: "3",
        keys.RETRY_STRATEGY: strategy,
        keys.ADMITTED_AT: "2026-01-01T00:00:30Z",
        keys.GANG_ATTEMPT: str(attempt),
        keys.STATE: "RUNNING",
    }
    return job(
        "g",
        annotations=annotations,
        suspend=False,
        completions=3,
        parallelism=3,
        indexed=True,
        status={"active": 3, "startTime": "2026-01-01T00:00:30Z"},
        **extra,
    )


def run(j: JobInfo, pods: list[PodInfo]) -> Decisions:
    nodes = {f"n{i}": "ce" for i in range(3)}
    return reconcile(
        Snapshot(
            now=NOW,
            jobs={j.key: j},
            pods_by_job={j.key: pods},
            queues={"q": JobQueue("q", 1, ("ce",))},
            policies={},
            capacity={"ce": CapacityLimit(Resources(16000, 2**50, 0))},
            node_compute_environment=nodes,
            node_instance={"n1": "i-0abc"},
        )
    )


def nodes(**by_index: PodInfo) -> list[PodInfo]:
    """Three gang pods, running unless given."""
    out = []
    for i in range(3):
        out.append(by_index.get(f"i{i}") or pod("g", f"g-{i}", node=f"n{i}", index=i))
    return out


def test_a_lost_node_ends_the_attempt_and_retries_the_gang_as_a_whole() -> None:
    lost = pod("g", "g-1", phase="Failed", node="n1", index=1, disrupted=True)
    out = run(gang(), nodes(i1=lost))
    restart = out.restart["ns/g"]
    assert restart.attempt == 2
    assert restart.status.state is State.RUNNABLE and restart.status.code is Code.RETRY_WAIT
    assert "Host EC2 (instance i-0abc) terminated." in restart.status.reason
    record = {e["index"]: e for e in orjson.loads(restart.record)}
    assert set(record) == {0, 1, 2} and {e["attempt"] for e in record.values()} == {1}
    assert record[1]["statusReason"] == "Host EC2 (instance i-0abc) terminated."
    assert record[0]["reason"] == "GangAttemptEnded"
    assert record[0]["statusReason"] == "Stopped: node index 1 failed"
    assert "ns/g" not in out.fail and "ns/g" not in out.attempts  # written with the restart
    assert not out.illegal


def test_an_exit_the_rules_say_exit_to_fails_the_gang() -> None:
    failed = pod("g", "g-2", phase="Failed", node="n2", index=2, exit_code=3)
    out = run(gang(), nodes(i2=failed))
    assert out.fail["ns/g"].code is Code.EXIT_RULE and out.fail["ns/g"].started
    assert "node index 2" in out.fail["ns/g"].message and not out.restart


def test_the_last_attempt_fails_the_gang() -> None:
    lost = pod("g", "g-1", phase="Failed", node="n1", index=1, disrupted=True)
    out = run(gang(attempt=3), nodes(i1=lost))
    assert out.fail["ns/g"].code is Code.ATTEMPTS_EXHAUSTED and not out.restart


def test_the_main_nodes_success_ends_nothing() -> None:
    # The successPolicy completes the Job; the pods it stops are no failed attempt.
    done = pod("g", "g-0", phase="Succeeded", node="n0", index=0, exit_code=0)
    stopped = pod("g", "g-2", phase="Failed", node="n2", index=2, exit_code=137)
    out = run(gang(), nodes(i0=done, i2=stopped))
    assert not out.restart and not out.fail


def test_pods_of_an_ended_attempt_are_not_the_new_ones() -> None:
    """Restart safety: after the restart the Job is admitted again (admitted-at moves);
    the earlier attempt's failed pod lingers and must not end the new attempt."""
    old = pod(
        "g",
        "g-1-old",
        phase="Failed",
        node="n1",
        index=1,
        disrupted=True,
        created="2026-01-01T00:00:10Z",
    )
    out = run(gang(attempt=2), [*nodes(), old])
    assert not out.restart and not out.fail
    # Not yet restarted (the write was lost, or the daemon died): decided again, the same.
    again = run(
        gang(), [*nodes(i1=pod("g", "g-1", phase="Failed", node="n1", index=1, disrupted=True))]
    )
    assert again.restart["ns/g"].attempt == 2


def test_a_gang_is_translated_for_ebb_to_retry() -> None:
    fields = translate(RetryStrategy(attempts=3), per_index=False, main_node=2)
    patch = fields.as_spec_patch()
    assert patch["successPolicy"] == {"rules": [{"succeededIndexes": "2"}]}
    assert {r["action"] for r in patch["podFailurePolicy"]["rules"]} == {"Ignore"}
    assert patch["backoffLimit"] == 2**31 - 1


def waiting_gang(status: dict[str, Any]) -> JobInfo:
    """A gang suspended after its attempt 1 ended, waiting for attempt 2."""
    annotations = {
        keys.NODES: "3",
        keys.RETRY_STRATEGY: SPOT_IDIOM,
        keys.GANG_ATTEMPT: "2",
        keys.STATE: "RUNNABLE",
    }
    return job(
        "g",
        annotations=annotations,
        suspend=True,
        completions=3,
        parallelism=3,
        indexed=True,
        status=status,
    )


def test_a_node_that_exited_0_in_the_ended_attempt_runs_again_in_the_next() -> None:
    """Node index 2 exited 0 before another node failed: its index stays completed, and
    the Job controller would start attempt 2 on two nodes (a gang that never completes).
    Its completed index is cleared first; the gang is admitted whole after that."""
    done = pod("g", "g-2", phase="Succeeded", node="n2", index=2, exit_code=0)
    out = run(waiting_gang({"succeeded": 1, "completedIndexes": "2"}), [done])
    assert out.clear_indexes == ["ns/g"] and not out.admit
    # The Job controller has not counted it yet: nothing is written meanwhile.
    counting = pod("g", "g-2", phase="Succeeded", node="n2", index=2, exit_code=0, tracked=True)
    out = run(waiting_gang({"succeeded": 1, "completedIndexes": "2"}), [counting])
    assert not out.clear_indexes and not out.admit
    # Cleared: admitted on all three nodes.
    out = run(waiting_gang({}), [done])
    assert not out.clear_indexes and out.admit == {"ns/g": 3}
