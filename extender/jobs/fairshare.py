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

from ebb.model import SchedulingPolicy

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


def share_key(policy: SchedulingPolicy, share: str, running_vcpus: float, decayed: float) -> float:
    tau = policy.share_decay_seconds / LN2 if policy.share_decay_seconds > 0 else 0.0
    history = decayed / tau if tau > 0 else 0.0
    return policy.weight_for(share) * (running_vcpus + history)


def reserved_fraction(policy: SchedulingPolicy, active_shares: int) -> float:
    """Share of capacity held back for share identifiers that are not active yet."""
    if policy.compute_reservation <= 0:
        return 0.0
    return float((policy.compute_reservation / 100.0) ** max(active_shares, 1))
