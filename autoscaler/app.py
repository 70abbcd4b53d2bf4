"""The autoscaler daemon's aiohttp application: ops routes, and a cleanup context that
owns the API client, the reflectors, the AWS clients and the control loops."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable

import boto3
import structlog
from aiohttp import web
from botocore.config import Config

from autoscaler.aws import NOTICE_WAIT_SECONDS, Aws
from autoscaler.bootstrap import ClusterInfo
from autoscaler.controller import Controller, environment_record
from autoscaler.settings import AutoscalerSettings
from ebb import kube
from ebb.background import Background
from ebb.catalog import shipped_catalog
from ebb.leader import LeaderElector
from ebb.model import job_queue_from_raw, node_from_raw, pod_from_raw
from ebb.server import add_ops_routes

log = structlog.get_logger("ebb.autoscaler")
CONTROLLER = web.AppKey("controller", Controller)
LEADER = web.AppKey("leader", LeaderElector)


def create_app(settings: AutoscalerSettings) -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(_run(settings))
    add_ops_routes(app, ready=lambda: CONTROLLER in app and app[CONTROLLER].ready)
    return app


def aws_from_settings(settings: AutoscalerSettings) -> Aws:
    session = boto3.session.Session(region_name=settings.region)
    # Ebb retries throttling and transient errors itself, with backoff, and counts them.
    timeout = settings.aws_timeout_seconds
    config = Config(
        user_agent_extra="ebb-autoscaler",  # tells Ebb's calls apart in CloudTrail
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    # A ReceiveMessage long-polls: its answer may take the whole wait.
    polling = config.merge(Config(read_timeout=timeout + NOTICE_WAIT_SECONDS))
    endpoint = settings.aws_endpoint_url or None
    return Aws(
        session.client("ec2", endpoint_url=endpoint, config=config),
        session.client("ssm", endpoint_url=endpoint, config=config),
        session.client("sqs", endpoint_url=endpoint, config=polling),
        settings.cluster_name,
        # The Price List API answers in us-east-1 for every region.
        pricing=session.client(
            "pricing", region_name="us-east-1", endpoint_url=endpoint, config=config
        ),
    )


async def _kubernetes_version(client: kube.KubeClient) -> str:
    version = await client.request("GET", "/version")
    return f"{version.get('major', '1')}.{str(version.get('minor', '0')).rstrip('+')}"


def _run(settings: AutoscalerSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        access = kube.load_access(settings.kubeconfig or None, settings.context or None, os.environ)
        client = kube.KubeClient(access, user_agent="ebb-autoscaler")
        silence = settings.watch_silence_timeout
        nodes = kube.Reflector(client, kube.NODES, node_from_raw, silence_timeout=silence)
        pods = kube.Reflector(
            client,
            kube.PODS,
            pod_from_raw,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
            indexers={"node": lambda p: (p.node_name,) if p.node_name else ()},
            silence_timeout=silence,
        )
        environments = kube.Reflector(
            client, kube.COMPUTE_ENVIRONMENTS, environment_record, silence_timeout=silence
        )
        queues = kube.Reflector(
            client, kube.JOB_QUEUES, job_queue_from_raw, silence_timeout=silence
        )
        reflectors = [nodes, pods, environments, queues]
        cluster = ClusterInfo(
            settings.cluster_name,
            settings.cluster_endpoint or access.server,
            settings.cluster_ca,
            settings.service_cidr,
            settings.kubernetes_version
            or await kube.until_reachable(
                lambda: _kubernetes_version(client), "reading the Kubernetes version"
            ),
        )
        leader = None
        if settings.leader_elect:
            leader = LeaderElector(
                client,
                namespace=settings.leader_election_namespace,
                name="ebb-autoscaler",
                identity=settings.identity or f"{socket.gethostname()}-{os.getpid()}",
            )
        controller = Controller(
            settings,
            client,
            aws_from_settings(settings),
            shipped_catalog(),
            nodes=nodes,
            pods=pods,
            environments=environments,
            queues=queues,
            cluster=cluster,
            leading=leader.leading if leader else None,
        )
        for r in reflectors:
            r.subscribe(controller.poke)
        if leader is not None:
            app[LEADER] = leader
        app[CONTROLLER] = controller
        background = Background()
        background.reflect(reflectors)
        background.spawn(controller.run(), "controller")
        background.spawn(controller.events.run(), "events")
        if leader is not None:
            background.spawn(leader.run(), "leader-election")
        if settings.interruption_queue_url:
            background.spawn(controller.notices.run(), "notices")
        if settings.catalog_refresh_seconds > 0:
            background.spawn(controller.refresh_catalog(), "catalog")
        yield
        await background.stop()
        await client.close()

    return ctx
