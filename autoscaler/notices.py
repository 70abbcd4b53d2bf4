"""The notice consumer: EC2's notices (Spot interruption warnings, instance state
changes), read from SQS for as long as the daemon runs. A Spot warning cordons the
node; an instance going away ends its pods and deletes its node."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from botocore.exceptions import BotoCoreError

from autoscaler import metrics
from autoscaler.aws import NOTICE_WAIT_SECONDS, Aws, AwsError
from autoscaler.ec2_view import Ec2View
from autoscaler.events import EnvironmentEvents
from autoscaler.interruptions import (
    GOING_STATES,
    SPOT_INTERRUPTION,
    STATE_CHANGE,
    NoticeError,
    parse_notice,
)
from autoscaler.node_actions import NodeActions, draining_reason
from autoscaler.scaledown import SPOT_INTERRUPTION as DRAIN_SPOT_INTERRUPTION
from ebb import kube
from ebb.model import NodeInfo

log = structlog.get_logger("ebb.autoscaler")


class NoticeConsumer:
    def __init__(
        self,
        queue_url: str,
        aws: Aws,
        ec2: Ec2View,
        nodes: kube.Reflector[NodeInfo],
        *,
        actions: NodeActions,
        events: EnvironmentEvents,
        lead: Callable[[], Awaitable[None]],
        poke: Callable[[], None],
    ) -> None:
        self._url = queue_url
        self._aws = aws
        self._ec2 = ec2
        self._nodes = nodes
        self._actions = actions
        self._events = events
        self._lead = lead  # returns once this replica leads
        self._poke = poke  # run a pass now

    async def run(self) -> None:
        """A message that is not a notice is logged and dropped; one whose handling
        fails is logged and left for SQS to deliver again; nothing stops the loop."""
        while True:
            await self._lead()
            try:
                messages = await asyncio.to_thread(
                    self._aws.receive, self._url, NOTICE_WAIT_SECONDS
                )
            except (AwsError, BotoCoreError, OSError) as exc:
                log.warning("reading interruption notices failed", error=str(exc))
                await asyncio.sleep(5)
                continue
            for receipt, body in messages:
                try:
                    await self.handle(body)
                    await asyncio.to_thread(self._aws.delete_message, self._url, receipt)
                except Exception:
                    log.exception("handling an EC2 notice failed; SQS will deliver it again")

    async def handle(self, body: str) -> None:
        try:
            notice = parse_notice(body)
        except NoticeError as exc:
            metrics.NOTICES_DROPPED.inc()
            log.warning("dropped an SQS message that is not an EC2 notice", error=str(exc))
            return
        metrics.INTERRUPTIONS.labels(notice.kind).inc()
        node = next(
            (n for n in self._nodes.store.values() if n.instance_id == notice.instance_id), None
        )
        log.info(
            "ec2 notice", kind=notice.kind, instance=notice.instance_id, node=node and node.name
        )
        self._ec2.relist()
        if (
            notice.kind == SPOT_INTERRUPTION
            and node is not None
            and draining_reason(node) != DRAIN_SPOT_INTERRUPTION
            and self._actions.memory.cordoned.get(node.name) != DRAIN_SPOT_INTERRUPTION
        ):
            await self._actions.cordon(node, DRAIN_SPOT_INTERRUPTION, "Spot interruption warning")
            self._events.about(
                node.compute_environment or "",
                "SpotInterruption",
                f"{notice.instance_id} ({node.name}) will be reclaimed; cordoned",
                warning=True,
            )
        elif notice.kind == STATE_CHANGE and notice.state in GOING_STATES:
            log.info("instance going away", instance=notice.instance_id, state=notice.state)
            ours = self._ec2.our_nodes(self._nodes.store.values()).get(notice.instance_id)
            if ours is not None:
                await self._actions.instance_gone(
                    notice.instance_id, ours.name, ours.compute_environment or "", notice.state
                )
        self._poke()
