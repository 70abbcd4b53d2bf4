"""AWS Batch job definitions (EKS): the JobDefinition object parsed, and a Job built from one.

A JobDefinition's spec carries AWS Batch's RegisterJobDefinition fields under their own
names (`eksProperties.podProperties`, `parameters`, `retryStrategy`, `timeout`, ...), so
`kubectl ebb import` writes AWS Batch JSON as it is. Each object is one revision, named
`<name>-<revision>` (docs/decisions/0009-job-definition-revisions.md). A Job names one with
the annotation ebb.dev/job-definition (`NAME` for the latest revision, `NAME:REV` for one)
and gets its pod template from it at the webhook: `Ref::` placeholders in command and args
take the Job's ebb.dev/parameters, else the definition's defaults; the Job's own containers,
matched by name, override image, command, args, env and resources (AWS Batch's overrides).

Pure: plain JSON in, plain JSON or dataclasses out, errors naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ebb import keys
from ebb.jobspec import SpecError, parse_retry_strategy, parse_scheduling_priority, parse_timeout
from ebb.resources import QuantityError, cpu_millis, memory_bytes, parse_quantity

Json = dict[str, Any]
MAX_DEFINITION_BYTES = 24 * 1024  # AWS Batch's limit on a job definition
MIB = 1024 * 1024
RESOURCE_NAMES = ("cpu", "memory", keys.GPU_RESOURCE)  # what AWS Batch on EKS takes
_NAME = re.compile(r"^(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<revision>[1-9][0-9]{0,8})$")
_REFERENCE = re.compile(r"^(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)(:(?P<revision>[0-9]+))?$")
_PLACEHOLDER = re.compile(r"Ref::([A-Za-z0-9_-]+)")
_POD_FIELDS = {
    "serviceAccountName",
    "hostNetwork",
    "dnsPolicy",
    "imagePullSecrets",
    "containers",
    "initContainers",
    "volumes",
    "metadata",
    "shareProcessNamespace",
    "tolerations",
}
_CONTAINER_FIELDS = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "resources",
    "volumeMounts",
    "securityContext",
}
# What a Job's own container may override (AWS Batch's EksContainerOverride).
_OVERRIDE_FIELDS = ("image", "command", "args", "env", "resources")
_VOLUME_SOURCES = ("emptyDir", "hostPath", "secret", "persistentVolumeClaim")


class DefinitionError(ValueError):
    """A bad job definition, or a Job that cannot be built from one; names the field."""


@dataclass(frozen=True, slots=True)
class JobDefinition:
    """One revision of a job definition, validated."""

    name: str
    revision: int
    namespace: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)
    retry_strategy: str | None = None  # JSON, as the ebb.dev/retry-strategy annotation takes
    timeout_seconds: int | None = None
    scheduling_priority: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    propagate_tags: bool = False
    pod: Json = field(default_factory=dict)  # podProperties, resources completed

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.revision}"


def split_name(object_name: str) -> tuple[str, int]:
    """`train-3` → ("train", 3)."""
    match = _NAME.match(object_name)
    if not match:
        raise DefinitionError(
            f"metadata.name: {object_name!r} must be <definition name>-<revision> (e.g. "
            "train-1; lowercase letters, digits and '-', revision a positive integer): "
            "each JobDefinition object is one revision"
        )
    return match.group("name"), int(match.group("revision"))


def parse_reference(value: str) -> tuple[str, int | None]:
    """`train` → ("train", None: the latest); `train:2` → ("train", 2)."""
    match = _REFERENCE.match(value.strip())
    if not match or match.group("revision") == "0":
        raise DefinitionError(
            f"metadata.annotations[{keys.JOB_DEFINITION}]: {value!r} is not NAME or NAME:REVISION"
        )
    revision = match.group("revision")
    return match.group("name"), int(revision) if revision else None


def _object(value: Any, where: str) -> Json:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DefinitionError(f"{where}: must be an object")
    return value


def _strings(value: Any, where: str) -> dict[str, str]:
    entries = _object(value, where)
    for key, text in entries.items():
        if not isinstance(text, str):
            raise DefinitionError(f"{where}[{key}]: must be a string")
    return dict(entries)


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DefinitionError(f"{where}: must be a list of strings")
    return list(value)


def _unknown(entries: Json, allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(entries) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed))
        raise DefinitionError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {known})")


def complete_resources(value: Any, where: str) -> Json:
    """AWS Batch on EKS's rules: cpu, memory and nvidia.com/gpu only; a missing request is
    the limit; memory in whole MiB, at least 4; GPUs whole, requests equal to limits.
    (CPU may be given in millicores, as Kubernetes users write it.)"""
    resources = _object(value, where)
    _unknown(resources, ("limits", "requests"), where)
    limits = _strings_or_numbers(resources.get("limits"), f"{where}.limits")
    requests = _strings_or_numbers(resources.get("requests"), f"{where}.requests")
    for part, entries in (("limits", limits), ("requests", requests)):
        for name, quantity in entries.items():
            at = f"{where}.{part}[{name}]" if "/" in name else f"{where}.{part}.{name}"
            if name not in RESOURCE_NAMES:
                raise DefinitionError(f"{at}: not supported (allowed: {', '.join(RESOURCE_NAMES)})")
            try:
                amount = parse_quantity(quantity)
            except QuantityError as exc:
                raise DefinitionError(f"{at}: {exc}") from None
            if amount <= 0:
                raise DefinitionError(f"{at}: must be positive (got {quantity})")
            if name == "memory" and (memory_bytes(quantity) % MIB or amount < 4 * MIB):
                raise DefinitionError(
                    f"{at}: {quantity} is not a whole number of MiB of at least 4"
                )
            if name == keys.GPU_RESOURCE and amount != amount.to_integral_value():
                raise DefinitionError(f"{at}: {quantity} is not a whole number of GPUs")
    gpu_limit, gpu_request = limits.get(keys.GPU_RESOURCE), requests.get(keys.GPU_RESOURCE)
    if (
        gpu_limit is not None
        and gpu_request is not None
        and parse_quantity(gpu_limit) != parse_quantity(gpu_request)
    ):
        raise DefinitionError(
            f"{where}.requests[{keys.GPU_RESOURCE}]: must equal the limit ({gpu_limit})"
        )
    for name, measure in (("cpu", cpu_millis), ("memory", memory_bytes)):
        if name in limits and name in requests and measure(requests[name]) > measure(limits[name]):
            raise DefinitionError(
                f"{where}.requests.{name}: {requests[name]} exceeds the limit {limits[name]}"
            )
    completed = {**limits, **requests}  # AWS Batch sets requests to the limits
    out: Json = {}
    if limits:
        out["limits"] = limits
    if completed:
        out["requests"] = completed
    return out


def _strings_or_numbers(value: Any, where: str) -> dict[str, str]:
    entries = _object(value, where)
    out = {}
    for key, quantity in entries.items():
        if isinstance(quantity, bool) or not isinstance(quantity, str | int | float):
            raise DefinitionError(f"{where}[{key}]: must be a quantity (e.g. 1, 500m, 2048Mi)")
        out[key] = str(quantity)
    return out


def _env(value: Any, where: str) -> list[Json]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DefinitionError(f"{where}: must be a list of {{name, value}}")
    out = []
    for i, item in enumerate(value):
        entry = _object(item, f"{where}[{i}]")
        _unknown(entry, ("name", "value"), f"{where}[{i}]")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise DefinitionError(f"{where}[{i}].name: must be a non-empty string")
        if not isinstance(entry.get("value", ""), str):
            raise DefinitionError(f"{where}[{i}].value: must be a string")
        out.append({"name": entry["name"], "value": entry.get("value", "")})
    return out


def _container(value: Any, where: str) -> Json:
    container = _object(value, where)
    _unknown(container, _CONTAINER_FIELDS, where)
    if not isinstance(container.get("image"), str) or not container["image"]:
        raise DefinitionError(f"{where}.image: is required")
    out = dict(container)
    for part in ("command", "args"):
        if part in container:
            out[part] = _string_list(container[part], f"{where}.{part}")
    if "env" in container:
        out["env"] = _env(container["env"], f"{where}.env")
    out["resources"] = complete_resources(container.get("resources"), f"{where}.resources")
    return out


def _containers(value: Any, where: str, required: bool) -> list[Json]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        raise DefinitionError(f"{where}: must be a list of at least one container")
    containers = [_container(c, f"{where}[{i}]") for i, c in enumerate(value)]
    names = [str(c.get("name") or "") for c in containers]
    if len(containers) > 1 and ("" in names or len(set(names)) != len(names)):
        raise DefinitionError(f"{where}[].name: each container needs a name of its own")
    return containers


def _volumes(value: Any, where: str) -> list[Json]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DefinitionError(f"{where}: must be a list")
    for i, item in enumerate(value):
        volume = _object(item, f"{where}[{i}]")
        _unknown(volume, ("name", *_VOLUME_SOURCES), f"{where}[{i}]")
        if not isinstance(volume.get("name"), str) or not volume["name"]:
            raise DefinitionError(f"{where}[{i}].name: is required")
        if sum(source in volume for source in _VOLUME_SOURCES) != 1:
            raise DefinitionError(
                f"{where}[{i}]: needs exactly one of {', '.join(_VOLUME_SOURCES)}"
            )
    return list(value)


def _pod_properties(value: Any, where: str) -> Json:
    pod = _object(value, where)
    _unknown(pod, _POD_FIELDS, where)
    out = dict(pod)
    out["containers"] = _containers(pod.get("containers"), f"{where}.containers", True)
    if "initContainers" in pod:
        out["initContainers"] = _containers(pod["initContainers"], f"{where}.initContainers", False)
    if "volumes" in pod:
        out["volumes"] = _volumes(pod["volumes"], f"{where}.volumes")
    metadata = _object(pod.get("metadata"), f"{where}.metadata")
    _unknown(metadata, ("labels", "annotations"), f"{where}.metadata")
    for part in ("labels", "annotations"):
        _strings(metadata.get(part), f"{where}.metadata.{part}")
    return out


def _spec_value(parse: Any, key: str, value: str | None, where: str) -> Any:
    """Reuse the Job annotation `key`'s parser, its messages pointing at this field."""
    try:
        return parse(value)
    except SpecError as exc:
        raise DefinitionError(where + str(exc).removeprefix(key)) from None


def job_definition_from_raw(raw: Mapping[str, Any]) -> JobDefinition:
    """A JobDefinition object (as the API server or `kubectl ebb import` holds it) as one
    validated revision; raises DefinitionError naming the first bad field."""
    name, revision = split_name(str((raw.get("metadata") or {}).get("name", "")))
    spec = _object(raw.get("spec"), "spec")
    size = len(orjson.dumps(spec))
    if size > MAX_DEFINITION_BYTES:
        raise DefinitionError(
            f"spec: {size} bytes exceeds AWS Batch's limit of {MAX_DEFINITION_BYTES} bytes "
            "(24 KiB) for a job definition"
        )
    allowed = (
        "type",
        "jobDefinitionName",
        "parameters",
        "retryStrategy",
        "timeout",
        "schedulingPriority",
        "tags",
        "propagateTags",
        "eksProperties",
        "platformCapabilities",
    )
    _unknown(spec, allowed, "spec")
    if spec.get("type", "container") != "container":
        raise DefinitionError(
            f"spec.type: {spec['type']!r} is not supported (allowed: container; multi-node "
            f"jobs are Jobs with the {keys.NODES} annotation)"
        )
    if spec.get("jobDefinitionName", name) != name:
        raise DefinitionError(
            f"spec.jobDefinitionName: {spec['jobDefinitionName']!r} differs from the name in "
            f"metadata.name ({name})"
        )
    if spec.get("platformCapabilities", ["EC2"]) != ["EC2"]:
        raise DefinitionError("spec.platformCapabilities: only EC2 is supported")
    retry = spec.get("retryStrategy")
    retry_json = None if retry is None else orjson.dumps(retry).decode()
    _spec_value(parse_retry_strategy, keys.RETRY_STRATEGY, retry_json, "spec.retryStrategy")
    timeout = _object(spec.get("timeout"), "spec.timeout")
    _unknown(timeout, ("attemptDurationSeconds",), "spec.timeout")
    seconds = timeout.get("attemptDurationSeconds")
    priority = spec.get("schedulingPriority")
    if not isinstance(spec.get("propagateTags", False), bool):
        raise DefinitionError("spec.propagateTags: must be true or false")
    eks = _object(spec.get("eksProperties"), "spec.eksProperties")
    _unknown(eks, ("podProperties",), "spec.eksProperties")
    if "podProperties" not in eks:
        raise DefinitionError("spec.eksProperties.podProperties: is required")
    return JobDefinition(
        name=name,
        revision=revision,
        namespace=str((raw.get("metadata") or {}).get("namespace", "")),
        parameters=_strings(spec.get("parameters"), "spec.parameters"),
        retry_strategy=retry_json,
        timeout_seconds=_spec_value(
            parse_timeout,
            keys.TIMEOUT_SECONDS,
            None if seconds is None else str(seconds),
            "spec.timeout.attemptDurationSeconds",
        ),
        scheduling_priority=_spec_value(
            parse_scheduling_priority,
            keys.SCHEDULING_PRIORITY,
            None if priority is None else str(priority),
            "spec.schedulingPriority",
        )
        if priority is not None
        else None,
        tags=_strings(spec.get("tags"), "spec.tags"),
        propagate_tags=bool(spec.get("propagateTags", False)),
        pod=_pod_properties(eks["podProperties"], "spec.eksProperties.podProperties"),
    )


def cached_definition(raw: Mapping[str, Any]) -> JobDefinition | None:
    """The reflector's transform: a definition the webhook would refuse (one created
    while it was not registered) is not offered to Jobs."""
    try:
        return job_definition_from_raw(raw)
    except DefinitionError:
        return None


def resolve(definitions: Iterable[JobDefinition], reference: str) -> JobDefinition:
    """The revision a Job's ebb.dev/job-definition names: NAME:REV, or NAME's latest."""
    name, revision = parse_reference(reference)
    revisions = sorted((d for d in definitions if d.name == name), key=lambda d: d.revision)
    where = f"metadata.annotations[{keys.JOB_DEFINITION}]"
    if not revisions:
        raise DefinitionError(f"{where}: job definition {name!r} does not exist in this namespace")
    if revision is None:
        return revisions[-1]
    for definition in revisions:
        if definition.revision == revision:
            return definition
    active = ", ".join(str(d.revision) for d in revisions)
    raise DefinitionError(
        f"{where}: job definition {name!r} has no active revision {revision} "
        f"(active revisions: {active})"
    )


def parse_parameters(value: str | None) -> dict[str, str]:
    """The ebb.dev/parameters annotation: a JSON object of strings."""
    if value is None:
        return {}
    where = f"metadata.annotations[{keys.PARAMETERS}]"
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DefinitionError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DefinitionError(f'{where}: must be a JSON object like {{"input": "s3://b/k"}}')
    return _strings(doc, where)


def substitute(words: list[str], parameters: Mapping[str, str], where: str) -> list[str]:
    """Replace each `Ref::name` with its parameter; one with no value is refused."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            raise DefinitionError(
                f"{where}: Ref::{name} has no value: set it in "
                f"metadata.annotations[{keys.PARAMETERS}] or give the job definition's "
                f"spec.parameters a default"
            )
        return parameters[name]

    return [_PLACEHOLDER.sub(value, word) for word in words]


def _merge_container(base: Json, override: Json, where: str) -> Json:
    """AWS Batch's container override: image, command, args and resources replace the
    definition's; env entries replace those of the same name and add the others."""
    out = dict(base)
    for part in _OVERRIDE_FIELDS:
        if part not in override:
            continue
        if part == "env":
            env = {e["name"]: e for e in base.get("env") or ()}
            for entry in override["env"] or ():
                env[entry.get("name")] = entry
            out["env"] = list(env.values())
        elif part == "resources":
            out["resources"] = complete_resources(override["resources"], f"{where}.resources")
        else:
            out[part] = override[part]
    return out


def _override_containers(definition: JobDefinition, overrides: list[Any]) -> list[Json]:
    containers = [dict(c) for c in definition.pod["containers"]]
    names = [c.get("name") for c in containers]
    for i, raw in enumerate(overrides):
        where = f"spec.template.spec.containers[{i}]"
        override = _object(raw, where)
        name = override.get("name")
        if name is None and len(containers) == 1:
            position = 0  # AWS Batch: an unnamed override is for the only container
        elif name in names:
            position = names.index(name)
        else:
            raise DefinitionError(
                f"{where}.name: job definition {definition.reference} has no container "
                f"{name!r} to override (its containers: {', '.join(map(str, names))})"
            )
        # Only _OVERRIDE_FIELDS are taken: the API server has defaulted others
        # (imagePullPolicy, terminationMessagePath) before Ebb sees the Job.
        containers[position] = _merge_container(containers[position], override, where)
    return containers


def apply_definition(job: Json, definitions: Iterable[JobDefinition]) -> Json:
    """The Job with its pod template built from the definition its ebb.dev/job-definition
    names, and the definition's retry strategy, timeout and scheduling priority where the
    Job does not set its own; the annotation then names the revision used (NAME:REV)."""
    meta = job.get("metadata") or {}
    annotations = dict(meta.get("annotations") or {})
    definition = resolve(definitions, annotations[keys.JOB_DEFINITION])
    parameters = {**definition.parameters, **parse_parameters(annotations.get(keys.PARAMETERS))}
    spec = dict(job.get("spec") or {})
    template = dict(spec.get("template") or {})
    own_pod = dict(template.get("spec") or {})
    pod: Json = {k: v for k, v in definition.pod.items() if k != "metadata"}
    pod["containers"] = _override_containers(definition, own_pod.pop("containers", None) or [])
    for kind in ("containers", "initContainers"):
        for i, container in enumerate(pod.get(kind) or ()):
            for part in ("command", "args"):
                if part in container:
                    where = f"spec.template.spec.{kind}[{i}].{part}"
                    container[part] = substitute(container[part], parameters, where)
    # The Job's other pod fields (nodeSelector, ...) apply; not over the definition's: the
    # API server has defaulted some (dnsPolicy, restartPolicy Always) before Ebb sees them.
    pod = {**own_pod, **pod, "restartPolicy": "Never"}  # AWS Batch's pods never restart
    definition_meta = definition.pod.get("metadata") or {}
    template_meta = dict(template.get("metadata") or {})
    template_annotations = dict(definition_meta.get("annotations") or {})
    if definition.propagate_tags:
        template_annotations.update(definition.tags)
    for part, defaults in (
        ("labels", definition_meta.get("labels") or {}),
        ("annotations", template_annotations),
    ):
        merged = {**defaults, **(template_meta.get(part) or {})}
        if merged:
            template_meta[part] = merged
    template["metadata"] = template_meta
    template["spec"] = pod
    spec["template"] = template
    for key, value in (
        (keys.RETRY_STRATEGY, definition.retry_strategy),
        (keys.TIMEOUT_SECONDS, definition.timeout_seconds),
        (keys.SCHEDULING_PRIORITY, definition.scheduling_priority),
    ):
        if value is not None and key not in annotations:
            annotations[key] = str(value)
    annotations[keys.JOB_DEFINITION] = definition.reference
    return {**job, "metadata": {**meta, "annotations": annotations}, "spec": spec}
