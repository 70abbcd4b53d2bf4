"""EC2's notices about instances, as EventBridge delivers them to an SQS queue: Spot
interruption warnings, rebalance recommendations and instance state changes. Pure."""

from __future__ import annotations

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


def parse_notice(body: str | bytes) -> Notice | None:
    """The notice in one SQS message body, or None for anything else."""
    try:
        event: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("source") != "aws.ec2":
        return None
    kind = _KINDS.get(str(event.get("detail-type", "")))
    detail = event.get("detail")
    if kind is None or not isinstance(detail, dict) or not detail.get("instance-id"):
        return None
    state = detail.get("state") if kind == STATE_CHANGE else None
    return Notice(kind, str(detail["instance-id"]), str(state) if state else None)


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
