"""The fair-share history one pass hands the next (the Job controller and the simulator
both keep it with these functions)."""

from __future__ import annotations

import pytest

from ebb.model import JobQueue, SchedulingPolicy
from extender.jobs.fairshare import UsageHistory, half_lives


def test_each_queue_decays_with_its_policys_half_life() -> None:
    queues = {
        "fair": JobQueue("fair", 1, ("ce",), scheduling_policy="p"),
        "fifo": JobQueue("fifo", 1, ("ce",)),
        "lost": JobQueue("lost", 1, ("ce",), scheduling_policy="gone"),
    }
    policies = {"p": SchedulingPolicy("p", share_decay_seconds=60)}
    assert half_lives(queues, policies) == {"fair": 60.0, "fifo": 0.0, "lost": 0.0}


def test_usage_halves_every_half_life_and_grows_with_what_runs() -> None:
    h = {"fair": 60.0, "fifo": 0.0}
    history = UsageHistory({"fair": {"a": 100.0}}, time=0.0)
    assert history.decayed(60.0, h) == {"fair": {"a": pytest.approx(50.0)}}
    later = history.advanced({"fair": {"b": 2.0}, "fifo": {"c": 1.0}}, 60.0, h)
    assert later.time == 60.0
    assert later.usage["fair"]["a"] == pytest.approx(50.0)
    # ∫ 2 vCPUs over 60 s, decayed: 2 × τ × (1 − ½), τ = 60 / ln 2.
    assert later.usage["fair"]["b"] == pytest.approx(2 * 60 / 0.6931471805599453 * 0.5)
    assert later.usage["fifo"] == {}  # no policy: no history kept


def test_a_history_without_a_time_is_taken_as_of_now() -> None:
    history = UsageHistory({"fair": {"a": 100.0}})
    assert history.decayed(1000.0, {"fair": 60.0}) == {"fair": {"a": 100.0}}
    later = history.advanced({"fair": {"a": 1.0}}, 1000.0, {"fair": 60.0})
    assert later.usage["fair"] == {"a": 100.0}  # nothing elapsed
    assert later.time == 1000.0
