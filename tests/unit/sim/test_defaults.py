"""The simulator runs with the daemons' defaults: a copy that drifts fails here."""

from __future__ import annotations

from dataclasses import fields

from autoscaler.settings import AutoscalerSettings
from autoscaler.wake import next_wake
from ebb.catalog import NodeOverheadSettings
from extender.jobs.controller import ControllerSettings
from extender.settings import SchedulerSettings
from local_stack.bridge import BridgeSettings
from sim import capacity
from sim.engine import Settings, Simulation
from sim.workloads import burst


def _overhead_settings(settings: NodeOverheadSettings) -> dict[str, object]:
    return {f.name: getattr(settings, f.name) for f in fields(NodeOverheadSettings)}


def test_every_sizer_of_nodes_has_the_same_node_overhead_defaults() -> None:
    model = NodeOverheadSettings()
    for settings in (
        SchedulerSettings(),
        AutoscalerSettings(),
        BridgeSettings(),
        Settings().node_overhead,
    ):
        assert _overhead_settings(settings) == _overhead_settings(model), type(settings)
    built = model.node_overhead()
    assert ControllerSettings().overhead == built
    assert Simulation(burst(jobs=10), capacity.EbbCapacity).overhead == built


def test_the_simulators_timings_are_the_daemons_defaults() -> None:
    scheduler, autoscaler, sim = SchedulerSettings(), AutoscalerSettings(), Settings()
    assert sim.starvation_seconds == scheduler.starvation_seconds
    assert sim.autoscaler_batch_idle == autoscaler.batch_idle_seconds
    assert sim.autoscaler_batch_max == autoscaler.batch_max_seconds
    assert sim.unavailable_seconds == autoscaler.unavailable_offering_seconds
    assert autoscaler.drain_grace_seconds == capacity.DRAIN_GRACE_SECONDS
    assert autoscaler.orphan_scale_down_delay_seconds == capacity.ORPHAN_DELAY_SECONDS
    # How often the autoscaler's loop runs when nothing is due.
    idle = next_wake(
        resync_seconds=autoscaler.resync_seconds, batch_closes_in=None, scale_down_in=None
    )
    assert capacity.CapacityPolicy.resync_seconds == idle
