"""Tenancy's pure parts: label selectors, which namespaces may use a queue and a share,
a namespace's name as share, and the decisions webhook and scheduler take on them."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebb import keys
from ebb.conditions import merge
from ebb.model import (
    JobQueue,
    NamespaceInfo,
    SchedulingPolicy,
    job_queue_from_raw,
    namespace_from_raw,
    scheduling_policy_from_raw,
)
from ebb.resources import Resources
from ebb.selector import LabelSelector, Requirement, SelectorError, parse, parse_or_closed
from extender.jobs import status, tenancy
from extender.jobs.admission import CapacityLimit
from extender.jobs.lifecycle import Code, State
from extender.jobs.reconcile import Snapshot, reconcile
from extender.webhook.context import Rejected, WebhookContext
from extender.webhook.review import review as admission_review
from extender.webhook.validation import validate_update
from tests.unit.jobs.factories import job

NOW = 1_767_225_600.0
TEAM_A = {"matchLabels": {"team": "a"}}


def queue(**spec: Any) -> JobQueue:
    order = [{"order": 0, "computeEnvironment": "ce"}]
    spec = {"priority": 1, "computeEnvironmentOrder": order, **spec}
    return job_queue_from_raw({"metadata": {"name": "q"}, "spec": spec})


def policy(*entries: dict[str, Any]) -> SchedulingPolicy:
    return scheduling_policy_from_raw(
        {"metadata": {"name": "p"}, "spec": {"fairsharePolicy": {"shareDistribution": entries}}}
    )


# --- selectors ---------------------------------------------------------------------------

labels = st.dictionaries(
    st.sampled_from(["team", "tier", "env"]), st.sampled_from(["a", "b", "c"]), max_size=3
)
expression = st.builds(
    lambda key, op, values: {"key": key, "operator": op, "values": values},
    st.sampled_from(["team", "tier", "env"]),
    st.sampled_from(["In", "NotIn"]),
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3),
) | st.builds(
    lambda key, op: {"key": key, "operator": op},
    st.sampled_from(["team", "tier", "env"]),
    st.sampled_from(["Exists", "DoesNotExist"]),
)


def reference(raw: dict[str, Any], have: dict[str, str]) -> bool:
    """Kubernetes' semantics, written the plain way."""
    for key, value in (raw.get("matchLabels") or {}).items():
        if have.get(key) != value:
            return False
    for e in raw.get("matchExpressions") or ():
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {
            "In": key in have and have[key] in values,
            "NotIn": key not in have or have[key] not in values,
            "Exists": key in have,
            "DoesNotExist": key not in have,
        }[op]
        if not ok:
            return False
    return True


@given(labels, st.lists(expression, max_size=3), labels)
def test_a_selector_matches_as_kubernetes_does(
    match_labels: dict[str, str], expressions: list[dict[str, Any]], have: dict[str, str]
) -> None:
    raw = {"matchLabels": match_labels, "matchExpressions": expressions}
    assert parse(raw, "s").matches(have) == reference(raw, have)


def test_an_empty_selector_selects_everything_and_an_absent_one_is_none() -> None:
    assert parse({}, "s").matches({"any": "thing"})
    assert parse_or_closed(None, "s") is None
    assert queue().admits({})


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"matchExpressions": [{"key": "t", "operator": "Has"}]}, "s.matchExpressions[0].operator"),
        ({"matchExpressions": [{"key": "t", "operator": "In"}]}, "s.matchExpressions[0].values"),
        (
            {"matchExpressions": [{"key": "t", "operator": "Exists", "values": ["a"]}]},
            "s.matchExpressions[0].values: Exists takes no values",
        ),
        ({"matchLabels": {"bad key": "a"}}, "s.matchLabels[bad key]: 'bad key' is not a valid"),
        ({"matchLabels": {"t": "a b"}}, "s.matchLabels[t]: 'a b' is not a valid label value"),
        ({"matchLabels": ["t"]}, "s.matchLabels: must be a map"),
        ("team=a", "s: must be an object"),
    ],
)
def test_an_invalid_selector_names_the_field_and_selects_nothing(raw: Any, error: str) -> None:
    with pytest.raises(SelectorError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse(raw, "s")
    closed = parse_or_closed(raw, "s")
    assert closed is not None and error in closed.problem
    assert not closed.matches({"t": "a", "team": "a"})


def test_a_selector_prints_as_kubectl_writes_one() -> None:
    selector = LabelSelector(
        (Requirement("team", "In", frozenset({"a"})), Requirement("x", "Exists"))
    )
    assert str(selector) == "team=a,x"


# --- the decisions -----------------------------------------------------------------------


def test_a_queue_admits_only_the_namespaces_it_selects() -> None:
    q = queue(namespaceSelector=TEAM_A)
    assert tenancy.check(NamespaceInfo("a", {"team": "a"}), q, "", None) is None
    refusal = tenancy.check(NamespaceInfo("b", {"team": "b"}), q, "", None)
    assert refusal is not None and refusal.code is Code.NAMESPACE_NOT_ALLOWED
    assert str(refusal) == (
        f"metadata.labels[{keys.QUEUE_LABEL}]: job queue q does not admit Jobs from "
        "namespace b: its spec.namespaceSelector (team=a) does not select it"
    )


def test_the_most_specific_share_entry_decides_who_may_use_it() -> None:
    p = policy(
        {"shareIdentifier": "team-*", "namespaceSelector": {"matchLabels": {"tier": "batch"}}},
        {"shareIdentifier": "team-a*", "namespaceSelector": TEAM_A},
        {"shareIdentifier": "team-a-open"},
    )
    q = queue(schedulingPolicy="p")
    a = NamespaceInfo("a", {"team": "a"})
    batch = NamespaceInfo("x", {"tier": "batch"})
    assert tenancy.check(a, q, "team-a-etl", p) is None
    refusal = tenancy.check(batch, q, "team-a-etl", p)
    assert refusal is not None and refusal.code is Code.SHARE_NOT_ALLOWED
    assert "shareDistribution[1] (team-a*) has namespaceSelector (team=a)" in refusal.message
    assert tenancy.check(batch, q, "team-b", p) is None
    assert tenancy.check(a, q, "team-b", p) is not None
    assert tenancy.check(a, q, "team-a-open", p) is None  # its own entry, open
    assert tenancy.check(a, q, "unlisted", p) is None  # no entry governs it


def test_a_namespace_name_is_the_share_of_a_job_without_one() -> None:
    assert tenancy.effective_share("", "team-a", queue(shareIdentifierFromNamespace=True)) == (
        "team-a"
    )
    assert tenancy.effective_share("x", "team-a", queue(shareIdentifierFromNamespace=True)) == "x"
    assert tenancy.effective_share("", "team-a", queue()) == ""
    p = policy({"shareIdentifier": "*", "namespaceSelector": TEAM_A})
    q = queue(shareIdentifierFromNamespace=True, schedulingPolicy="p")
    refusal = tenancy.check(NamespaceInfo("ns-b"), q, "ns-b", p)
    assert refusal is not None
    assert "'ns-b' (namespace ns-b's name: queue q has shareIdentifierFromNamespace)" in str(
        refusal
    )


def test_a_terminating_namespace_admits_nothing() -> None:
    ns = namespace_from_raw(
        {"metadata": {"name": "gone", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    )
    refusal = tenancy.check(ns, queue(), "", None)
    assert refusal is not None and refusal.code is Code.NAMESPACE_TERMINATING
    assert str(refusal).startswith("metadata.namespace: namespace gone is being deleted")


# --- the scheduler: never admitted without the webhook, goes on once allowed --------------


def snapshot(q: JobQueue, namespaces: dict[str, NamespaceInfo], *jobs: Any, **kw: Any) -> Snapshot:
    return Snapshot(
        now=NOW,
        jobs={j.key: j for j in jobs},
        pods_by_job={},
        queues={"q": q},
        policies=kw.get("policies", {}),
        capacity={"ce": CapacityLimit(Resources(8000, 2**50, 0))},
        node_compute_environment={},
        namespaces=namespaces,
    )


def test_the_scheduler_never_admits_a_job_its_namespace_may_not_run() -> None:
    q = queue(namespaceSelector=TEAM_A)
    stray, fine = job("stray", namespace="b"), job("fine", namespace="a")
    namespaces = {"a": NamespaceInfo("a", {"team": "a"}), "b": NamespaceInfo("b", {"team": "b"})}
    out = reconcile(snapshot(q, namespaces, stray, fine))
    assert set(out.admit) == {"a/fine"}
    waiting = out.statuses["b/stray"]
    assert (waiting.state, waiting.code) == (State.RUNNABLE, Code.NAMESPACE_NOT_ALLOWED)
    assert waiting.reason.startswith("not admitted: metadata.labels[ebb.dev/queue]: job queue q")
    namespaces["b"] = NamespaceInfo("b", {"team": "a"})  # relabelled: it goes on
    assert set(reconcile(snapshot(q, namespaces, stray)).admit) == {"b/stray"}


def test_the_scheduler_counts_a_namespace_share_in_fair_share() -> None:
    q = queue(shareIdentifierFromNamespace=True, schedulingPolicy="p")
    p = policy({"shareIdentifier": "*", "namespaceSelector": TEAM_A})
    namespaces = {"a": NamespaceInfo("a", {"team": "a"}), "b": NamespaceInfo("b")}
    out = reconcile(
        snapshot(q, namespaces, job("x", namespace="a"), job("y", namespace="b"), policies={"p": p})
    )
    assert set(out.admit) == {"a/x"}
    assert out.statuses["b/y"].code is Code.SHARE_NOT_ALLOWED
    assert out.running_vcpus["q"] == {"a": 1.0}


# --- bad input on the objects ------------------------------------------------------------


def test_a_selector_that_selects_nothing_or_is_invalid_is_a_condition_not_a_crash() -> None:
    q = queue(namespaceSelector={"matchLabels": {"team": "nobody"}})
    condition = tenancy.namespaces_condition(q, [NamespaceInfo("a", {"team": "a"})])
    assert (condition.status, condition.reason) == ("False", "NoNamespaceSelected")
    assert "spec.namespaceSelector (team=nobody) selects no namespace" in condition.message
    bad = queue(namespaceSelector={"matchExpressions": [{"key": "t", "operator": "Near"}]})
    condition = tenancy.namespaces_condition(bad, [])
    assert condition.reason == "InvalidSelector"
    assert status.queue_problem(bad, {"ce"}, set()) == condition.message
    assert "spec.namespaceSelector.matchExpressions[0].operator" in condition.message
    ok = queue(namespaceSelector=TEAM_A)
    assert tenancy.namespaces_condition(ok, [NamespaceInfo("a", {"team": "a"})]).status == "True"


def test_the_transition_time_moves_only_with_the_status() -> None:
    raw_status = {
        "conditions": [
            {"type": "NamespacesSelected", "status": "False", "lastTransitionTime": "t0"}
        ]
    }
    order = [{"order": 0, "computeEnvironment": "ce"}]
    spec = {"priority": 1, "computeEnvironmentOrder": order, "namespaceSelector": TEAM_A}
    q = job_queue_from_raw({"metadata": {"name": "q"}, "spec": spec, "status": raw_status})
    none = tenancy.namespaces_condition(q, [])
    assert merge(q.conditions, [none], 1, "t1")[0]["lastTransitionTime"] == "t0"
    selected = tenancy.namespaces_condition(q, [NamespaceInfo("a", {"team": "a"})])
    assert merge(q.conditions, [selected], 1, "t1")[0]["lastTransitionTime"] == "t1"


def test_a_share_rule_that_conflicts_is_named_on_the_policy() -> None:
    duplicate = policy(
        {"shareIdentifier": "a"}, {"shareIdentifier": "a", "namespaceSelector": TEAM_A}
    )
    assert status.policy_problem(duplicate) == (
        "shareDistribution[1].shareIdentifier: a is also shareDistribution[0]; "
        "each identifier at most once"
    )
    invalid = policy({"shareIdentifier": "a", "namespaceSelector": {"matchLabels": {"t": "a b"}}})
    problem = status.policy_problem(invalid)
    assert problem is not None
    assert problem.startswith("spec.fairsharePolicy.shareDistribution[0].namespaceSelector")


# --- the webhook -------------------------------------------------------------------------


async def _nothing(*_: str) -> None:
    return None


def context(q: JobQueue, *others: JobQueue, **namespaces: dict[str, str]) -> WebhookContext:
    queues = {x.name: x for x in (q, *others)}
    return WebhookContext(
        queue=queues.get,
        queue_names=lambda: list(queues),
        refresh_queue=_nothing,
        refresh_job=_nothing,
        refresh_compute_environment=_nothing,
        job=lambda namespace, name: None,
        capacity=dict,
        admitter=lambda: "ebb",
        namespace=lambda name: (
            NamespaceInfo(name, namespaces[name]) if name in namespaces else None
        ),
    )


def review(ctx: WebhookContext, queue_name: str, namespace: str, **labels: str) -> Any:
    obj = {
        "metadata": {
            "name": "j",
            "namespace": namespace,
            "labels": {keys.QUEUE_LABEL: queue_name, **labels},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}},
    }
    body = {"request": {"uid": "u", "operation": "CREATE", "object": obj}}
    return admission_review(body, ctx, mutating=True)["response"]


def test_the_webhook_refuses_without_listing_other_tenants_queues() -> None:
    mine = job_queue_from_raw(
        {"metadata": {"name": "mine"}, "spec": {"priority": 1, "namespaceSelector": TEAM_A}}
    )
    theirs = job_queue_from_raw(
        {
            "metadata": {"name": "theirs"},
            "spec": {"priority": 1, "namespaceSelector": {"matchLabels": {"team": "b"}}},
        }
    )
    ctx = context(mine, theirs, a={"team": "a"})
    refused = review(ctx, "theirs", "a")
    assert not refused["allowed"]
    assert "job queue theirs does not admit Jobs from namespace a" in refused["status"]["message"]
    missing = review(ctx, "nope", "a")["status"]["message"]
    assert "(queues open to namespace a: mine)" in missing and "theirs" not in missing
    assert review(ctx, "mine", "a")["allowed"]


def test_the_webhook_labels_a_namespace_share() -> None:
    q = job_queue_from_raw(
        {"metadata": {"name": "q"}, "spec": {"priority": 1, "shareIdentifierFromNamespace": True}}
    )
    response = review(context(q, a={}), "q", "a")
    assert response["allowed"]
    patch = json.loads(base64.b64decode(response["patch"]))
    meta = next(op["value"] for op in patch if op["path"] == "/metadata")
    assert meta["labels"][keys.SHARE_LABEL] == "a"


def _queued(**annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "j",
            "namespace": "a",
            "labels": {keys.QUEUE_LABEL: "q"},
            "annotations": {keys.STATE: "RUNNABLE", **annotations},
        },
        "spec": {"suspend": True, "parallelism": 2, "completions": 10},
    }


@pytest.mark.parametrize("key", sorted(keys.PUBLISHED_ANNOTATIONS))
def test_only_ebb_writes_what_it_publishes_on_a_job(key: str) -> None:
    ctx = context(job_queue_from_raw({"metadata": {"name": "q"}, "spec": {"priority": 1}}), a={})
    old = _queued()
    forged = _queued(**{key: "SUCCEEDED" if key != keys.STATE else "RUNNING"})
    with pytest.raises(Rejected, match=rf"metadata.annotations\[{key}\]: is written by"):
        validate_update(old, forged, "alice", ctx)
    validate_update(old, forged, "ebb", ctx)  # Ebb's own write


def test_a_tenant_cannot_raise_a_queued_arrays_parallelism() -> None:
    ctx = context(job_queue_from_raw({"metadata": {"name": "q"}, "spec": {"priority": 1}}), a={})
    old, wider = _queued(), _queued()
    wider["spec"]["parallelism"] = 10
    with pytest.raises(Rejected, match=r"spec.parallelism: Ebb sets it for Jobs of"):
        validate_update(old, wider, "alice", ctx)
    validate_update(old, wider, "ebb", ctx)


def test_a_new_job_starts_without_a_forged_history() -> None:
    q = job_queue_from_raw({"metadata": {"name": "q"}, "spec": {"priority": 1}})
    forged = {keys.ATTEMPTS: "[]", keys.ADMITTED_AT: "2020-01-01T00:00:00Z", keys.STATE: "X"}
    obj = {
        "metadata": {
            "name": "j",
            "namespace": "a",
            "labels": {keys.QUEUE_LABEL: "q"},
            "annotations": forged,
        },
        "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}},
    }
    body = {"request": {"uid": "u", "operation": "CREATE", "object": obj}}
    response = admission_review(body, context(q, a={}), mutating=True)["response"]
    assert response["allowed"]
    patch = json.loads(base64.b64decode(response["patch"]))
    annotations = next(op["value"] for op in patch if op["path"] == "/metadata")["annotations"]
    assert keys.ATTEMPTS not in annotations and keys.ADMITTED_AT not in annotations
    assert annotations[keys.STATE] == "SUBMITTED"
