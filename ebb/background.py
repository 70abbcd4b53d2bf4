"""Background tasks that live as long as an aiohttp app's cleanup context.

Each daemon context starts its reflectors and loops on entry and must stop them all on
exit, reflectors first (so no watch reopens while the tasks are cancelled)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any

from ebb.kube import Reflector


class Background:
    def __init__(self) -> None:
        self._reflectors: list[Reflector[Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []

    def reflect(self, reflectors: Iterable[Reflector[Any]]) -> None:
        """Run each reflector's list/watch loop."""
        for r in reflectors:
            self._reflectors.append(r)
            self.spawn(r.run(), f"reflector-{r.name}")

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=name))

    async def stop(self) -> None:
        for r in self._reflectors:
            r.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
