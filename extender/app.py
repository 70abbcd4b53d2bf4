"""The scheduler daemon's aiohttp application: an app factory whose cleanup contexts
own the API client, the reflectors and the control loops."""

from __future__ import annotations

import asyncio
import datetime
import gc
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from cryptography import x509
from prometheus_client import Counter, Gauge

from ebb import kube, tls
from ebb.background import Background
from ebb.jobdefinition import JobDefinition, cached_definition
from ebb.leader import LeaderElector
from ebb.model import (
    ComputeEnvironment,
    JobQueue,
    NamespaceInfo,
    NodeInfo,
    PodInfo,
    SchedulingPolicy,
    compute_environment_from_raw,
    job_queue_from_raw,
    namespace_from_raw,
    node_from_raw,
    pod_from_raw,
    scheduling_policy_from_raw,
)
from ebb.server import MAX_BODY_BYTES, add_ops_routes
from extender import callers
from extender.jobs.controller import ControllerSettings, JobController
from extender.placement.routes import add_routes as add_placement_routes
from extender.placement.service import EbbExtender, ebb_extender
from extender.settings import SchedulerSettings
from extender.webhook import registration, routes
from extender.webhook.context import WebhookContext

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
NAMESPACES = web.AppKey("namespaces", kube.Reflector[NamespaceInfo])
DEFINITIONS = web.AppKey("job_definitions", kube.Reflector[JobDefinition])
JOB_CONTROLLER = web.AppKey("job_controller", JobController)
LEADER = web.AppKey("leader", LeaderElector)
SETTINGS = web.AppKey("settings", SchedulerSettings)
IDENTITY = web.AppKey("identity", _Identity)
PLACEMENT = web.AppKey("placement", EbbExtender)
_REFLECTORS = (NODES, PODS, QUEUES, COMPUTE_ENVIRONMENTS, POLICIES, NAMESPACES, DEFINITIONS)


def create_app(
    settings: SchedulerSettings, serving: ssl.SSLContext | None = None
) -> web.Application:
    """The daemon's app; with `serving` (the TLS port's context), it keeps that
    context's certificate renewed."""
    callers_of = {
        "/scheduler/": settings.extender_clients,
        "/webhook/": settings.webhook_clients or None,
    }
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, middlewares=[callers.only_allowed_callers(callers_of)]
    )
    app[SETTINGS] = settings
    if serving is not None:
        app.cleanup_ctx.append(_certificate_renewal(settings, serving))
    app.cleanup_ctx.append(_kubernetes(settings))
    app.cleanup_ctx.append(_job_controller(settings))
    add_ops_routes(app, ready=lambda: _synced(app))
    add_placement_routes(
        app,
        lambda: app[PLACEMENT],
        max_body_bytes=settings.extender_max_body_bytes,
        read_timeout=settings.extender_read_timeout,
    )
    routes.add_routes(app, lambda: _webhook_context(app))
    return app


def _synced(app: web.Application) -> bool:
    return (
        all(key in app and app[key].synced.is_set() for key in _REFLECTORS)
        and JOB_CONTROLLER in app
        and app[JOB_CONTROLLER].synced()
        and IDENTITY in app
        and app[IDENTITY].registered
    )


def _webhook_context(app: web.Application) -> WebhookContext:
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

    async def refresh_namespace(name: str) -> None:
        raw = await app[CLIENT].get_or_none(kube.NAMESPACES, name)
        if raw is not None:
            app[NAMESPACES].apply_write(raw)

    async def refresh_definitions(namespace: str) -> None:
        for raw in (await app[CLIENT].list(kube.JOB_DEFINITIONS, namespace)).items:
            app[DEFINITIONS].apply_write(raw)

    return WebhookContext(
        queue=queues.get,
        queue_names=lambda: list(queues),
        refresh_queue=refresh_queue,
        refresh_job=refresh_job,
        refresh_compute_environment=refresh_compute_environment,
        job=lambda namespace, name: jobs.get(f"{namespace}/{name}"),
        capacity=app[JOB_CONTROLLER].capacity,
        admitter=lambda: app[IDENTITY].username,
        scheduler_name=app[SETTINGS].scheduler_name,
        namespace=app[NAMESPACES].store.get,
        refresh_namespace=refresh_namespace,
        policy=app[POLICIES].store.get,
        definitions=lambda namespace: app[DEFINITIONS].store.by_index("namespace", namespace),
        refresh_definitions=refresh_definitions,
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
            namespaces=app[NAMESPACES],
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
        lambda: registration.whoami(client), "learning who this daemon is"
    )
    if settings.webhook_url or settings.webhook_service:
        ca_bundle = (Path(settings.tls_dir) / "ca.crt").read_bytes()
        await kube.until_reachable(
            lambda: registration.register(
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
        app[NAMESPACES] = kube.Reflector(
            client, kube.NAMESPACES, namespace_from_raw, name="namespaces", silence_timeout=silence
        )
        app[DEFINITIONS] = kube.Reflector(
            client,
            kube.JOB_DEFINITIONS,
            cached_definition,
            name="jobdefinitions",
            indexers={"namespace": lambda d: (d.namespace,)},
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
        if (events := app[PLACEMENT].events) is not None:
            background.spawn(events.run(), "placement-events")
        yield
        await background.stop()
        await client.close()

    return ctx


async def _freeze_heap_when_synced(reflectors: Sequence[kube.Reflector[Any]]) -> None:
    """Once the caches hold the cluster, take them out of the garbage collector's sight:
    they live as long as the daemon and hold no reference cycles, and a full collection
    over them stalls the event loop, and so kube-scheduler's extender calls
    (docs/decisions/0002-freeze-caches-out-of-the-gc.md)."""
    await asyncio.gather(*(r.synced.wait() for r in reflectors))
    gc.freeze()
    log.info("caches synced; heap frozen", objects=gc.get_freeze_count())


LOOPBACK = ("127.0.0.1",)  # out-of-cluster runs call the daemon at https://127.0.0.1


async def prepare_tls(settings: SchedulerSettings) -> None:
    """The serving certificate in `tls_dir`, renewed when due: shared through a Secret
    when replicas run, else made (or reused) locally; and kube-scheduler's client
    certificate in its Secret, if one is named."""
    directory = Path(settings.tls_dir)
    lifetime = datetime.timedelta(seconds=settings.tls_lifetime_seconds)
    if not settings.tls_secret and not settings.scheduler_client_secret:
        tls.load_or_create_serving(
            directory, "ebb-scheduler", settings.tls_names, LOOPBACK, lifetime
        )
        return
    access = kube.load_access(settings.kubeconfig or None, settings.context or None, os.environ)
    async with kube.KubeClient(access, user_agent="ebb-scheduler") as client:
        if settings.tls_secret:
            namespace, _, name = settings.tls_secret.partition("/")
            ca = await tls.sync_secret(
                client,
                namespace=namespace,
                name=name,
                directory=directory,
                common_name="ebb-scheduler",
                dns_names=settings.tls_names,
                ip_addresses=LOOPBACK,
                lifetime=lifetime,
            )
        else:
            ca = tls.load_or_create_serving(
                directory, "ebb-scheduler", settings.tls_names, LOOPBACK, lifetime
            )
        if settings.scheduler_client_secret:
            if not ca.key_pem or not settings.extender_clients:
                raise SystemExit(
                    "--scheduler-client-secret: needs the CA key (ca.key) in the serving"
                    " Secret and a name in --extender-clients (with cert-manager, issue"
                    " kube-scheduler's client certificate with it instead)"
                )
            namespace, _, name = settings.scheduler_client_secret.partition("/")
            await tls.sync_client_secret(
                client,
                namespace=namespace,
                name=name,
                ca=ca,
                common_name=settings.extender_clients[0],
                lifetime=lifetime,
            )


def serving_context(settings: SchedulerSettings) -> ssl.SSLContext:
    """The TLS context of the webhook and extender port: the serving certificate, and
    client certificates checked against the daemon's CA (see extender/callers.py)."""
    directory = Path(settings.tls_dir)
    return tls.server_context(
        directory / "tls.crt",
        directory / "tls.key",
        client_ca=directory / "ca.crt",
        on_handshake_failure=callers.handshake_failed,
    )


_CERTIFICATE_EXPIRY = Gauge(
    "ebb_tls_certificate_expiry_timestamp_seconds",
    "When the serving certificate this replica hands out expires (Unix time).",
)
_CERTIFICATE_LOADS = Counter(
    "ebb_tls_certificate_loads_total",
    "Serving certificates loaded into the TLS context without a restart (renewed ones).",
)


def _certificate_renewal(
    settings: SchedulerSettings, context: ssl.SSLContext
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Every tenth of the certificates' lifetime (at most hourly), redo prepare_tls: the
    replica that finds a certificate due renews it (one wins the Secret's update), and
    every replica loads the Secret's certificate into its context, which serves it on
    every later handshake. The CA stays, so caBundles need no change."""
    directory = Path(settings.tls_dir)
    interval = min(settings.tls_lifetime_seconds / 10, 3600.0)

    def expiry(cert_pem: bytes) -> float:
        return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()

    async def renew() -> None:
        served = (directory / "tls.crt").read_bytes()
        _CERTIFICATE_EXPIRY.set(expiry(served))
        while True:
            await asyncio.sleep(interval)
            try:
                await prepare_tls(settings)
                current = (directory / "tls.crt").read_bytes()
                if current != served:
                    context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
                    served = current
                    _CERTIFICATE_LOADS.inc()
                    _CERTIFICATE_EXPIRY.set(expiry(served))
                    log.info("serving certificate loaded", expires=expiry(served))
            except (kube.ApiError, aiohttp.ClientError, OSError, ValueError) as exc:
                # ssl.SSLError (an OSError): a certificate and key caught mid-write.
                log.warning("certificate renewal failed; retrying", error=str(exc))

    async def ctx(_: web.Application) -> AsyncIterator[None]:
        background = Background()
        background.spawn(renew(), "certificate-renewal")
        yield
        await background.stop()

    return ctx
