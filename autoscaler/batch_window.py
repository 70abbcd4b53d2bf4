"""The batch window: pending pods are planned for together, not one by one as they
arrive. Pure code; the clock is injected (every call takes `now`, seconds on any
monotonic clock).

A window opens at the first arrival. It closes once no new pod has arrived for the
idle window (`idle_seconds`), or when the maximum window (`max_seconds`) since it
opened is over, whichever comes first; a burst of arrivals is then planned in one
pass, and a steady trickle still gets a plan every `max_seconds`. (Karpenter batches
pending pods the same way.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchWindow:
    idle_seconds: float
    max_seconds: float
    opened_at: float | None = None  # the first arrival of the open window; None: closed
    last_arrival: float = 0.0
    seen: frozenset[str] = frozenset()  # pods already counted as arrivals

    def arrived(self, now: float) -> BatchWindow:
        """A pod arrived: open the window, or extend its idle part."""
        opened_at = now if self.opened_at is None else self.opened_at
        return dataclasses.replace(self, opened_at=opened_at, last_arrival=now)

    def observe(self, pending: Iterable[str], now: float) -> BatchWindow:
        """The pods pending now (by key): any not seen before is an arrival."""
        keys = frozenset(pending)
        window = self.arrived(now) if keys - self.seen else self
        return dataclasses.replace(window, seen=keys)

    def closes_at(self) -> float | None:
        """When the open window closes (None when none is open)."""
        if self.opened_at is None:
            return None
        return min(self.last_arrival + self.idle_seconds, self.opened_at + self.max_seconds)

    def ready(self, now: float) -> bool:
        """Whether a plan is due now: no window is open, or the open one is over."""
        closes_at = self.closes_at()
        return closes_at is None or now >= closes_at

    def closed(self) -> BatchWindow:
        """The window after a plan was made: the next arrival opens a new one."""
        return dataclasses.replace(self, opened_at=None)
