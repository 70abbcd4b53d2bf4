"""status.conditions: one merge, by the Kubernetes API conventions."""

from __future__ import annotations

from ebb.conditions import Condition, from_raw, merge


def test_the_transition_time_moves_only_when_the_status_does() -> None:
    first = merge((), [Condition("Ready", "False", "Invalid", "x")], 1, "t1")
    assert first == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Invalid",
            "message": "x",
            "lastTransitionTime": "t1",
            "observedGeneration": 1,
        }
    ]
    # Same status, another reason and a newer generation: the time stays.
    same = merge(
        from_raw({"conditions": first}), [Condition("Ready", "False", "Gone", "y")], 2, "t2"
    )
    assert (same[0]["lastTransitionTime"], same[0]["observedGeneration"]) == ("t1", 2)
    assert same[0]["reason"] == "Gone"
    moved = merge(
        from_raw({"conditions": same}), [Condition("Ready", "True", "Ready", "")], 2, "t3"
    )
    assert moved[0]["lastTransitionTime"] == "t3"


def test_the_writer_owns_the_whole_list() -> None:
    previous = from_raw(
        {"conditions": [{"type": "Old", "status": "True"}, {"type": "Ready", "status": "True"}]}
    )
    assert previous[1].last_transition_time == ""  # written without a time: stamped now
    out = merge(previous, [Condition("Ready", "True", "Ready", "")], 1, "t1")
    assert [(c["type"], c["lastTransitionTime"]) for c in out] == [("Ready", "t1")]
    assert from_raw(None) == () == from_raw({"conditions": None})
