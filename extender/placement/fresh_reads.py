"""Reads that must be at least as fresh as the request that needs them, shared.

A bind reads its Job from the API server (not a cache) so that the attempt number it
stamps counts every failure recorded before the pod was created. Any read that starts
after the bind arrived is as good as one of its own; so binds of the same Job that
arrive while a read of it is in flight share the next read, started when that one ends.
kube-scheduler binds a Job's pods one after another, so a Job of ten pods costs the
API server two or three reads instead of ten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FreshReads(Generic[K, V]):
    """`read(key)`, coalesced: every call gets the result of a read that started after
    the call, and calls that arrive while a read of their key is in flight share the
    one started when it ends."""

    def __init__(self, read: Callable[[K], Awaitable[V]]) -> None:
        self._read = read
        self._waiting: dict[K, asyncio.Future[V]] = {}  # the next read of each key
        self._running: dict[K, asyncio.Task[V]] = {}

    async def __call__(self, key: K) -> V:
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = asyncio.get_running_loop().create_future()
            # A caller that stops waiting (its bind timed out) leaves the read to the others.
            waiting.add_done_callback(_retrieve)
            if key not in self._running:
                self._start(key)
        return await asyncio.shield(waiting)

    def _start(self, key: K) -> None:
        result = self._waiting.pop(key)
        task = asyncio.create_task(_call(self._read, key))
        self._running[key] = task
        task.add_done_callback(lambda done: self._finished(key, result, done))

    def _finished(self, key: K, result: asyncio.Future[V], done: asyncio.Task[V]) -> None:
        del self._running[key]
        if done.cancelled():
            result.cancel()
        elif (error := done.exception()) is not None:
            result.set_exception(error)
        else:
            result.set_result(done.result())
        if key in self._waiting:
            self._start(key)


async def _call(read: Callable[[K], Awaitable[V]], key: K) -> V:
    return await read(key)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "exception was never retrieved" when none waits
