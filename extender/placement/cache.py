"""The node states placement decides on, kept current from the reflectors' events.

A node's `used` is the requests of the pods the watch shows bound to it, plus those of
the pods the extender itself has bound there but the watch has not shown yet (assumed
pods). Without the assumed pods, two pods bound within one watch round trip would both
see the same free room and both be let into the last slot.

An assumed pod is dropped when the watch shows it bound (it is then counted through
the watch), shows it deleted, when its binding fails, or when it expires (a safety net
in case the watch never tells, e.g. a missed event before a relist).
"""

from __future__ import annotations

from dataclasses import dataclass

from ebb.kube import Event, EventType, Reflector
from ebb.model import NodeInfo, PodInfo
from ebb.resources import ZERO, Resources
from extender.placement.scoring import GangGroup, NodeTable, node_state


@dataclass(frozen=True, slots=True)
class _Assumed:
    node: str
    requests: Resources
    expires: float
    job: bool  # a pod of a Job
    gang: str | None  # a multi-node job's pod: its Job's UID


def _gang_of(pod: PodInfo) -> str | None:
    return pod.job_uid if pod.gang_size is not None else None


def _count(counts: dict[str, dict[str, int]], key: str, item: str, delta: int) -> None:
    """Add `delta` to counts[key][item], dropping what comes to zero."""
    inner = counts.setdefault(key, {})
    inner[item] = inner.get(item, 0) + delta
    if not inner[item]:
        del inner[item]
        if not inner:
            del counts[key]


class PlacementCache:
    def __init__(self) -> None:
        self._infos: dict[str, NodeInfo] = {}
        self._bound: dict[str, Resources] = {}  # node -> requests of watched pods on it
        self._assumed: dict[str, _Assumed] = {}  # pod uid -> where it was bound
        self._assumed_on: dict[str, Resources] = {}  # node -> requests of assumed pods
        # node -> [pods of Jobs, pods of multi-node jobs] bound (watched) or assumed there
        self._occupants: dict[str, list[int]] = {}
        # multi-node Job UID -> its placed pods (uid -> times counted: watched, assumed)
        self._gang_placed: dict[str, dict[str, int]] = {}
        # multi-node Job UID -> the nodes of its placed pods (node -> times counted)
        self._gang_nodes: dict[str, dict[str, int]] = {}
        self._states = NodeTable()

    @property
    def nodes(self) -> NodeTable:
        """Every known node's state, by name (a live view: do not hold across awaits)."""
        return self._states

    @property
    def assumed_pods(self) -> int:
        return len(self._assumed)

    def attach(self, nodes: Reflector[NodeInfo], pods: Reflector[PodInfo]) -> None:
        """Take in what the reflectors hold now, then follow their changes."""
        for key, info in nodes.store.items():
            self.on_node(Event(EventType.ADDED, key, None, info))
        for key, pod in pods.store.items():
            self.on_pod(Event(EventType.ADDED, key, None, pod))
        nodes.subscribe(self.on_node)
        pods.subscribe(self.on_pod)

    def on_node(self, event: Event[NodeInfo]) -> None:
        if event.new is None:
            if event.old is not None:
                self._infos.pop(event.old.name, None)
                self._refresh(event.old.name)
            return
        self._infos[event.new.name] = event.new
        self._refresh(event.new.name)

    def on_pod(self, event: Event[PodInfo]) -> None:
        old, new = event.old, event.new
        if old is not None and old.node_name is not None and old.active:
            self._occupy(old.node_name, old.uid, old.job_uid is not None, _gang_of(old), -1)
            self._add(self._bound, old.node_name, old.requests * -1)
        if new is not None and new.node_name is not None and new.active:
            self._occupy(new.node_name, new.uid, new.job_uid is not None, _gang_of(new), 1)
            self._add(self._bound, new.node_name, new.requests)
        pod = new or old
        if pod is not None and (new is None or new.node_name is not None):
            self.forget(pod.uid)

    def assume(
        self,
        uid: str,
        requests: Resources,
        node: str,
        expires: float,
        *,
        job: bool = False,
        gang: str | None = None,
    ) -> None:
        """Count a pod on `node` from now on, until the watch shows it (or `expires`).
        `job`: a pod of a Job; `gang`: a multi-node job's pod, its Job's UID."""
        self.forget(uid)
        self._assumed[uid] = _Assumed(node, requests, expires, job, gang)
        self._occupy(node, uid, job, gang, 1)
        self._add(self._assumed_on, node, requests)

    def forget(self, uid: str) -> None:
        assumed = self._assumed.pop(uid, None)
        if assumed is not None:
            self._occupy(assumed.node, uid, assumed.job, assumed.gang, -1)
            self._add(self._assumed_on, assumed.node, assumed.requests * -1)

    def gang_placed(self, job_uid: str) -> int:
        """How many pods of this multi-node job are bound or assumed on a node."""
        return len(self._gang_placed.get(job_uid, ()))

    def gang_group(self, job_uid: str) -> GangGroup | None:
        """The (compute environment, zone) of the first known node holding a placed pod of
        this multi-node job: where the rest of its pods go. None: none placed."""
        for node in self._gang_nodes.get(job_uid, ()):
            info = self._infos.get(node)
            if info is not None:
                return info.compute_environment, info.zone
        return None

    def occupants(self, node: str) -> tuple[int, int]:
        """(pods of Jobs, pods of multi-node jobs) bound or assumed on `node`."""
        counts = self._occupants.get(node)
        return (counts[0], counts[1]) if counts else (0, 0)

    def _occupy(self, node: str, uid: str, job: bool, gang: str | None, delta: int) -> None:
        if not job and gang is None:
            return
        counts = self._occupants.setdefault(node, [0, 0])
        counts[0] += delta if job else 0
        counts[1] += delta if gang is not None else 0
        if counts == [0, 0]:
            del self._occupants[node]
        if gang is not None:  # (a pod is counted twice while both watched and assumed)
            _count(self._gang_placed, gang, uid, delta)
            _count(self._gang_nodes, gang, node, delta)

    def expire(self, now: float) -> int:
        """Forget the assumed pods whose time is up; returns how many."""
        # One TTL for all, so insertion order is expiry order: stop at the first live one.
        expired = []
        for uid, assumed in self._assumed.items():
            if assumed.expires > now:
                break
            expired.append(uid)
        for uid in expired:
            self.forget(uid)
        return len(expired)

    def _add(self, usage: dict[str, Resources], node: str, requests: Resources) -> None:
        total = usage.get(node, ZERO) + requests
        if total.is_zero():
            usage.pop(node, None)
        else:
            usage[node] = total
        self._refresh(node)

    def _refresh(self, node: str) -> None:
        info = self._infos.get(node)
        if info is None:
            self._states.pop(node, None)
            return
        self._states[node] = node_state(info, self.used_on(node), *self.occupants(node))

    def used_on(self, node: str) -> Resources:
        """Requests bound or assumed on `node`, known or not (for Node objects sent in)."""
        return self._bound.get(node, ZERO) + self._assumed_on.get(node, ZERO)
