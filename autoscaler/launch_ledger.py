"""The launch ledger: every launch is written down before it is sent, so that a daemon
killed at any moment neither loses a launch nor makes it twice.

Each launch is first written down as an intent (its client token, type, count and
subnet; `LaunchIntent`) in the compute environment's status.launches, then sent to EC2
with that token, then crossed out. A daemon killed in between finds the intent on
start (`resolve`): if EC2 already has instances tagged with the token they are simply
counted, else the same request is sent again with the same token, which EC2 answers
without launching twice. Until then the intent counts as capacity on its way
(`in_flight`).

The ledger also remembers what launches taught it: offerings without capacity (avoided
for a while), environments whose launches are paused after an error, and each
environment's last launch error (its status.lastLaunchError).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import structlog
from botocore.exceptions import BotoCoreError

from autoscaler import metrics
from autoscaler.aws import Aws, AwsError, Instance, LaunchRequest
from autoscaler.bootstrap import ClusterInfo, image_parameter, node_labels, user_data
from autoscaler.ec2_view import Ec2View
from autoscaler.environments import Unavailable
from autoscaler.events import EnvironmentEvents
from autoscaler.launch_intent import LaunchIntent
from autoscaler.planner import Launch
from autoscaler.room import Coming, in_flight
from autoscaler.settings import AutoscalerSettings
from autoscaler.status import LaunchFailure
from autoscaler.timestamps import rfc3339
from ebb import kube
from ebb.catalog import Catalog, InstanceType, NodeOverhead
from ebb.model import ComputeEnvironment

log = structlog.get_logger("ebb.autoscaler")
_LAUNCH_BACKOFF_SECONDS = 30.0


class EnvironmentGone(Exception):
    """The compute environment whose launches were to be written down was deleted."""


class IntentStore(Protocol):
    async def save(self, environment: str, intents: Sequence[LaunchIntent]) -> None:
        """Persist the environment's launches of unknown outcome; raises EnvironmentGone
        when the environment no longer exists."""


class EnvironmentStatusStore:
    """Intents kept in the compute environment's status.launches."""

    def __init__(self, client: kube.KubeClient) -> None:
        self._client = client

    async def save(self, environment: str, intents: Sequence[LaunchIntent]) -> None:
        status = {"launches": [i.to_raw() for i in intents]}
        try:
            await self._client.patch(
                kube.COMPUTE_ENVIRONMENTS, environment, {"status": status}, subresource="status"
            )
        except kube.ApiError as exc:
            if exc.not_found:
                raise EnvironmentGone(environment) from exc
            raise


class LaunchLedger:
    def __init__(
        self,
        settings: AutoscalerSettings,
        aws: Aws,
        ec2: Ec2View,
        store: IntentStore,
        events: EnvironmentEvents,
        *,
        catalog: Callable[[], Catalog],
        cluster: ClusterInfo,
        overhead: NodeOverhead,
        poke: Callable[[], None],
    ) -> None:
        self.s = settings
        self._aws = aws
        self._ec2 = ec2
        self._store = store
        self._events = events
        self._catalog = catalog
        self._cluster = cluster
        self._overhead = overhead
        self._poke = poke  # plan again at once
        self.intents: dict[str, list[LaunchIntent]] = {}  # environment -> unresolved
        self.unavailable: dict[Unavailable, float] = {}  # -> until (monotonic)
        self.errors: dict[str, LaunchFailure] = {}  # environment -> its last launch failure
        self._backoff: dict[str, float] = {}  # environment -> launches paused until
        self._zone_turn = itertools.count()

    def load(self, intents: Mapping[str, Iterable[LaunchIntent]]) -> None:
        """Take the intents written down (by this daemon before a restart, or by the
        last leader), to be resolved."""
        self.intents = {name: list(items) for name, items in intents.items()}

    def unresolved(self) -> bool:
        return any(self.intents.values())

    def in_flight(self, subnet_zones: Mapping[str, str]) -> list[Coming]:
        """Each instance of a launch of unknown outcome."""
        tokens = (i.launch_token for i in self._ec2.instances.values())
        return in_flight(self.intents, tokens, self._catalog(), subnet_zones)

    def forget_unavailable(self, mono: float) -> None:
        """Offerings avoided long enough are tried again."""
        for key in [k for k, until in self.unavailable.items() if until <= mono]:
            del self.unavailable[key]

    async def launch_all(
        self, launches: Iterable[Launch], specs: Mapping[str, ComputeEnvironment]
    ) -> None:
        by_env: dict[str, list[LaunchIntent]] = {}
        zones = await self._ec2.zones({s for spec in specs.values() for s in spec.subnets})
        mono = time.monotonic()
        for launch in launches:
            if self._backoff.get(launch.environment, 0.0) > mono:
                continue  # its last launch failed for a reason retrying will not fix soon
            spec = specs[launch.environment]
            subnets = [s for s in spec.subnets if zones.get(s) in launch.zones]
            intent = LaunchIntent(
                token=uuid.uuid4().hex,
                instance_type=launch.instance_type,
                count=launch.count,
                subnet=subnets[next(self._zone_turn) % len(subnets)],
                reason=launch.reason,
                requested_at=rfc3339(time.time()),
                detail=launch.detail,
            )
            by_env.setdefault(launch.environment, []).append(intent)
        await asyncio.gather(*(self._launch(specs[e], items) for e, items in by_env.items()))

    async def _launch(self, spec: ComputeEnvironment, intents: list[LaunchIntent]) -> None:
        before = self.intents.get(spec.name, [])
        await self._write(spec.name, before + intents)
        results = await asyncio.gather(*(self._send(spec, intent) for intent in intents))
        left = [intent for intent, done in zip(intents, results, strict=True) if not done]
        await self._write(spec.name, before + left, sent=True)

    async def resolve(self, environments: Mapping[str, ComputeEnvironment]) -> None:
        """Launches whose outcome is unknown: sent by a daemon that then stopped, or cut
        off by a network error. Those EC2 has instances for are crossed out; the others
        are sent again with the same client token."""
        by_token: dict[str, list[Instance]] = {}
        for instance in self._ec2.instances.values():
            by_token.setdefault(instance.launch_token, []).append(instance)
        for name, intents in list(self.intents.items()):
            spec = environments.get(name)
            if not intents or spec is None:
                continue
            left: list[LaunchIntent] = []
            for intent in intents:
                found = by_token.get(intent.token)
                if found:
                    self._launched(spec, intent, found, "found by its client token")
                    continue
                log.info("resending a launch of unknown outcome", launch=intent.token)
                if not await self._send(spec, intent):
                    left.append(intent)
            await self._write(name, left, sent=True)

    async def _send(self, spec: ComputeEnvironment, intent: LaunchIntent) -> bool:
        """Send one launch; True once EC2 has answered (launched or refused), False when
        the outcome is unknown (the intent then stays, to be resolved)."""
        t = self._catalog().get(intent.instance_type)
        zone = (await self._ec2.zones([intent.subnet])).get(intent.subnet, "")
        if t is None:
            return True
        try:
            request = await asyncio.to_thread(self._request, spec, t, intent)
            launched = await asyncio.to_thread(self._aws.launch, request)
        except AwsError as exc:
            self._refused(spec, intent, zone, exc)
            return True
        except (BotoCoreError, OSError) as exc:
            # EC2 may have launched: look again before anything is re-sent (with the same
            # token), and meanwhile count the launch as capacity on its way.
            self._ec2.relist()
            metrics.LAUNCH_FAILURES.labels(spec.name, "outcome-unknown").inc()
            problem = f"RunInstances for {intent.count} x {t.name} in {zone}: no answer ({exc})"
            log.warning(
                "launch outcome unknown; it will be settled with its client token",
                compute_environment=spec.name,
                launch=intent.token,
                error=str(exc),
            )
            self._failed(spec, "LaunchOutcomeUnknown", problem)
            return False
        self._ec2.add(launched)
        self._launched(spec, intent, launched, "EC2 answered")
        return True

    def _launched(
        self,
        spec: ComputeEnvironment,
        intent: LaunchIntent,
        instances: Sequence[Instance],
        how: str,
    ) -> None:
        """Count, log and record a launch EC2 answered, or one found done by its token."""
        self.errors.pop(spec.name, None)
        zone = instances[0].zone if instances else ""
        metrics.LAUNCHES.labels(spec.name, spec.capacity_type, intent.reason).inc(len(instances))
        log.info(
            "launched",
            compute_environment=spec.name,
            instance_type=intent.instance_type,
            zone=zone,
            count=len(instances),
            instances=[i.instance_id for i in instances],
            reason=intent.reason,
            detail=intent.detail,
            launch=intent.token,
            how=how,
        )
        self._events.record(
            spec,
            "Launched",
            f"launched {len(instances)} x {intent.instance_type} ({spec.capacity_type}) in "
            f"{zone} for {intent.reason}{f' ({intent.detail})' if intent.detail else ''} "
            f"({how})",
        )

    def _request(
        self, spec: ComputeEnvironment, t: InstanceType, intent: LaunchIntent
    ) -> LaunchRequest:
        image = spec.image_id or self._aws.image_id(
            image_parameter(
                self.s.image_parameter_prefix,
                self._cluster.kubernetes_version,
                spec.image_type,
                t,
            )
        )
        labels = node_labels(spec.name, spec.capacity_type)
        max_price = (
            f"{t.on_demand_price * spec.bid_percentage / 100:.6f}"
            if spec.bid_percentage is not None
            else None
        )
        return LaunchRequest(
            token=intent.token,
            environment=spec.name,
            instance_type=t.name,
            capacity_type=spec.capacity_type,
            count=intent.count,
            subnet_id=intent.subnet,
            image_id=image,
            user_data=user_data(self._cluster, spec.image_type, labels, t, self._overhead),
            security_group_ids=spec.security_group_ids,
            instance_profile=spec.instance_role,
            launch_template=spec.launch_template,
            tags=spec.tags,
            max_price=max_price,
            placement_group=spec.placement_group,
        )

    def _refused(
        self, spec: ComputeEnvironment, intent: LaunchIntent, zone: str, exc: AwsError
    ) -> None:
        if exc.insufficient_capacity:
            key = Unavailable(intent.instance_type, zone, spec.capacity_type)
            self.unavailable[key] = time.monotonic() + self.s.unavailable_offering_seconds
            metrics.LAUNCH_FAILURES.labels(spec.name, "insufficient-capacity").inc()
            log.warning(
                "no capacity; avoiding this offering for a while",
                compute_environment=spec.name,
                offering=str(key),
                code=exc.code,
                count=intent.count,
                detail=intent.detail,
                seconds=self.s.unavailable_offering_seconds,
            )
            # EC2 launches all of a request or none (MinCount = MaxCount).
            what = f" ({intent.detail})" if intent.detail else ""
            self._failed(
                spec,
                "InsufficientCapacity",
                f"{key}: {exc.code}: {exc.message}; none of {intent.count} launched{what}",
            )
            self._poke()  # plan again at once: the next type or zone
            return
        metrics.LAUNCH_FAILURES.labels(spec.name, "error").inc()
        self._backoff[spec.name] = time.monotonic() + _LAUNCH_BACKOFF_SECONDS
        log.error(
            "launch failed; pausing launches for this environment",
            compute_environment=spec.name,
            error=str(exc),
            seconds=_LAUNCH_BACKOFF_SECONDS,
        )
        self._failed(
            spec,
            "LaunchFailed",
            f"{exc}; launches paused for {_LAUNCH_BACKOFF_SECONDS:.0f} s",
        )

    def _failed(self, spec: ComputeEnvironment, reason: str, message: str) -> None:
        """A warning Event, and the environment's status.lastLaunchError until a launch
        succeeds."""
        self.errors[spec.name] = LaunchFailure(rfc3339(time.time()), reason, message)
        self._events.record(spec, reason, message, warning=True)

    async def _write(self, name: str, intents: list[LaunchIntent], *, sent: bool = False) -> None:
        """Record the environment's launches of unknown outcome. Before a launch is sent
        this must succeed (or the launch is not sent); after (`sent`), an environment
        deleted meanwhile has nothing left to record."""
        self.intents[name] = intents
        try:
            await self._store.save(name, intents)
        except EnvironmentGone:
            if not sent:
                raise
            self.intents.pop(name, None)
            log.info("compute environment deleted during a launch", compute_environment=name)
