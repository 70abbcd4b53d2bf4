"""kube-scheduler with Ebb's extender, in the simulation: the queue of pods waiting for a
node, and where each goes.

Placement is the extender's own: `extender.placement.scoring.filter_nodes` keeping only
the best-scored nodes (as it answers kube-scheduler) over up to
`Settings.placement_candidates` (100) nodes that fit the pod, taken from the queue's
environments in order and, within one, round-robin (kube-scheduler likewise scores a
sample of at least 100 feasible nodes, starting where the last pod left off); the first
of them wins (kube-scheduler's own scoring plugins, which break that tie, are left out).
A gang's pods take the best `score_nodes` scores.

Pods wait for a node as in kube-scheduler: in creation order, and a pod that fits no
node is retried only when a node that could take it appears or frees room. Pods start
the moment they are bound (image pulls are not modelled).

A multi-node job's pods (a gang) are node-exclusive: the filter is given the pod as the
webhook labels it (`ebb.dev/nodes`), so it keeps a gang pod only on empty nodes and
nothing else beside one. With a gang-aware policy (Ebb) the gang is placed as the
extender does it, all or nothing: its pods are filtered with `gang_unplaced` (no node is
kept unless one environment and zone has empty nodes for all of them; only that one's
are) over every empty node of its queue
(not a sample: the extender holds the pods it placed until the last has a node), then
bound together. Without (a baseline: plain Indexed Jobs), each pod takes a node as one
comes, and a bound gang pod holds its node idle until every pod of its gang is bound
(the training framework's rendezvous): only then do they start.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from typing import TYPE_CHECKING

from autoscaler.planner import PendingPod
from ebb import keys
from ebb.model import JobQueue, pod_from_raw
from ebb.resources import Resources
from extender.jobs.retry import status_reason_for
from extender.placement import scoring
from sim.cloud import Instance
from sim.scheduler import NAMESPACE, Job

if TYPE_CHECKING:
    from sim.engine import Simulation


class Pod:
    __slots__ = (
        "attempt",
        "bound_at",
        "created",
        "end",
        "group",
        "index",
        "job",
        "node",
        "pending",
        "running",
        "start",
    )

    def __init__(self, job: Job, index: int, attempt: int, created: float, group: Group) -> None:
        self.job = job
        self.index = index
        self.attempt = attempt
        self.created = created
        self.group = group
        self.node: Instance | None = None
        self.bound_at = 0.0
        self.running = False  # started (a gang pod: once its whole gang was bound)
        self.start = 0.0
        self.end = 0.0
        self.pending: PendingPod | None = None


class Group:
    """Pods waiting for a node that place alike (same queue, request and gang size),
    oldest first; a gang's pods are next to each other. Blocked: the head fit no node, so
    no pod of the group can, until room appears."""

    __slots__ = (
        "blocked",
        "environments",
        "fits",
        "gang",
        "info",
        "number",
        "pods",
        "queue",
        "request",
    )

    def __init__(
        self,
        number: int,
        queue: JobQueue,
        request: Resources,
        environments: tuple[str, ...],
        gang: int = 0,
    ) -> None:
        self.number = number
        self.queue = queue
        self.request = request
        self.environments = environments
        self.gang = gang  # a multi-node job's pods: its node count (0: not a gang)
        self.pods: deque[Pod] = deque()
        self.blocked = False
        self.fits = {env: Fits() for env in environments}
        # What the placement functions read of a pod: its queue and requests, on a pod
        # as the webhook stamps it (queue label, a gang's size, batch taint tolerated).
        labels = {keys.QUEUE_LABEL: queue.name}
        if gang:
            labels[keys.NODES] = str(gang)
        raw = {
            "metadata": {
                "namespace": NAMESPACE,
                "name": f"{queue.name}-{request.cpu_milli}m-{request.memory}-{request.gpu}",
                "labels": labels,
            },
            "spec": {"tolerations": [{"key": keys.BATCH_NODE_TAINT, "operator": "Exists"}]},
        }
        self.info = dataclasses.replace(pod_from_raw(raw), requests=request)


class Fits:
    """The schedulable nodes of one environment that fit one group's pods, in a stable
    order, handed out as a window that moves round-robin (as kube-scheduler samples the
    feasible nodes it scores, starting where the last pod left off)."""

    __slots__ = ("at", "nodes", "turn")

    def __init__(self) -> None:
        self.nodes: list[Instance] = []
        self.at: dict[Instance, int] = {}
        self.turn = 0

    def add(self, node: Instance) -> None:
        self.at[node] = len(self.nodes)
        self.nodes.append(node)

    def discard(self, node: Instance) -> None:
        i = self.at.pop(node)
        last = self.nodes.pop()
        if last is not node:
            self.nodes[i] = last
            self.at[last] = i

    def window(self, out: list[str], limit: int) -> None:
        nodes = self.nodes
        n = len(nodes)
        take = min(limit - len(out), n)
        if take <= 0:
            return
        start = self.turn % n
        stop = start + take
        out.extend(node.id for node in nodes[start:stop])
        if stop > n:
            out.extend(node.id for node in nodes[: stop - n])
        self.turn = stop


class Placement:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self._groups: dict[tuple[str, Resources, int], Group] = {}
        self.ready_groups: dict[Group, None] = {}
        self.blocked_groups: dict[Group, None] = {}  # their pods wait for capacity
        self._groups_by_environment: dict[str, list[Group]] = {}
        self.pods_on: dict[str, dict[Pod, None]] = {}  # node → its batch pods
        self.node_states = scoring.NodeTable()
        self.running = 0  # pods started and not ended
        self._whole_gangs = sim.policy.gang_aware

    def new_pod(self, job: Job, index: int, attempt: int) -> Pod:
        spec = job.spec
        key = (spec.queue, spec.request, spec.nodes)
        group = self._groups.get(key)
        if group is None:
            queue = self.sim.queues[spec.queue]
            group = Group(
                len(self._groups), queue, spec.request, queue.compute_environments, spec.nodes
            )
            self._groups[key] = group
            for env in group.environments:
                self._groups_by_environment.setdefault(env, []).append(group)
            for node in self.sim.autoscaler.instances.values():
                if node.environment in group.fits and self._fits(node, group):
                    group.fits[node.environment].add(node)
        pod = Pod(job, index, attempt, self.sim.now, group)
        job.active += 1
        self.sim.recorder.pending(spec.request, 1)
        group.pods.append(pod)
        if group.blocked:
            self.sim.autoscaler.unschedulable()
        else:
            self.ready_groups[group] = None
        return pod

    def withdraw(self, pod: Pod) -> None:
        """A pod not bound yet is deleted (its gang's attempt ended)."""
        pod.group.pods.remove(pod)
        self.sim.recorder.pending(pod.group.request, -1)

    def schedule(self) -> None:
        """kube-scheduler's queue: the oldest pod first; a group whose head fits nowhere
        waits (blocked) until room appears for it."""
        heap = [(g.pods[0].created, g.number, g) for g in self.ready_groups if g.pods]
        self.ready_groups.clear()
        heapq.heapify(heap)
        while heap:
            _, number, group = heap[0]
            if self._place_gang(group) if group.gang and self._whole_gangs else self._place(group):
                if group.pods:
                    heapq.heapreplace(heap, (group.pods[0].created, number, group))
                else:
                    heapq.heappop(heap)
            else:
                heapq.heappop(heap)
                group.blocked = True
                self.blocked_groups[group] = None
                self.sim.autoscaler.unschedulable()

    def _place(self, group: Group) -> bool:
        """Bind the group's oldest pod, if a node takes it."""
        names: list[str] = []
        limit = self.sim.s.placement_candidates
        for env in group.environments:  # the queue's first environments first
            group.fits[env].window(names, limit)
        if not names:
            return False
        # As the extender's filter answers kube-scheduler: only the best-scored nodes (the
        # first of them, where kube-scheduler's own plugins would break the tie).
        verdict = scoring.filter_nodes(
            group.info,
            names,
            self.node_states,
            self.sim.queues,
            self.sim.environments,
            best_only=True,
        )
        if not verdict.kept:
            return False
        self._bind(group.pods.popleft(), self.sim.autoscaler.instances[verdict.kept[0]])
        return True

    def _place_gang(self, group: Group) -> bool:
        """Bind every pod of the oldest gang, each on an empty node of its own, or none:
        the extender's filter with `gang_unplaced` over every empty node that fits, then
        the best-scored nodes (the first on ties)."""
        names = [node.id for env in group.environments for node in group.fits[env].nodes]
        sim = self.sim
        verdict = scoring.filter_nodes(
            group.info,
            names,
            self.node_states,
            sim.queues,
            sim.environments,
            gang_unplaced=group.gang,
        )
        if not verdict.kept:
            return False
        scores = scoring.score_nodes(
            group.info, verdict.kept, self.node_states, sim.queues, sim.environments
        )
        best = sorted(scores, key=lambda scored: -scored[1])[: group.gang]
        for name, _ in best:
            self._bind(group.pods.popleft(), sim.autoscaler.instances[name])
        return True

    def _bind(self, pod: Pod, node: Instance) -> None:
        job, request = pod.job, pod.group.request
        if pod.group.gang:
            node.gang_pods += 1
        self._take(node, request, 1)
        pod.node = node
        pod.bound_at = self.sim.now
        self.pods_on[node.id][pod] = None
        sim = self.sim
        sim.jobs.bound(job, request, node.environment, 1)
        sim.progress()
        if pod.group.gang:
            sim.jobs.gang_pod_bound(pod)
        else:
            self.start(pod)

    def start(self, pod: Pod) -> None:
        """The pod's container runs (a gang's pods: once all of them are bound)."""
        sim = self.sim
        job, request = pod.job, pod.group.request
        pod.running = True
        pod.start = sim.now
        self.running += 1
        if pod.group.gang:
            sim.recorder.held(sim.now - pod.bound_at)
        sim.jobs.started(job)
        if pod.attempt == 1:
            sim.recorder.wait(job.spec, sim.now - job.runnable_since)
        sim.recorder.started(job.spec, request)
        duration = job.spec.duration
        if job.spec.spread:
            duration *= 1.0 + job.spec.spread * (sim.rng.random() - 0.5)
        pod.end = sim.now + duration
        sim.push(pod.end, self._pod_end, pod)

    def unbind(self, pod: Pod) -> None:
        node = pod.node
        assert node is not None
        job, request = pod.job, pod.group.request
        pod.node = None
        del self.pods_on[node.id][pod]
        sim = self.sim
        sim.jobs.bound(job, request, node.environment, -1)
        if pod.running:
            pod.running = False
            self.running -= 1
            sim.recorder.stopped(job.spec, request, sim.now - pod.start)
        else:  # a gang pod that held its node, waiting for the rest of its gang
            sim.recorder.pending(request, -1)
            sim.recorder.held(sim.now - pod.bound_at)
        sim.progress()
        if pod.group.gang:
            node.gang_pods -= 1
        if not node.gone:
            self._take(node, request, -1)

    def _take(self, node: Instance, request: Resources, pods: int) -> None:
        """Pods bound to (pods > 0) or gone from (< 0) a node: its room and score."""
        node.free_cpu -= request.cpu_milli * pods
        node.free_memory -= request.memory * pods
        node.free_gpu -= request.gpu * pods
        node.slots -= pods
        node.batch_pods += pods
        node.idle_since = None if node.batch_pods else self.sim.now
        self.score_state(node)
        self.node_changed(node)
        self.sim.autoscaler.pods_changed(node)

    def score_state(self, node: Instance) -> None:
        """The node as placement scores it: allocatable, and what its pods (DaemonSet
        pods included) request."""
        if node.info is not None:
            a = node.allocatable
            used = Resources(
                a.cpu_milli - node.free_cpu, a.memory - node.free_memory, a.gpu - node.free_gpu
            )
            self.node_states[node.id] = scoring.node_state(node.info, used)

    @staticmethod
    def takes(node: Instance, r: Resources) -> bool:
        """Could the node take a pod of `r` now (schedulable, room and a pod slot, no
        multi-node job's pod)?"""
        return (
            node.ready
            and not node.gone
            and node.draining is None
            and node.slots > 0
            and not node.gang_pods
            and r.cpu_milli <= node.free_cpu
            and r.memory <= node.free_memory
            and r.gpu <= node.free_gpu
        )

    def _fits(self, node: Instance, group: Group) -> bool:
        """Could the node take the group's pods (a gang's: only an empty node)?"""
        return self.takes(node, group.request) and not (group.gang and node.batch_pods)

    def node_changed(self, node: Instance) -> None:
        """Keep each group's list of nodes that fit it; a blocked group that a node now
        fits is tried again."""
        env = node.environment
        for group in self._groups_by_environment.get(env, ()):
            fits = group.fits[env]
            if self._fits(node, group):
                if node not in fits.at:
                    fits.add(node)
                    if group.blocked:
                        group.blocked = False
                        del self.blocked_groups[group]
                        self.ready_groups[group] = None
            elif node in fits.at:
                fits.discard(node)

    def node_gone(self, node: Instance) -> None:
        """Its pods' attempts fail as on a lost node."""
        self.node_changed(node)
        for pod in list(self.pods_on[node.id]):
            self.unbind(pod)
            self.sim.jobs.attempt_failed(pod, None, status_reason_for(True, node.id))
        del self.pods_on[node.id]
        self.node_states.pop(node.id, None)

    def _pod_end(self, pod: Pod) -> None:
        if pod.node is None:
            return  # its node went away first
        self.unbind(pod)
        code = pod.job.spec.exit_code
        if code == 0:
            self.sim.jobs.attempt_succeeded(pod)
        else:
            self.sim.jobs.attempt_failed(pod, code, status_reason_for(False, None))
