"""When the autoscaler's loop runs its next pass, if no watch event wakes it first.
Pure code."""

from __future__ import annotations

# A pass at least this often (EC2 listings, garbage, launches of unknown outcome)...
MAX_SLEEP_SECONDS = 5.0
# ...and at most this often, however soon a decision is due.
MIN_SLEEP_SECONDS = 0.2


def next_wake(
    *, resync_seconds: float, batch_closes_in: float | None, scale_down_in: float | None
) -> float:
    """Seconds the loop may sleep: until the open batch window closes, or the next
    scale-down decision is due (None: no window is open, no decision is due)."""
    waits = [resync_seconds, MAX_SLEEP_SECONDS]
    waits += [w for w in (batch_closes_in, scale_down_in) if w is not None]
    return max(MIN_SLEEP_SECONDS, min(waits))
