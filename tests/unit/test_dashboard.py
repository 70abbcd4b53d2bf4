"""The Grafana dashboard (manifests/grafana/ebb-dashboard.json) against the metrics the
daemons define: every query reads a series they export, every panel has a unit, and the
queue and compute environment variables filter every query whose metric has that label."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import autoscaler.app
import extender.app
from local_stack import ROOT

DASHBOARD = orjson.loads((ROOT / "manifests" / "grafana" / "ebb-dashboard.json").read_bytes())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
TARGETS = [(p["title"], t["expr"]) for p in PANELS for t in p.get("targets", ())]
VARIABLES = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
# The series each metric type exposes (no `_created`: ebb.server disables them).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# Label names a series selector can filter on, by dashboard variable.
FILTERED_LABELS = ("queue", "compute_environment")


def _exported() -> dict[str, set[str]]:
    """Every series the daemons' code defines, with its label names. Importing both apps
    registers every metric (module-level in the modules the apps import)."""
    assert extender.app and autoscaler.app
    names: dict[str, set[str]] = {}
    # The registry lists its collectors only privately; a metric's label names likewise.
    for collector in list(REGISTRY._collector_to_names):
        if not isinstance(collector, MetricWrapperBase):
            continue  # the process and platform collectors: not Ebb's
        for family in collector.describe():
            for suffix in SUFFIXES[family.type]:
                names[family.name + suffix] = set(collector._labelnames)
    return names


EXPORTED = _exported()


def metric_names(expr: str) -> list[str]:
    """The metric names a PromQL expression reads: its identifiers once strings, label
    matchers, `by (...)` groupings, range durations and function calls are taken out."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\b[a-zA-Z_]\w*\s*\(", "(", expr)
    keywords = {"and", "or", "unless", "bool", "offset"}
    return [t for t in re.findall(r"[a-zA-Z_:][\w:]*", expr) if t not in keywords]


def selectors(expr: str, metric: str) -> list[str]:
    """The label matchers on each occurrence of `metric` in `expr` ("" where none)."""
    return [m.group(1) or "" for m in re.finditer(rf"\b{metric}\b(\{{[^}}]*\}})?", expr)]


def test_the_metric_definitions_are_found() -> None:
    assert "ebb_jobs" in EXPORTED
    assert "ebb_admissions_total" in EXPORTED
    assert "ebb_admission_wait_seconds_bucket" in EXPORTED
    assert EXPORTED["ebb_jobs"] == {"queue", "state"}


@pytest.mark.parametrize(("title", "expr"), TARGETS, ids=[f"{t}: {e}" for t, e in TARGETS])
def test_every_query_reads_series_the_daemons_export(title: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{title}: no metric found in {expr}"
    unknown = [n for n in names if n not in EXPORTED]
    assert not unknown, f"{title}: {unknown} are not exported by the daemons ({expr})"


@pytest.mark.parametrize(("title", "expr"), TARGETS, ids=[f"{t}: {e}" for t, e in TARGETS])
def test_every_query_is_filtered_by_the_variables_of_its_labels(title: str, expr: str) -> None:
    for name in metric_names(expr):
        for label in (lb for lb in FILTERED_LABELS if lb in EXPORTED[name]):
            assert all(f'{label}=~"${label}"' in s for s in selectors(expr, name)), (
                f"{title}: {name} is not filtered by ${label} in {expr}"
            )


def test_the_variables_read_real_labels() -> None:
    for label in FILTERED_LABELS:
        variable: dict[str, Any] = VARIABLES[label]
        assert variable["includeAll"] and variable["multi"]
        query = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
        assert query, variable["definition"]
        metric, found = query.groups()
        assert metric in EXPORTED
        assert found == label
        assert label in EXPORTED[metric]


@pytest.mark.parametrize("panel", PANELS, ids=[p["title"] for p in PANELS])
def test_every_panel_has_a_unit(panel: dict[str, Any]) -> None:
    assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']} has no unit"


def test_cost_is_labelled_dollars_per_hour() -> None:
    costs = [p for p in PANELS if any("cost_usd_per_hour" in t["expr"] for t in p["targets"])]
    assert costs
    for panel in costs:
        assert "$/hour" in panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"] == "currencyUSD"
        assert panel["fieldConfig"]["defaults"]["custom"]["axisLabel"] == "$/hour"
