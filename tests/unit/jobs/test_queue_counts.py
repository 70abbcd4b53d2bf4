"""A queue's job counts are written when they change, but a change of the counts alone
at most every `queue_counts_seconds` (no API server: the client records the patches)."""

from __future__ import annotations

from typing import Any

from ebb.kube import (
    COMPUTE_ENVIRONMENTS,
    JOB_QUEUES,
    NAMESPACES,
    NODES,
    SCHEDULING_POLICIES,
    Reflector,
)
from ebb.model import JobQueue
from extender.jobs.controller import ControllerSettings, JobController


class _Client:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch(self, resource: Any, name: str, body: Any, **kwargs: Any) -> Any:
        self.patches.append(body["status"]["jobs"])
        return {}


def _controller(client: _Client) -> JobController:
    def reflector(resource: Any) -> Reflector[Any]:
        return Reflector(client, resource, lambda raw: None)  # type: ignore[arg-type]

    return JobController(
        client,  # type: ignore[arg-type]
        queues=reflector(JOB_QUEUES),
        compute_environments=reflector(COMPUTE_ENVIRONMENTS),
        policies=reflector(SCHEDULING_POLICIES),
        nodes=reflector(NODES),
        namespaces=reflector(NAMESPACES),
        settings=ControllerSettings(queue_counts_seconds=2.0),
    )


async def test_a_queues_counts_alone_are_rewritten_at_most_every_period() -> None:
    client = _Client()
    controller = _controller(client)
    queue = JobQueue("q", 1, ())
    for now, runnable in ((100.0, 5), (100.5, 4), (101.9, 3), (102.0, 3), (102.5, 2)):
        controller._counts = {"q": {"RUNNABLE": runnable}}
        await controller._write_queue_status(queue, {}, now, usage_due=False)
    # Written at 100 (the first), not at 100.5 nor 101.9 (counts alone, too soon), at 102
    # (the period over: the latest counts), not at 102.5.
    assert [jobs["RUNNABLE"] for jobs in client.patches] == [5, 3]
