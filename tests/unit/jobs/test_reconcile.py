from __future__ import annotations

from dataclasses import replace

from ebb.model import JobQueue, PodInfo, StateTimeLimitAction
from ebb.resources import Resources
from extender.jobs.admission import CapacityLimit
from extender.jobs.lifecycle import Code, State
from extender.jobs.reconcile import Snapshot, reconcile
from extender.jobs.snapshot import JobInfo
from tests.unit.jobs.factories import job, pod

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def snapshot(
    *jobs: JobInfo,
    pods: dict[str, list[PodInfo]] | None = None,
    vcpus: int = 4,
    queue: JobQueue | None = None,
) -> Snapshot:
    return Snapshot(
        now=NOW + 60,
        jobs={j.key: j for j in jobs},
        pods_by_job=pods or {},
        queues={"q": queue or JobQueue("q", 1, ("ce",))},
        policies={},
        capacity={"ce": CapacityLimit(Resources(vcpus * 1000, 2**50, 0))},
        node_compute_environment={"node-1": "ce"},
        node_instance={"node-1": "i-0abc"},
    )


def test_runnable_jobs_are_admitted_in_order_and_the_rest_wait() -> None:
    jobs = [job(f"j{i}", cpu="2", created=f"2026-01-01T00:00:0{i}Z") for i in range(3)]
    out = reconcile(snapshot(*jobs))
    assert out.admit == {"ns/j0": 1, "ns/j1": 1}
    assert out.statuses["ns/j0"].state is State.STARTING
    waiting = out.statuses["ns/j2"]
    assert waiting.state is State.RUNNABLE
    assert waiting.reason.startswith("position 1 in queue q: waiting for capacity")


def test_running_and_finished_jobs() -> None:
    running = job("run", suspend=False, status={"active": 1})
    ok = job(
        "ok",
        suspend=False,
        status={"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
    )
    bad = job(
        "bad",
        suspend=False,
        status={
            "failed": 1,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        },
    )
    out = reconcile(snapshot(running, ok, bad, pods={"ns/run": [pod("run", "run-x")]}))
    assert out.statuses["ns/run"].state is State.RUNNING
    assert out.statuses["ns/ok"].state is State.SUCCEEDED
    assert out.statuses["ns/bad"].code is Code.ATTEMPTS_EXHAUSTED
    assert out.admit == {}


def test_attempts_are_recorded_with_aws_status_reasons() -> None:
    j = job("j", suspend=False, status={"active": 1, "failed": 2})
    pods = [
        pod("j", "j-1", phase="Failed", exit_code=1),
        pod("j", "j-2", phase="Failed", disrupted=True),
        pod("j", "j-3"),
    ]
    out = reconcile(snapshot(j, pods={"ns/j": pods}))
    import orjson

    record = orjson.loads(out.attempts["ns/j"])
    assert sorted((a["pod"], a["exitCode"], a["statusReason"]) for a in record) == [
        ("j-1", 1, "Essential container in task exited"),
        ("j-2", None, "Host EC2 (instance i-0abc) terminated."),
    ]


def test_dependency_failure_fails_a_never_started_job() -> None:
    parent = job("p", suspend=False, status={"conditions": [{"type": "Failed", "status": "True"}]})
    child = job("c", annotations={"ebb.dev/depends-on": "p"})
    out = reconcile(snapshot(parent, child))
    failure = out.fail["ns/c"]
    assert failure.code is Code.DEPENDENCY_FAILED
    assert not failure.started


def test_invalid_annotations_fail_the_job_with_the_reason() -> None:
    out = reconcile(snapshot(job("x", annotations={"ebb.dev/timeout-seconds": "5"})))
    assert out.fail["ns/x"].code is Code.INVALID
    assert "timeout-seconds" in out.fail["ns/x"].message


def test_timed_out_attempt_terminates_the_job() -> None:
    j = job(
        "t",
        suspend=False,
        annotations={"ebb.dev/timeout-seconds": "60"},
        status={"active": 1, "failed": 1},
    )
    out = reconcile(
        snapshot(
            j,
            pods={
                "ns/t": [pod("t", "t-1", phase="Failed", reason="DeadlineExceeded", exit_code=137)]
            },
        )
    )
    assert out.fail["ns/t"].code is Code.TIMEOUT
    assert out.fail["ns/t"].started


def test_state_time_limit_cancels_after_max_time() -> None:
    queue = JobQueue(
        "q",
        1,
        ("ce",),
        state_time_limit_actions=(
            StateTimeLimitAction("CAPACITY:COMPUTE_ENVIRONMENT_FULL", "RUNNABLE", 600, "CANCEL"),
        ),
    )
    holder = job("holder", cpu="4", suspend=False, status={"active": 1})
    stuck = job(
        "stuck",
        annotations={
            "ebb.dev/state": "RUNNABLE",
            "ebb.dev/reason-code": "CAPACITY:COMPUTE_ENVIRONMENT_FULL",
            "ebb.dev/since": "2025-12-31T23:40:00Z",
        },
    )
    out = reconcile(
        snapshot(holder, stuck, pods={"ns/holder": [pod("holder", "h", cpu="4")]}, queue=queue)
    )
    assert out.fail["ns/stuck"].code is Code.STATE_TIME_LIMIT
    fresh = job(
        "fresh",
        annotations={
            "ebb.dev/state": "RUNNABLE",
            "ebb.dev/reason-code": "CAPACITY:COMPUTE_ENVIRONMENT_FULL",
            "ebb.dev/since": "2025-12-31T23:59:00Z",
        },
    )
    out = reconcile(
        snapshot(holder, fresh, pods={"ns/holder": [pod("holder", "h", cpu="4")]}, queue=queue)
    )
    assert "ns/fresh" not in out.fail


def test_n_to_n_gates_lift_for_completed_indexes() -> None:
    first = job(
        "a",
        indexed=True,
        completions=3,
        suspend=False,
        status={"completedIndexes": "1", "active": 2},
    )
    second = job(
        "b",
        indexed=True,
        completions=3,
        suspend=False,
        annotations={"ebb.dev/depends-on": "a:n_to_n"},
        status={"active": 3},
    )
    pods = [pod("b", f"b-{i}", phase="Pending", node=None, index=i, gated=True) for i in range(3)]
    out = reconcile(snapshot(first, second, pods={"ns/b": pods}))
    assert out.ungate == ["ns/b-1"]


def test_array_summary_counts_children() -> None:
    arr = job(
        "arr",
        indexed=True,
        completions=10,
        parallelism=10,
        suspend=False,
        status={"succeeded": 4, "active": 3},
    )
    pods = [pod("arr", f"arr-{i}", index=i) for i in range(2)]
    pods.append(pod("arr", "arr-9", phase="Pending", node=None, index=9))
    out = reconcile(snapshot(arr, pods={"ns/arr": pods}))
    assert out.array_status["ns/arr"] == {
        "PENDING": 0,
        "RUNNABLE": 3,
        "STARTING": 1,
        "RUNNING": 2,
        "SUCCEEDED": 4,
        "FAILED": 0,
    }


def test_webhook_sends_batch_pods_to_the_configured_scheduler() -> None:
    from ebb.jobspec import JobSpec
    from extender.webhook.mutation import mutate
    from tests.unit.jobs.factories import raw_job

    raw = raw_job("j", suspend=False)
    assert "schedulerName" not in mutate(raw, JobSpec())["spec"]["template"]["spec"]
    out = mutate(raw, JobSpec(), "ebb-scheduler")
    assert out["spec"]["template"]["spec"]["schedulerName"] == "ebb-scheduler"
    assert out["spec"]["suspend"] is True


def test_admissions_are_listed_in_the_order_admission_granted_them() -> None:
    # Created newest first, so store order and FIFO order disagree: a writer that writes
    # only the first admissions of a pass must get the oldest.
    jobs = [job(f"j{i}", cpu="1", created=f"2026-01-01T00:00:0{9 - i}Z") for i in range(4)]
    out = reconcile(snapshot(*jobs, vcpus=8))
    assert list(out.admit) == ["ns/j3", "ns/j2", "ns/j1", "ns/j0"]


RUNNING_NOW = {"ebb.dev/state": "RUNNING", "ebb.dev/reason-code": "RUNNING"}


def test_a_job_whose_pod_succeeded_stays_running_until_the_job_is_complete() -> None:
    # Counted by the Job controller, the Job not Complete yet: no STARTING in between.
    j = job("j", suspend=False, annotations=RUNNING_NOW, status={"succeeded": 1})
    out = reconcile(snapshot(j, pods={"ns/j": [pod("j", "j-1", phase="Succeeded", exit_code=0)]}))
    assert "ns/j" not in out.statuses
    assert "ns/j" in out.attempts  # its record may go out: nothing is in flight


def test_nothing_moves_while_the_job_controller_has_a_finished_pod_to_count() -> None:
    # The pod finished; the Job controller has not counted it (it still carries its
    # finalizer; then, finalizer gone, it is in uncountedTerminatedPods): no state, no
    # record, no summary, no growth.
    tracked = pod("j", "j-1", phase="Failed", exit_code=3, tracked=True)
    untracked = pod("j", "j-1", phase="Failed", exit_code=3)
    for status, seen in (
        ({"active": 1}, tracked),
        ({"uncountedTerminatedPods": {"failed": ["uid-j-1"]}}, untracked),
    ):
        j = job("j", suspend=False, annotations=RUNNING_NOW, status=status)
        out = reconcile(snapshot(j, pods={"ns/j": [seen]}))
        assert "ns/j" not in out.statuses and "ns/j" not in out.attempts
        # Said so: the controller keeps the departed pods of such a job for its record.
        assert out.counting == {"ns/j"}
    arr = job(
        "arr",
        indexed=True,
        completions=4,
        parallelism=1,
        suspend=False,
        annotations={"ebb.dev/requested-parallelism": "4", **RUNNING_NOW},
        status={"active": 1},
    )
    done = pod("arr", "arr-0", phase="Succeeded", index=0, exit_code=0, tracked=True)
    pods = [done, pod("arr", "arr-1")]
    out = reconcile(snapshot(arr, pods={"ns/arr": pods}, vcpus=8))
    assert out.admit == {} and out.array_status == {} and "ns/arr" not in out.statuses
    pods = [replace(done, job_tracking=False), pod("arr", "arr-1")]
    # Counted: it grows, and the summary goes out.
    counted = job(
        "arr",
        indexed=True,
        completions=4,
        parallelism=1,
        suspend=False,
        annotations={"ebb.dev/requested-parallelism": "4", **RUNNING_NOW},
        status={"active": 1, "succeeded": 1},
    )
    out = reconcile(snapshot(counted, pods={"ns/arr": pods}, vcpus=8))
    assert out.admit == {"ns/arr": 3}
    assert out.array_status["ns/arr"]["SUCCEEDED"] == 1


def test_a_failed_attempt_waiting_for_its_retry_is_runnable_and_keeps_its_admission() -> None:
    retried = job(
        "r",
        cpu="4",
        suspend=False,
        annotations={"ebb.dev/retry-strategy": '{"attempts": 3}', **RUNNING_NOW},
        status={"failed": 1},
    )
    behind = job("b", cpu="1")
    failed = [pod("r", "r-1", phase="Failed", exit_code=3, cpu="4")]
    out = reconcile(snapshot(retried, behind, pods={"ns/r": failed}))
    status = out.statuses["ns/r"]
    assert (status.state, status.code) == (State.RUNNABLE, Code.RETRY_WAIT)
    assert status.reason.startswith("attempt 1 failed (exit code 3); attempt 2 waits for")
    # It holds its admission: the CE is full, it is not admitted again, nothing else is.
    assert out.admit == {}
    assert out.statuses["ns/b"].code is Code.WAITING_FOR_CAPACITY
    assert out.used == {"ce": 4.0}
    # The next attempt's pod exists: STARTING, then RUNNING.
    pending = [*failed, pod("r", "r-2", phase="Pending", node=None, cpu="4")]
    status = reconcile(snapshot(retried, pods={"ns/r": pending})).statuses["ns/r"]
    assert (status.state, status.reason) == (State.STARTING, "attempt 2; pods starting")


def test_an_array_parent_stays_running_between_its_children() -> None:
    arr = job(
        "arr",
        indexed=True,
        completions=3,
        parallelism=1,
        suspend=False,
        annotations={"ebb.dev/array-dependency": "SEQUENTIAL", **RUNNING_NOW},
        status={"succeeded": 1, "active": 1},
    )
    pods = [
        pod("arr", "arr-0", phase="Succeeded", index=0, exit_code=0),
        pod("arr", "arr-1", phase="Pending", node=None, index=1),
    ]
    status = reconcile(snapshot(arr, pods={"ns/arr": pods})).statuses["ns/arr"]
    assert status.state is State.RUNNING
    assert status.reason == "1 of 3 succeeded; pods starting"


def test_every_state_reconcile_publishes_is_a_transition_of_the_state_machine() -> None:
    from extender.jobs.lifecycle import allowed

    cases = [
        # (status, pods): a single pod's life, with a failed attempt and its retry.
        ({"active": 1}, [pod("j", "j-1", phase="Pending", node=None)]),
        ({"active": 1}, [pod("j", "j-1")]),
        ({"failed": 1}, [pod("j", "j-1", phase="Failed", exit_code=1)]),
        (
            {"failed": 1, "active": 1},
            [pod("j", "j-1", phase="Failed", exit_code=1), pod("j", "j-2", phase="Pending")],
        ),
        ({"failed": 1, "active": 1}, [pod("j", "j-2")]),
        ({"failed": 1, "succeeded": 1}, [pod("j", "j-2", phase="Succeeded", exit_code=0)]),
        (
            {"failed": 1, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
            [],
        ),
    ]
    published: State | None = State.STARTING
    for status, pods in cases:
        j = job(
            "j",
            suspend=False,
            annotations={"ebb.dev/state": published.value if published else ""},
            status=status,
        )
        out = reconcile(snapshot(j, pods={"ns/j": pods}))
        new = out.statuses["ns/j"].state if "ns/j" in out.statuses else published
        assert new is not None and allowed(published, new), (published, new, status)
        published = new
    assert published is State.SUCCEEDED


def test_an_array_s_children_failed_for_good_free_their_capacity() -> None:
    """Children 0-2 of a 4-child array used up their retries (status.failedIndexes) and
    child 3 runs: the array holds one vCPU, so a job waiting for three is admitted."""
    array = job(
        "array",
        suspend=False,
        completions=4,
        parallelism=4,
        indexed=True,
        status={"active": 1, "failed": 3, "failedIndexes": "0-2"},
    )
    waiting = job("next", cpu="3")
    out = reconcile(snapshot(array, waiting, pods={"ns/array": [pod("array", "a-3", index=3)]}))
    assert out.admit == {"ns/next": 1}
