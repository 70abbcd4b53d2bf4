"""A small async Kubernetes API client on aiohttp, speaking raw JSON (orjson).

Why not a generated client: Ebb keeps compact projections of tens of thousands of
objects, so it decodes events itself and never builds model objects (see the README's
measurement), and the reflector needs control of watch parameters and read timeouts
that the client libraries hide.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aiohttp
import orjson
import structlog
from prometheus_client import Counter

from ebb.kube.config import ClusterAccess
from ebb.kube.resources import Resource

PatchType = Literal["merge", "json", "strategic", "apply"]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}
Json = dict[str, Any]
T = TypeVar("T")
_log = structlog.get_logger("ebb.kube")
_REQUESTS = Counter(
    "ebb_api_requests_total",
    "Requests this process made to the API server, by verb and resource as the API "
    "server's apiserver_request_total names them (LIST and WATCH apart from GET), and the "
    "answer's HTTP status.",
    ["verb", "resource", "code"],
)


def request_kind(method: str, path: str, *, watch: bool = False) -> tuple[str, str]:
    """The verb and `resource[/subresource]` of a request, from its method and path; a
    path outside the resource API (/metrics, /version) has the resource `(none)`."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[0] == "api":
        parts = parts[2:]
    elif parts[0] == "apis":
        parts = parts[3:]
    else:
        return method, "(none)"
    if len(parts) > 2 and parts[0] == "namespaces" and parts[2:] not in (["status"], ["finalize"]):
        parts = parts[2:]  # a namespaced resource, not a Namespace's own subresource
    if not parts or not parts[0]:
        return method, "(none)"
    resource = "/".join(parts[:1] + parts[2:3])
    if watch:
        return "WATCH", resource
    return ("LIST" if method == "GET" and len(parts) == 1 else method), resource


class ApiError(Exception):
    """A non-2xx answer from the API server, with its Status reason and message."""

    def __init__(self, status: int, reason: str, message: str, body: Json | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"


# A request the API server could not be asked or could not answer: the connection refused
# or cut, even mid-response (aiohttp.ClientPayloadError, which is no OSError), or too slow.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, OSError, TimeoutError)
# What any request may raise: those, or the API server's refusal.
REQUEST_ERRORS: tuple[type[Exception], ...] = (ApiError, *TRANSPORT_ERRORS)


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[Json]
    resource_version: str


class KubeClient:
    """One connection pool to one API server; every request Ebb makes goes through it."""

    def __init__(
        self,
        access: ClusterAccess,
        *,
        user_agent: str = "ebb",
        max_connections: int = 64,
        request_timeout: float = 30.0,
    ) -> None:
        self.access = access
        self._user_agent = user_agent
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self.access.ssl_context, limit=self._max_connections
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self._user_agent, "Accept": "application/json"},
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._session

    @property
    def _route(self) -> dict[str, Any]:
        """The kubeconfig's `proxy-url` and `tls-server-name`, as aiohttp takes them."""
        route: dict[str, Any] = {}
        if self.access.proxy_url:
            route["proxy"] = self.access.proxy_url
        if self.access.tls_server_name:
            route["server_hostname"] = self.access.tls_server_name
        return route

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Json:
        raw = await self.request_bytes(
            method, path, params=params, body=body, content_type=content_type, timeout=timeout
        )
        return orjson.loads(raw) if raw else {}

    async def request_bytes(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> bytes:
        """The answer's body as it came (e.g. /metrics through a service proxy)."""
        headers = await self.access.headers()
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            headers["Content-Type"] = content_type
        client_timeout = self._timeout if timeout is None else aiohttp.ClientTimeout(total=timeout)
        async with self.session.request(
            method,
            self.access.server + path,
            params=params,
            data=data,
            headers=headers,
            timeout=client_timeout,
            **self._route,
        ) as resp:
            _REQUESTS.labels(*request_kind(method, path), str(resp.status)).inc()
            raw = await resp.read()
            if resp.status >= 300:
                raise _api_error(resp.status, raw)
            return raw

    @asynccontextmanager
    async def stream(
        self, path: str, params: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.StreamReader]:
        """A long-lived streaming GET (watch); the caller reads lines with its own timeout."""
        headers = await self.access.headers()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with self.session.get(
            self.access.server + path,
            params=params,
            headers=headers,
            timeout=timeout,
            **self._route,
        ) as resp:
            _REQUESTS.labels(*request_kind("GET", path, watch=True), str(resp.status)).inc()
            if resp.status >= 300:
                raise _api_error(resp.status, await resp.read())
            yield resp.content

    # --- verbs -------------------------------------------------------------------------

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Json:
        return await self.request("GET", res.path(namespace, name))

    async def get_or_none(
        self, res: Resource, name: str, namespace: str | None = None
    ) -> Json | None:
        try:
            return await self.get(res, name, namespace)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        timeout: float | None = None,
    ) -> ListResult:
        """All objects, fetched in pages; the resourceVersion is the first page's."""
        params: dict[str, str] = {"limit": str(page_size)}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        items: list[Json] = []
        version = ""
        while True:
            page = await self.request("GET", res.path(namespace), params=params, timeout=timeout)
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion", ""))
            token = meta.get("continue")
            if not token:
                return ListResult(items, version)
            params["continue"] = str(token)

    async def create(self, res: Resource, body: Json, namespace: str | None = None) -> Json:
        return await self.request("POST", res.path(namespace), body=body)

    async def replace(
        self, res: Resource, name: str, body: Json, namespace: str | None = None
    ) -> Json:
        return await self.request("PUT", res.path(namespace, name), body=body)

    async def patch(
        self,
        res: Resource,
        name: str,
        body: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> Json:
        params: dict[str, str] = {}
        if field_manager:
            params["fieldManager"] = field_manager
        if force:
            params["force"] = "true"
        return await self.request(
            "PATCH",
            res.path(namespace, name, subresource),
            params=params,
            body=body,
            content_type=_PATCH_CONTENT_TYPES[patch_type],
        )

    async def apply(
        self, res: Resource, body: Json, *, field_manager: str, subresource: str | None = None
    ) -> Json:
        """Server-side apply of a whole object (create or update), forcing ownership."""
        meta = body["metadata"]
        return await self.patch(
            res,
            meta["name"],
            body,
            meta.get("namespace"),
            patch_type="apply",
            subresource=subresource,
            field_manager=field_manager,
            force=True,
        )

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str = "Background",
        grace_period_seconds: int | None = None,
        uid: str | None = None,
    ) -> Json | None:
        """None when there was nothing to delete. With `uid`, only that object (another
        of the same name: 409 Conflict)."""
        options: Json = {"propagationPolicy": propagation}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        try:
            return await self.request("DELETE", res.path(namespace, name), body=options)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def post_subresource(
        self, res: Resource, name: str, namespace: str | None, subresource: str, body: Json
    ) -> Json:
        return await self.request("POST", res.path(namespace, name, subresource), body=body)


def _api_error(status: int, raw: bytes) -> ApiError:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ApiError(status, "", raw.decode(errors="replace")[:500])
    if not isinstance(body, dict):
        return ApiError(status, "", str(body)[:500])
    return ApiError(status, str(body.get("reason", "")), str(body.get("message", "")), body)


async def until_reachable(call: Callable[[], Awaitable[T]], what: str) -> T:
    """`call`, retried with backoff (0.5 s doubling to 5 s) while the API server cannot
    be reached or refuses: a daemon started (or restarted) while kube-apiserver is down
    waits for it instead of exiting."""
    delay = 0.5
    while True:
        try:
            return await call()
        except REQUEST_ERRORS as exc:
            _log.warning(f"{what} failed; retrying", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
