"""One pod-template stamp: a Job's pods are the same whether the webhook saw it or the
scheduler stamped it before admitting it (created suspended, put in a queue later)."""

from __future__ import annotations

from typing import Any

import pytest

from ebb import keys
from ebb.jobspec import parse_job_spec
from extender.jobs.snapshot import job_from_raw
from extender.jobs.stamp import job_id
from extender.jobs.writes import batch_template_patch
from extender.webhook.mutation import mutate
from tests.unit.jobs.factories import raw_job

LONG_NAME = "a-job-named-at-length-by-a-pipeline-that-puts-everything-in-it-1234"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies the scheduler's patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _stamped_parts(template: dict[str, Any]) -> tuple[Any, ...]:
    spec = template.get("spec") or {}
    return (
        (template.get("metadata") or {}).get("labels"),
        spec.get("tolerations"),
        spec.get("schedulingGates"),
        spec.get("schedulerName"),
    )


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("plain", {}),
        (LONG_NAME, {}),
        ("shared", {"share": "team-a"}),
        (
            "shards",
            {
                "indexed": True,
                "completions": 4,
                "annotations": {keys.DEPENDS_ON: "prep:n_to_n"},
            },
        ),
    ],
)
def test_the_webhook_and_the_scheduler_stamp_a_pod_template_alike(
    name: str, kwargs: dict[str, Any]
) -> None:
    raw = raw_job(name, **kwargs)
    raw["spec"]["template"]["metadata"] = {"labels": {"app": "mine"}}
    raw["spec"]["template"]["spec"]["tolerations"] = [{"key": "gpu", "operator": "Exists"}]
    job_spec = parse_job_spec(raw["metadata"]["annotations"])
    share = raw["metadata"]["labels"].get(keys.SHARE_LABEL, "")
    by_webhook = mutate(raw, job_spec, share=share)["spec"]["template"]

    info = job_from_raw(raw)
    assert info is not None
    by_scheduler = merge_patch(raw, {"spec": batch_template_patch(info, raw["spec"])})
    assert _stamped_parts(by_scheduler["spec"]["template"]) == _stamped_parts(by_webhook)
    labels = by_webhook["metadata"]["labels"]
    assert labels["app"] == "mine"
    assert labels[keys.JOB_ID_LABEL] == job_id(name)
    assert len(labels[keys.JOB_ID_LABEL]) <= 63


def test_a_job_id_label_is_a_valid_label_value() -> None:
    assert job_id("short") == "short"
    assert job_id(LONG_NAME) == "a-job-named-at-length-by-a-pipeline-that-puts-everything-in-it"
    assert job_id("x" * 62 + "-y") == "x" * 62  # a label value ends alphanumeric
