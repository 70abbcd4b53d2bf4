"""The reflector: the one place Ebb lists and watches the API server.

It lists (in pages), then watches from the list's resourceVersion with bookmarks,
resumes from the last seen version when a stream ends, relists on 410 Gone, and
drops a stream that has been silent for too long (a half-open connection never
errors, it just stops). Objects are passed through a `transform` into compact
records before they are stored, so a daemon holding 100,000 Jobs keeps only what its
decisions read. Indexes answer "all pods on node X" without a scan.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
import orjson
import structlog
from prometheus_client import Counter, Gauge

from ebb.kube.client import REQUEST_ERRORS, ApiError, KubeClient
from ebb.kube.resources import Resource

T = TypeVar("T")
log = structlog.get_logger("ebb.reflector")

_EVENTS = Counter(
    "ebb_reflector_events_total",
    "Watch events applied to a reflector's store.",
    ["resource", "type"],
)
_LISTS = Counter(
    "ebb_reflector_lists_total",
    "Full lists (initial, or relists after 410 Gone).",
    ["resource", "reason"],
)
_RESTARTS = Counter(
    "ebb_reflector_watch_restarts_total",
    "Watch streams re-opened, by why the last one ended.",
    ["resource", "reason"],
)
_OBJECTS = Gauge("ebb_reflector_objects", "Objects held in a reflector's store.", ["resource"])


class EventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class Event(Generic[T]):
    type: EventType
    key: str
    old: T | None
    new: T | None


Indexer = Callable[[T], Iterable[str]]
Handler = Callable[[Event[T]], None]


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


class Store(Generic[T]):
    """Transformed objects by key ("namespace/name" or "name"), with secondary indexes."""

    def __init__(self, indexers: Mapping[str, Indexer[T]] | None = None) -> None:
        self._items: dict[str, T] = {}
        self._indexers = dict(indexers or {})
        self._indexes: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    def get(self, key: str) -> T | None:
        return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def values(self) -> Iterable[T]:
        return self._items.values()

    def items(self) -> Iterable[tuple[str, T]]:
        return self._items.items()

    def index_keys(self, index: str, value: str) -> set[str]:
        return self._indexes[index].get(value, set())

    def by_index(self, index: str, value: str) -> list[T]:
        items = self._items
        return [items[k] for k in self._indexes[index].get(value, ())]

    def put(self, key: str, obj: T) -> T | None:
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name, indexer in self._indexers.items():
            index = self._indexes[name]
            for value in indexer(obj):
                index.setdefault(value, set()).add(key)
        return old

    def remove(self, key: str) -> T | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: str, obj: T) -> None:
        for name, indexer in self._indexers.items():
            index = self._indexes[name]
            for value in indexer(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]


class _Gone(Exception):
    """The resourceVersion we watch from is too old: relist."""


class Reflector(Generic[T]):
    """Keeps `store` in step with the API server and tells subscribers what changed."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        transform: Callable[[dict[str, Any]], T | None],
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: Mapping[str, Indexer[T]] | None = None,
        name: str | None = None,
        watch_timeout: tuple[int, int] = (240, 480),
        silence_timeout: float = 150.0,
        page_size: int = 500,
        max_backoff: float = 30.0,
    ) -> None:
        self.client = client
        self.resource = resource
        self.name = name or resource.plural
        self.store: Store[T] = Store(indexers)
        self.synced = asyncio.Event()
        self.resource_version = ""
        self._transform = transform
        self._namespace = namespace
        self._selectors = {
            k: v
            for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector))
            if v
        }
        self._watch_timeout = watch_timeout
        self._silence_timeout = silence_timeout
        self._page_size = page_size
        self._max_backoff = max_backoff
        self._versions: dict[str, str] = {}
        self._handlers: list[Handler[T]] = []
        self._stop = asyncio.Event()
        self._stream: aiohttp.StreamReader | None = None

    def subscribe(self, handler: Handler[T]) -> None:
        """Call `handler` for every change. Handlers must be quick and must not block."""
        self._handlers.append(handler)

    def stop(self) -> None:
        self._stop.set()
        self.interrupt()

    def interrupt(self) -> None:
        """Cut the current watch stream (as a network fault would); `run` resumes it."""
        if self._stream is not None:
            self._stream.set_exception(ConnectionResetError("watch stream interrupted"))

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.synced.wait(), timeout)

    async def run(self) -> None:
        """List, then watch, forever (until `stop`). Errors are logged and retried.

        Started again after `stop`, it resumes watching from the last version it saw
        (relisting only if that version is gone)."""
        self._stop.clear()
        need_list, reason, backoff = not self.resource_version, "initial", 0.5
        while not self._stop.is_set():
            try:
                if need_list:
                    await self._list(reason)
                    need_list = False
                ended = await self._watch()
                _RESTARTS.labels(self.name, ended).inc()
                backoff = 0.5
            except _Gone:
                need_list, reason = True, "gone"
                _RESTARTS.labels(self.name, "gone").inc()
            except REQUEST_ERRORS as exc:
                if self._stop.is_set():
                    break
                if isinstance(exc, ApiError) and exc.gone:
                    need_list, reason = True, "gone"
                    continue
                _RESTARTS.labels(self.name, "error").inc()
                log.warning(
                    "watch failed; retrying",
                    resource=self.name,
                    error=str(exc),
                    retry_in=round(backoff, 2),
                )
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self._max_backoff)

    async def _list(self, reason: str) -> None:
        _LISTS.labels(self.name, reason).inc()
        listed = await self.client.list(
            self.resource,
            self._namespace,
            label_selector=self._selectors.get("labelSelector"),
            field_selector=self._selectors.get("fieldSelector"),
            page_size=self._page_size,
            timeout=120,
        )
        items, version = listed.items, listed.resource_version
        seen: set[str] = set()
        for raw in items:
            key = object_key(raw)
            seen.add(key)
            rv = str((raw.get("metadata") or {}).get("resourceVersion", ""))
            if self._versions.get(key) == rv and key in self.store:
                continue
            self._apply(EventType.MODIFIED if key in self.store else EventType.ADDED, key, raw)
        for key in [k for k in self.store if k not in seen]:
            self._apply(EventType.DELETED, key, None)
        self.resource_version = version
        _OBJECTS.labels(self.name).set(len(self.store))
        log.debug("listed", resource=self.name, objects=len(self.store), reason=reason)
        self.synced.set()

    async def _watch(self) -> str:
        params = dict(self._selectors)
        params.update(
            watch="1",
            allowWatchBookmarks="true",
            resourceVersion=self.resource_version,
            timeoutSeconds=str(random.randint(*self._watch_timeout)),
        )
        buffer = bytearray()
        async with self.client.stream(self.resource.path(self._namespace), params) as content:
            self._stream = content
            try:
                while not self._stop.is_set():
                    try:
                        chunk = await asyncio.wait_for(content.readany(), self._silence_timeout)
                    except TimeoutError:
                        log.warning(
                            "watch stream silent; reopening",
                            resource=self.name,
                            silent_for=self._silence_timeout,
                        )
                        return "silent"
                    if not chunk:
                        return "closed"
                    buffer += chunk
                    while (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        if line.strip():
                            self._handle_line(line)
            finally:
                self._stream = None
        return "stopped"

    def _handle_line(self, line: bytes) -> None:
        event = orjson.loads(line)
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone()
            raise ApiError(
                int(code or 500), str(obj.get("reason", "")), str(obj.get("message", ""))
            )
        version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        key = object_key(obj)
        if kind == "DELETED":
            self._apply(EventType.DELETED, key, None)
        elif kind in ("ADDED", "MODIFIED"):
            self._apply(EventType(kind), key, obj)
        self.resource_version = version or self.resource_version
        _OBJECTS.labels(self.name).set(len(self.store))

    def apply_write(self, raw: dict[str, Any]) -> None:
        """Store what the API server returned for our own write, before its watch event
        arrives, so decisions made meanwhile see it (and a slower, older watch event
        cannot undo it)."""
        self._apply(EventType.MODIFIED, object_key(raw), raw)

    def _is_stale(self, key: str, raw: dict[str, Any]) -> bool:
        held = self._versions.get(key)
        version = str((raw.get("metadata") or {}).get("resourceVersion", ""))
        # Resource versions are etcd revisions: comparable integers on one API server.
        return bool(held and version.isdigit() and held.isdigit() and int(version) < int(held))

    def _apply(self, kind: EventType, key: str, raw: dict[str, Any] | None) -> None:
        if raw is not None and self._is_stale(key, raw):
            return
        new = self._transform(raw) if raw is not None else None
        if new is None:
            # Deleted, or no longer of interest to this reflector.
            self._versions.pop(key, None)
            old = self.store.remove(key)
            if old is None:
                return
            kind = EventType.DELETED
        else:
            self._versions[key] = str((raw or {}).get("metadata", {}).get("resourceVersion", ""))
            old = self.store.put(key, new)
            if old is None:
                kind = EventType.ADDED
            elif kind is EventType.ADDED:
                kind = EventType.MODIFIED
        _EVENTS.labels(self.name, kind.value).inc()
        event = Event(kind, key, old, new)
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:
                log.exception("reflector handler failed", resource=self.name, key=key)
