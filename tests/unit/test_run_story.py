"""`make run` checks its own story (local_stack/run.py): what went as the README says, and
what did not, in sentences."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from local_stack import run as demo

NAMES = ["render", "merge", "train", "report", "flaky", "publish", "spot-victim", "sweep"]
INSTANCE = "i-0123456789abcdef0"


def outcomes() -> list[Any]:
    """The story as the README tells it."""
    outcome = demo.Outcome
    done = "Essential container in task exited"
    jobs = []
    for name in NAMES:
        jobs.append(
            outcome(name, "research", "SUCCEEDED", 1, "succeeded after 1 attempt(s)", (done,), None)
        )
    jobs[4] = replace(jobs[4], state="FAILED", reason="exit code 2 matching FailJob rule")
    jobs[5] = replace(jobs[5], state="FAILED", attempts=0, reason="dependency flaky failed")
    jobs[6] = replace(
        jobs[6], attempts=2, status_reasons=(f"Host EC2 (instance {INSTANCE}) terminated.", done)
    )
    return jobs


def finished_run() -> Any:
    run = demo.Run()
    run.all_done_at, run.zero_at = 100.0, 120.0
    run.interruption = demo.Interruption(INSTANCE, "ip-10-0-0-1", 50.0, 60.0)
    return run


def test_the_story_as_told_has_no_problems_and_names_the_intended_failures() -> None:
    ok, problems = demo.story(finished_run(), outcomes(), NAMES)
    assert problems == []
    assert any(line.startswith("flaky FAILED after 1 attempt, as intended") for line in ok)
    assert any("publish FAILED without starting, as intended" in line for line in ok)
    assert any(INSTANCE in line and "retry SUCCEEDED" in line for line in ok)
    table = demo.jobs_table(outcomes())
    assert "attempt 1: Host EC2 (instance i-0123456789abcdef0) terminated." in table
    assert table.count("(intended)") == 2
    assert "The other 5 jobs SUCCEEDED." in ok


def test_array_children_retried_are_said() -> None:
    jobs = outcomes()
    jobs[-1] = replace(jobs[-1], attempts=117, children=60)  # sweep
    ok, problems = demo.story(finished_run(), jobs, NAMES)
    assert problems == []
    assert any(
        "The other 5 jobs SUCCEEDED (retried" in line and "sweep: 57 of its 60" in line
        for line in ok
    )


def test_each_departure_from_the_story_is_a_sentence() -> None:
    run = finished_run()
    run.counts_left = {"queue research": {"RUNNING": 1}}
    jobs = outcomes()
    jobs[6] = replace(jobs[6], attempts=1, status_reasons=("Essential container in task exited",))
    jobs[7] = replace(jobs[7], state="FAILED", reason="Job has reached the specified backoff limit")
    _, problems = demo.story(run, jobs, NAMES)
    assert problems == [
        "sweep ended FAILED, not SUCCEEDED: Job has reached the specified backoff limit",
        'spot-victim took 1 attempt(s) with attempt 1 ending "Essential container in task '
        'exited"; the story is 2: one ending "Host EC2 (instance i-0123456789abcdef0) '
        'terminated.", then the retry',
        "queue research still counts RUNNING 1 30 s after the last node went",
    ]


def test_no_interruption_and_no_return_to_zero_are_problems() -> None:
    run = finished_run()
    run.interruption, run.zero_at = None, None
    _, problems = demo.story(run, outcomes(), NAMES)
    assert problems == [
        "no Spot interruption was injected (spot-victim never ran on an instance)",
        "capacity did not come back to zero within the timeout",
    ]
