"""Kubernetes Events, recorded in the background so that they never slow a decision.

Events are the human-readable trail (`kubectl describe job`, `kubectl get events`);
the durable state lives in annotations and status. When the API server cannot keep
up, the oldest unsent events are dropped and counted rather than queued forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from prometheus_client import Counter

from ebb.kube import EVENTS, REQUEST_ERRORS, KubeClient

log = structlog.get_logger("ebb.events")
_SENT = Counter("ebb_events_total", "Kubernetes Events recorded.", ["component", "reason"])
_DROPPED = Counter(
    "ebb_events_dropped_total", "Events dropped because the API was too slow.", ["component"]
)


@dataclass(frozen=True, slots=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str = ""
    uid: str = ""


class EventRecorder:
    def __init__(
        self, client: KubeClient, component: str, *, capacity: int = 10_000, workers: int = 4
    ) -> None:
        self._client = client
        self._component = component
        self._queue: asyncio.Queue[tuple[ObjectRef, str, str, str]] = asyncio.Queue(capacity)
        self._workers = workers
        self._host = os.uname().nodename

    def record(self, ref: ObjectRef, reason: str, message: str, *, warning: bool = False) -> None:
        item = (ref, "Warning" if warning else "Normal", reason, message[:1024])
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            _DROPPED.labels(self._component).inc()

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _work(self) -> None:
        while True:
            ref, kind, reason, message = await self._queue.get()
            with contextlib.suppress(*REQUEST_ERRORS):
                await self._send(ref, kind, reason, message)
                _SENT.labels(self._component, reason).inc()

    async def _send(self, ref: ObjectRef, kind: str, reason: str, message: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = ref.namespace or "default"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": self._component, "host": self._host},
            "reportingComponent": self._component,
            "reportingInstance": self._host,
        }
        await self._client.create(EVENTS, body, namespace)
