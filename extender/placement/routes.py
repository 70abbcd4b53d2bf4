"""The HTTP shell of a kube-scheduler extender: `POST <prefix>/filter|prioritize|bind`.

It reads the body (bounded in size and time), decodes it with `protocol`, asks an
`Extender` and encodes the answer; every request is counted and timed per verb. Bad
input gets a 4xx whose JSON body's `Error` says what is wrong; a failure inside gets a
500; nothing raises past here. Ebb's daemon serves `EbbExtender` through it, and the
conformance tests serve scripted extenders through the very same code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog
from aiohttp import web
from prometheus_client import Counter, Histogram

from extender.placement.protocol import (
    BindingArgs,
    ExtenderArgs,
    FilterResult,
    HostPriority,
    ProtocolError,
    decode_binding_args,
    decode_extender_args,
    encode_binding_result,
    encode_error,
    encode_filter_result,
    encode_priorities,
)

log = structlog.get_logger("ebb.placement")

_REQUESTS = Counter(
    "ebb_extender_requests_total",
    "Scheduler extender requests, by verb and outcome "
    "(ok, error: an Error reply, bad_request: 4xx, failed: 500).",
    ["verb", "outcome"],
)
_LATENCY = Histogram(
    "ebb_extender_request_duration_seconds",
    "Time to serve one scheduler extender request (read, decode, decide, encode), by verb.",
    ["verb"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
)


class Extender(Protocol):
    async def filter(self, args: ExtenderArgs) -> FilterResult: ...

    async def prioritize(self, args: ExtenderArgs) -> Sequence[HostPriority]: ...

    async def bind(self, args: BindingArgs) -> str:
        """Bind the pod; "" on success, else what went wrong (the reply's Error)."""
        ...


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# A verb: the request body in, the reply body and its outcome label out.
_Verb = Callable[[Extender, bytes], Awaitable[tuple[bytes, str]]]


async def _filter(extender: Extender, body: bytes) -> tuple[bytes, str]:
    args = decode_extender_args(body)
    result = await extender.filter(args)
    return encode_filter_result(args, result), "error" if result.error else "ok"


async def _prioritize(extender: Extender, body: bytes) -> tuple[bytes, str]:
    return encode_priorities(await extender.prioritize(decode_extender_args(body))), "ok"


async def _bind(extender: Extender, body: bytes) -> tuple[bytes, str]:
    error = await extender.bind(decode_binding_args(body))
    return encode_binding_result(error), "error" if error else "ok"


_VERBS: dict[str, _Verb] = {"filter": _filter, "prioritize": _prioritize, "bind": _bind}


def add_routes(
    app: web.Application,
    extender: Callable[[], Extender],
    *,
    prefix: str = "/scheduler",
    max_body_bytes: int,
    read_timeout: float,
) -> None:
    """Serve the three verbs under `prefix`; `extender()` is asked on every request (the
    daemon's extender only exists once its reflectors do)."""
    for verb, answer in _VERBS.items():
        app.router.add_post(
            f"{prefix}/{verb}", _handler(verb, answer, extender, max_body_bytes, read_timeout)
        )


def _handler(
    verb: str,
    answer: _Verb,
    extender: Callable[[], Extender],
    max_body_bytes: int,
    read_timeout: float,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    # The metrics' children, looked up once rather than by label on every call.
    latency = _LATENCY.labels(verb)
    requests: dict[str, Counter] = {}

    async def handle(request: web.Request) -> web.Response:
        started = time.perf_counter()
        status = 200
        try:
            body = await _read_body(request, max_body_bytes, read_timeout)
            payload, outcome = await answer(extender(), body)
        except (ProtocolError, _BodyError) as exc:
            status = exc.status if isinstance(exc, _BodyError) else 400
            payload, outcome = encode_error(str(exc)), "bad_request"
            log.debug("bad extender request", verb=verb, status=status, error=str(exc))
        except Exception as exc:  # a bug must cost one request, not the daemon
            log.exception("extender request failed", verb=verb)
            status, payload, outcome = 500, encode_error(f"internal error: {exc}"), "failed"
        elapsed = time.perf_counter() - started
        counter = requests.get(outcome)
        if counter is None:
            counter = requests[outcome] = _REQUESTS.labels(verb, outcome)
        counter.inc()
        latency.observe(elapsed)
        # Server-Timing lets a caller (or the benchmark) see the server's share of a call.
        headers = {"Server-Timing": f"extender;dur={elapsed * 1000:.3f}"}
        return web.Response(
            status=status, body=payload, content_type="application/json", headers=headers
        )

    return handle


async def _read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise _BodyError(413, f"body: {length} bytes is over the limit of {limit}")
    try:
        async with asyncio.timeout(timeout):
            if length is not None:
                return await request.content.readexactly(length)
            body = bytearray()
            async for chunk in request.content.iter_any():
                body += chunk
                if len(body) > limit:
                    raise _BodyError(413, f"body: over the limit of {limit} bytes")
            return bytes(body)
    except TimeoutError:
        raise _BodyError(408, f"body: not received within {timeout:g} s") from None
    except asyncio.IncompleteReadError as exc:
        raise _BodyError(400, f"body: ended after {len(exc.partial)} of {length} bytes") from None
