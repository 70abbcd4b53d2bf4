"""aiohttp plumbing shared by both daemons: operational routes and a serve loop.

`/healthz` answers while the process runs; `/readyz` only once the caller says it
is ready (caches synced); `/metrics` is the Prometheus exposition: no `_created` series
(a quarter of the samples, which no dashboard or alert reads) and `ebb_build_info`.
"""

from __future__ import annotations

import asyncio
import platform
import signal
import ssl
from collections.abc import Callable, Sequence

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

import ebb

log = structlog.get_logger("ebb.server")
MAX_BODY_BYTES = 4 * 2**20
BUILD_INFO = Gauge(
    "ebb_build_info",
    "Always 1; the labels say which Ebb and which Python this daemon runs.",
    ["version", "python_version"],
)


def add_ops_routes(app: web.Application, ready: Callable[[], bool]) -> None:
    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
    BUILD_INFO.labels(ebb.version(), platform.python_version()).set(1)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok")
        return web.Response(status=503, text="not ready: caches not synced")

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    extra_sites: Sequence[tuple[str, int, ssl.SSLContext | None]] = (),
    shutdown_timeout: float = 10.0,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, finish in-flight requests and run
    the app's cleanup contexts (which stop the control loops)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    sites = [(host, port, ssl_context), *extra_sites]
    for h, p, ctx in sites:
        await web.TCPSite(runner, h, p, ssl_context=ctx, reuse_address=True).start()
        log.info("listening", host=h, port=p, tls=ctx is not None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
