"""The scheduler daemon's aiohttp application: an app factory whose cleanup contexts
own the API client, the reflectors and the control loops."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from ebb import kube, tls
from ebb.model import (
    ComputeEnvironment,
    JobQueue,
    NodeInfo,
    PodInfo,
    SchedulingPolicy,
    compute_environment_from_raw,
    job_queue_from_raw,
    node_from_raw,
    pod_from_raw,
    scheduling_policy_from_raw,
)
from ebb.server import MAX_BODY_BYTES, add_ops_routes
from extender.placement.routes import add_routes as add_placement_routes
from extender.placement.service import EbbExtender, ebb_extender
from extender.settings import SchedulerSettings

log = structlog.get_logger("ebb.scheduler")

CLIENT = web.AppKey("client", kube.KubeClient)
NODES = web.AppKey("nodes", kube.Reflector[NodeInfo])
PODS = web.AppKey("pods", kube.Reflector[PodInfo])
QUEUES = web.AppKey("queues", kube.Reflector[JobQueue])
COMPUTE_ENVIRONMENTS = web.AppKey("compute_environments", kube.Reflector[ComputeEnvironment])
POLICIES = web.AppKey("policies", kube.Reflector[SchedulingPolicy])
PLACEMENT = web.AppKey("placement", EbbExtender)
_REFLECTORS = (NODES, PODS, QUEUES, COMPUTE_ENVIRONMENTS, POLICIES)


def create_app(settings: SchedulerSettings) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.cleanup_ctx.append(_kubernetes(settings))
    add_ops_routes(app, ready=lambda: _synced(app))
    add_placement_routes(
        app,
        lambda: app[PLACEMENT],
        max_body_bytes=settings.extender_max_body_bytes,
        read_timeout=settings.extender_read_timeout,
    )
    return app


def _synced(app: web.Application) -> bool:
    return all(key in app and app[key].synced.is_set() for key in _REFLECTORS)


def _kubernetes(
    settings: SchedulerSettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        access = kube.load_access(settings.kubeconfig or None, settings.context or None, os.environ)
        client = kube.KubeClient(access, user_agent="ebb-scheduler")
        silence = settings.watch_silence_timeout
        app[CLIENT] = client
        app[NODES] = kube.Reflector(
            client, kube.NODES, node_from_raw, name="nodes", silence_timeout=silence
        )
        app[PODS] = kube.Reflector(
            client,
            kube.PODS,
            pod_from_raw,
            name="pods",
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
            indexers={"node": lambda p: (p.node_name,) if p.node_name else ()},
            silence_timeout=silence,
        )
        app[QUEUES] = kube.Reflector(
            client, kube.JOB_QUEUES, job_queue_from_raw, name="jobqueues", silence_timeout=silence
        )
        app[COMPUTE_ENVIRONMENTS] = kube.Reflector(
            client,
            kube.COMPUTE_ENVIRONMENTS,
            compute_environment_from_raw,
            name="computeenvironments",
            silence_timeout=silence,
        )
        app[POLICIES] = kube.Reflector(
            client,
            kube.SCHEDULING_POLICIES,
            scheduling_policy_from_raw,
            name="schedulingpolicies",
            silence_timeout=silence,
        )
        app[PLACEMENT] = ebb_extender(
            client,
            app[NODES],
            app[PODS],
            app[QUEUES],
            app[COMPUTE_ENVIRONMENTS],
            settings=settings,
        )
        reflectors = [app[key] for key in _REFLECTORS]
        tasks = [asyncio.create_task(r.run(), name=f"reflector-{r.name}") for r in reflectors]
        tasks.append(asyncio.create_task(_freeze_heap_when_synced(reflectors), name="gc-freeze"))
        yield
        for r in reflectors:
            r.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()

    return ctx


async def _freeze_heap_when_synced(reflectors: Sequence[kube.Reflector[Any]]) -> None:
    """Once the caches hold the cluster, take them out of the garbage collector's sight:
    they live as long as the daemon and hold no reference cycles, and a full collection
    over them stalls the event loop, and so kube-scheduler's extender calls, for about
    0.1 s at 5,000 nodes and 10,000 pods (bench/placement_extender.py's server)."""
    await asyncio.gather(*(r.synced.wait() for r in reflectors))
    gc.freeze()
    log.info("caches synced; heap frozen", objects=gc.get_freeze_count())


def serving_tls(settings: SchedulerSettings) -> tls.KeyPair:
    return tls.load_or_create_serving(
        Path(settings.tls_dir), "ebb-scheduler", settings.tls_names, ("127.0.0.1",)
    )
