"""EC2's notices about instances, as EventBridge delivers them to an SQS queue: Spot
interruption warnings, rebalance recommendations and instance state changes. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

SPOT_INTERRUPTION = "spot-interruption"
REBALANCE = "rebalance-recommendation"
STATE_CHANGE = "state-change"

_KINDS = {
    "EC2 Spot Instance Interruption Warning": SPOT_INTERRUPTION,
    "EC2 Instance Rebalance Recommendation": REBALANCE,
    "EC2 Instance State-change Notification": STATE_CHANGE,
}
# States after which an instance will not run pods again.
GOING_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str
    instance_id: str
    state: str | None = None  # for state changes


class NoticeError(ValueError):
    """A message that is not an EC2 notice Ebb reads; the message names the field."""


_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,32}$")


def parse_notice(body: str | bytes) -> Notice:
    """The notice in one SQS message body; raises NoticeError naming what is wrong with
    anything else (the consumer logs and drops such messages)."""
    try:
        event: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise NoticeError(f"body: not valid JSON ({exc})") from None
    if not isinstance(event, dict):
        raise NoticeError(f"body: must be an EventBridge event object, not {type(event).__name__}")
    if event.get("source") != "aws.ec2":
        raise NoticeError(f"source: {_short(event.get('source'))} is not aws.ec2")
    detail_type = event.get("detail-type")
    kind = _KINDS.get(detail_type) if isinstance(detail_type, str) else None
    if kind is None:
        raise NoticeError(f"detail-type: {_short(detail_type)} is not one of {', '.join(_KINDS)}")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise NoticeError("detail: must be an object")
    instance_id = detail.get("instance-id")
    if not isinstance(instance_id, str) or not _INSTANCE_ID.match(instance_id):
        raise NoticeError(f"detail.instance-id: {_short(instance_id)} is not an instance id")
    state = detail.get("state") if kind == STATE_CHANGE else None
    if kind == STATE_CHANGE and not isinstance(state, str):
        raise NoticeError(f"detail.state: {_short(state)} is not an instance state")
    return Notice(kind, instance_id, state)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def event(kind: str, instance_id: str, *, region: str, state: str | None = None) -> dict[str, Any]:
    """An EventBridge event of `kind` (what EC2 sends; used by the local interruption
    command)."""
    detail_type = next(k for k, v in _KINDS.items() if v == kind)
    detail: dict[str, Any] = {"instance-id": instance_id}
    if kind == SPOT_INTERRUPTION:
        detail["instance-action"] = "terminate"
    if state is not None:
        detail["state"] = state
    return {
        "version": "0",
        "detail-type": detail_type,
        "source": "aws.ec2",
        "region": region,
        "resources": [f"arn:aws:ec2:{region}:instance/{instance_id}"],
        "detail": detail,
    }
