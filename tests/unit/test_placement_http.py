"""The extender's HTTP shell with Ebb's extender behind it, in process: replies, bad input
(malformed, oversize, slow bodies) and a fuzz of the endpoints. Binding talks to the API
server, so it is exercised end to end (tests/e2e/test_placement_daemon.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from ebb.kube import Event, EventType
from extender.placement.cache import PlacementCache
from extender.placement.protocol import BindingArgs
from extender.placement.routes import add_routes
from extender.placement.service import NOT_SYNCED, Binding, EbbExtender
from tests.unit.placement_objects import environment, no_failures, node, queue, raw_node, raw_pod

LIMIT = 64 * 1024
READ_TIMEOUT = 0.5
BATCH_POD = raw_pod("job-0", "high", cpu="3")


async def no_binding(args: BindingArgs, annotations: Mapping[str, str]) -> None:
    raise AssertionError(f"unit tests do not bind ({args})")


class Daemon:
    def __init__(self) -> None:
        self.ready = True
        cache = PlacementCache()
        for info in (node("a", "spot"), node("b", "spot", cpu="2"), node("plain")):
            cache.on_node(Event(EventType.ADDED, info.name, None, info))
        self.extender = EbbExtender(
            cache,
            {},
            {"high": queue("high", "spot")},
            {"spot": environment("spot", spot=True)},
            binding=Binding(no_binding, no_failures, concurrency=1, wait=1.0, assumed_pod_ttl=30.0),
            ready=lambda: self.ready,
        )


@pytest.fixture(scope="module")
async def daemon() -> AsyncIterator[tuple[Daemon, TestClient[web.Request, web.Application]]]:
    state = Daemon()
    app = web.Application()
    add_routes(app, lambda: state.extender, max_body_bytes=LIMIT, read_timeout=READ_TIMEOUT)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield state, client
    await client.close()


async def post(
    client: TestClient[web.Request, web.Application], verb: str, doc: Any
) -> tuple[int, Any]:
    data = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    async with client.post(f"/scheduler/{verb}", data=data) as resp:
        assert resp.content_type == "application/json"
        return resp.status, orjson.loads(await resp.read())


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_filter_and_prioritize_a_batch_pod(daemon: tuple[Daemon, TestClient]) -> None:  # type: ignore[type-arg]
    _, client = daemon
    before = metric("ebb_extender_requests_total", verb="filter", outcome="ok")
    too_small = metric("ebb_extender_filtered_nodes_total", reason="node_too_small")
    status, reply = await post(
        client, "filter", {"Pod": BATCH_POD, "NodeNames": ["a", "b", "plain", "x"]}
    )
    assert status == 200
    assert reply == {
        "Nodes": None,
        "NodeNames": ["a"],
        "FailedNodes": {"x": "node not in ebb's cache yet"},
        "FailedAndUnresolvableNodes": {
            "b": "cpu: need 3, allocatable 2",
            "plain": "not a batch node (no ebb.dev/compute-environment label)",
        },
        "Error": "",
    }
    assert metric("ebb_extender_requests_total", verb="filter", outcome="ok") == before + 1
    assert metric("ebb_extender_filtered_nodes_total", reason="node_too_small") == too_small + 1
    assert metric("ebb_extender_request_duration_seconds_count", verb="filter") >= 1
    status, reply = await post(
        client, "prioritize", {"Pod": BATCH_POD, "NodeNames": ["a", "plain"]}
    )
    assert status == 200
    assert reply == [
        {"Host": "a", "Score": 4},
        {"Host": "plain", "Score": 0},
    ]  # 3 of 4 cpus, no memory


async def test_node_objects_come_back_for_a_scheduler_without_node_cache(
    daemon: tuple[Daemon, TestClient],  # type: ignore[type-arg]
) -> None:
    _, client = daemon
    # "new": not cached yet; as roomy as "a", so both are as good and filter keeps both.
    sent = [raw_node("a", "spot"), raw_node("new", "spot")]
    status, reply = await post(client, "filter", {"Pod": BATCH_POD, "Nodes": {"items": sent}})
    assert status == 200
    assert reply["NodeNames"] is None
    assert reply["Nodes"]["items"] == sent


async def test_other_pods_pass_through_even_before_caches_sync(
    daemon: tuple[Daemon, TestClient],  # type: ignore[type-arg]
) -> None:
    state, client = daemon
    state.ready = False
    try:
        web_pod = raw_pod("web", None)
        status, reply = await post(
            client, "filter", {"Pod": web_pod, "NodeNames": ["plain", "a", "?"]}
        )
        assert (status, reply["NodeNames"], reply["FailedNodes"]) == (200, ["plain", "a", "?"], {})
        status, reply = await post(client, "filter", {"Pod": BATCH_POD, "NodeNames": ["a"]})
        assert (status, reply["Error"], reply["NodeNames"]) == (200, NOT_SYNCED, None)
        status, reply = await post(client, "prioritize", {"Pod": BATCH_POD, "NodeNames": ["a"]})
        assert (status, reply) == (200, [{"Host": "a", "Score": 0}])
    finally:
        state.ready = True


@pytest.mark.parametrize("verb", ["filter", "prioritize", "bind"])
async def test_malformed_requests_get_400_naming_the_field(
    daemon: tuple[Daemon, TestClient],  # type: ignore[type-arg]
    verb: str,
) -> None:
    _, client = daemon
    before = metric("ebb_extender_requests_total", verb=verb, outcome="bad_request")
    status, reply = await post(client, verb, b'{"Pod": ')
    assert status == 400
    assert reply["Error"].startswith("body: not valid JSON")
    status, reply = await post(client, verb, {"NodeNames": []})
    assert status == 400
    assert reply["Error"] == ("PodName: missing" if verb == "bind" else "Pod: missing")
    assert metric("ebb_extender_requests_total", verb=verb, outcome="bad_request") == before + 2


async def test_oversize_bodies_get_413(daemon: tuple[Daemon, TestClient]) -> None:  # type: ignore[type-arg]
    _, client = daemon
    huge = {"Pod": BATCH_POD, "NodeNames": ["n" * 100] * (LIMIT // 100)}
    status, reply = await post(client, "filter", huge)
    assert status == 413
    assert reply["Error"].startswith("body: ")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for _ in range(LIMIT // 1024 + 2):
            yield b" " * 1024

    async with client.post("/scheduler/prioritize", data=chunks()) as resp:
        assert resp.status == 413


async def test_a_body_that_never_arrives_gets_408_and_the_server_goes_on(
    daemon: tuple[Daemon, TestClient],  # type: ignore[type-arg]
) -> None:
    _, client = daemon
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(b"POST /scheduler/filter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT * 10)
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()
    status, _ = await post(client, "filter", {"Pod": BATCH_POD, "NodeNames": ["a"]})
    assert status == 200


def as_json(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # also writes huge integers and Infinity, unlike orjson


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
NAMES = st.lists(st.sampled_from(["a", "b", "plain", "gone", ""]), max_size=6)
POD_LIKE = st.one_of(
    JSON,
    st.sampled_from([BATCH_POD, raw_pod("web", None), raw_pod("other", "nope", gpu=1)]),
    st.builds(lambda labels: {**BATCH_POD, "metadata": {"labels": labels}}, JSON),
)
ARGS = st.fixed_dictionaries(
    {},
    optional={
        "Pod": POD_LIKE,
        "NodeNames": st.one_of(JSON, NAMES),
        "Nodes": st.one_of(
            JSON, st.builds(lambda names: {"items": [raw_node(n, "spot") for n in names]}, NAMES)
        ),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    verb=st.sampled_from(["filter", "prioritize"]),
    raw=st.one_of(st.binary(max_size=64), JSON.map(as_json), ARGS.map(as_json)),
)
async def test_fuzzed_requests_get_an_answer_never_a_crash(
    daemon: tuple[Daemon, TestClient],  # type: ignore[type-arg]
    verb: str,
    raw: bytes,
) -> None:
    _, client = daemon
    status, reply = await post(client, verb, raw)
    assert status in (200, 400), reply
    if status == 400:
        assert reply["Error"]
    elif verb == "filter":
        assert set(reply) == {
            "Nodes",
            "NodeNames",
            "FailedNodes",
            "FailedAndUnresolvableNodes",
            "Error",
        }
    else:
        assert all(set(entry) == {"Host", "Score"} and 0 <= entry["Score"] <= 10 for entry in reply)
