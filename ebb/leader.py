"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it.

Every replica serves reads (the extender verbs, the webhook, metrics); only the leader
makes decisions that write. A leader that cannot renew its lease within
`renew_deadline` steps down before anyone else may take over (`lease_duration`), so two
replicas never both believe they lead. Fail-over takes at most lease_duration +
retry_period.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Gauge

from ebb.kube import LEASES, REQUEST_ERRORS, ApiError, KubeClient

log = structlog.get_logger("ebb.leader")
IS_LEADER = Gauge("ebb_leader", "1 while this replica leads.", ["lease"])


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 10.0,
        renew_deadline: float = 7.0,
        retry_period: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.leading = asyncio.Event()
        self.following = asyncio.Event()
        self.following.set()
        self._clock = clock
        self._last_renew = 0.0

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    async def run(self) -> None:
        try:
            while True:
                ok = await self._try_acquire_or_renew()
                now = self._clock()
                if ok:
                    self._last_renew = now
                    self._set(True)
                elif self.is_leader and now - self._last_renew > self.renew_deadline:
                    log.warning("lost leadership: could not renew", lease=self.name)
                    self._set(False)
                await asyncio.sleep(self.retry_period)
        finally:
            if self.is_leader:
                with contextlib.suppress(Exception):
                    await self._release()
            self._set(False)

    def _set(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        if leading:
            self.leading.set()
            self.following.clear()
            log.info("became leader", lease=self.name, identity=self.identity)
        else:
            self.leading.clear()
            self.following.set()
            log.info("stopped leading", lease=self.name, identity=self.identity)
        IS_LEADER.labels(self.name).set(1 if leading else 0)

    def _spec(self, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _now_micro()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _try_acquire_or_renew(self) -> bool:
        try:
            lease = await self.client.get_or_none(LEASES, self.name, self.namespace)
            if lease is None:
                await self.client.create(
                    LEASES,
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(0, None),
                    },
                    self.namespace,
                )
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            expires = _parse(spec.get("renewTime")) + float(
                spec.get("leaseDurationSeconds") or self.lease_duration
            )
            if holder and holder != self.identity and self._clock() < expires:
                return False
            transitions = int(spec.get("leaseTransitions") or 0)
            if holder != self.identity:
                transitions += 1
                acquired = None
            else:
                acquired = spec.get("acquireTime")
            lease["spec"] = self._spec(transitions, acquired)
            await self.client.replace(LEASES, self.name, lease, self.namespace)
            return True
        except REQUEST_ERRORS as exc:
            if not (isinstance(exc, ApiError) and exc.conflict):
                log.warning("lease update failed", lease=self.name, error=str(exc))
            return False

    async def _release(self) -> None:
        lease = await self.client.get_or_none(LEASES, self.name, self.namespace)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"]["holderIdentity"] = ""
        lease["spec"]["leaseDurationSeconds"] = 1
        await self.client.replace(LEASES, self.name, lease, self.namespace)
        log.info("released leadership", lease=self.name)
