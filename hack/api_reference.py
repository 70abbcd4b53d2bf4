"""Write docs/api-reference.md from the CRDs in charts/ebb/crds/ (their only source).

    python hack/api_reference.py

tests/unit/test_crds.py fails when the committed file differs from what this writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "charts" / "ebb" / "crds"
DOC = ROOT / "docs" / "api-reference.md"
# In the order a reader meets them: capacity, queues, fair share, definitions.
ORDER = ("ComputeEnvironment", "JobQueue", "SchedulingPolicy", "JobDefinition")
_CONSTRAINTS = (
    ("default", "default"),
    ("minimum", "minimum"),
    ("maximum", "maximum"),
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
    ("maxProperties", "max entries"),
    ("pattern", "pattern"),
)

Schema = Mapping[str, Any]


def load() -> list[dict[str, Any]]:
    """The CRDs, in ORDER."""
    crds = [yaml.safe_load(p.read_text()) for p in sorted(CRDS.glob("*.yaml"))]
    return sorted(crds, key=lambda c: ORDER.index(c["spec"]["names"]["kind"]))


def fields(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema, bool]]:
    """(path, schema, required) of every field under `schema`, depth first; a list's
    items are under `path[]`, a map's values under `path.*`."""
    required = set(schema.get("required") or ())
    for name, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{name}" if path else name
        yield here, sub, name in required
        yield from _nested(sub, here)


def _nested(schema: Schema, path: str) -> Iterator[tuple[str, Schema, bool]]:
    items = schema.get("items")
    if isinstance(items, Mapping) and items.get("properties"):
        yield from fields(items, f"{path}[]")
    yield from fields(schema, path)
    values = schema.get("additionalProperties")
    if isinstance(values, Mapping) and values.get("properties"):
        yield from fields(values, f"{path}.*")


def type_of(schema: Schema) -> str:
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"[]{type_of(schema.get('items') or {})}"
    values = schema.get("additionalProperties")
    if kind == "object" and isinstance(values, Mapping):
        return f"map[string]{type_of(values)}"
    return kind


def constraints(schema: Schema, required: bool) -> str:
    parts = ["required"] if required else []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, label in _CONSTRAINTS:
        if key in schema:
            parts.append(f"{label} `{schema[key]}`")
    for sub in ("items", "additionalProperties"):
        inner = schema.get(sub)
        if isinstance(inner, Mapping) and "pattern" in inner:
            parts.append(f"each matches `{inner['pattern']}`")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(schema.get("x-kubernetes-list-map-keys") or ())
        parts.append(f"unique by {keys}")
    return "; ".join(parts)


def rules(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """(path, rule) of every CEL rule under `schema`."""
    for rule in schema.get("x-kubernetes-validations") or ():
        yield path, rule
    for name, sub in (schema.get("properties") or {}).items():
        yield from rules(sub, f"{path}.{name}" if path else name)
    for key, suffix in (("items", "[]"), ("additionalProperties", ".*")):
        inner = schema.get(key)
        if isinstance(inner, Mapping):
            yield from rules(inner, path + suffix)


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def section(crd: Mapping[str, Any]) -> str:
    spec = crd["spec"]
    names = spec["names"]
    version = spec["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    lines = [
        f"## {names['kind']}",
        "",
        f"`{spec['group']}/{version['name']}`, {spec['scope'].lower()}; "
        f"`kubectl get {names['plural']}` (short: "
        + ", ".join(f"`{s}`" for s in names.get("shortNames") or ())
        + ").",
        "",
        _cell(schema.get("description", "")),
        "",
        "| field | type | description | constraints |",
        "|---|---|---|---|",
    ]
    for path, sub, required in fields(schema):
        if path in ("apiVersion", "kind", "metadata"):
            continue
        lines.append(
            f"| `{path}` | {type_of(sub)} | {_cell(sub.get('description', ''))} "
            f"| {_cell(constraints(sub, required))} |"
        )
    checks = list(rules(schema))
    if checks:
        lines += ["", "Checked by the API server:", ""]
        for path, rule in checks:
            where = path + str(rule.get("fieldPath", ""))
            lines.append(f"- `{where}`: {_cell(rule['message'])}")
    columns = version.get("additionalPrinterColumns") or ()
    if columns:
        lines += ["", "`kubectl get` columns (`-o wide` adds those marked wide):", ""]
        lines += [
            f"- {c['name']}: `{c['jsonPath']}`" + (" (wide)" if c.get("priority") else "")
            for c in columns
        ]
    return "\n".join(lines)


def render() -> str:
    crds = load()
    head = [
        "# API reference",
        "",
        "<!-- Generated by hack/api_reference.py from charts/ebb/crds/; do not edit. -->",
        "",
        "Ebb's custom resources, as the API server validates them (`kubectl explain` shows "
        "the same descriptions). Status is written by the daemons: ComputeEnvironment by the "
        "autoscaler, JobQueue and SchedulingPolicy by the scheduler. Each carries "
        "`status.conditions` (`Ready`; on environments also `CapacityAvailable`), so "
        "`kubectl wait --for=condition=Ready jobqueue/NAME` works.",
        "",
        *(f"- [{c['spec']['names']['kind']}](#{c['spec']['names']['kind'].lower()})" for c in crds),
    ]
    return "\n\n".join(["\n".join(head), *(section(c) for c in crds)]) + "\n"


if __name__ == "__main__":
    DOC.write_text(render())
