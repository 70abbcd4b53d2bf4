"""Leader election keeps trying through every way a request can fail: a connection cut
mid-response (aiohttp.ClientPayloadError, no OSError) used to end the elector's task, so
a daemon that lost its lease while kube-apiserver restarted never led again."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from ebb.kube import ApiError
from ebb.leader import LeaderElector


class LeaseStore:
    """The Lease as kube-apiserver would keep it, failing the first reads as `failures`
    says."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.lease: dict[str, Any] | None = None

    async def get_or_none(self, *_: Any) -> dict[str, Any] | None:
        if self.failures:
            raise self.failures.pop(0)
        return self.lease

    async def create(self, _resource: Any, body: dict[str, Any], _namespace: str) -> None:
        self.lease = body

    async def replace(self, _resource: Any, _name: str, body: dict[str, Any], _ns: str) -> None:
        self.lease = body


@pytest.mark.parametrize(
    "failure",
    [
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ServerDisconnectedError(),
        ConnectionRefusedError(),
        TimeoutError(),
        ApiError(429, "TooManyRequests", "storage is (re)initializing"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_the_elector_leads_after_a_failed_request(failure: Exception) -> None:
    store = LeaseStore([failure, failure])
    elector = LeaderElector(
        store,  # type: ignore[arg-type]
        namespace="ebb-system",
        name="ebb-scheduler",
        identity="me",
        retry_period=0.01,
    )
    task = asyncio.create_task(elector.run())
    try:
        await asyncio.wait_for(elector.leading.wait(), 5)
        assert not task.done()
        assert store.lease is not None and store.lease["spec"]["holderIdentity"] == "me"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
