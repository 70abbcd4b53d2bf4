"""Node actions: what the autoscaler does to its nodes and their instances once
scale-down (autoscaler/scaledown.py), garbage collection or an EC2 notice decided it.
One handler per `NodeActionKind`; each is logged, counted and explained.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from autoscaler import metrics
from autoscaler.aws import Aws, AwsError
from autoscaler.ec2_view import Ec2View
from autoscaler.events import EnvironmentEvents
from autoscaler.scaledown import (
    IDLE,
    INSTANCE_GONE,
    LIVE_STATES,
    REGISTRATION_TIMEOUT,
    InstanceState,
    NodeAction,
    NodeActionKind,
    NodeRecord,
    NodeState,
    plan_garbage,
)
from autoscaler.settings import AutoscalerSettings
from autoscaler.timestamps import epoch, rfc3339
from ebb import keys, kube
from ebb.model import NodeInfo, PodInfo
from ebb.nodeloss import lost_message
from ebb.podgc import end_lost_pod

log = structlog.get_logger("ebb.autoscaler")


@dataclass(slots=True)
class NodeMemory:
    """What the daemon remembers about its nodes between passes (by node name). Losing
    it (a restart) only delays scale-down, never makes a wrong decision."""

    idle_since: dict[str, float] = field(default_factory=dict)
    draining_since: dict[str, float] = field(default_factory=dict)
    cordoned: dict[str, str] = field(default_factory=dict)  # until the watch shows the taint

    def remember(self, nodes: Iterable[NodeState]) -> None:
        """Keep the times of this pass's nodes (track_nodes), and forget gone nodes."""
        nodes = list(nodes)
        self.idle_since = {n.name: n.idle_since for n in nodes if n.idle_since is not None}
        self.draining_since = {
            n.name: n.draining_since for n in nodes if n.draining_since is not None
        }
        names = {n.name for n in nodes}
        self.cordoned = {k: v for k, v in self.cordoned.items() if k in names}


def draining_reason(node: NodeInfo) -> str | None:
    """The reason in Ebb's draining taint on `node`, if it has one."""
    return next((t[1] or IDLE for t in node.taints if t[0] == keys.DRAINING_TAINT), None)


def _draining_index(node: NodeInfo) -> int | None:
    return next((i for i, t in enumerate(node.taints) if t[0] == keys.DRAINING_TAINT), None)


class NodeActions:
    def __init__(
        self,
        client: kube.KubeClient,
        aws: Aws,
        ec2: Ec2View,
        pods: kube.Reflector[PodInfo],
        *,
        events: EnvironmentEvents,
        settings: AutoscalerSettings,
    ) -> None:
        self._client = client
        self._aws = aws
        self._ec2 = ec2
        self._pods = pods
        self._events = events
        self.s = settings
        self.memory = NodeMemory()
        self._handlers: Mapping[
            NodeActionKind, Callable[[NodeAction, str, NodeInfo], Awaitable[None]]
        ] = {
            NodeActionKind.CORDON: self._cordon_idle,
            NodeActionKind.UNCORDON: self._uncordon,
            NodeActionKind.TERMINATE: self._terminate_drained,
        }

    async def apply(self, action: NodeAction, instance_id: str, node: NodeInfo) -> None:
        await self._handlers[action.kind](action, instance_id, node)

    async def _cordon_idle(self, action: NodeAction, _: str, node: NodeInfo) -> None:
        await self.cordon(node, action.reason, action.detail)

    async def _terminate_drained(
        self, action: NodeAction, instance_id: str, node: NodeInfo
    ) -> None:
        env = node.compute_environment or ""
        await self.terminate(instance_id, node.name, env, action.reason, action.detail)

    async def cordon(self, node: NodeInfo, reason: str, detail: str) -> None:
        """Mark the node unschedulable with Ebb's draining taint, whose value is the
        reason (a node already draining gets the new reason)."""
        taint = {"key": keys.DRAINING_TAINT, "value": reason, "effect": "NoSchedule"}
        ops: list[dict[str, Any]] = [{"op": "add", "path": "/spec/unschedulable", "value": True}]
        index = _draining_index(node)
        if index is not None:
            ops += [
                {"op": "test", "path": f"/spec/taints/{index}/key", "value": keys.DRAINING_TAINT},
                {"op": "replace", "path": f"/spec/taints/{index}/value", "value": reason},
            ]
        elif node.taints:
            ops.append({"op": "add", "path": "/spec/taints/-", "value": taint})
        else:
            ops.append({"op": "add", "path": "/spec/taints", "value": [taint]})
        if await self._patch_node(node, ops):
            self.memory.cordoned[node.name] = reason
            log.info("cordoned", node=node.name, reason=reason, detail=detail)

    async def _uncordon(self, action: NodeAction, _: str, node: NodeInfo) -> None:
        index = _draining_index(node)
        if index is None:
            return  # the taint is not in the cache yet: next pass
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": f"/spec/taints/{index}/key", "value": keys.DRAINING_TAINT},
            {"op": "remove", "path": f"/spec/taints/{index}"},
            {"op": "replace", "path": "/spec/unschedulable", "value": False},
        ]
        if await self._patch_node(node, ops):
            self.memory.draining_since.pop(node.name, None)
            self.memory.cordoned.pop(node.name, None)
            log.info("uncordoned", node=node.name, detail=action.detail)

    async def _patch_node(self, node: NodeInfo, ops: list[dict[str, Any]]) -> bool:
        try:
            await self._client.patch(kube.NODES, node.name, ops, patch_type="json")
        except kube.ApiError as exc:
            log.warning("node update failed; will retry", node=node.name, error=str(exc))
            return False
        return True

    async def terminate(
        self, iid: str, node: str | None, env: str, reason: str, detail: str
    ) -> None:
        try:
            done = await asyncio.to_thread(self._aws.terminate, [iid])
        except AwsError as exc:
            log.error("terminate failed", instance=iid, error=str(exc))
            return
        if not done:
            return
        self._ec2.relist()
        metrics.TERMINATIONS.labels(env, reason).inc()
        # (Else garbage collection deletes the node once its pods are ended.)
        if node is not None and await self._end_pods(iid, node, env, "shutting-down"):
            await self._client.delete(kube.NODES, node)
        log.info(
            "terminated",
            instance=iid,
            node=node,
            compute_environment=env,
            reason=reason,
            detail=detail,
        )
        self._events.about(env, "Terminated", f"terminated {iid} ({node}): {reason}")

    async def collect_garbage(self, ours: Mapping[str, NodeInfo], now: float) -> None:
        """Terminate instances that never became nodes; delete nodes whose instance is
        gone (plan_garbage decides which)."""
        instances = self._ec2.instances
        by_node = {node.name: iid for iid, node in ours.items()}
        garbage = plan_garbage(
            [
                InstanceState(
                    i.instance_id,
                    i.state,
                    i.launched,
                    ours[i.instance_id].name if i.instance_id in ours else None,
                )
                for i in instances.values()
            ],
            [
                NodeRecord(node.name, instances[iid].state, epoch(node.created, now))
                for iid, node in ours.items()
            ],
            now,
            registration_timeout_seconds=self.s.registration_timeout_seconds,
            node_grace_seconds=self.s.node_grace_seconds,
        )
        for iid in garbage.terminate:
            env = instances[iid].environment
            await self.terminate(iid, None, env, REGISTRATION_TIMEOUT, "never became a node")
        for name in garbage.delete_nodes:
            instance = instances[by_node[name]]
            await self.instance_gone(
                instance.instance_id, name, instance.environment, instance.state
            )

    async def instance_gone(self, iid: str, node: str, env: str, state: str) -> None:
        """The instance of one of our nodes is going (EC2 said so in a notice, or in its
        list): its pods are ended now, and its node deleted unless the instance is only
        stopping (it may start again, with its node)."""
        if not await self._end_pods(iid, node, env, state) or state in LIVE_STATES:
            return
        if await self._client.delete(kube.NODES, node) is not None:
            metrics.TERMINATIONS.labels(env, INSTANCE_GONE).inc()
            log.info("deleted node of a gone instance", node=node, instance=iid, state=state)

    async def _end_pods(self, iid: str, node: str, env: str, state: str) -> bool:
        """Fail and delete the pods bound to `node`, whose instance is going, as PodGC
        would (ebb/nodeloss.py) but without its 40 s wait: their attempts end now, as
        host terminations naming `iid`, and the Job controller replaces them. False if
        some could not be ended (the caller keeps the node, and tries again later)."""
        pods = [p for p in self._pods.store.by_index("node", node) if p.active]
        if not pods:
            return True
        message = lost_message(iid, node, state)
        at = rfc3339(time.time())
        results = await asyncio.gather(
            *(end_lost_pod(self._client, p, message, at) for p in pods),
            return_exceptions=True,
        )
        errors = [str(r) for r in results if isinstance(r, BaseException)]
        ended = [p.key for p, r in zip(pods, results, strict=True) if r is True]
        metrics.LOST_PODS.labels(env).inc(len(ended))
        log.info("ended the pods of a lost node", instance=iid, node=node, state=state, pods=ended)
        if ended:
            self._events.about(
                env,
                "PodsLost",
                f"{iid} ({node}) is {state}: {len(ended)} pod(s) on it failed "
                "(DisruptionTarget) and deleted",
                warning=True,
            )
        if errors:
            log.warning("ending pods of a lost node failed; will retry", node=node, errors=errors)
        return not errors
