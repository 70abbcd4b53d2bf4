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
        Settings().scheduler,
        Settings().autoscaler,
    ):
        assert _overhead_settings(settings) == _overhead_settings(model), type(settings)
    built = model.node_overhead()
    assert ControllerSettings().overhead == built
    simulation = Simulation(burst(jobs=10), capacity.EbbCapacity)
    assert simulation.overhead == built
    assert simulation.policy.overhead == built


def test_the_simulators_timings_are_the_daemons_defaults() -> None:
    scheduler, autoscaler, sim = SchedulerSettings(), AutoscalerSettings(), Settings()
    # The simulation reads every daemon parameter from the daemons' own settings types,
    # with their defaults.
    assert sim.scheduler == scheduler
    assert sim.autoscaler == autoscaler
    assert sim.scheduler.starvation_seconds == scheduler.starvation_seconds
    assert sim.scheduler.resync_seconds == ControllerSettings().resync_seconds
    simulation = Simulation(burst(jobs=10), capacity.EbbCapacity)
    window = simulation.autoscaler.batch
    assert window.idle_seconds == autoscaler.batch_idle_seconds
    assert window.max_seconds == autoscaler.batch_max_seconds
    policy = simulation.policy
    assert policy.settings.drain_grace_seconds == autoscaler.drain_grace_seconds
    assert (
        policy.settings.orphan_scale_down_delay_seconds
        == autoscaler.orphan_scale_down_delay_seconds
    )
    assert policy.settings.unavailable_offering_seconds == autoscaler.unavailable_offering_seconds
    # How often the autoscaler's loop runs when nothing is due.
    idle = next_wake(
        resync_seconds=autoscaler.resync_seconds, batch_closes_in=None, scale_down_in=None
    )
    assert policy.resync_seconds == idle
