"""The webhook's refusals: what can never work is rejected with a message naming the
field and what is allowed; unknown `ebb.dev/` keys are warned about."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from ebb import keys
from ebb.jobspec import DependencyType, JobSpec, SpecError, parse_job_spec
from ebb.model import JobQueue, NamespaceInfo
from ebb.resources import QuantityError, pod_requests
from extender.jobs.admission import CapacityLimit, gang_misfit
from extender.jobs.dependencies import find_cycle
from extender.jobs.retry import translate
from extender.webhook.batch_env import user_batch_env
from extender.webhook.context import Json, Rejected, WebhookContext
from extender.webhook.mutation import main_node

MAX_ARRAY_SIZE = 100_000
_IMMUTABLE = (
    keys.DEPENDS_ON,
    keys.RETRY_STRATEGY,
    keys.TIMEOUT_SECONDS,
    keys.ARRAY_DEPENDENCY,
    keys.SCHEDULING_PRIORITY,
    keys.JOB_DEFINITION,
    keys.PARAMETERS,
)


def validate_new_job(job: Json, ctx: WebhookContext) -> JobSpec:
    """All checks for a Job being created; raises Rejected with a clear message."""
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    queue_name = (meta.get("labels") or {}).get(keys.QUEUE_LABEL, "")
    queue = ctx.queue(queue_name)
    if queue is None:
        namespace_name = str(meta.get("namespace", ""))
        namespace = ctx.namespace(namespace_name) or NamespaceInfo(namespace_name)
        # Only the queues this namespace may use: other tenants' queues are not its business.
        open_to_it = [
            name
            for name in sorted(ctx.queue_names())
            if (q := ctx.queue(name)) is not None and q.admits(namespace.labels)
        ]
        raise Rejected(
            f"metadata.labels[{keys.QUEUE_LABEL}]: job queue {queue_name!r} does not "
            f"exist (queues open to namespace {namespace_name}: "
            f"{', '.join(open_to_it) or 'none'})"
        )
    if not queue.enabled:
        raise Rejected(
            f"metadata.labels[{keys.QUEUE_LABEL}]: job queue {queue_name!r} is "
            "DISABLED and accepts no new jobs"
        )
    refusal = ctx.tenancy_refusal(job, queue)
    if refusal is not None:
        raise Rejected(str(refusal))
    try:
        job_spec = parse_job_spec(meta.get("annotations") or {})
    except SpecError as exc:
        raise Rejected(_annotation_path(str(exc))) from None
    indexed = spec.get("completionMode") == "Indexed"
    completions = spec.get("completions")
    if job_spec.multi_node is not None:
        _check_multi_node(meta, spec, job_spec.multi_node.nodes)
    is_array = (
        indexed and isinstance(completions, int) and completions > 1 and job_spec.multi_node is None
    )
    if indexed and isinstance(completions, int) and completions > MAX_ARRAY_SIZE:
        raise Rejected(
            f"spec.completions: {completions} children exceed the array job limit "
            f"of {MAX_ARRAY_SIZE}"
        )
    if job_spec.sequential and not is_array:
        raise Rejected(
            f"metadata.annotations[{keys.ARRAY_DEPENDENCY}]: SEQUENTIAL needs an "
            "array job (completionMode Indexed, completions > 1)"
        )
    template_spec = (spec.get("template") or {}).get("spec") or {}
    reserved = user_batch_env(template_spec)
    if reserved is not None:
        raise Rejected(reserved)
    if job_spec.retry is not None:
        ours = translate(
            job_spec.retry, per_index=is_array, main_node=main_node(job_spec)
        ).pod_failure_policy
        # (The validating webhook sees the policy the mutating one translated.)
        if spec.get("podFailurePolicy") and spec.get("podFailurePolicy") != ours:
            raise Rejected(
                f"metadata.annotations[{keys.RETRY_STRATEGY}]: set either it or "
                "spec.podFailurePolicy, not both"
            )
        if template_spec.get("restartPolicy", "Never") != "Never":
            raise Rejected(
                f"spec.template.spec.restartPolicy: a retry strategy needs Never "
                f"(got {template_spec.get('restartPolicy')})"
            )
    _check_dependencies(meta, job_spec, is_array, completions, ctx)
    _check_resources(template_spec, queue, ctx.capacity())
    if job_spec.multi_node is not None:
        misfit = gang_misfit(
            queue.compute_environments,
            ctx.capacity(),
            pod_requests(template_spec),
            job_spec.multi_node.nodes,
        )
        if misfit is not None:
            raise Rejected(f"metadata.annotations[{keys.NODES}]: {misfit}")
    return job_spec


_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def _check_multi_node(meta: Json, spec: Json, nodes: int) -> None:
    """A multi-node job is an Indexed Job of `nodes` pods all running at once, named so
    that its pods' DNS names (`<job>-<index>.<job>`, its headless Service) exist."""
    where = f"metadata.annotations[{keys.NODES}]"
    if spec.get("completionMode") != "Indexed":
        raise Rejected(f"spec.completionMode: a multi-node job ({where}) must be Indexed")
    for part in ("completions", "parallelism"):
        if spec.get(part) != nodes:
            raise Rejected(
                f"spec.{part}: must equal {where} ({nodes}) for a multi-node job "
                f"(got {spec.get(part)})"
            )
    name = str(meta.get("name") or "")
    if not _DNS_LABEL.match(name) or len(name) > 52:
        raise Rejected(
            f"metadata.name: a multi-node job's name names its headless Service and its pods' "
            f"hostnames, so it must be a DNS label of at most 52 characters (lowercase "
            f"letters, digits and '-', starting with a letter; generateName is not "
            f"supported); got {name!r}"
        )


def _annotation_path(message: str) -> str:
    """ "ebb.dev/retry-strategy.attempts: …" → "metadata.annotations[ebb.dev/retry-strategy]
    .attempts: …" (the field path kubectl users know)."""
    match = re.match(r"(ebb\.dev/[a-z-]+)(\S*): (.*)", message, re.DOTALL)
    if not match:
        return message
    return f"metadata.annotations[{match.group(1)}]{match.group(2)}: {match.group(3)}"


def _check_dependencies(
    meta: Json, job_spec: JobSpec, is_array: bool, completions: Any, ctx: WebhookContext
) -> None:
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    where = f"metadata.annotations[{keys.DEPENDS_ON}]"
    for dep in job_spec.depends_on:
        if dep.type is not DependencyType.N_TO_N:
            continue
        if not is_array:
            raise Rejected(f"{where}: {dep.job}:n_to_n needs this Job to be an array job")
        other = ctx.job(namespace, dep.job)
        if other is not None and other.completions != completions:
            raise Rejected(
                f"{where}: {dep.job}:n_to_n needs arrays of the same size "
                f"({dep.job} has {other.completions} children, this one {completions})"
            )
    if not name:
        return  # generateName: nothing can depend on a name nobody knew

    def deps_of(job_name: str) -> tuple[Any, ...] | None:
        if job_name == name:
            return job_spec.depends_on
        other = ctx.job(namespace, job_name)
        return other.spec.depends_on if other is not None else None

    cycle = find_cycle(name, deps_of)
    if cycle:
        raise Rejected(f"{where}: dependency cycle {' → '.join(cycle)}")


def _check_resources(
    template_spec: Json, queue: JobQueue, capacity: Mapping[str, CapacityLimit]
) -> None:
    try:
        request = pod_requests(template_spec)
    except QuantityError as exc:
        raise Rejected(f"spec.template.spec.containers[].resources: {exc}") from None
    known = [capacity[ce] for ce in queue.compute_environments if ce in capacity]
    if not known or any(c.holds_pod(request) for c in known):
        return
    field = "spec.template.spec.containers[].resources"
    limits = [(ce, capacity[ce].limit) for ce in queue.compute_environments if ce in capacity]
    best = max(limits, key=lambda item: item[1].cpu_milli)
    if request.gpu and all(request.gpu > limit.gpu for _, limit in limits):
        raise Rejected(
            f"{field}.requests[{keys.GPU_RESOURCE}]: {request.gpu} GPUs per pod, but no compute "
            f"environment of queue {queue.name} allows that many"
        )
    if all(request.cpu_milli > limit.cpu_milli for _, limit in limits):
        raise Rejected(
            f"{field}.requests.cpu: {request.vcpus:g} vCPUs per pod exceeds the largest compute "
            f"environment of queue {queue.name} ({best[0]}: maxvCpus "
            f"{best[1].cpu_milli // 1000})"
        )
    # Name the resource that does not fit, and the largest node (or limit) for it.
    why = [capacity[ce].unfit(ce, request) for ce in queue.compute_environments if ce in capacity]
    raise Rejected(f"{field}." + "; ".join(w for w in why if w))


def unknown_key_warnings(job: Json, old: Json | None = None) -> list[str]:
    """A warning for each ebb.dev/ label or annotation Ebb does not know (new in this
    write), naming the closest known key: Ebb ignores such keys, so a misspelt retry
    strategy would otherwise run the Job without one, silently."""
    meta, old_meta = job.get("metadata") or {}, (old or {}).get("metadata") or {}
    warnings = []
    for part, known, other in (
        ("labels", keys.JOB_LABELS, keys.JOB_ANNOTATIONS),
        ("annotations", keys.JOB_ANNOTATIONS, keys.JOB_LABELS),
    ):
        entries, before = meta.get(part) or {}, old_meta.get(part) or {}
        for key in sorted(entries):
            if (
                not key.startswith(f"{keys.GROUP}/")
                or key in known
                or before.get(key) == entries[key]
            ):
                continue
            where = f"metadata.{part}[{key}]"
            if key in other:
                kind = "an annotation" if part == "labels" else "a label"
                warnings.append(f"{where}: Ebb reads {key} as {kind}, not here; ignored")
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{where}: not a key Ebb knows; ignored{hint}")
    return warnings


def validate_update(old: Json, new: Json, username: str, ctx: WebhookContext) -> None:
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    old_queue = (old_meta.get("labels") or {}).get(keys.QUEUE_LABEL)
    new_queue = (new_meta.get("labels") or {}).get(keys.QUEUE_LABEL)
    adopting = (
        old_queue is None
        and bool((old.get("spec") or {}).get("suspend"))
        and not (old.get("status") or {}).get("startTime")
    )
    if old_queue != new_queue and not adopting:
        raise Rejected(
            f"metadata.labels[{keys.QUEUE_LABEL}]: is immutable "
            f"({old_queue!r} → {new_queue!r}); delete and recreate the Job"
        )
    old_share = (old_meta.get("labels") or {}).get(keys.SHARE_LABEL)
    new_share = (new_meta.get("labels") or {}).get(keys.SHARE_LABEL)
    queue = ctx.queue(new_queue) if new_queue else None
    if queue is not None and (old_queue != new_queue or old_share != new_share):
        refusal = ctx.tenancy_refusal(new, queue)
        if refusal is not None:
            raise Rejected(str(refusal))
    old_ann, new_ann = old_meta.get("annotations") or {}, new_meta.get("annotations") or {}
    for key in _IMMUTABLE:
        if old_ann.get(key) != new_ann.get(key):
            raise Rejected(f"metadata.annotations[{key}]: is immutable once the Job exists")
    if username == ctx.admitter():
        return
    for key in sorted(keys.PUBLISHED_ANNOTATIONS):
        if old_ann.get(key) != new_ann.get(key):
            raise Rejected(
                f"metadata.annotations[{key}]: is written by Ebb only (it publishes the "
                "job's state and history there)"
            )
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if old_queue and old_spec.get("parallelism") != new_spec.get("parallelism"):
        raise Rejected(
            f"spec.parallelism: Ebb sets it for Jobs of queue {old_queue!r} as it admits "
            "their pods; the array's own parallelism is fixed when the Job is created"
        )
    was_suspended = bool(old_spec.get("suspend"))
    now_suspended = bool(new_spec.get("suspend"))
    if was_suspended and not now_suspended:
        raise Rejected(
            f"spec.suspend: only Ebb admits Jobs of queue {new_queue!r}; it starts "
            "when its turn comes (cancel it with the ebb.dev/cancel annotation)"
        )
