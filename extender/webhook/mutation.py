"""The Job as Ebb runs it: suspended until admitted, its pod template stamped, its
timeout and retry strategy translated, AWS Batch's environment variables set."""

from __future__ import annotations

import copy

from ebb import keys
from ebb.jobspec import JobSpec
from extender.jobs.lifecycle import State
from extender.jobs.retry import ONE_ATTEMPT, effective_strategy, translate
from extender.jobs.stamp import stamp_pod_template
from extender.webhook.batch_env import stamp_batch_env
from extender.webhook.context import Json


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
            translate(strategy, per_index=is_array, main_node=main_node(job_spec)).as_spec_patch()
        )
    if job_spec.sequential:
        spec["parallelism"] = 1
    if job_spec.multi_node is not None:
        pod["subdomain"] = str(meta.get("name"))  # the headless Service Ebb creates on admission
    stamp_batch_env(out, job_spec)
    return out


def main_node(job_spec: JobSpec) -> int | None:
    return job_spec.multi_node.main_node_index if job_spec.multi_node is not None else None


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
