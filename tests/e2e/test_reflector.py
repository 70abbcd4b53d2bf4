"""The reflector against the real API server: list, watch, resume, relist on 410."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ebb import kube
from ebb.kube.reflector import Event, EventType
from local_stack.harness import LocalCluster, wait_for

CONFIG_MAPS = kube.Resource("", "v1", "configmaps", "ConfigMap", True)


def data_of(raw: dict[str, Any]) -> str | None:
    # A transform that drops objects it does not care about.
    if (raw.get("metadata") or {}).get("name") == "kube-root-ca.crt":
        return None
    return str((raw.get("data") or {}).get("v", ""))


@contextlib.asynccontextmanager
async def running(reflector: kube.Reflector[Any]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(reflector.run())
    try:
        await reflector.wait_synced(30)
        yield task
    finally:
        reflector.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def put(client: kube.KubeClient, namespace: str, name: str, value: str) -> None:
    body = {"metadata": {"name": name}, "data": {"v": value}}
    try:
        await client.create(CONFIG_MAPS, body, namespace)
    except kube.ApiError as exc:
        if not exc.already_exists:
            raise
        await client.patch(CONFIG_MAPS, name, body, namespace)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_lists_then_watches_changes(kube_client: kube.KubeClient, namespace: str) -> None:
    await put(kube_client, namespace, "before", "1")
    reflector = kube.Reflector(
        kube_client, CONFIG_MAPS, data_of, namespace=namespace, name="cm-watch"
    )
    events: list[Event[str]] = []
    reflector.subscribe(events.append)
    async with running(reflector):
        assert reflector.store.get(f"{namespace}/before") == "1"
        assert f"{namespace}/kube-root-ca.crt" not in reflector.store  # transform said no
        await put(kube_client, namespace, "after", "2")
        await put(kube_client, namespace, "before", "3")
        await kube_client.delete(CONFIG_MAPS, "after", namespace)

        async def seen() -> bool:
            return any(e.type is EventType.DELETED and e.key.endswith("/after") for e in events)

        await wait_for(seen, 30, message="DELETED event for 'after'")
    assert reflector.store.get(f"{namespace}/before") == "3"
    kinds = [(e.type, e.key.split("/")[1], e.new) for e in events]
    assert kinds == [
        (EventType.ADDED, "before", "1"),
        (EventType.ADDED, "after", "2"),
        (EventType.MODIFIED, "before", "3"),
        (EventType.DELETED, "after", None),
    ]
    modified = next(e for e in events if e.type is EventType.MODIFIED)
    assert modified.old == "1"


async def test_resumes_after_a_cut_stream_without_relisting(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    reflector = kube.Reflector(
        kube_client, CONFIG_MAPS, data_of, namespace=namespace, name="cm-cut", max_backoff=0.2
    )
    lists_before = counter("ebb_reflector_lists_total", resource="cm-cut", reason="gone")
    async with running(reflector):
        reflector.interrupt()
        await put(kube_client, namespace, "x", "1")

        async def has_x() -> bool:
            return f"{namespace}/x" in reflector.store

        await wait_for(has_x, 30, message="object created after the cut")
    assert counter("ebb_reflector_lists_total", resource="cm-cut", reason="gone") == lists_before


async def test_relists_on_410_gone_and_reports_deletions_missed(
    kube_client: kube.KubeClient, namespace: str, cluster: LocalCluster
) -> None:
    await put(kube_client, namespace, "keep", "1")
    await put(kube_client, namespace, "doomed", "1")
    reflector = kube.Reflector(
        kube_client, CONFIG_MAPS, data_of, namespace=namespace, name="cm-gone"
    )
    events: list[Event[str]] = []
    reflector.subscribe(events.append)
    async with running(reflector):
        pass
    # While nobody watches: one object goes, one comes.
    await kube_client.delete(CONFIG_MAPS, "doomed", namespace)
    await put(kube_client, namespace, "newcomer", "1")
    # Our version is long gone: older than the watch cache, and compacted in etcd.
    cluster.compact_etcd()
    reflector.resource_version = "1"
    events.clear()
    async with running(reflector):

        async def relisted() -> bool:
            return f"{namespace}/newcomer" in reflector.store

        await wait_for(relisted, 30, message="relist after 410")
    assert counter("ebb_reflector_lists_total", resource="cm-gone", reason="gone") >= 1
    assert f"{namespace}/doomed" not in reflector.store
    assert (EventType.DELETED, f"{namespace}/doomed") in [(e.type, e.key) for e in events]
    assert reflector.store.get(f"{namespace}/keep") == "1"


async def test_silent_stream_is_reopened(kube_client: kube.KubeClient, namespace: str) -> None:
    reflector = kube.Reflector(
        kube_client,
        CONFIG_MAPS,
        data_of,
        namespace=namespace,
        name="cm-silent",
        silence_timeout=0.5,
    )
    async with running(reflector):

        async def reopened() -> bool:
            return (
                counter("ebb_reflector_watch_restarts_total", resource="cm-silent", reason="silent")
                >= 2
            )

        await wait_for(reopened, 20, message="two silent-stream reopenings")
        await put(kube_client, namespace, "late", "1")

        async def has_late() -> bool:
            return f"{namespace}/late" in reflector.store

        await wait_for(has_late, 20, message="event after reopening")


async def test_indexes_follow_updates(kube_client: kube.KubeClient, namespace: str) -> None:
    reflector = kube.Reflector(
        kube_client,
        CONFIG_MAPS,
        data_of,
        namespace=namespace,
        name="cm-index",
        indexers={"value": lambda v: (v,)},
    )
    async with running(reflector):
        await put(kube_client, namespace, "a", "red")
        await put(kube_client, namespace, "b", "red")

        async def two_red() -> bool:
            return len(reflector.store.by_index("value", "red")) == 2

        await wait_for(two_red, 20, message="two objects indexed red")
        await put(kube_client, namespace, "a", "blue")

        async def moved() -> bool:
            return reflector.store.index_keys("value", "blue") == {f"{namespace}/a"}

        await wait_for(moved, 20, message="a re-indexed as blue")
        assert reflector.store.index_keys("value", "red") == {f"{namespace}/b"}


@pytest.mark.parametrize("page_size", [2])
async def test_lists_in_pages(kube_client: kube.KubeClient, namespace: str, page_size: int) -> None:
    for i in range(5):
        await put(kube_client, namespace, f"p{i}", str(i))
    reflector = kube.Reflector(
        kube_client, CONFIG_MAPS, data_of, namespace=namespace, name="cm-pages", page_size=page_size
    )
    async with running(reflector):
        assert sorted(v for v in reflector.store.values()) == ["0", "1", "2", "3", "4"]
