"""`kubectl ebb ui` without a cluster: who it answers, what it says when the API server
cannot be reached, and its charts. (Its pages against the real control plane, in
headless Chromium: tests/e2e/test_web_view.py.)"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ebb import kube
from ebb.kube.config import TokenSource
from kubectl_ebb.ui import (
    TOKEN_COOKIE,
    History,
    UiSettings,
    _chart,
    create_app,
    environment_values,
    queue_values,
)

TOKEN = "s3cret"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    # An API server address nothing listens on: every read fails to connect.
    access = kube.ClusterAccess(
        f"https://127.0.0.1:{_closed_port()}", ssl.create_default_context(), TokenSource()
    )
    app = create_app(UiSettings(refresh_seconds=60), access, "team-a", TOKEN)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_only_the_printed_token_opens_it(client: TestClient[Any, Any]) -> None:
    for path in ("/", "/jobs", "/static/ui.js", f"/?token={TOKEN}x"):
        assert (await client.get(path)).status == 401
    found = await client.get(f"/jobs?token={TOKEN}&state=RUNNABLE", allow_redirects=False)
    assert found.status == 302
    assert found.headers["Location"] == "/jobs?state=RUNNABLE"  # the token leaves the URL
    cookie = found.cookies[TOKEN_COOKIE]
    assert cookie.value == TOKEN
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    page = await client.get("/static/ui.js")  # the cookie jar now carries it
    assert page.status == 200
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")


async def test_an_unreachable_api_server_is_said_on_the_page(client: TestClient[Any, Any]) -> None:
    await client.get(f"/?token={TOKEN}")
    for path in ("/", "/jobs", "/jobs/team-a/job-1"):
        page = await client.get(path)
        assert page.status == 502
        assert "cannot reach the API server" in await page.text()
    assert (await client.get("/jobs?state=DONE")).status == 400


def test_a_chart_draws_what_was_published_and_says_what_was_not() -> None:
    history = History(size=3)
    for at, runnable in ((0.0, 2), (5.0, 1), (10.0, 0), (15.0, 0)):
        queue = {"metadata": {"name": "q"}, "status": {"jobs": {"RUNNABLE": runnable}}}
        history.record("queue", at, [queue], queue_values)
    ((name, samples),) = history.of("queue")
    assert [s.values["runnable"] for s in samples] == [1, 0, 0]  # the last 3 kept
    svg = _chart("queue", name, samples, "jobs", every=5)
    assert 'data-samples="3"' in svg
    assert "runnable 0, running 0 jobs; over 10 s" in svg
    ce = History(size=2)
    ce.record(
        "environment",
        0.0,
        [{"metadata": {"name": "ce"}, "spec": {"maxvCpus": 4}, "status": {}}],
        environment_values,
    )
    svg = _chart("environment", "ce", ce.of("environment")[0][1], "vCPUs", every=5)
    assert "max 4 vCPUs (current and desired: not published)" in svg
    assert 'class="max"' in svg and 'class="current"' not in svg
