"""The Job admission webhook (mutating and validating), served by the scheduler daemon.

For a Job labelled `ebb.dev/queue` it rejects what can never work — an unknown or
DISABLED queue, a malformed Ebb annotation, a dependency cycle, a pod bigger than any
compute environment of the queue can hold — with a message naming the field and the
limit or the largest node; it warns about `ebb.dev/` keys it does not know.
It then makes the Job Ebb's: suspended (so no pod exists before admission), tolerating
the batch taint, its pod template stamped with the queue, share and job-id labels,
its timeout and retry strategy translated, its containers given AWS Batch's
environment variables (AWS_BATCH_*: names the user may not set). On updates it keeps
Ebb's fields immutable and lets only Ebb unsuspend a queued Job. A Job created already
suspended works without the webhook, and a suspended Job that never ran may be put in a
queue by labelling it later (without AWS Batch's variables: a Job's env is immutable).
"""

from __future__ import annotations

import base64
import copy
import difflib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import Counter

from ebb import keys
from ebb.jobdefinition import (
    DefinitionError,
    JobDefinition,
    apply_definition,
    job_definition_from_raw,
)
from ebb.jobspec import DependencyType, JobSpec, SpecError, parse_job_spec
from ebb.kube import KubeClient
from ebb.kube.resources import MUTATING_WEBHOOKS, VALIDATING_WEBHOOKS
from ebb.model import JobQueue, NamespaceInfo, SchedulingPolicy
from ebb.resources import QuantityError, pod_requests
from extender.jobs import tenancy
from extender.jobs.admission import CapacityLimit, gang_misfit
from extender.jobs.dependencies import find_cycle
from extender.jobs.lifecycle import State
from extender.jobs.retry import ONE_ATTEMPT, effective_strategy, translate
from extender.jobs.snapshot import JobInfo
from extender.jobs.stamp import stamp_pod_template

log = structlog.get_logger("ebb.webhook")
REVIEWS = Counter(
    "ebb_webhook_reviews_total", "Admission reviews by kind and verdict.", ["webhook", "verdict"]
)
MAX_ARRAY_SIZE = 100_000
MUTATE_PATH = "/webhook/jobs/mutate"
VALIDATE_PATH = "/webhook/jobs/validate"
_IMMUTABLE = (
    keys.DEPENDS_ON,
    keys.RETRY_STRATEGY,
    keys.TIMEOUT_SECONDS,
    keys.ARRAY_DEPENDENCY,
    keys.SCHEDULING_PRIORITY,
    keys.JOB_DEFINITION,
    keys.PARAMETERS,
)
DEFINITION_VALIDATE_PATH = "/webhook/jobdefinitions/validate"
Json = dict[str, Any]


@dataclass(frozen=True)
class WebhookContext:
    """What the webhook consults: live views kept by the daemon's reflectors."""

    queue: Callable[[str], JobQueue | None]
    queue_names: Callable[[], list[str]]
    # Objects created a moment ago may not have reached the caches: ask the API server.
    refresh_queue: Callable[[str], Awaitable[None]]
    refresh_job: Callable[[str, str], Awaitable[None]]  # (namespace, name)
    refresh_compute_environment: Callable[[str], Awaitable[None]]
    job: Callable[[str, str], JobInfo | None]  # (namespace, name)
    capacity: Callable[[], Mapping[str, CapacityLimit]]
    admitter: Callable[[], str]  # the username Ebb writes as
    scheduler_name: str = ""  # the kube-scheduler batch pods should use ("": the default)
    namespace: Callable[[str], NamespaceInfo | None] = lambda _: None
    refresh_namespace: Callable[[str], Awaitable[None]] = lambda _: _nothing()
    policy: Callable[[str], SchedulingPolicy | None] = lambda _: None
    # A namespace's JobDefinitions (every active revision), and a fresh read of them.
    definitions: Callable[[str], list[JobDefinition]] = lambda _: []
    refresh_definitions: Callable[[str], Awaitable[None]] = lambda _: _nothing()

    def tenancy_refusal(self, job: Json, queue: JobQueue) -> tenancy.Refusal | None:
        """Why the Job's namespace may not use its queue or its share (tenancy.check)."""
        meta = job.get("metadata") or {}
        name = str(meta.get("namespace", ""))
        namespace = self.namespace(name) or NamespaceInfo(name)
        policy = self.policy(queue.scheduling_policy) if queue.scheduling_policy else None
        return tenancy.check(namespace, queue, job_share(job, queue), policy)


async def _nothing() -> None:
    return None


def job_share(job: Json, queue: JobQueue | None) -> str:
    """The Job's effective share identifier (its label, or its namespace's name)."""
    meta = job.get("metadata") or {}
    share = str((meta.get("labels") or {}).get(keys.SHARE_LABEL, ""))
    return tenancy.effective_share(share, str(meta.get("namespace", "")), queue)


class Rejected(Exception):
    pass


# --- validation -----------------------------------------------------------------------


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
            job_spec.retry, per_index=is_array, main_node=_main_node(job_spec)
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


# --- mutation -------------------------------------------------------------------------


def mutate(job: Json, job_spec: JobSpec, scheduler_name: str = "", share: str = "") -> Json:
    """The Job as Ebb runs it (see the module docstring). With `scheduler_name`, its
    pods go to that kube-scheduler (the one configured with Ebb's extender); `share`, its
    effective share identifier, is labelled on it (so a namespace's share shows)."""
    out = copy.deepcopy(job)
    meta = out.setdefault("metadata", {})
    spec = out.setdefault("spec", {})
    labels = meta.get("labels") or {}
    annotations = meta.setdefault("annotations", {})
    for key in keys.PUBLISHED_ANNOTATIONS:  # a new Job has no history to show
        annotations.pop(key, None)
    annotations[keys.STATE] = State.SUBMITTED.value
    annotations[keys.REASON] = "submitted; waiting for the scheduler"
    annotations[keys.REASON_CODE] = "SUBMITTED"
    spec["suspend"] = True
    if share:
        labels[keys.SHARE_LABEL] = share
    spec["template"] = stamp_pod_template(
        spec.get("template") or {},
        name=str(meta.get("name") or ""),
        queue=labels[keys.QUEUE_LABEL],
        share=labels.get(keys.SHARE_LABEL, ""),
        job_spec=job_spec,
        scheduler_name=scheduler_name,
    )
    pod = spec["template"]["spec"]
    indexed = spec.get("completionMode") == "Indexed"
    is_array = indexed and (spec.get("completions") or 0) > 1 and job_spec.multi_node is None
    if job_spec.timeout_seconds is not None:
        pod["activeDeadlineSeconds"] = job_spec.timeout_seconds
    strategy = effective_strategy(job_spec.retry, spec)
    if job_spec.multi_node is not None:
        # Ebb retries a gang as a whole, by its retry strategy alone (one attempt without).
        strategy = job_spec.retry or ONE_ATTEMPT
    if strategy is not None:
        pod["restartPolicy"] = "Never"
        spec.update(
            translate(strategy, per_index=is_array, main_node=_main_node(job_spec)).as_spec_patch()
        )
    if job_spec.sequential:
        spec["parallelism"] = 1
    if job_spec.multi_node is not None:
        pod["subdomain"] = str(meta.get("name"))  # the headless Service Ebb creates on admission
    stamp_batch_env(out, job_spec)
    return out


def _main_node(job_spec: JobSpec) -> int | None:
    return job_spec.multi_node.main_node_index if job_spec.multi_node is not None else None


def main_node_address(job: str, namespace: str, main_index: int) -> str:
    """The main pod's DNS name: Indexed Job pods are named `<job>-<index>` as hostnames,
    and `<job>` is the subdomain their headless Service publishes them under. (Its IP is
    not known before the pod is placed; the name resolves once it is.)"""
    return f"{job}-{main_index}.{job}.{namespace}.svc"


BATCH_ENV_PREFIX = "AWS_BATCH"
# The variables Ebb sets on a Job's containers: a Job exported from the cluster and
# created again carries them, and they are set afresh rather than refused.
EBB_BATCH_ENV = frozenset(
    {
        "AWS_BATCH_JOB_ID",
        "AWS_BATCH_JOB_ATTEMPT",
        "AWS_BATCH_JQ_NAME",
        "AWS_BATCH_CE_NAME",
        "AWS_BATCH_JOB_ARRAY_INDEX",
        "AWS_BATCH_JOB_ARRAY_SIZE",
        "AWS_BATCH_JOB_NUM_NODES",
        "AWS_BATCH_JOB_NODE_INDEX",
        "AWS_BATCH_JOB_MAIN_NODE_INDEX",
        "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS",
    }
)


def stamp_batch_env(job: Json, job_spec: JobSpec) -> None:
    """Give every container of the Job's pods AWS Batch's environment variables (the one
    place they are stamped; the webhook has refused any the user wrote). What the Job
    fixes is a value; what only the pod knows comes by the downward API from its
    annotations, which the kubelet reads when it starts the container, after the
    extender's Binding set the attempt and compute environment (ebb/keys.py)."""
    meta, spec = job["metadata"], job["spec"]
    variables: dict[str, Json] = {
        "AWS_BATCH_JQ_NAME": _value(meta["labels"][keys.QUEUE_LABEL]),
        "AWS_BATCH_CE_NAME": _field(f"metadata.annotations['{keys.POD_COMPUTE_ENVIRONMENT}']"),
        "AWS_BATCH_JOB_ATTEMPT": _field(f"metadata.annotations['{keys.POD_ATTEMPT}']"),
    }
    # AWS names a node `<job>#<node index>` and an array child `<job>:<index>`; $(VAR)
    # expands a variable defined earlier in the list.
    child = ""
    if job_spec.multi_node is not None:
        name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
        main = job_spec.multi_node.main_node_index
        variables |= {
            "AWS_BATCH_JOB_NUM_NODES": _value(str(job_spec.multi_node.nodes)),
            "AWS_BATCH_JOB_NODE_INDEX": _field(_COMPLETION_INDEX),
            "AWS_BATCH_JOB_MAIN_NODE_INDEX": _value(str(main)),
            "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": _value(
                main_node_address(name, namespace, main)
            ),
        }
        child = "#$(AWS_BATCH_JOB_NODE_INDEX)"
    elif spec.get("completionMode") == "Indexed":
        variables |= {
            "AWS_BATCH_JOB_ARRAY_INDEX": _field(_COMPLETION_INDEX),
            "AWS_BATCH_JOB_ARRAY_SIZE": _value(str(spec.get("completions") or 1)),
        }
        child = ":$(AWS_BATCH_JOB_ARRAY_INDEX)"
    # AWS's job ID is a UUID no one types; users know and grep the Job's name (the pods'
    # ebb.dev/job-id label). With generateName it is known only once the Job exists: the
    # Job controller's label on the pods has it.
    variables["AWS_BATCH_JOB_ID"] = (
        _value(f"{meta['name']}{child}") if meta.get("name") else _field(_JOB_NAME)
    )
    assert set(variables) <= EBB_BATCH_ENV
    for container in spec["template"]["spec"].get("containers") or ():
        env = [e for e in container.get("env") or () if e.get("name") not in EBB_BATCH_ENV]
        env.extend({"name": name, **source} for name, source in variables.items())
        container["env"] = env


def user_batch_env(template_spec: Json) -> str | None:
    """Where the pod template sets a variable named AWS_BATCH*, which AWS Batch reserves."""
    for part in ("initContainers", "containers"):
        for container in template_spec.get(part) or ():
            for variable in container.get("env") or ():
                name = str(variable.get("name", ""))
                if part == "containers" and name in EBB_BATCH_ENV:
                    continue  # Ebb sets it afresh (a Job exported and created again)
                if name.startswith(BATCH_ENV_PREFIX):
                    return (
                        f"spec.template.spec.{part}[{container.get('name')}].env[{name}]: "
                        f"variables starting with {BATCH_ENV_PREFIX} are reserved for the ones "
                        "Ebb sets, as AWS Batch reserves them; rename it"
                    )
    return None


_COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
_JOB_NAME = "metadata.labels['batch.kubernetes.io/job-name']"


def _field(path: str) -> Json:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def _value(text: str) -> Json:
    return {"value": text}


def json_patch(before: Json, after: Json) -> list[Json]:
    """Replace the parts of the Job the mutation may touch."""
    ops: list[Json] = []
    for path in ("metadata", "spec"):
        if before.get(path) != after.get(path):
            ops.append(
                {
                    "op": "add" if path not in before else "replace",
                    "path": f"/{path}",
                    "value": after[path],
                }
            )
    return ops


# --- AdmissionReview over HTTP --------------------------------------------------------


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


# --- registration ---------------------------------------------------------------------

CONFIGURATION_NAME = "ebb-scheduler"


def configurations(client_config: Callable[[str], Json], admitter: str) -> tuple[Json, Json]:
    """The Mutating- and ValidatingWebhookConfiguration for Jobs labelled ebb.dev/queue."""
    common = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "timeoutSeconds": 10,
        "matchPolicy": "Equivalent",
        "objectSelector": {"matchExpressions": [{"key": keys.QUEUE_LABEL, "operator": "Exists"}]},
    }
    rule = {
        "apiGroups": ["batch"],
        "apiVersions": ["v1"],
        "resources": ["jobs"],
        "scope": "Namespaced",
    }
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME},
        "webhooks": [
            {
                **common,
                "name": "jobs.mutate.ebb.dev",
                "reinvocationPolicy": "Never",
                "clientConfig": client_config(MUTATE_PATH),
                "rules": [{**rule, "operations": ["CREATE"]}],
            }
        ],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME},
        "webhooks": [
            {
                **common,
                "name": "jobs.validate.ebb.dev",
                "clientConfig": client_config(VALIDATE_PATH),
                # Creation is validated by the mutating webhook, which sees the Job
                # as its user wrote it; this one guards updates.
                "rules": [{**rule, "operations": ["UPDATE"]}],
                # Ebb's own writes need no review: spare the API server the call.
                "matchConditions": [
                    {"name": "not-ebb", "expression": f"request.userInfo.username != '{admitter}'"}
                ],
            },
            {
                **{k: v for k, v in common.items() if k != "objectSelector"},
                "name": "jobdefinitions.validate.ebb.dev",
                "clientConfig": client_config(DEFINITION_VALIDATE_PATH),
                "rules": [
                    {
                        "apiGroups": [keys.GROUP],
                        "apiVersions": [keys.VERSION],
                        "resources": ["jobdefinitions"],
                        "scope": "Namespaced",
                        "operations": ["CREATE", "UPDATE"],
                    }
                ],
            },
        ],
    }
    return mutating, validating


async def register(
    client: KubeClient,
    *,
    url: str | None,
    service: str | None,
    port: int,
    ca_bundle: bytes,
    admitter: str,
) -> None:
    """Create or update both configurations to point at this daemon."""
    ca = base64.b64encode(ca_bundle).decode()

    def client_config(path: str) -> Json:
        if url:
            return {"url": url.rstrip("/") + path, "caBundle": ca}
        namespace, _, name = (service or "ebb-system/ebb-scheduler").partition("/")
        return {
            "service": {"namespace": namespace, "name": name, "path": path, "port": port},
            "caBundle": ca,
        }

    mutating, validating = configurations(client_config, admitter)
    await client.apply(MUTATING_WEBHOOKS, mutating, field_manager="ebb-scheduler")
    await client.apply(VALIDATING_WEBHOOKS, validating, field_manager="ebb-scheduler")
    log.info("webhooks registered", url=url, service=service)


async def whoami(client: KubeClient) -> str:
    """The username this daemon's credentials authenticate as (SelfSubjectReview)."""
    review_obj = await client.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(((review_obj.get("status") or {}).get("userInfo") or {}).get("username", ""))
