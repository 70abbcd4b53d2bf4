"""Binds share the Job reads that started after they arrived, never an older one."""

from __future__ import annotations

import asyncio

import pytest

from extender.placement.fresh_reads import FreshReads


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Source:
    """A value that changes over time, read slowly; counts the reads that started."""

    def __init__(self) -> None:
        self.value = 0
        self.started = 0
        self.release = asyncio.Event()

    async def read(self, key: str) -> tuple[str, int]:
        self.started += 1
        seen = self.value  # the read's snapshot is taken as it starts
        await self.release.wait()
        return key, seen


async def test_calls_during_a_read_share_the_next_one() -> None:
    source = Source()
    reads = FreshReads(source.read)
    first = asyncio.create_task(reads("job"))
    await settle()
    source.value = 1  # changed after the first read started: the others must see it
    later = [asyncio.create_task(reads("job")) for _ in range(5)]
    other = asyncio.create_task(reads("other"))
    await settle()
    assert source.started == 2  # "job" once (the later calls wait), "other" once
    source.release.set()
    assert await first == ("job", 0)
    assert [await t for t in later] == [("job", 1)] * 5
    assert await other == ("other", 1)
    assert source.started == 3


async def test_a_read_that_ended_is_not_reused() -> None:
    source = Source()
    source.release.set()
    reads = FreshReads(source.read)
    assert await reads("job") == ("job", 0)
    source.value = 1
    assert await reads("job") == ("job", 1)
    assert source.started == 2


async def test_an_error_reaches_every_caller_and_the_next_call_reads_again() -> None:
    calls = 0

    async def failing(key: str) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 2:
            raise LookupError(key)
        return calls

    reads = FreshReads(failing)
    first = asyncio.create_task(reads("job"))
    await settle()
    sharing = [asyncio.create_task(reads("job")) for _ in range(3)]
    assert await first == 1
    for task in sharing:
        with pytest.raises(LookupError):
            await task
    assert await reads("job") == 3


async def test_a_caller_that_gives_up_leaves_the_read_to_the_others() -> None:
    source = Source()
    reads = FreshReads(source.read)
    first = asyncio.create_task(reads("job"))
    await settle()
    impatient = asyncio.create_task(reads("job"))
    patient = asyncio.create_task(reads("job"))
    await settle()
    impatient.cancel()
    source.release.set()
    assert await first == ("job", 0)
    assert await patient == ("job", 0)
    assert source.started == 2
