"""`kubectl ebb import`: AWS Batch JSON as Ebb objects.

Takes what `aws batch describe-compute-environments`, `describe-job-queues`,
`describe-scheduling-policies` and `describe-job-definitions` print, and the input
documents of `create-compute-environment`, `create-job-queue`, `create-scheduling-policy`
and `register-job-definition` (`--cli-input-json`), and returns the equivalent
ComputeEnvironments, JobQueues, SchedulingPolicies and JobDefinitions. ARNs become names;
AWS names (letters, digits, '-', '_', any case) become Kubernetes names (lowercase, '_' as
'-'). Every field Ebb cannot carry is reported with why (a warning), never dropped
silently; what AWS Batch itself would refuse, or what Ebb cannot run, is refused naming
the field.

Pure: parsed JSON in, object dicts and warnings out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ebb import keys
from ebb.jobdefinition import DefinitionError, job_definition_from_raw

Json = dict[str, Any]

AWS_BATCH_NODE_TAINT = "batch.amazonaws.com/batch-node"
_ARN = re.compile(r"^arn:[^:]+:batch:[^:]*:[^:]*:(?P<kind>[a-z-]+)/(?P<name>[^:]+)(:\d+)?$")
_AWS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_IMAGE_TYPES = ("EKS_AL2", "EKS_AL2_NVIDIA", "EKS_AL2023", "EKS_AL2023_NVIDIA")
_STATUS = "set by AWS Batch; Ebb writes its own status"
_RESOURCE_TAGS = (
    "tags on the AWS Batch resource itself have no counterpart (Kubernetes objects have labels)"
)
# Fields AWS Batch reports about an object that Ebb recomputes, or that only exist in AWS.
_CE_IGNORED = {
    "computeEnvironmentArn": "an ARN; the object is named after computeEnvironmentName",
    "ecsClusterArn": "Ebb runs no ECS cluster",
    "uuid": _STATUS,
    "status": _STATUS,
    "statusReason": _STATUS,
    "serviceRole": "Ebb's autoscaler uses its own AWS credentials (docs/operations.md)",
    "eksConfiguration": "the cluster Ebb runs in is the cluster",
    "containerOrchestrationType": "Ebb schedules Kubernetes pods",
    "updatePolicy": "not supported: Ebb replaces nothing on update; nodes drain as they empty",
    "context": "not supported",
    "tags": _RESOURCE_TAGS,
}
_RESOURCES_CARRIED = (
    "minvCpus",
    "maxvCpus",
    "instanceTypes",
    "allocationStrategy",
    "bidPercentage",
    "subnets",
    "securityGroupIds",
    "instanceRole",
    "imageId",
    "tags",
    "placementGroup",
)
_RESOURCES_IGNORED = {
    "type": "",  # read into spec.type
    "launchTemplate": "",  # read below
    "ec2Configuration": "",  # read below
    "desiredvCpus": "Ebb sets the desired vCPUs itself from the jobs waiting (status.desiredvCpus)",
    "ec2KeyPair": "not supported: use a launch template with a key pair",
    "spotIamFleetRole": "Ebb launches Spot with EC2 Fleet's own role",
    "updateToLatestImageVersion": "not supported",
}
_QUEUE_IGNORED = {
    "jobQueueArn": "an ARN; the object is named after jobQueueName",
    "status": _STATUS,
    "statusReason": _STATUS,
    "tags": _RESOURCE_TAGS,
    "jobQueueType": "Ebb's queues hold Kubernetes Jobs",
    "serviceEnvironmentOrder": "service jobs are not supported",
}
_POLICY_IGNORED = {
    "arn": "an ARN; the object is named after name",
    "tags": _RESOURCE_TAGS,
}
_DEFINITION_IGNORED = {
    "jobDefinitionArn": "an ARN; the object is named <name>-<revision>",
    "status": "",  # ACTIVE imported, INACTIVE skipped with a warning
    "revision": "",  # read into the object's name
    "containerOrchestrationType": "Ebb runs eksProperties as Kubernetes pods",
    "tolerations": "",  # moved into podProperties
}
_DEFINITION_CARRIED = (
    "type",
    "parameters",
    "retryStrategy",
    "timeout",
    "schedulingPriority",
    "tags",
    "propagateTags",
    "platformCapabilities",
    "eksProperties",
)
_SECURITY_CONTEXT = ("runAsUser", "runAsGroup", "runAsNonRoot")
_VOLUME_SOURCES = ("emptyDir", "hostPath", "secret", "persistentVolumeClaim")
_LISTINGS = ("computeEnvironments", "jobQueues", "schedulingPolicies", "jobDefinitions")
# Environments and policies before the queues that name them.
_APPLY_ORDER = ("ComputeEnvironment", "SchedulingPolicy", "JobQueue", "JobDefinition")


class ImportRefused(ValueError):
    """A document Ebb will not import (AWS Batch would refuse it too, or Ebb cannot run
    it); the message names the file and the field."""


@dataclass(slots=True)
class Translation:
    """The Ebb objects from some AWS Batch documents, and what they could not carry."""

    objects: list[Json] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_json(text: str, source: str) -> Any:
    """The JSON in a file, or a refusal naming the line and column where it breaks
    (AWS Batch refuses invalid JSON as well, e.g. the seed's trailing comma)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at, why = exc.pos, exc.msg
        before = text[:at].rstrip()
        if before.endswith(",") and text[at : at + 1] in ("}", "]"):
            at, why = len(before) - 1, "a trailing comma"  # point at the comma itself
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        raise ImportRefused(
            f"{source}: line {line} column {column}: not valid JSON ({why}); "
            "AWS Batch would refuse it too"
        ) from None


def name_from_arn(value: str) -> str:
    """`arn:aws:batch:…:job-queue/high` → `high`; a plain name is itself."""
    match = _ARN.match(value)
    return match.group("name") if match else value


def kube_name(aws_name: Any, where: str, warnings: list[str]) -> str:
    """AWS Batch's name as a Kubernetes object name: lowercase, '_' as '-'."""
    if not isinstance(aws_name, str) or not _AWS_NAME.match(aws_name):
        raise ImportRefused(
            f"{where}: {aws_name!r} is not an AWS Batch name (1-128 letters, digits, '-' and "
            "'_', starting with a letter or digit)"
        )
    name = aws_name.lower().replace("_", "-").strip("-")
    if name != aws_name:
        warnings.append(f"{where}: {aws_name!r} is named {name!r} (Kubernetes names are lowercase)")
    return name


class _Document:
    """One AWS object being translated: its source for messages, and its warnings."""

    def __init__(self, source: str, kind: str, doc: Any, warnings: list[str]) -> None:
        if not isinstance(doc, dict):
            raise ImportRefused(f"{source}: {kind}: must be a JSON object")
        self.source, self.kind, self.doc, self.warnings = source, kind, doc, warnings
        self.label = f"{source}: {kind}"

    def named(self, name: str) -> None:
        self.label = f"{self.source}: {self.kind} {name}"

    def warn(self, where: str, why: str) -> None:
        self.warnings.append(f"{self.label}: {where}: not carried: {why}")

    def refuse(self, where: str, why: str) -> ImportRefused:
        return ImportRefused(f"{self.label}: {where}: {why}")

    def leftovers(
        self,
        entries: Json,
        carried: Any,
        ignored: Mapping[str, str],
        at: str,
        default: str = "not an AWS Batch field Ebb knows",
    ) -> None:
        """Warn about each field neither carried nor read elsewhere (ignored with "")."""
        for key in sorted(entries):
            if key in carried or ignored.get(key) == "":
                continue
            self.warn(f"{at}{key}", ignored.get(key, default))

    def name(self, key: str) -> str:
        name = kube_name(self.doc.get(key), f"{self.label}: {key}", self.warnings)
        self.named(name)
        return name


def _ebb_object(kind: str, name: str, spec: Json, namespace: str | None = None) -> Json:
    meta: Json = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": keys.API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def compute_environment(d: _Document) -> Json:
    doc = d.doc
    name = d.name("computeEnvironmentName")
    spec: Json = {}
    if "state" in doc:
        spec["state"] = doc["state"]
    d.leftovers(
        doc,
        ("computeEnvironmentName", "type", "state", "computeResources", "unmanagedvCpus"),
        _CE_IGNORED,
        "",
    )
    if doc.get("type", "MANAGED") == "UNMANAGED":
        if not isinstance(doc.get("unmanagedvCpus"), int) or doc["unmanagedvCpus"] < 1:
            raise d.refuse(
                "unmanagedvCpus",
                "Ebb needs the vCPUs of an UNMANAGED environment (its spec.maxvCpus): set it",
            )
        return _ebb_object(
            "ComputeEnvironment",
            name,
            {**spec, "type": "UNMANAGED", "maxvCpus": doc["unmanagedvCpus"]},
        )
    if "unmanagedvCpus" in doc:
        d.warn("unmanagedvCpus", "applies to UNMANAGED environments only")
    if doc.get("type", "MANAGED") != "MANAGED":
        raise d.refuse("type", f"{doc['type']!r} is not allowed (MANAGED or UNMANAGED)")
    resources = doc.get("computeResources")
    if not isinstance(resources, dict):
        raise d.refuse("computeResources", "is required for a MANAGED environment")
    capacity = resources.get("type")
    if capacity not in ("EC2", "SPOT"):
        raise d.refuse(
            "computeResources.type",
            f"{capacity!r} is not supported (EC2 or SPOT; Fargate is not: Ebb launches EC2 nodes)",
        )
    spec["type"] = capacity
    spec.update({k: resources[k] for k in _RESOURCES_CARRIED if k in resources})
    # AWS Batch's default allocation strategy; Ebb's own default is BEST_FIT_PROGRESSIVE.
    spec.setdefault("allocationStrategy", "BEST_FIT")
    template = resources.get("launchTemplate")
    if isinstance(template, dict):
        lt = ("launchTemplateId", "launchTemplateName", "version")
        spec["launchTemplate"] = {k: template[k] for k in lt if k in template}
        d.leftovers(
            template,
            lt,
            {"overrides": "per-type launch templates are not supported"},
            "computeResources.launchTemplate.",
        )
    images = resources.get("ec2Configuration") or []
    for i, image in enumerate(images):
        at = f"computeResources.ec2Configuration[{i}]"
        if i > 0:
            d.warn(at, "Ebb takes one image configuration (the NVIDIA image for GPU types)")
            continue
        if image.get("imageType") in _IMAGE_TYPES:
            spec["imageType"] = image["imageType"]
        elif "imageType" in image:
            d.warn(
                f"{at}.imageType",
                f"{image['imageType']!r}: Ebb's nodes are EKS nodes ({', '.join(_IMAGE_TYPES)})",
            )
        if "imageIdOverride" in image:
            spec["imageId"] = image["imageIdOverride"]
        d.leftovers(
            image,
            ("imageType", "imageIdOverride"),
            {"imageKubernetesVersion": "the image's Kubernetes version is your nodes'"},
            f"{at}.",
        )
    d.leftovers(resources, _RESOURCES_CARRIED, _RESOURCES_IGNORED, "computeResources.")
    return _ebb_object("ComputeEnvironment", name, spec)


def job_queue(d: _Document) -> Json:
    doc = d.doc
    name = d.name("jobQueueName")
    spec: Json = {k: doc[k] for k in ("state", "priority", "jobStateTimeLimitActions") if k in doc}
    order = doc.get("computeEnvironmentOrder")
    if not isinstance(order, list) or not order:
        raise d.refuse("computeEnvironmentOrder", "must list at least one compute environment")
    spec["computeEnvironmentOrder"] = [
        {
            "order": entry.get("order"),
            "computeEnvironment": kube_name(
                name_from_arn(str(entry.get("computeEnvironment"))),
                f"{d.label}: computeEnvironmentOrder[{i}].computeEnvironment",
                d.warnings,
            ),
        }
        for i, entry in enumerate(order)
    ]
    if doc.get("schedulingPolicyArn"):
        spec["schedulingPolicy"] = kube_name(
            name_from_arn(doc["schedulingPolicyArn"]),
            f"{d.label}: schedulingPolicyArn",
            d.warnings,
        )
    carried = (
        "jobQueueName",
        "state",
        "priority",
        "jobStateTimeLimitActions",
        "computeEnvironmentOrder",
        "schedulingPolicyArn",
    )
    d.leftovers(doc, carried, _QUEUE_IGNORED, "")
    return _ebb_object("JobQueue", name, spec)


def scheduling_policy(d: _Document) -> Json:
    doc = d.doc
    name = d.name("name")
    policy = doc.get("fairsharePolicy") or {}
    carried = ("shareDecaySeconds", "computeReservation", "shareDistribution")
    d.leftovers(policy, carried, {}, "fairsharePolicy.")
    d.leftovers(doc, ("name", "fairsharePolicy"), _POLICY_IGNORED, "")
    spec = {"fairsharePolicy": {k: policy[k] for k in carried if k in policy}}
    return _ebb_object("SchedulingPolicy", name, spec)


def _toleration(entry: Any) -> Any:
    """AWS Batch's own node taint is Ebb's (both keep other pods off batch nodes)."""
    if isinstance(entry, dict) and entry.get("key") == AWS_BATCH_NODE_TAINT:
        return {**keys.BATCH_TOLERATION, "effect": entry.get("effect", "NoSchedule")}
    return entry


def _pod_properties(d: _Document, pod: Json, tolerations: Any) -> Json:
    out = dict(pod)
    at = "eksProperties.podProperties"
    for i, volume in enumerate(pod.get("volumes") or []):
        if isinstance(volume, dict) and not any(s in volume for s in _VOLUME_SOURCES):
            given = ", ".join(sorted(set(volume) - {"name"})) or "no source"
            raise d.refuse(
                f"{at}.volumes[{i}]",
                f"{given}: not an AWS Batch volume (one of {', '.join(_VOLUME_SOURCES)}; "
                "AWS Batch refuses it too): for scratch space use emptyDir (with sizeLimit), "
                "for a storage class create a PersistentVolumeClaim and use "
                "persistentVolumeClaim.claimName",
            )
    for kind in ("containers", "initContainers"):
        unnamed = [c for c in out.get(kind) or () if isinstance(c, dict) and not c.get("name")]
        if len(unnamed) == 1:  # AWS Batch names an unnamed container "Default"; Kubernetes
            # needs a name, in lowercase.
            out[kind] = [{"name": "default", **c} if c is unnamed[0] else c for c in out[kind]]
    security = pod.get("securityContext")
    if security is not None:
        del out["securityContext"]
        moved = {k: v for k, v in (security or {}).items() if k in _SECURITY_CONTEXT}
        for kind in ("containers", "initContainers"):
            if kind in out:
                out[kind] = [
                    {**c, "securityContext": {**moved, **(c.get("securityContext") or {})}}
                    if moved and isinstance(c, dict)
                    else c
                    for c in out[kind]
                ]
        d.leftovers(
            security,
            _SECURITY_CONTEXT,
            {},
            f"{at}.securityContext.",
            "AWS Batch's containers take only runAsUser, runAsGroup, runAsNonRoot of these",
        )
        d.warnings.append(
            f"{d.label}: {at}.securityContext: not an AWS Batch pod field; "
            f"{', '.join(sorted(moved)) or 'nothing'} moved to each container's securityContext"
        )
    if tolerations is not None:
        if not isinstance(tolerations, list):
            raise d.refuse("tolerations", "must be a list")
        out["tolerations"] = [_toleration(t) for t in tolerations]
    return out


def job_definition(
    d: _Document, namespace: str, next_revision: Callable[[str, Json], int]
) -> Json | None:
    doc = d.doc
    name = d.name("jobDefinitionName")
    if doc.get("status") == "INACTIVE":
        d.warn("status", "an INACTIVE (deregistered) revision; Ebb keeps no inactive revisions")
        return None
    if "eksProperties" not in doc:
        present = [
            k for k in ("containerProperties", "ecsProperties", "nodeProperties") if k in doc
        ]
        raise d.refuse(
            ", ".join(present) or "eksProperties",
            "Ebb runs EKS job definitions (eksProperties.podProperties) only",
        )
    spec: Json = {k: doc[k] for k in _DEFINITION_CARRIED if k in doc}
    spec.setdefault("type", "container")
    spec["jobDefinitionName"] = name
    retry = doc.get("retryStrategy")
    if isinstance(retry, dict):
        spec["retryStrategy"] = {
            k: v for k, v in retry.items() if k in ("attempts", "evaluateOnExit")
        }
        d.leftovers(retry, ("attempts", "evaluateOnExit"), {}, "retryStrategy.")
    seconds = (doc.get("timeout") or {}).get("attemptDurationSeconds")
    if isinstance(seconds, int) and seconds < 60:
        del spec["timeout"]
        d.warn(
            "timeout.attemptDurationSeconds",
            f"{seconds} is under AWS Batch's minimum of 60: taken as no timeout",
        )
    eks = doc["eksProperties"]
    if isinstance(eks, dict) and isinstance(eks.get("podProperties"), dict):
        pod = _pod_properties(d, eks["podProperties"], doc.get("tolerations"))
        spec["eksProperties"] = {**eks, "podProperties": pod}
    d.leftovers(doc, ("jobDefinitionName", *_DEFINITION_CARRIED), _DEFINITION_IGNORED, "")
    revision = doc.get("revision")
    if not isinstance(revision, int) or revision < 1:
        revision = next_revision(name, spec)
    obj = _ebb_object("JobDefinition", f"{name}-{revision}", spec, namespace)
    try:
        job_definition_from_raw(obj)
    except DefinitionError as exc:
        raise ImportRefused(f"{d.label}: {str(exc).removeprefix('spec.')}") from None
    return obj


def _object(
    item: Json,
    where: str,
    default_name: str,
    *,
    namespace: str,
    next_revision: Callable[[str, Json], int],
    warnings: list[str],
) -> Json | None:
    """The Ebb object for one AWS Batch document, by the name field its kind has (None:
    a job definition identical to its latest revision)."""
    if "computeEnvironmentName" in item:
        return compute_environment(_Document(where, "ComputeEnvironment", item, warnings))
    if "jobQueueName" in item:
        return job_queue(_Document(where, "JobQueue", item, warnings))
    if "jobDefinitionName" in item:
        if not item["jobDefinitionName"] and default_name:
            warnings.append(
                f"{where}: jobDefinitionName: empty (AWS Batch would refuse it); named "
                f"after the file: {default_name!r}"
            )
            item = {**item, "jobDefinitionName": default_name}
        d = _Document(where, "JobDefinition", item, warnings)
        return job_definition(d, namespace, next_revision)
    if "name" in item and "fairsharePolicy" in item:
        return scheduling_policy(_Document(where, "SchedulingPolicy", item, warnings))
    raise ImportRefused(
        f"{where}: not an AWS Batch document: expected describe-compute-environments, "
        "describe-job-queues, describe-scheduling-policies or describe-job-definitions "
        "output ({'computeEnvironments': [...]}, ...), or the input of "
        "create-compute-environment (computeEnvironmentName), create-job-queue "
        "(jobQueueName), create-scheduling-policy (name, fairsharePolicy) or "
        "register-job-definition (jobDefinitionName)"
    )


def translate(
    documents: Sequence[tuple[str, Any, str]],
    *,
    namespace: str = "default",
    latest: Mapping[str, tuple[int, Json]] | None = None,
) -> Translation:
    """The Ebb objects for parsed AWS Batch documents, each (source, JSON, default name):
    describe output, create/register input, or a list of these. `latest` maps a
    definition's name to its highest existing revision and spec: a register document
    identical to it imports as that revision (importing twice changes nothing), a different
    one as the next (AWS Batch's revisions). The default name names a definition whose
    jobDefinitionName is empty (the CLI passes the file's name)."""
    out = Translation()
    existing = dict(latest or {})

    def next_revision(name: str, spec: Json) -> int:
        revision, old = existing.get(name, (0, None))
        if old != spec:
            revision += 1
            existing[name] = (revision, spec)
        return revision

    def one(item: Any, where: str, default_name: str) -> None:
        if isinstance(item, list):
            for i, entry in enumerate(item):
                one(entry, f"{where}[{i}]", default_name)
            return
        if not isinstance(item, dict):
            raise ImportRefused(f"{where}: not an AWS Batch document (a JSON object)")
        for plural in _LISTINGS:
            if plural in item:  # describe-* output
                if not isinstance(item[plural], list):
                    raise ImportRefused(f"{where}: {plural}: must be a list")
                for i, entry in enumerate(item[plural]):
                    one(entry, f"{where}: {plural}[{i}]", "")
                for key in sorted(set(item) - {plural}):
                    why = "more pages, not in this file" if key == "nextToken" else "unknown"
                    out.warnings.append(f"{where}: {key}: not carried: {why}")
                return
        obj = _object(
            item,
            where,
            default_name,
            namespace=namespace,
            next_revision=next_revision,
            warnings=out.warnings,
        )
        if obj is not None:
            out.objects.append(obj)

    for source, doc, default_name in documents:
        one(doc, source, default_name)
    out.objects.sort(key=lambda o: _APPLY_ORDER.index(o["kind"]))
    return out
