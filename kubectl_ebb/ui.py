"""`kubectl ebb ui`: a read-only web view of the queues, served on 127.0.0.1 with the
user's own kubeconfig credentials.

Every page is read through the API server as the user, so it shows exactly what their
RBAC allows and the plugin shows (the same `Cli` computes both): a tenant with ebb-edit
sees their namespace's jobs, the queues only with ebb-view, and a refusal is said in the
plugin's sentence naming the role that grants it. Because each request acts as the user,
only the user may make one: the address is loopback only, and the URL printed at start
carries a random token (exchanged for a cookie on first use), so neither another local
user nor a web page in the browser (DNS rebinding) can act through it.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import html
import secrets
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from ebb import keys, kube
from ebb.background import Background
from ebb.settings import SettingsError, setting
from kubectl_ebb.output import STATES, Json, age, annotations_of
from kubectl_ebb.refusals import refusal
from kubectl_ebb.views import Cli, NotAnEbbJob

HOST = "127.0.0.1"  # never another address: each request acts with the user's credentials
TOKEN_COOKIE = "ebb_ui_token"


@dataclass(frozen=True)
class UiSettings:
    """kubectl ebb ui: a read-only web view of Ebb's queues, environments and jobs."""

    env_prefix: ClassVar[str] = "EBB_UI_"  # not EBB_PORT: that is the daemons' port

    port: int = setting(0, "Port on 127.0.0.1 to serve on; 0: any free port.")
    refresh_seconds: float = setting(
        5.0, "Seconds between an open page's refreshes, and between the samples charted over time."
    )
    history_samples: int = setting(
        720, "Samples kept per queue and compute environment (at 5 s, the last hour)."
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"--port: {self.port} is not a port (0 to 65535; 0: any free)")
        if self.refresh_seconds <= 0:
            raise SettingsError(f"--refresh-seconds: {self.refresh_seconds} must be above 0")
        if self.history_samples < 2:
            raise SettingsError(f"--history-samples: {self.history_samples} must be 2 or more")


# --- queues and environments over time ---------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the epoch
    values: dict[str, int | None]  # series name: value (None: not published)


def environment_values(ce: Json) -> dict[str, int | None]:
    """vCPUs: the autoscaler's current and desired (none on an UNMANAGED environment)."""
    status = ce.get("status") or {}
    return {
        "current": status.get("currentvCpus"),
        "desired": status.get("desiredvCpus"),
        "max": ce["spec"]["maxvCpus"],
    }


def queue_values(queue: Json) -> dict[str, int | None]:
    """Jobs waiting and running, as the queue's status counts them."""
    counts = (queue.get("status") or {}).get("jobs") or {}
    return {state.lower(): int(counts.get(state, 0)) for state in ("RUNNABLE", "RUNNING")}


# What the view charts: (kind, the plugin's command that lists it, its unit, its values).
CHARTED: tuple[tuple[str, str, str, Callable[[Json], dict[str, int | None]]], ...] = (
    ("environment", "ces", "vCPUs", environment_values),
    ("queue", "queues", "jobs", queue_values),
)


class History:
    """Samples of each queue and compute environment, kept since the UI started."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._samples: dict[tuple[str, str], deque[Sample]] = {}
        self.errors: dict[str, str] = {}  # kind: why its last sampling failed

    def record(
        self,
        kind: str,
        at: float,
        items: Iterable[Json],
        values: Callable[[Json], dict[str, int | None]],
    ) -> None:
        for item in items:
            key = (kind, item["metadata"]["name"])
            self._samples.setdefault(key, deque(maxlen=self._size)).append(Sample(at, values(item)))
        self.errors.pop(kind, None)

    def of(self, kind: str) -> list[tuple[str, list[Sample]]]:
        return [
            (name, list(samples))
            for (k, name), samples in sorted(self._samples.items())
            if k == kind
        ]


async def _sample(client: kube.KubeClient, history: History, every: float) -> None:
    cli = Cli(client, "", None)
    listings = {"ces": cli.ce_items, "queues": cli.queue_items}
    while True:
        for kind, command, _, values in CHARTED:
            try:
                history.record(kind, time.time(), await listings[command](), values)
            except kube.ApiError as exc:
                history.errors[kind] = (
                    refusal(argparse.Namespace(command=command), "", exc)
                    if exc.forbidden
                    else str(exc)
                )
            except (aiohttp.ClientError, OSError) as exc:
                history.errors[kind] = f"cannot reach the API server: {exc}"
        await asyncio.sleep(every)


# --- HTML ----------------------------------------------------------------------------------


class Html(str):
    """Markup, already escaped."""


def _text(value: object) -> str:
    return value if isinstance(value, Html) else html.escape(str(value))


def _link(href: str, text: object) -> Html:
    return Html(f'<a href="{html.escape(href)}">{_text(text)}</a>')


def _table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    css: str,
    row_attrs: Iterable[str] | None = None,
) -> Html:
    attrs = iter(row_attrs) if row_attrs is not None else None
    head = "".join(f"<th>{_text(c)}</th>" for c in columns)
    body = "".join(
        f"<tr{next(attrs) if attrs else ''}>"
        + "".join(
            f'<td class="{_text(c.lower())}">{_text(v)}</td>'
            for c, v in zip(columns, row, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return Html(f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def _jobs_href(namespace: str, **filters: str) -> str:
    return "/jobs?" + urlencode({"namespace": namespace, **filters})


CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; }
header { background: #14365d; color: #fff; padding: .6em 1.2em; display: flex; gap: 1.5em;
  align-items: baseline; }
header a { color: #fff; } header .who { margin-left: auto; opacity: .8; font-size: 12px; }
main, form.filters, #refresh { margin: 0 1.2em; }
h2 { margin: 1.2em 0 .4em; font-size: 16px; }
table { border-collapse: collapse; } th, td { padding: .2em .7em; text-align: left;
  border-bottom: 1px solid #dde; vertical-align: top; }
th { font-size: 12px; color: #556; }
td.reason, td.status-reason { max-width: 48em; }
.state-SUCCEEDED { color: #17702f; } .state-FAILED { color: #b3261e; }
.state-RUNNING, .state-STARTING { color: #1b5fa8; } .state-RUNNABLE { color: #8a5a00; }
.refused { color: #b3261e; } .stamp, .legend { color: #667; font-size: 12px; }
.why p { margin: .15em 0; } .depth-1 { padding-left: 1.5em; } .depth-2 { padding-left: 3em; }
.depth-3 { padding-left: 4.5em; } .depth-4 { padding-left: 6em; }
dl.job { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; }
dl.job dt { color: #556; } dl.job dd { margin: 0; }
figure.chart { display: inline-block; margin: 0 1.5em 1em 0; }
svg polyline { fill: none; stroke-width: 1.5; } svg .axis { stroke: #ccd; }
svg .max { stroke: #99a; stroke-dasharray: 2 3; } svg .current, svg .running { stroke: #1b5fa8; }
svg .desired { stroke: #8a5a00; stroke-dasharray: 5 3; } svg .runnable { stroke: #8a5a00; }
svg text { font-size: 10px; }
span.current, span.running { color: #1b5fa8; } span.desired, span.runnable { color: #8a5a00; }
span.max { color: #99a; }
"""

# Refresh: fetch the page again and swap its <main> (filters and scroll position stay).
JS = """
const every = Number(document.body.dataset.refreshMs);
async function refresh() {
  const status = document.getElementById("refresh");
  try {
    const answer = await fetch(location.href, {credentials: "same-origin"});
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    document.querySelector("main").replaceWith(page.querySelector("main"));
    status.textContent = answer.ok ? "" : `refresh answered ${answer.status}`;
  } catch (error) {
    status.textContent = `refresh failed: ${error}`;
  }
}
setInterval(refresh, every);
"""


def _page(
    title: str, main: str, *, context: Context, before_main: str = "", status: int = 200
) -> web.Response:
    stamp = datetime.now(UTC).strftime("%H:%M:%S UTC")
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_text(title)} · Ebb</title>
<link rel="stylesheet" href="/static/ui.css"><script src="/static/ui.js" defer></script></head>
<body data-refresh-ms="{int(context.settings.refresh_seconds * 1000)}">
<header><strong>Ebb</strong>{_link("/", "Queues & environments")}
{_link(_jobs_href(context.namespace), "Jobs")}
<span class="who">read as your kubeconfig's user; namespace {_text(context.namespace)};
refreshes every {context.settings.refresh_seconds:g} s</span></header>
{before_main}<p id="refresh" class="refused"></p>
<main><h1 hidden>{_text(title)}</h1>{main}<p class="stamp">as of {stamp}</p></main>
</body></html>"""
    return web.Response(text=body, content_type="text/html", status=status)


def _refused(exc: kube.ApiError, namespace: str, **command: Any) -> Html:
    if not exc.forbidden:
        raise exc
    return Html(
        f'<p class="refused">{_text(refusal(argparse.Namespace(**command), namespace, exc))}</p>'
    )


# --- pages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    settings: UiSettings
    namespace: str  # the kubeconfig's namespace: the default of the job list
    client: kube.KubeClient
    history: History

    def cli(self, namespace: str | None = None) -> Cli:
        return Cli(self.client, self.namespace if namespace is None else namespace, None)


CONTEXT = web.AppKey("context", Context)


async def overview(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    try:
        queues = _queues_table(await ctx.cli().queue_items())
    except kube.ApiError as exc:
        queues = _refused(exc, ctx.namespace, command="queues")
    try:
        environments = _environments_table(await ctx.cli().ce_items())
    except kube.ApiError as exc:
        environments = _refused(exc, ctx.namespace, command="ces")
    charts = "".join(_charts(ctx, kind, unit) for kind, _, unit, _ in CHARTED)
    main = (
        f"<h2>Job queues</h2>{queues}<h2>Compute environments</h2>{environments}"
        f"<h2>Over time, since this view started</h2>{charts}"
        '<p class="legend">vCPUs: <span class="current">current</span>, '
        '<span class="desired">desired</span>, <span class="max">maxvCpus</span>; jobs: '
        '<span class="runnable">RUNNABLE</span>, <span class="running">RUNNING</span>.</p>'
    )
    return _page("Queues & environments", main, context=ctx)


def _charts(ctx: Context, kind: str, unit: str) -> str:
    error = ctx.history.errors.get(kind)
    return (f'<p class="refused">{_text(error)}</p>' if error else "") + "".join(
        _chart(kind, name, samples, unit, ctx.settings.refresh_seconds)
        for name, samples in ctx.history.of(kind)
    )


def _queues_table(queues: list[Json]) -> Html:
    """The queues; their counts link to the jobs they count, in every namespace (listing
    those takes ebb-admin: a tenant is told so, and shown their namespace's)."""
    rows, attrs = [], []
    for q in queues:
        spec, status = q["spec"], q.get("status") or {}
        name, counts = q["metadata"]["name"], status.get("jobs") or {}
        rows.append(
            [
                _link(_jobs_href("", queue=name), name),
                spec.get("state", "ENABLED"),
                spec["priority"],
                spec.get("schedulingPolicy") or "-",
                ", ".join(Cli.environments(q)),
                *(
                    _link(_jobs_href("", queue=name, state=s), counts[s]) if counts.get(s) else "0"
                    for s in STATES
                ),
                f"{status.get('status', '')} {status.get('statusReason', '')}".strip(),
            ]
        )
        attrs.append(f' data-queue="{_text(name)}"')
    columns = ["NAME", "STATE", "PRIORITY", "POLICY", "ENVIRONMENTS", *STATES, "STATUS"]
    return _table(columns, rows, css="queues", row_attrs=attrs)


def _environments_table(environments: list[Json]) -> Html:
    fields = ("desiredvCpus", "currentvCpus", "nodes", "pendingPods")
    rows = [
        [
            ce["metadata"]["name"],
            ce["spec"]["type"],
            ce["spec"].get("state", "ENABLED"),
            (ce.get("status") or {}).get("status", "-"),
            ce["spec"].get("minvCpus", 0),
            ce["spec"]["maxvCpus"],
            *((ce.get("status") or {}).get(f, "-") for f in fields),
            (ce.get("status") or {}).get("statusReason") or "",
        ]
        for ce in environments
    ]
    columns = ["NAME", "TYPE", "STATE", "STATUS", "MIN", "MAX", "DESIRED", "CURRENT", "NODES"]
    attrs = [f' data-environment="{_text(ce["metadata"]["name"])}"' for ce in environments]
    return _table([*columns, "PENDING-PODS", "REASON"], rows, css="environments", row_attrs=attrs)


def _chart(kind: str, name: str, samples: list[Sample], unit: str, every: float) -> str:
    """An inline SVG of one queue's or environment's series over the samples kept."""
    width, height, pad, top_pad = 320, 96, 14, 20
    base = height - pad  # the y of 0
    numbers = [v for s in samples for v in s.values.values() if v is not None]
    top = max([1, *numbers])
    start, end = samples[0].at, max(samples[-1].at, samples[0].at + every)

    def xy(at: float, value: int) -> str:
        x = pad + (width - 2 * pad) * (at - start) / (end - start)
        return f"{x:.1f},{base - (base - top_pad) * value / top:.1f}"

    lines = []
    for series in samples[-1].values:
        points = [xy(s.at, v) for s in samples if (v := s.values.get(series)) is not None]
        if points:
            lines.append(f'<polyline class="{series}" points="{" ".join(points)}"/>')
    latest = ", ".join(f"{k} {v}" for k, v in samples[-1].values.items() if v is not None)
    missing = [k for k, v in samples[-1].values.items() if v is None]
    caption = f"{latest} {unit}" + (f" ({' and '.join(missing)}: not published)" if missing else "")
    return (
        f'<figure class="chart" data-kind="{kind}" data-name="{_text(name)}" '
        f'data-samples="{len(samples)}"><svg viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_text(name)}: {_text(caption)}">'
        f'<text x="{pad}" y="12">{_text(name)}</text>'
        f'<text x="{width - pad}" y="12" text-anchor="end">{top} {unit}</text>'
        f'<line class="axis" x1="{pad}" y1="{base}" x2="{width - pad}" y2="{base}"/>'
        + "".join(lines)
        + f'</svg><figcaption class="legend">{_text(caption)}; over '
        f"{_duration(samples[-1].at - start)}</figcaption></figure>"
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


async def job_list(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    query = request.query
    namespace = query.get("namespace", ctx.namespace).strip()
    queue, state = query.get("queue", "").strip(), query.get("state", "").strip().upper()
    if state and state not in STATES:
        raise web.HTTPBadRequest(text=f"state: {state!r} is not one of {', '.join(STATES)}")
    every = not namespace  # an empty namespace: all of them, as -A
    try:
        jobs = await ctx.cli(namespace).job_items(queue or None, state or None, every)
        main = _jobs_table(jobs) if jobs else "<p>No jobs match.</p>"
    except kube.ApiError as exc:
        main = _refused(exc, namespace or ctx.namespace, command="jobs", all_namespaces=every)
        if every:
            filters = {k: v for k, v in (("queue", queue), ("state", state)) if v}
            own = _jobs_href(ctx.namespace, **filters)
            main += _link(own, f"the jobs of namespace {ctx.namespace}")
    form = _filters(namespace, queue, state)
    title = f"Jobs{f' of {queue}' if queue else ''} in {namespace or 'all namespaces'}"
    return _page(title, f"<h2>{_text(title)}</h2>{main}", context=ctx, before_main=form)


def _filters(namespace: str, queue: str, state: str) -> str:
    options = "".join(
        f'<option value="{s}"{" selected" if s == state else ""}>{s or "any state"}</option>'
        for s in ("", *STATES)
    )
    return (
        '<form class="filters" method="get" action="/jobs"><h2>Filter</h2>'
        f'<label>namespace <input name="namespace" value="{_text(namespace)}" '
        'placeholder="all namespaces"></label> '
        f'<label>queue <input name="queue" value="{_text(queue)}" placeholder="any queue"></label> '
        f'<label>state <select name="state">{options}</select></label> '
        '<button type="submit">Show</button></form>'
    )


def _jobs_table(jobs: list[Json]) -> Html:
    rows, attrs = [], []
    for job in jobs:
        meta, ann = job["metadata"], annotations_of(job)
        labels = meta.get("labels") or {}
        state = ann.get(keys.STATE, "?")
        rows.append(
            [
                meta["namespace"],
                _link(f"/jobs/{meta['namespace']}/{meta['name']}", meta["name"]),
                labels.get(keys.QUEUE_LABEL, ""),
                labels.get(keys.SHARE_LABEL, "-"),
                Html(f'<span class="state-{_text(state)}">{_text(state)}</span>'),
                age(meta.get("creationTimestamp")),
                ann.get(keys.REASON, ""),
            ]
        )
        attrs.append(f' data-job="{_text(meta["namespace"])}/{_text(meta["name"])}"')
    columns = ["NAMESPACE", "NAME", "QUEUE", "SHARE", "STATE", "AGE", "REASON"]
    return _table(columns, rows, css="jobs", row_attrs=attrs)


async def job_page(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    cli = ctx.cli(namespace)
    try:
        job = await cli.job(name)
        chain = await cli.reason_chain(job)
    except NotAnEbbJob as exc:
        return _page(name, f'<p class="refused">{_text(exc)}</p>', context=ctx, status=404)
    except kube.ApiError as exc:
        return _page(name, _refused(exc, namespace, command="why", job=name), context=ctx)
    description = Cli.description(job)
    state = annotations_of(job).get(keys.STATE, "?")
    header = "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in description.header)
    why = "".join(
        f'<p class="depth-{min(line["depth"], 4)}">{_text(line["text"])}</p>' for line in chain
    )
    attempts = (
        _table(description.columns, description.rows, css="attempts")
        if description.rows
        else "<p>No attempt has ended yet.</p>"
    )
    main = (
        f"<h2>Job {_text(namespace)}/{_text(name)}: "
        f'<span class="state-{_text(state)}" id="state">{_text(state)}</span></h2>'
        f'<dl class="job">{header}</dl><h2>Why</h2><div class="why">{why}</div>'
        f"<h2>Attempts</h2>{attempts}"
    )
    return _page(f"{namespace}/{name}", main, context=ctx)


# --- the app ----------------------------------------------------------------------------------


def _static(text: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=text, content_type=content_type)

    return handler


def _only_the_user(token: str) -> Any:
    """Answer only a request that carries the token: in the URL once (then a cookie)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        offered = request.query.get("token")
        if offered is not None and hmac.compare_digest(offered, token):
            rest = {k: v for k, v in request.query.items() if k != "token"}
            found = web.HTTPFound(request.path + (f"?{urlencode(rest)}" if rest else ""))
            found.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            raise found
        if not hmac.compare_digest(request.cookies.get(TOKEN_COOKIE, ""), token):
            raise web.HTTPUnauthorized(
                text="open the URL `kubectl ebb ui` printed (with its token)"
            )
        response = await handler(request)
        response.headers["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return middleware


@web.middleware
async def _failures_as_pages(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """What the API server did not answer, said on the page (a refresh shows it too)."""
    try:
        return await handler(request)
    except kube.ApiError as exc:
        message = f"the API server answered: {exc}"
    except (aiohttp.ClientError, OSError) as exc:
        message = f"cannot reach the API server: {exc}"
    main = f'<p class="refused">{_text(message)}</p>'
    return _page("Error", main, context=request.app[CONTEXT], status=502)


def create_app(
    settings: UiSettings, access: kube.ClusterAccess, namespace: str, token: str
) -> web.Application:
    app = web.Application(middlewares=[_only_the_user(token), _failures_as_pages])

    async def kubernetes(app: web.Application) -> AsyncIterator[None]:
        client = kube.KubeClient(access, user_agent="kubectl-ebb-ui")
        history = History(settings.history_samples)
        app[CONTEXT] = Context(settings, namespace, client, history)
        background = Background()
        background.spawn(_sample(client, history, settings.refresh_seconds), "samples")
        yield
        await background.stop()
        await client.close()

    app.cleanup_ctx.append(kubernetes)
    app.router.add_get("/", overview)
    app.router.add_get("/jobs", job_list)
    app.router.add_get("/jobs/{namespace}/{name}", job_page)
    app.router.add_get("/static/ui.css", _static(CSS, "text/css"))
    app.router.add_get("/static/ui.js", _static(JS, "text/javascript"))
    return app


async def serve(settings: UiSettings, access: kube.ClusterAccess, namespace: str) -> None:
    """Serve until Ctrl-C (or SIGTERM); print the URL to open first."""
    token = secrets.token_urlsafe(24)
    runner = web.AppRunner(create_app(settings, access, namespace, token), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, settings.port)
        await site.start()
        port = runner.addresses[0][1]
        print(f"Ebb's queues: http://{HOST}:{port}/?token={token}  (Ctrl-C to stop)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
