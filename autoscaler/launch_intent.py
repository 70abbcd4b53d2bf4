"""A launch intent: one RunInstances request as the launch ledger writes it down (in
its compute environment's status.launches) before it is sent. Pure code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LaunchIntent:
    token: str  # EC2's client token: the same request sent twice launches once
    instance_type: str
    count: int
    subnet: str
    reason: str  # why it is launched (the planner's reason)
    requested_at: str = ""  # RFC 3339, when it was written down
    detail: str = ""  # what the pods are, when it says more than `reason` (the planner's)

    def to_raw(self) -> dict[str, Any]:
        """The intent as status.launches holds it."""
        return {
            "token": self.token,
            "instanceType": self.instance_type,
            "count": self.count,
            "subnet": self.subnet,
            "reason": self.reason,
            "requestedAt": self.requested_at,
            "detail": self.detail,
        }


def intent_from_raw(raw: Mapping[str, Any]) -> LaunchIntent:
    """An intent read back from status.launches (written by this or an earlier version:
    a missing field reads as empty)."""
    return LaunchIntent(
        token=str(raw.get("token", "")),
        instance_type=str(raw.get("instanceType", "")),
        count=int(raw.get("count") or 0),
        subnet=str(raw.get("subnet", "")),
        reason=str(raw.get("reason", "")),
        requested_at=str(raw.get("requestedAt", "")),
        detail=str(raw.get("detail", "")),
    )
