"""The webhook's HTTP endpoints on the scheduler daemon's server."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from extender.webhook.context import Json, WebhookContext
from extender.webhook.review import prefetch, review, review_definition

MUTATE_PATH = "/webhook/jobs/mutate"
VALIDATE_PATH = "/webhook/jobs/validate"
DEFINITION_VALIDATE_PATH = "/webhook/jobdefinitions/validate"


async def _review_body(request: web.Request) -> Json:
    """The AdmissionReview a request carries, or 400 saying what is wrong with it."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body: must be an AdmissionReview object")
    return body


def add_routes(app: web.Application, context: Callable[[], WebhookContext]) -> None:
    async def handle(request: web.Request, mutating: bool) -> web.Response:
        body = await _review_body(request)
        ctx = context()
        await prefetch(body, ctx)
        return web.json_response(
            review(body, ctx, mutating=mutating), dumps=lambda o: orjson.dumps(o).decode()
        )

    async def mutate_handler(request: web.Request) -> web.Response:
        return await handle(request, True)

    async def validate_handler(request: web.Request) -> web.Response:
        return await handle(request, False)

    async def definition_handler(request: web.Request) -> web.Response:
        body = await _review_body(request)
        return web.json_response(review_definition(body), dumps=lambda o: orjson.dumps(o).decode())

    app.router.add_post(MUTATE_PATH, mutate_handler)
    app.router.add_post(VALIDATE_PATH, validate_handler)
    app.router.add_post(DEFINITION_VALIDATE_PATH, definition_handler)
