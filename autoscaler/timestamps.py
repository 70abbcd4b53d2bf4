"""Kubernetes timestamps (RFC 3339, UTC, whole seconds) to and from epoch seconds."""

from __future__ import annotations

import datetime


def rfc3339(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(timestamp: str, default: float) -> float:
    """`default` when `timestamp` is not one."""
    try:
        return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
