"""Ebb's scheduler daemon as kube-scheduler's extender, against the real API server: the
assumed-pods view, the operational surface, bad input over the wire, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from ebb import kube
from extender.app import PLACEMENT, PODS, create_app
from extender.placement.protocol import BindingArgs, decode_extender_args
from extender.settings import SchedulerSettings
from local_stack import ROOT
from local_stack.harness import LocalCluster, scheduler_daemon_args, wait_for
from local_stack.placement import batch_pod, create_batch_node, create_environment, create_queue

Session = aiohttp.ClientSession


@pytest.fixture
async def placement_setup(
    kube_client: kube.KubeClient, namespace: str
) -> AsyncIterator[tuple[str, str]]:
    """(queue, node): a queue with one compute environment and one 4-cpu node."""
    ce, queue, node = f"{namespace}-ce", f"{namespace}-q", f"{namespace}-n"
    await create_environment(kube_client, ce)
    await create_queue(kube_client, queue, ce)
    await create_batch_node(kube_client, node, ce, cpu="4")
    yield queue, node
    await kube_client.delete(kube.NODES, node)
    await kube_client.delete(kube.JOB_QUEUES, queue)
    await kube_client.delete(kube.COMPUTE_ENVIRONMENTS, ce)


def assumed() -> float:
    return REGISTRY.get_sample_value("ebb_extender_assumed_pods") or 0.0


async def test_a_pod_ebb_bound_counts_on_its_node_before_the_watch_shows_it(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    placement_setup: tuple[str, str],
) -> None:
    queue, node = placement_setup
    nobody = {"schedulerName": f"nobody-{namespace}"}  # no scheduler touches these pods
    raws = {}
    for name, cpu in (("first", "3"), ("second", "3"), ("small", "1")):
        raws[name] = await kube_client.create(
            kube.PODS, batch_pod(name, queue, cpu=cpu, **nobody), namespace
        )
    app = create_app(SchedulerSettings(kubeconfig=str(cluster.kubeconfig)))
    runner = web.AppRunner(app)
    await runner.setup()  # the daemon's cleanup contexts: client, reflectors, extender
    try:
        extender, pods = app[PLACEMENT], app[PODS]

        async def verdict(name: str) -> dict[str, str] | None:
            body = orjson.dumps({"Pod": raws[name], "NodeNames": [node]})
            result = await extender.filter(decode_extender_args(body))
            return (
                None
                if result.error
                else {**dict.fromkeys(result.node_names, "kept"), **result.failed}
            )

        assert await wait_for(lambda: verdict("first"), 30, message="caches synced") == {
            node: "kept"
        }
        pods.stop()  # cut the pod watch: from now on only the assumed pod can tell
        await asyncio.sleep(0.2)
        first = raws["first"]["metadata"]
        error = await extender.bind(BindingArgs("first", namespace, first["uid"], node))
        assert error == ""
        assert (await kube_client.get(kube.PODS, "first", namespace))["spec"]["nodeName"] == node
        assert assumed() == 1
        assert await verdict("second") == {node: "cpu: need 3, free 1"}
        watch = asyncio.create_task(pods.run())  # resume: the watch shows "first" bound
        try:

            async def confirmed() -> bool:
                return assumed() == 0

            await wait_for(confirmed, 30, message="the watch to confirm the binding")
            # Counted once, now through the watch: 1 cpu is still free, not less.
            assert await verdict("second") == {node: "cpu: need 3, free 1"}
            assert await verdict("small") == {node: "kept"}
        finally:
            pods.stop()
            await watch
        # A binding the API server fails (the pod deleted behind the stopped watch) is
        # reported in Error and leaves nothing assumed.
        small = raws["small"]["metadata"]
        await kube_client.delete(kube.PODS, "small", namespace, grace_period_seconds=0)
        error = await extender.bind(BindingArgs("small", namespace, small["uid"], node))
        assert "not found" in error.lower() or "Precondition failed" in error, error
        assert assumed() == 0
        # A pod Ebb has not seen (here: a wrong UID) is refused before the API server.
        error = await extender.bind(BindingArgs("second", namespace, "not-its-uid", node))
        assert "Ebb has not seen this pod" in error
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def daemon(
    cluster: LocalCluster, scheduler_daemon: Any
) -> AsyncIterator[tuple[Session, str, str]]:
    """(session, extender URL, ops URL) of the session's scheduler daemon."""
    context = cluster.client_context()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield (
            session,
            f"https://localhost:{cluster.extender_port}/scheduler",
            f"http://127.0.0.1:{cluster.port_base + 901}",
        )


async def call(session: Session, url: str, body: bytes) -> tuple[int, Any]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        return resp.status, orjson.loads(await resp.read())


async def test_ops_routes_and_metrics(
    daemon: tuple[Session, str, str], kube_client: kube.KubeClient, namespace: str
) -> None:
    session, extender, ops = daemon
    for path in ("/healthz", "/readyz"):
        async with session.get(ops + path) as resp:
            assert resp.status == 200
    batch = batch_pod("p", "no-such-queue", cpu="1")
    await call(session, f"{extender}/filter", orjson.dumps({"Pod": batch, "NodeNames": ["x"]}))
    await call(session, f"{extender}/prioritize", orjson.dumps({"Pod": batch, "NodeNames": ["x"]}))
    async with session.get(ops + "/metrics") as resp:
        text = await resp.text()
    assert 'ebb_extender_requests_total{outcome="ok",verb="filter"}' in text
    assert 'ebb_extender_request_duration_seconds_bucket{le="0.001",verb="prioritize"}' in text
    assert 'ebb_extender_filtered_nodes_total{reason="unknown_queue"}' in text


async def test_bad_input_over_the_wire_gets_4xx_or_a_reason(
    daemon: tuple[Session, str, str],
) -> None:
    session, extender, ops = daemon
    status, reply = await call(session, f"{extender}/filter", b"not json")
    assert status == 400
    assert reply["Error"].startswith("body: not valid JSON (")
    status, reply = await call(session, f"{extender}/bind", orjson.dumps({"PodName": "p"}))
    assert (status, reply) == (400, {"Error": "PodNamespace: missing"})
    status, reply = await call(session, f"{extender}/filter", b"{" + b" " * (33 * 2**20) + b"}")
    assert status == 413
    assert "over the limit" in reply["Error"]
    # Unknown nodes are not an error: each gets its reason and the rest is decided.
    batch = batch_pod("p", "no-such-queue")
    status, reply = await call(
        session, f"{extender}/filter", orjson.dumps({"Pod": batch, "NodeNames": ["ghost"]})
    )
    assert (status, reply["FailedAndUnresolvableNodes"]) == (
        200,
        {"ghost": "queue no-such-queue does not exist"},
    )
    async with session.get(ops + "/healthz") as resp:
        assert resp.status == 200


TEXT = st.text(max_size=12)
BINDINGS = st.fixed_dictionaries(
    {},
    optional={
        key: st.one_of(TEXT, st.none(), st.integers(), st.lists(TEXT, max_size=2))
        for key in ("PodName", "PodNamespace", "PodUID", "Node")
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.one_of(BINDINGS.map(lambda d: json.dumps(d).encode()), st.binary(max_size=40)))
async def test_fuzzed_bindings_get_an_answer_never_a_crash(
    daemon: tuple[Session, str, str], body: bytes
) -> None:
    """Whatever arrives, the daemon answers: 400 naming the field, or the API server's
    refusal in Error (these pods do not exist); it never binds anything here."""
    session, extender, _ = daemon
    status, reply = await call(session, f"{extender}/bind", body)
    assert status in (200, 400), reply
    assert reply["Error"]


@contextlib.asynccontextmanager
async def daemon_process(
    cluster: LocalCluster, kubeconfig: Path, offset: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *scheduler_daemon_args(cluster, kubeconfig=kubeconfig, port=cluster.port_base + offset),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_not_ready_until_synced_and_shuts_down_gracefully(
    cluster: LocalCluster, daemon: tuple[Session, str, str], tmp_path: Path
) -> None:
    """A daemon whose API server is unreachable is alive but not ready, and tells
    kube-scheduler so for batch pods; SIGTERM stops it cleanly."""
    session = daemon[0]
    unreachable = tmp_path / "kubeconfig"
    config = cluster.kubeconfig.read_text().replace(f":{cluster.port_base + 443}", ":9")
    unreachable.write_text(config)
    async with daemon_process(cluster, unreachable, 905) as proc:
        ops = f"http://127.0.0.1:{cluster.port_base + 906}"

        async def healthy() -> bool:
            try:
                async with session.get(ops + "/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(healthy, 30, message="second daemon alive")
        async with session.get(ops + "/readyz") as resp:
            assert resp.status == 503
        batch = orjson.dumps({"Pod": batch_pod("p", "q"), "NodeNames": ["n"]})
        url = f"https://localhost:{cluster.port_base + 905}/scheduler/filter"
        status, reply = await call(session, url, batch)
        assert (status, reply["Error"]) == (
            200,
            "ebb-scheduler is starting: its caches are not synced yet",
        )
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert proc.stdout is not None
        lines = [
            json.loads(line)
            for line in (await proc.stdout.read()).splitlines()
            if line.startswith(b"{")
        ]
    assert any(line["event"] == "shutting down" for line in lines)


@pytest.mark.usefixtures("scheduler_daemon")
async def test_binds_are_logged_as_json_with_pod_and_node(
    cluster: LocalCluster,
    kube_client: kube.KubeClient,
    namespace: str,
    placement_setup: tuple[str, str],
) -> None:
    queue, node = placement_setup
    await kube_client.create(kube.PODS, batch_pod("logged", queue), namespace)

    async def bound_line() -> dict[str, Any] | None:
        log = (cluster.state_dir / "logs" / "ebb-scheduler.log").read_text()
        for line in log.splitlines():
            if line.startswith("{") and f'"{namespace}/logged"' in line:
                entry: dict[str, Any] = json.loads(line)
                if entry["event"] == "bound":
                    return entry
        return None

    entry = await wait_for(bound_line, 60, message="bound log line")
    assert entry["pod"] == f"{namespace}/logged"
    assert entry["node"] == node
    assert entry["queue"] == queue
    # A line per pod: at debug (the session's daemon runs at debug), named by its logger.
    assert entry["level"] == "debug"
    assert entry["logger"] == "ebb.placement"
