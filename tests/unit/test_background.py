"""ebb.background: what a daemon context starts, it stops — reflectors before tasks."""

from __future__ import annotations

import asyncio
from typing import Any

from ebb.background import Background


class _FakeReflector:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self._log = log
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        try:
            await self._stopped.wait()
            self._log.append(f"{self.name} returned")
        except asyncio.CancelledError:
            self._log.append(f"{self.name} cancelled")
            raise

    def stop(self) -> None:
        self._log.append(f"{self.name} stop")


async def test_stop_stops_reflectors_then_cancels_every_task() -> None:
    log: list[str] = []
    reflectors: list[Any] = [_FakeReflector("nodes", log), _FakeReflector("pods", log)]
    background = Background()
    background.reflect(reflectors)
    loop_ran = asyncio.Event()

    async def loop() -> None:
        loop_ran.set()
        await asyncio.sleep(3600)

    background.spawn(loop(), "controller")
    await asyncio.wait_for(loop_ran.wait(), 5)
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert {"reflector-nodes", "reflector-pods", "controller"} <= names

    await background.stop()

    assert log[:2] == ["nodes stop", "pods stop"]
    assert sorted(log[2:]) == ["nodes cancelled", "pods cancelled"]
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not names & {"reflector-nodes", "reflector-pods", "controller"}
