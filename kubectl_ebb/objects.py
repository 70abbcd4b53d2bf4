"""What the user's arguments become: the Job `submit` creates, the objects `import`
translates from AWS Batch JSON."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import orjson
import yaml

from ebb import awsbatch_import, keys
from kubectl_ebb.output import Json, OutputFormat, emit


def translate_files(
    files: Sequence[str], namespace: str, latest: dict[str, tuple[int, Json]]
) -> awsbatch_import.Translation:
    """The files' AWS Batch JSON as Ebb objects, the warnings printed to stderr; a file
    that cannot be imported stops everything before anything is written."""
    documents = []
    try:
        for path in files:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            stem = os.path.splitext(os.path.basename(path))[0]
            documents.append((path, awsbatch_import.parse_json(text, path), stem))
        translation = awsbatch_import.translate(documents, namespace=namespace, latest=latest)
    except (awsbatch_import.ImportRefused, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    for warning in translation.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return translation


def import_dry_run(args: argparse.Namespace) -> None:
    """`--dry-run`: the objects as YAML (or JSON), what they cannot carry as comments;
    nothing is read from or written to the cluster (definitions are revision 1)."""
    translation = translate_files(args.files, args.namespace or "default", {})
    if args.output == "json":
        emit(translation.objects, OutputFormat("json"), "")
        return
    comments = "".join(f"# warning: {w}\n" for w in translation.warnings)
    docs = "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in translation.objects)
    print(comments + docs, end="")


def _json_arg(value: str, flag: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"error: {flag}: not valid JSON ({exc})") from None


def submit_job(args: argparse.Namespace) -> Json:
    """The Job `kubectl ebb submit` creates: AWS Batch's SubmitJob as a Job that names its
    definition; the webhook builds the pod template from it (ebb/jobdefinition.py)."""
    annotations = {keys.JOB_DEFINITION: args.job_definition}
    parameters = {}
    for item in args.parameters or ():
        key, found, value = item.partition("=")
        if not found or not key:
            raise SystemExit(f"error: --parameters: {item!r} is not KEY=VALUE")
        parameters[key] = value
    if parameters:
        annotations[keys.PARAMETERS] = orjson.dumps(parameters).decode()
    if args.depends_on:
        annotations[keys.DEPENDS_ON] = ",".join(args.depends_on)
    for key, value in (
        (keys.SCHEDULING_PRIORITY, args.scheduling_priority),
        (keys.RETRY_STRATEGY, args.retry_strategy),
        (keys.TIMEOUT_SECONDS, args.timeout),
    ):
        if value is not None:
            annotations[key] = str(value)
    labels = {keys.QUEUE_LABEL: args.job_queue}
    if args.share:
        labels[keys.SHARE_LABEL] = args.share
    overrides = (
        _json_arg(args.container_overrides, "--container-overrides")
        if args.container_overrides
        else []
    )
    if isinstance(overrides, dict):  # AWS Batch's eksPropertiesOverride.podProperties shape
        overrides = overrides.get("containers") or []
    if not isinstance(overrides, list):
        raise SystemExit(
            "error: --container-overrides: a JSON list of {name, image, command, args, env, "
            "resources}, or an object with such a list under containers"
        )
    spec: Json = {"template": {"spec": {"containers": overrides}}}
    if args.array_size is not None:
        spec.update(
            completionMode="Indexed", completions=args.array_size, parallelism=args.array_size
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": args.job_name, "labels": labels, "annotations": annotations},
        "spec": spec,
    }
