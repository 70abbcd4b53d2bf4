"""The launch ledger's restart safety, against a fake EC2 (a fake of AWS; the intents
are kept where the daemon keeps them, a compute environment's status, here a dict):
a daemon killed at any moment neither loses a launch nor makes it twice."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from autoscaler.aws import Instance, LaunchRequest
from autoscaler.bootstrap import ClusterInfo
from autoscaler.ec2_view import Ec2View
from autoscaler.launch_intent import LaunchIntent
from autoscaler.launch_ledger import LaunchLedger
from autoscaler.planner import Launch
from autoscaler.settings import AutoscalerSettings
from ebb.catalog import NodeOverheadSettings, shipped_catalog
from ebb.model import ComputeEnvironment

CE = ComputeEnvironment(
    name="ce",
    type="EC2",
    max_vcpus=64,
    instance_types=("c6i.large",),
    subnets=("s-1",),
    security_group_ids=("sg-1",),
    instance_role="ebb-node",
)
SPECS = {"ce": CE}
LAUNCH = Launch("ce", "c6i.large", 3, 6, ("us-east-1a",), 3, "pending-pods")
CLUSTER = ClusterInfo("prod", "https://api.example", "Q0E=", "10.100.0.0/16", "1.35")


class Killed(BaseException):
    """The daemon stopped here (a BaseException, as a cancellation: nothing catches it)."""


class FakeEc2:
    """EC2 as the ledger uses it. RunInstances is idempotent per client token (as EC2's
    is); it can be told to lose its answer, to die before it acts, or to list
    instances late (EC2's listings are eventually consistent)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.launched: dict[str, list[Instance]] = {}  # token -> instances
        self.calls: list[str] = []
        self.lose_answer = False
        self.kill_before_launch = False
        self.listing_lags = False
        self._ids = itertools.count(1)

    def instances(self) -> list[Instance]:
        return [] if self.listing_lags else [i for v in self.launched.values() for i in v]

    def subnet_zones(self, subnets: Sequence[str]) -> dict[str, str]:
        return {s: "us-east-1a" for s in subnets}

    def image_id(self, parameter: str) -> str:
        return "ami-1"

    def launch(self, request: LaunchRequest) -> list[Instance]:
        # The ledger wrote the launch down before it sent it.
        assert request.token in {i.token for i in self.store.saved.get("ce", [])}
        if self.kill_before_launch:
            raise Killed
        self.calls.append(request.token)
        if request.token not in self.launched:
            self.launched[request.token] = [
                Instance(
                    f"i-{next(self._ids):017x}",
                    request.instance_type,
                    "us-east-1a",
                    "pending",
                    0.0,
                    request.environment,
                    request.capacity_type,
                    request.token,
                    "",
                )
                for _ in range(request.count)
            ]
        if self.lose_answer:
            raise ConnectionResetError("connection reset by peer")
        return self.launched[request.token]

    def count(self) -> int:
        return sum(len(v) for v in self.launched.values())


class MemoryStore:
    """The environments' status.launches."""

    def __init__(self) -> None:
        self.saved: dict[str, list[LaunchIntent]] = {}

    async def save(self, environment: str, intents: Sequence[LaunchIntent]) -> None:
        self.saved[environment] = list(intents)


class Events:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def record(self, spec: Any, reason: str, message: str, *, warning: bool = False) -> None:
        self.reasons.append(reason)


async def start(ec2: FakeEc2, store: MemoryStore) -> tuple[LaunchLedger, Events]:
    """A daemon (re)starting: a fresh EC2 listing, the intents read back, then resolved."""
    view = Ec2View(ec2, resync_seconds=10.0)  # type: ignore[arg-type]
    events = Events()
    ledger = LaunchLedger(
        AutoscalerSettings(),
        ec2,  # type: ignore[arg-type]
        view,
        store,
        events,  # type: ignore[arg-type]
        catalog=shipped_catalog,
        cluster=CLUSTER,
        overhead=NodeOverheadSettings().node_overhead(),
        poke=lambda: None,
    )
    await view.refresh(force=True)
    ledger.load(store.saved)
    await ledger.resolve(SPECS)
    return ledger, events


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def ec2(store: MemoryStore) -> FakeEc2:
    return FakeEc2(store)


async def test_a_launch_is_written_down_then_sent_then_crossed_out(
    ec2: FakeEc2, store: MemoryStore
) -> None:
    ledger, events = await start(ec2, store)
    await ledger.launch_all([LAUNCH], SPECS)
    assert ec2.count() == 3 and len(ec2.calls) == 1
    assert store.saved["ce"] == [] and not ledger.unresolved()
    assert events.reasons == ["Launched"]


async def test_a_lost_answer_is_settled_by_its_token_after_a_restart(
    ec2: FakeEc2, store: MemoryStore
) -> None:
    ledger, _ = await start(ec2, store)
    ec2.lose_answer = True
    await ledger.launch_all([LAUNCH], SPECS)
    # EC2 launched, the daemon does not know: the intent stays, and counts as on its way.
    assert ec2.count() == 3
    (intent,) = store.saved["ce"]
    assert ledger.unresolved() and len(ledger.in_flight({})) == 3
    ec2.lose_answer = False
    # Restarted: EC2 lists the instances with the intent's token; nothing is sent again.
    ledger, events = await start(ec2, store)
    assert ec2.calls == [intent.token]
    assert ec2.count() == 3
    assert store.saved["ce"] == [] and not ledger.unresolved()
    assert events.reasons == ["Launched"]


async def test_a_launch_written_down_but_never_sent_is_sent_after_a_restart(
    ec2: FakeEc2, store: MemoryStore
) -> None:
    ledger, _ = await start(ec2, store)
    ec2.kill_before_launch = True
    with pytest.raises(Killed):
        await ledger.launch_all([LAUNCH], SPECS)
    assert ec2.count() == 0
    (intent,) = store.saved["ce"]
    ec2.kill_before_launch = False
    ledger, _ = await start(ec2, store)
    assert ec2.calls == [intent.token]  # the same request, the same token
    assert ec2.count() == 3
    assert store.saved["ce"] == [] and not ledger.unresolved()


async def test_a_resent_launch_ec2_already_made_launches_nothing_new(
    ec2: FakeEc2, store: MemoryStore
) -> None:
    ledger, _ = await start(ec2, store)
    ec2.lose_answer = True
    await ledger.launch_all([LAUNCH], SPECS)
    (intent,) = store.saved["ce"]
    # Restarted while EC2's listing does not show the instances yet: the request is sent
    # again with its token, and EC2 answers with the instances it made the first time.
    ec2.lose_answer, ec2.listing_lags = False, True
    ledger, _ = await start(ec2, store)
    assert ec2.calls == [intent.token, intent.token]
    assert ec2.count() == 3
    assert store.saved["ce"] == [] and not ledger.unresolved()


async def test_a_launch_still_unanswered_after_a_restart_stays_written_down(
    ec2: FakeEc2, store: MemoryStore
) -> None:
    ledger, _ = await start(ec2, store)
    ec2.lose_answer, ec2.listing_lags = True, True
    await ledger.launch_all([LAUNCH], SPECS)
    ledger, events = await start(ec2, store)
    (intent,) = store.saved["ce"]
    assert ec2.calls == [intent.token, intent.token]
    assert ledger.unresolved() and len(ledger.in_flight({})) == 3
    assert events.reasons == ["LaunchOutcomeUnknown"]
    ec2.lose_answer, ec2.listing_lags = False, False
    ledger, _ = await start(ec2, store)
    assert ec2.count() == 3 and store.saved["ce"] == []
