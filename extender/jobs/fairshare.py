"""Fair share between share identifiers of a queue (AWS Batch scheduling policies).

Usage of a share is its decayed vCPU-seconds: U(now) = ∫ v(t)·2^-((now-t)/H) dt with
H = shareDecaySeconds (a half-life); H = 0 counts only what runs now. The share that
goes next is the one with the least weighted usage

    key(s) = weightFactor(s) × (vCPUs running now(s) + U(s) / τ),   τ = H / ln 2,

where U/τ is the decayed average of vCPUs used (so both terms are vCPUs). A lower
weightFactor therefore buys a larger share: at steady state shares converge to
capacity ∝ 1 / weightFactor. `computeReservation` r holds back (r/100)^N of the
queue's capacity while N share identifiers are active, so a share that becomes
active finds room at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ebb.model import JobQueue, SchedulingPolicy

LN2 = math.log(2)


def advance(
    usage: Mapping[str, float],
    running_vcpus: Mapping[str, float],
    elapsed: float,
    half_life: float,
) -> dict[str, float]:
    """Decayed vCPU-seconds after `elapsed` seconds at the given running vCPUs."""
    if half_life <= 0:
        return {}
    factor = 2.0 ** (-max(elapsed, 0.0) / half_life)
    tau = half_life / LN2
    out = {share: value * factor for share, value in usage.items()}
    for share, vcpus in running_vcpus.items():
        # ∫_0^elapsed v·2^(-s/H) ds = v·τ·(1 − factor)
        out[share] = out.get(share, 0.0) + vcpus * tau * (1.0 - factor)
    return {share: value for share, value in out.items() if value > 1e-6}


def half_lives(
    queues: Mapping[str, JobQueue], policies: Mapping[str, SchedulingPolicy]
) -> dict[str, float]:
    """Each queue's usage half-life: its scheduling policy's shareDecaySeconds (0: no
    policy, no history kept)."""
    out = {}
    for name, queue in queues.items():
        policy = policies.get(queue.scheduling_policy) if queue.scheduling_policy else None
        out[name] = float(policy.share_decay_seconds) if policy else 0.0
    return out


@dataclass(frozen=True, slots=True)
class UsageHistory:
    """Each queue's decayed usage per share (vCPU-seconds) as of `time`, the fair-share
    history one pass hands the next. `time` None: a history with no time (loaded
    without one, or empty) is taken as of now."""

    usage: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    time: float | None = None

    def decayed(self, now: float, half_life: Mapping[str, float]) -> dict[str, dict[str, float]]:
        """The usage as of `now` (what admission weighs shares by)."""
        if self.time is None:
            return {name: dict(usage) for name, usage in self.usage.items()}
        elapsed = now - self.time
        return {
            name: advance(usage, {}, elapsed, half_life.get(name, 0.0))
            for name, usage in self.usage.items()
        }

    def advanced(
        self,
        running_vcpus: Mapping[str, Mapping[str, float]],
        now: float,
        half_life: Mapping[str, float],
    ) -> UsageHistory:
        """The history after a pass at `now` that left `running_vcpus` (queue → share →
        vCPUs) running: one entry per queue of `half_life`."""
        elapsed = 0.0 if self.time is None else now - self.time
        usage = {
            name: advance(self.usage.get(name, {}), running_vcpus.get(name, {}), elapsed, h)
            for name, h in half_life.items()
        }
        return UsageHistory(usage, now)


def share_key(policy: SchedulingPolicy, share: str, running_vcpus: float, decayed: float) -> float:
    tau = policy.share_decay_seconds / LN2 if policy.share_decay_seconds > 0 else 0.0
    history = decayed / tau if tau > 0 else 0.0
    return policy.weight_for(share) * (running_vcpus + history)


def reserved_fraction(policy: SchedulingPolicy, active_shares: int) -> float:
    """Share of capacity held back for share identifiers that are not active yet."""
    if policy.compute_reservation <= 0:
        return 0.0
    return float((policy.compute_reservation / 100.0) ** max(active_shares, 1))
