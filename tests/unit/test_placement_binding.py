"""The bind verb's slots: binds beyond the slots wait a little, then answer with an Error
instead of piling up past kube-scheduler's httpTimeout. (Binding against the API server
itself is tested end to end: tests/e2e/test_placement_daemon.py.)"""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from extender.placement.cache import PlacementCache
from extender.placement.protocol import BindingArgs
from extender.placement.service import Binding, EbbExtender


async def test_binds_beyond_the_slots_are_refused_after_the_wait() -> None:
    release = asyncio.Event()
    posted: list[str] = []

    async def slow_post(args: BindingArgs) -> None:  # holds its slot until released
        posted.append(args.pod_name)
        await release.wait()

    extender = EbbExtender(
        PlacementCache(),
        {},
        {},
        {},
        binding=Binding(slow_post, concurrency=2, wait=0.2, assumed_pod_ttl=30.0),
        ready=lambda: True,
    )
    refused = REGISTRY.get_sample_value("ebb_extender_binds_refused_total") or 0.0
    first = [
        asyncio.create_task(extender.bind(BindingArgs(f"p{i}", "ns", "", "n"))) for i in (1, 2)
    ]
    await asyncio.sleep(0.05)
    error = await extender.bind(BindingArgs("p3", "ns", "", "n"))
    assert error == (
        "binding ns/p3 to n: 2 bindings in flight and none done within 0.2 s; try again later"
    )
    assert posted == ["p1", "p2"]  # the refused bind never reached the API server
    assert REGISTRY.get_sample_value("ebb_extender_binds_refused_total") == refused + 1
    late = asyncio.create_task(extender.bind(BindingArgs("p4", "ns", "", "n")))
    release.set()  # a slot frees within the wait: the waiting bind goes through
    assert await asyncio.gather(*first, late) == ["", "", ""]
    assert posted == ["p1", "p2", "p4"]
