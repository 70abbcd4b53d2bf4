"""What a pass publishes on a Job, and when (no API server: the queue is inspected)."""

from __future__ import annotations

from typing import Any

from ebb import keys
from extender.jobs.lifecycle import Code, State, Status
from extender.jobs.reconcile import Decisions
from extender.jobs.writes import Writer
from tests.unit.jobs.factories import job

RUNNING = {keys.STATE: "RUNNING", keys.REASON_CODE: "RUNNING", keys.REASON: "2 pods running"}
RECORD = '[{"pod":"p-0","exitCode":0}]'


class _Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[Any, ...]] = []

    def record(self, *args: Any, **kwargs: Any) -> None:
        self.recorded.append(args)


def _writer() -> Writer:
    return Writer(None, None, _Events(), reason_refresh_seconds=30.0)  # type: ignore[arg-type]


def _pass(writer: Writer, status: Status, now: float, **details: Any) -> dict[str, str]:
    """One pass over a running job; what it queued for the job."""
    running = job("j", suspend=False, annotations=RUNNING)
    decisions = Decisions(statuses={running.key: status}, **details)
    writer._queue_publications({running.key: running}, decisions, now)
    return dict(writer._pending.pop(running.key, {}))


def test_a_running_jobs_attempts_wait_for_a_refresh_period() -> None:
    writer = _writer()
    still = Status(State.RUNNING, Code.RUNNING, "2 pods running")
    attempts = {"attempts": {"ns/j": RECORD}}
    assert _pass(writer, still, 100.0, **attempts) == {}
    assert _pass(writer, still, 129.0, **attempts) == {}
    assert _pass(writer, still, 130.0, **attempts) == {keys.ATTEMPTS: RECORD}
    # Written: the next change waits a period again.
    assert _pass(writer, still, 140.0, **attempts) == {}


def test_attempts_and_array_summary_go_with_a_state_change_at_once() -> None:
    writer = _writer()
    done = Status(State.SUCCEEDED, Code.SUCCEEDED, "all 2 pods succeeded")
    queued = _pass(
        writer,
        done,
        100.0,
        attempts={"ns/j": RECORD},
        array_status={"ns/j": {"SUCCEEDED": 2}},
    )
    assert queued[keys.STATE] == "SUCCEEDED"
    assert queued[keys.ATTEMPTS] == RECORD
    assert queued[keys.ARRAY_STATUS] == '{"SUCCEEDED":2}'


class _Client:
    def __init__(self) -> None:
        self.patches: list[tuple[str, Any]] = []

    async def patch(self, resource: Any, name: str, body: Any, namespace: str) -> Any:
        self.patches.append((name, body))
        return None  # as if it conflicted: nothing to feed back


class _Jobs:
    def __init__(self, *infos: Any) -> None:
        self.store = {i.key: i for i in infos}


async def test_publications_hold_while_the_job_controller_counts_a_finished_pod() -> None:
    import asyncio

    settled = job("a", suspend=False, status={"succeeded": 1})
    counting = job("b", suspend=False, status={"uncountedTerminatedPods": {"succeeded": ["u"]}})
    client = _Client()
    writer = Writer(client, _Jobs(settled, counting), _Events())  # type: ignore[arg-type]
    publisher = asyncio.create_task(writer._publisher())
    for j in (settled, counting):
        writer._enqueue(j, {keys.REASON: "x"})
    for _ in range(5):
        await asyncio.sleep(0)
    publisher.cancel()
    # Only the settled Job, and on the version seen: if the Job controller wrote
    # meanwhile (uncountedTerminatedPods), the write conflicts instead of landing.
    assert client.patches == [
        ("a", {"metadata": {"resourceVersion": "1", "annotations": {keys.REASON: "x"}}})
    ]
    assert writer._pending == {}  # the next pass decides again


async def test_a_job_put_back_is_suspended_on_the_version_seen_with_why() -> None:
    admitted = job("j", suspend=False, annotations=RUNNING)
    waiting = Status(State.RUNNABLE, Code.JOB_RESOURCE_REQUIREMENT, "no node holds it")
    decisions = Decisions(statuses={admitted.key: waiting}, requeue={admitted.key: waiting})
    client = _Client()
    writer = Writer(client, _Jobs(admitted), _Events())  # type: ignore[arg-type]
    await writer.apply({admitted.key: admitted}, decisions, 100.0)
    [(name, body)] = client.patches
    assert name == "j" and body["spec"] == {"suspend": True}
    # If the Job changed since the pass saw it (a pod became ready), this conflicts.
    assert body["metadata"]["resourceVersion"] == admitted.resource_version
    assert body["metadata"]["annotations"][keys.STATE] == "RUNNABLE"
    assert body["metadata"]["annotations"][keys.REASON_CODE] == waiting.code.value
    assert writer._pending == {}  # published with the suspension, not again
