"""Where a multi-node job (a gang) goes: one zone of one compute environment. The one
rule both daemons apply, so that the autoscaler launches where the extender will place:
the planner (`autoscaler/planner.py`) with what each environment can still launch, the
extender's filter (`extender/placement/scoring.py`) with empty nodes alone.

AWS Batch runs a multi-node job's nodes in one compute environment and tries the queue's
environments in order; Ebb also keeps a gang in one zone (its new instances are one
launch in one zone). A site is chosen for the whole gang, never for some of its pods:
an environment that cannot hold it all is passed over, however much room it has.

1. Nodes already up first (as for every pod, docs/decisions/0010): the first environment
   in the queue's order with enough empty nodes in one zone for every pod, in its zone
   with the most.
2. Else the first environment that can hold the gang with launches: empty nodes in one
   zone and, for the rest, instances it can still launch there within maxvCpus; in the
   zone with the most empty nodes (the fewest launches).
3. Else none: the gang waits, holding nothing.

Pure: plain numbers in, a choice out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Site:
    """One zone of one compute environment, as a gang's pods could use it."""

    environment: str
    zone: str | None  # None: no zone (nodes without the label; launches in any zone)
    empty: int  # its empty nodes that fit one of the gang's pods
    launchable: int = 0  # instances it can still launch there for the gang's pods

    def holds(self, pods: int) -> bool:
        return self.empty + self.launchable >= pods


def choose_site(order: Sequence[str], sites: Iterable[Site], pods: int) -> Site | None:
    """The site for a gang's `pods` unplaced pods, of `sites` in its queue's
    environments (`order`: the queue's `computeEnvironmentOrder`); None: none holds it."""
    rank = {environment: i for i, environment in enumerate(order)}
    ranked = sorted(
        sites, key=lambda s: (rank.get(s.environment, len(rank)), -s.empty, s.zone or "")
    )
    on_nodes = next((s for s in ranked if s.empty >= pods), None)
    return on_nodes or next((s for s in ranked if s.holds(pods)), None)
