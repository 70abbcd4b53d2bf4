"""AdmissionReviews in and out: a review's Job checked for the types Ebb reads, validated
and mutated into a JSON patch; the caches refreshed first for what they may not hold."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import Counter

from ebb import keys
from ebb.jobdefinition import DefinitionError, apply_definition, job_definition_from_raw
from ebb.jobspec import SpecError, parse_job_spec
from extender.webhook.context import Json, Rejected, WebhookContext, job_share
from extender.webhook.mutation import json_patch, mutate
from extender.webhook.validation import unknown_key_warnings, validate_new_job, validate_update

log = structlog.get_logger("ebb.webhook")
REVIEWS = Counter(
    "ebb_webhook_reviews_total", "Admission reviews by kind and verdict.", ["webhook", "verdict"]
)


def _response(
    uid: str,
    allowed: bool,
    message: str = "",
    patch: list[Json] | None = None,
    warnings: list[str] | None = None,
) -> Json:
    response: Json = {"uid": uid, "allowed": allowed}
    if warnings:
        response["warnings"] = warnings
    if not allowed:
        response["status"] = {"code": 422, "reason": "Invalid", "message": message}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def _job_object(value: Any, where: str) -> Json:
    """`value` as a Job whose parts Ebb reads have the types a Job's have. (The API server
    sends only decoded Jobs; anything else gets an answer naming the field, not a 500.)"""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected(f"{where}: must be a Job object, not {type(value).__name__}")
    for part in ("metadata", "spec", "status"):
        if value.get(part) is not None and not isinstance(value[part], dict):
            raise Rejected(f"{where}.{part}: must be an object")
    meta = value.get("metadata") or {}
    for part in ("labels", "annotations"):
        entries = meta.get(part)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise Rejected(f"metadata.{part}: must be a map of strings")
        for key, text in entries.items():
            if not isinstance(text, str):
                raise Rejected(f"metadata.{part}[{key}]: must be a string")
    spec = value.get("spec") or {}
    for part in ("completions", "parallelism"):
        number = spec.get(part)
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
            raise Rejected(f"spec.{part}: must be an integer")
    template = spec.get("template")
    if template is not None and not (
        isinstance(template, dict) and isinstance(template.get("spec") or {}, dict)
    ):
        raise Rejected("spec.template: must be a pod template object")
    return value


def review(body: Json, ctx: WebhookContext, *, mutating: bool) -> Json:
    request = body.get("request")
    if not isinstance(request, dict) or not request.get("uid"):
        raise web.HTTPBadRequest(text="request: an AdmissionReview with request.uid is required")
    uid = str(request["uid"])
    name = "mutate" if mutating else "validate"
    job: Json = {}
    try:
        job = _job_object(request.get("object"), "object")
        if request.get("operation") == "UPDATE":
            if not mutating:
                user = request.get("userInfo")
                username = user.get("username", "") if isinstance(user, dict) else ""
                old = _job_object(request.get("oldObject"), "oldObject")
                validate_update(old, job, str(username), ctx)
                REVIEWS.labels(name, "allowed").inc()
                return _response(uid, True, warnings=unknown_key_warnings(job, old))
            REVIEWS.labels(name, "allowed").inc()
            return _response(uid, True)
        job = _from_definition(job, ctx)
        job_spec = validate_new_job(job, ctx)
        queue_name = str(((job.get("metadata") or {}).get("labels") or {}).get(keys.QUEUE_LABEL))
    except Rejected as exc:
        REVIEWS.labels(name, "rejected").inc()
        log.info(
            "job rejected",
            webhook=name,
            job=(job.get("metadata") or {}).get("name"),
            reason=str(exc),
        )
        return _response(uid, False, f"Ebb: {exc}")
    REVIEWS.labels(name, "allowed").inc()
    if not mutating:
        return _response(uid, True)
    submitted = request.get("object") or {}
    return _response(
        uid,
        True,
        patch=json_patch(
            submitted,
            mutate(job, job_spec, ctx.scheduler_name, job_share(job, ctx.queue(queue_name))),
        ),
        warnings=unknown_key_warnings(job),
    )


def _from_definition(job: Json, ctx: WebhookContext) -> Json:
    """The Job with its pod template from the JobDefinition it names, if it names one."""
    meta = job.get("metadata") or {}
    if keys.JOB_DEFINITION not in (meta.get("annotations") or {}):
        return job
    try:
        return apply_definition(job, ctx.definitions(str(meta.get("namespace", ""))))
    except DefinitionError as exc:
        raise Rejected(str(exc)) from None


def review_definition(body: Json) -> Json:
    """A JobDefinition created (validated as AWS Batch would register it) or updated (a
    revision is immutable: a new one is a new object, docs/decisions/0009)."""
    request = body.get("request")
    if not isinstance(request, dict) or not request.get("uid"):
        raise web.HTTPBadRequest(text="request: an AdmissionReview with request.uid is required")
    uid = str(request["uid"])
    new, old = request.get("object"), request.get("oldObject")
    try:
        if not isinstance(new, dict):
            raise Rejected("object: must be a JobDefinition object")
        if request.get("operation") == "UPDATE" and isinstance(old, dict):
            if new.get("spec") != old.get("spec"):
                raise Rejected(
                    "spec: a job definition revision is immutable; register a new revision "
                    "as a new JobDefinition named <name>-<next revision>"
                )
        elif request.get("operation") == "CREATE":
            job_definition_from_raw(new)
    except (Rejected, DefinitionError) as exc:
        REVIEWS.labels("jobdefinition", "rejected").inc()
        return _response(uid, False, f"Ebb: {exc}")
    REVIEWS.labels("jobdefinition", "allowed").inc()
    return _response(uid, True)


_PREFETCH_LIMIT = 500


async def prefetch(body: Json, ctx: WebhookContext) -> None:
    """Fetch what the caches may not hold yet: the Job's queue, and the Jobs its
    dependency chain names (so a cycle through a Job created a moment ago is seen)."""
    request = body.get("request")
    if not isinstance(request, dict) or request.get("operation") != "CREATE":
        return
    try:
        meta = _job_object(request.get("object"), "object").get("metadata")
    except Rejected:
        return  # review() says what is wrong
    if not isinstance(meta, dict):
        return
    if keys.JOB_DEFINITION in (meta.get("annotations") or {}):
        # A revision registered a moment ago may not be cached yet; "latest" must see it.
        await ctx.refresh_definitions(str(meta.get("namespace", "")))
    queue_name = (meta.get("labels") or {}).get(keys.QUEUE_LABEL)
    if isinstance(queue_name, str) and ctx.queue(queue_name) is None:
        await ctx.refresh_queue(queue_name)
    queue = ctx.queue(queue_name) if isinstance(queue_name, str) else None
    namespace = str(meta.get("namespace", ""))
    # A namespace created (or relabelled) a moment ago: ask before refusing, or listing.
    if ctx.namespace(namespace) is None or (
        queue is not None and ctx.tenancy_refusal({"metadata": meta}, queue) is not None
    ):
        await ctx.refresh_namespace(namespace)
    if queue is not None:
        known = ctx.capacity()
        for ce in queue.compute_environments:
            if ce not in known:
                await ctx.refresh_compute_environment(ce)
    try:
        pending = [d.job for d in parse_job_spec(meta.get("annotations") or {}).depends_on]
    except SpecError:
        return
    seen: set[str] = set()
    while pending and len(seen) < _PREFETCH_LIMIT:
        name = pending.pop()
        if name in seen or name == meta.get("name"):
            continue
        seen.add(name)
        if ctx.job(namespace, name) is None:
            await ctx.refresh_job(namespace, name)
        found = ctx.job(namespace, name)
        if found is not None:
            pending.extend(d.job for d in found.spec.depends_on)
