"""The CRDs in charts/ebb/crds/ document themselves: a description on every field (what
`kubectl explain` shows), CEL rules that name the field at fault, conditions by the
Kubernetes API conventions, and docs/api-reference.md generated from them."""

from __future__ import annotations

import runpy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = runpy.run_path(str(ROOT / "hack" / "api_reference.py"))
CRDS: list[dict[str, Any]] = GENERATOR["load"]()
KINDS = [c["spec"]["names"]["kind"] for c in CRDS]
# CEL reasons the API server accepts (apiextensions.k8s.io/v1 FieldValueErrorReason).
REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}
# Rules about an object as a whole (no one field of it is at fault): reported at the object.
WHOLE_OBJECT_RULES = {("ComputeEnvironment", "spec.launchTemplate")}


def schema(crd: Mapping[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


@pytest.mark.parametrize("crd", CRDS, ids=KINDS)
def test_every_field_has_a_description(crd: dict[str, Any]) -> None:
    root = schema(crd)
    assert root.get("description"), "the kind itself"
    missing = [
        path
        for path, sub, _ in GENERATOR["fields"](root)
        # ObjectMeta's description is the API server's (it refuses one here).
        if path != "metadata" and not str(sub.get("description", "")).strip()
    ]
    assert missing == [], f"fields without a description: {missing}"


@pytest.mark.parametrize("crd", CRDS, ids=KINDS)
def test_cel_rules_name_the_field_and_the_reason(crd: dict[str, Any]) -> None:
    kind = crd["spec"]["names"]["kind"]
    checked = 0
    for path, sub, _ in [("", schema(crd), False), *GENERATOR["fields"](schema(crd))]:
        for target in (sub, sub.get("items") or {}):
            where = f"{path}[]" if target is not sub else path
            for rule in target.get("x-kubernetes-validations") or ():
                checked += 1
                assert rule.get("reason") in REASONS, (where, rule["rule"])
                assert rule.get("message"), (where, rule["rule"])
                properties = target.get("properties") or {}
                if not properties or (kind, where) in WHOLE_OBJECT_RULES:
                    # A list's or a map's rule: its own path already names the field.
                    assert "fieldPath" not in rule or not properties
                    continue
                field = str(rule.get("fieldPath", ""))
                assert field.startswith("."), (where, rule["rule"], "needs a fieldPath")
                assert field[1:] in properties, (where, field)
    if kind != "JobDefinition":
        assert checked, "the CRD has CEL rules and this walk must see them"


def test_the_conditions_follow_the_api_conventions_on_every_kind_with_a_status() -> None:
    found = {}
    for crd in CRDS:
        status = schema(crd)["properties"].get("status")
        if status is not None:
            found[crd["spec"]["names"]["kind"]] = status["properties"]["conditions"]
    assert set(found) == {"ComputeEnvironment", "JobQueue", "SchedulingPolicy"}
    items = [c["items"] for c in found.values()]
    assert all(i == items[0] for i in items), "one conditions schema for every kind"
    assert set(items[0]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    for conditions in found.values():
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_the_api_reference_is_generated_from_the_crds() -> None:
    doc = (ROOT / "docs" / "api-reference.md").read_text()
    assert doc == GENERATOR["render"](), "run: python hack/api_reference.py"
