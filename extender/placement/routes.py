"""HTTP routes of the scheduler extender (placeholder: passes every node)."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def add_routes(app: web.Application) -> None:
    app.router.add_post("/scheduler/filter", _filter)
    app.router.add_post("/scheduler/prioritize", _prioritize)


async def _filter(request: web.Request) -> web.Response:
    args: dict[str, Any] = await request.json()
    names = args.get("NodeNames") or [
        n["metadata"]["name"] for n in (args.get("Nodes") or {}).get("items") or ()
    ]
    return web.json_response({"NodeNames": names, "FailedNodes": {}, "Error": ""})


async def _prioritize(request: web.Request) -> web.Response:
    args: dict[str, Any] = await request.json()
    names = args.get("NodeNames") or []
    return web.json_response([{"Host": n, "Score": 0} for n in names])
