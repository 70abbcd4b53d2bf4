"""The scheduler daemon's aiohttp application: an app factory whose cleanup contexts
own the API client, the reflectors and the control loops."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from ebb import kube, tls
from ebb.background import Background
from ebb.leader import LeaderElector
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
from extender import webhook
from extender.jobs.controller import ControllerSettings, JobController
from extender.placement.routes import add_routes as add_placement_routes
from extender.placement.service import EbbExtender, ebb_extender
from extender.settings import SchedulerSettings

log = structlog.get_logger("ebb.scheduler")


@dataclass
class _Identity:
    username: str = ""  # who this daemon writes as; "" until the API server has said
    registered: bool = False  # webhooks registered (or none to register)


CLIENT = web.AppKey("client", kube.KubeClient)
NODES = web.AppKey("nodes", kube.Reflector[NodeInfo])
PODS = web.AppKey("pods", kube.Reflector[PodInfo])
QUEUES = web.AppKey("queues", kube.Reflector[JobQueue])
COMPUTE_ENVIRONMENTS = web.AppKey("compute_environments", kube.Reflector[ComputeEnvironment])
POLICIES = web.AppKey("policies", kube.Reflector[SchedulingPolicy])
JOB_CONTROLLER = web.AppKey("job_controller", JobController)
LEADER = web.AppKey("leader", LeaderElector)
SETTINGS = web.AppKey("settings", SchedulerSettings)
IDENTITY = web.AppKey("identity", _Identity)
PLACEMENT = web.AppKey("placement", EbbExtender)
_REFLECTORS = (NODES, PODS, QUEUES, COMPUTE_ENVIRONMENTS, POLICIES)


def create_app(settings: SchedulerSettings) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_kubernetes(settings))
    app.cleanup_ctx.append(_job_controller(settings))
    add_ops_routes(app, ready=lambda: _synced(app))
    add_placement_routes(
        app,
        lambda: app[PLACEMENT],
        max_body_bytes=settings.extender_max_body_bytes,
        read_timeout=settings.extender_read_timeout,
    )
    webhook.add_routes(app, lambda: _webhook_context(app))
    return app


def _synced(app: web.Application) -> bool:
    return (
        all(key in app and app[key].synced.is_set() for key in _REFLECTORS)
        and JOB_CONTROLLER in app
        and app[JOB_CONTROLLER].synced()
        and IDENTITY in app
        and app[IDENTITY].registered
    )


def _webhook_context(app: web.Application) -> webhook.WebhookContext:
    queues = app[QUEUES].store
    jobs = app[JOB_CONTROLLER].jobs.store

    async def refresh_queue(name: str) -> None:
        raw = await app[CLIENT].get_or_none(kube.JOB_QUEUES, name)
        if raw is not None:
            app[QUEUES].apply_write(raw)

    async def refresh_job(namespace: str, name: str) -> None:
        raw = await app[CLIENT].get_or_none(kube.JOBS, name, namespace)
        if raw is not None:
            app[JOB_CONTROLLER].jobs.apply_write(raw)

    async def refresh_compute_environment(name: str) -> None:
        raw = await app[CLIENT].get_or_none(kube.COMPUTE_ENVIRONMENTS, name)
        if raw is not None:
            app[COMPUTE_ENVIRONMENTS].apply_write(raw)

    return webhook.WebhookContext(
        queue=queues.get,
        queue_names=lambda: list(queues),
        refresh_queue=refresh_queue,
        refresh_job=refresh_job,
        refresh_compute_environment=refresh_compute_environment,
        job=lambda namespace, name: jobs.get(f"{namespace}/{name}"),
        capacity=app[JOB_CONTROLLER].capacity,
        admitter=lambda: app[IDENTITY].username,
        scheduler_name=app[SETTINGS].scheduler_name,
    )


def _job_controller(
    settings: SchedulerSettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        leader = None
        if settings.leader_elect:
            leader = LeaderElector(
                app[CLIENT],
                namespace=settings.leader_election_namespace,
                name="ebb-scheduler",
                identity=settings.identity or f"{socket.gethostname()}-{os.getpid()}",
            )
            app[LEADER] = leader
        controller = JobController(
            app[CLIENT],
            queues=app[QUEUES],
            compute_environments=app[COMPUTE_ENVIRONMENTS],
            policies=app[POLICIES],
            nodes=app[NODES],
            settings=ControllerSettings(
                resync_seconds=settings.resync_seconds,
                starvation_seconds=settings.starvation_seconds,
                write_concurrency=settings.write_concurrency,
                reason_refresh_seconds=settings.reason_refresh_seconds,
                silence_timeout=settings.watch_silence_timeout,
                overhead=settings.node_overhead(),
            ),
            leading=leader.leading if leader else None,
        )
        app[JOB_CONTROLLER] = controller
        app[IDENTITY] = identity = _Identity()
        background = Background()
        background.reflect(controller.reflectors)
        background.spawn(controller.run(), "job-controller")
        background.spawn(_identify_and_register(app[CLIENT], settings, identity), "webhooks")
        if leader is not None:
            background.spawn(leader.run(), "leader-election")
        yield
        await background.stop()

    return ctx


async def _identify_and_register(
    client: kube.KubeClient, settings: SchedulerSettings, identity: _Identity
) -> None:
    """Learn this daemon's username, then register the webhooks — retried with backoff so
    that a daemon started while the API server is unreachable serves /healthz (alive, not
    ready) instead of crashing, and catches up when the server comes back."""
    identity.username = await kube.until_reachable(
        lambda: webhook.whoami(client), "learning who this daemon is"
    )
    if settings.webhook_url or settings.webhook_service:
        ca_bundle = (Path(settings.tls_dir) / "ca.crt").read_bytes()
        await kube.until_reachable(
            lambda: webhook.register(
                client,
                url=settings.webhook_url or None,
                service=settings.webhook_service or None,
                port=settings.port,
                ca_bundle=ca_bundle,
                admitter=identity.username,
            ),
            "registering the webhooks",
        )
    identity.registered = True


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
        background = Background()
        background.reflect(reflectors)
        background.spawn(_freeze_heap_when_synced(reflectors), "gc-freeze")
        yield
        await background.stop()
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


async def prepare_tls(settings: SchedulerSettings) -> None:
    """The serving certificate in `tls_dir`: shared through a Secret when replicas run,
    else made (or reused) locally."""
    directory = Path(settings.tls_dir)
    if not settings.tls_secret:
        tls.load_or_create_serving(directory, "ebb-scheduler", settings.tls_names, ("127.0.0.1",))
        return
    namespace, _, name = settings.tls_secret.partition("/")
    access = kube.load_access(settings.kubeconfig or None, settings.context or None, os.environ)
    async with kube.KubeClient(access, user_agent="ebb-scheduler") as client:
        await tls.sync_secret(
            client,
            namespace=namespace,
            name=name,
            directory=directory,
            common_name="ebb-scheduler",
            dns_names=settings.tls_names,
        )
