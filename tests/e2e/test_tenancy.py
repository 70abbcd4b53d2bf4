"""Tenancy on the real control plane: which namespaces may use a queue
(JobQueue.spec.namespaceSelector) and a share identifier (shareDistribution[].
namespaceSelector), a namespace's name as its share, and tenants' bad input.

A Job that gets past the webhook is labelled into its queue by a writer the webhook
does not review (Ebb's own service account, impersonated): the scheduler must still
never admit it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from ebb import keys, kube
from local_stack import builders
from local_stack.batch import BatchEnv, annotation, batch_env, unique, wait_state
from local_stack.harness import LocalCluster, wait_for
from tests.e2e.test_kubectl_plugin import kubectl_ebb

pytestmark = pytest.mark.usefixtures("scheduler_daemon")
UNREVIEWED = "system:serviceaccount:ebb-system:ebb-scheduler"  # the webhooks skip its writes
NewNamespace = Callable[..., Awaitable[str]]


@pytest.fixture
async def tenant(kube_client: kube.KubeClient) -> AsyncIterator[NewNamespace]:
    """Makes namespaces with labels; deletes them after the test."""
    made: list[str] = []

    async def make(**labels: str) -> str:
        name = f"tn-{uuid.uuid4().hex[:8]}"
        await kube_client.create(kube.NAMESPACES, {"metadata": {"name": name, "labels": labels}})
        made.append(name)
        return name

    yield make
    for name in made:
        await kube_client.delete(kube.NAMESPACES, name)


async def tenant_queue(env: BatchEnv, **spec: Any) -> str:
    """A queue over a fresh environment, with these spec fields from its creation (the
    webhook may not have seen a later change yet)."""
    ce = await env.compute_environment(unique("ce"))
    q = unique("q")
    await env.create(kube.JOB_QUEUES, builders.job_queue(q, ce, **spec))
    return q


def label_unreviewed(cluster: LocalCluster, namespace: str, job: str, *labels: str) -> None:
    """Put a suspended Job in a queue past the webhooks (they skip Ebb's own writes)."""
    cluster.kubectl("label", "job", job, "-n", namespace, f"--as={UNREVIEWED}", *labels)


async def create_unreviewed(
    cluster: LocalCluster, client: kube.KubeClient, namespace: str, name: str, queue: str, **kw: Any
) -> None:
    body = builders.job(name, queue, suspend=True, **kw)
    labels = body["metadata"]["labels"]
    del labels[keys.QUEUE_LABEL]
    await client.create(kube.JOBS, body, namespace)
    label_unreviewed(cluster, namespace, name, f"{keys.QUEUE_LABEL}={queue}")


async def test_a_queue_refuses_jobs_from_namespaces_it_does_not_select(
    kube_client: kube.KubeClient, tenant: NewNamespace
) -> None:
    team_a, team_b = await tenant(team="a"), await tenant(team="b")
    async with batch_env(kube_client) as env:
        q = await tenant_queue(env, namespaceSelector={"matchLabels": {"team": "a"}})
        other = await tenant_queue(env, namespaceSelector={"matchLabels": {"team": "a"}})
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(kube.JOBS, builders.job("j", q), team_b)
        message = info.value.message
        assert f"metadata.labels[{keys.QUEUE_LABEL}]: job queue {q} does not admit" in message
        assert f"namespace {team_b}" in message
        assert "spec.namespaceSelector (team=a)" in message
        assert other not in message  # another tenant's queue is not listed
        # Nor when the queue does not exist: only the queues open to the namespace are named.
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(kube.JOBS, builders.job("j", "no-such-queue"), team_b)
        assert f"queues open to namespace {team_b}: " in info.value.message
        assert q not in info.value.message and other not in info.value.message
        await kube_client.create(kube.JOBS, builders.job("j", q), team_a)
        await wait_state(kube_client, team_a, "j", "SUCCEEDED")


async def test_a_job_past_the_webhook_waits_until_its_namespace_is_selected(
    cluster: LocalCluster, kube_client: kube.KubeClient, tenant: NewNamespace
) -> None:
    team_a, team_b = await tenant(team="a"), await tenant(team="b")
    async with batch_env(kube_client) as env:
        q = await tenant_queue(env, namespaceSelector={"matchLabels": {"team": "a"}})
        await create_unreviewed(cluster, kube_client, team_b, "stray", q)
        await create_unreviewed(cluster, kube_client, team_a, "fine", q)
        await wait_state(kube_client, team_a, "fine", "SUCCEEDED")
        stray = await wait_state(kube_client, team_b, "stray", "RUNNABLE")
        assert annotation(stray, keys.REASON_CODE) == "MISCONFIGURATION:NAMESPACE_NOT_ALLOWED"
        assert stray["spec"]["suspend"] is True
        why = kubectl_ebb(cluster, "why", "stray", "-n", team_b)
        assert f"job queue {q} does not admit Jobs from namespace {team_b}" in why, why
        assert "spec.namespaceSelector (team=a)" in why
        # The namespace's labels change: the job goes on.
        await kube_client.patch(kube.NAMESPACES, team_b, {"metadata": {"labels": {"team": "a"}}})
        await wait_state(kube_client, team_b, "stray", "SUCCEEDED")


async def test_a_namespace_name_is_the_share_of_a_job_without_one(
    cluster: LocalCluster, kube_client: kube.KubeClient, tenant: NewNamespace
) -> None:
    team = await tenant()
    async with batch_env(kube_client) as env:
        policy = await env.policy(unique("fair"), {team: 2.0})
        q = await tenant_queue(env, shareIdentifierFromNamespace=True, schedulingPolicy=policy)
        # "labelled" fills the one node, so "bare" waits where `kubectl ebb why` shows its share.
        await kube_client.create(
            kube.JOBS, builders.job("labelled", q, share="other", cpu="4", run_seconds=15), team
        )
        await wait_state(kube_client, team, "labelled", "RUNNING")
        await kube_client.create(kube.JOBS, builders.job("bare", q), team)
        await wait_state(kube_client, team, "bare", "STARTING")
        why = kubectl_ebb(cluster, "why", "bare", "-n", team)
        assert f"share {team} weight 2" in why, why
        jobs = kubectl_ebb(cluster, "jobs", "-n", team)
        assert any(line.split()[1:4] == ["bare", q, team] for line in jobs.splitlines()), jobs
        bare = await wait_state(kube_client, team, "bare", "SUCCEEDED")
        assert bare["metadata"]["labels"][keys.SHARE_LABEL] == team
        assert bare["spec"]["template"]["metadata"]["labels"][keys.SHARE_LABEL] == team
        labelled = await wait_state(kube_client, team, "labelled", "SUCCEEDED")
        assert labelled["metadata"]["labels"][keys.SHARE_LABEL] == "other"


async def test_a_share_claimed_from_a_namespace_it_is_not_open_to_is_refused(
    cluster: LocalCluster, kube_client: kube.KubeClient, tenant: NewNamespace
) -> None:
    team_a, team_b = await tenant(team="a"), await tenant(team="b")
    async with batch_env(kube_client) as env:
        policy = unique("fair")
        shares = [
            builders.share("open"),
            builders.share("team-a*", namespaceSelector={"matchLabels": {"team": "a"}}),
        ]
        await env.create(kube.SCHEDULING_POLICIES, builders.scheduling_policy(policy, shares))
        q = await tenant_queue(env, schedulingPolicy=policy)
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(kube.JOBS, builders.job("j", q, share="team-a-etl"), team_b)
        message = info.value.message
        assert f"metadata.labels[{keys.SHARE_LABEL}]: share identifier 'team-a-etl'" in message
        assert f"may not be used from namespace {team_b}" in message
        assert f"{policy} spec.fairsharePolicy.shareDistribution[1] (team-a*)" in message
        assert "namespaceSelector (team=a)" in message
        await kube_client.create(kube.JOBS, builders.job("open", q, share="open"), team_b)
        await kube_client.create(kube.JOBS, builders.job("j", q, share="team-a-etl"), team_a)
        # Past the webhook, the scheduler refuses it too.
        await create_unreviewed(cluster, kube_client, team_b, "stray", q, share="team-a-etl")
        stray = await wait_state(kube_client, team_b, "stray", "RUNNABLE")
        assert annotation(stray, keys.REASON_CODE) == (
            "MISCONFIGURATION:SHARE_IDENTIFIER_NOT_ALLOWED"
        )
        assert "shareDistribution[1] (team-a*)" in annotation(stray, keys.REASON)
        await wait_state(kube_client, team_a, "j", "SUCCEEDED")
        await wait_state(kube_client, team_b, "open", "SUCCEEDED")
        assert (await kube_client.get(kube.JOBS, "stray", team_b))["spec"]["suspend"] is True


# --- bad input from tenants ------------------------------------------------------------


def queue_with(selector: Any) -> dict[str, Any]:
    return builders.job_queue(unique("bad-q"), "ce", namespaceSelector=selector)


SELECTOR_ROWS = [
    (
        "unknown-operator",
        {"matchExpressions": [{"key": "team", "operator": "Contains", "values": ["a"]}]},
        "spec.namespaceSelector.matchExpressions[0].operator: Unsupported value",
    ),
    (
        "in-without-values",
        {"matchExpressions": [{"key": "team", "operator": "In"}]},
        "spec.namespaceSelector.matchExpressions[0].values: Invalid value",
    ),
    (
        "bad-label-key",
        {"matchLabels": {"team a": "x"}},
        "spec.namespaceSelector.matchLabels: Invalid value",
    ),
    (
        "bad-label-value",
        {"matchLabels": {"team": "a b"}},
        "spec.namespaceSelector.matchLabels.team: Invalid value",
    ),
]


@pytest.mark.parametrize(
    ("selector", "error"), [r[1:] for r in SELECTOR_ROWS], ids=[r[0] for r in SELECTOR_ROWS]
)
async def test_an_invalid_selector_is_refused_naming_the_field(
    kube_client: kube.KubeClient, selector: Any, error: str
) -> None:
    with pytest.raises(kube.ApiError) as info:
        await kube_client.create(kube.JOB_QUEUES, queue_with(selector))
    assert info.value.status == 422, info.value
    assert error in info.value.message, info.value.message
    good = queue_with({"matchExpressions": [{"key": "team", "operator": "Exists"}]})
    await kube_client.create(kube.JOB_QUEUES, good)
    await kube_client.delete(kube.JOB_QUEUES, good["metadata"]["name"])


async def test_a_selector_that_selects_no_namespace_says_so_and_nothing_else_stops(
    cluster: LocalCluster, kube_client: kube.KubeClient, tenant: NewNamespace
) -> None:
    team = await tenant(team="a")
    async with batch_env(kube_client) as env:
        nobody = await tenant_queue(env, namespaceSelector={"matchLabels": {"team": "nobody"}})
        q = await tenant_queue(env)

        async def condition() -> dict[str, Any] | None:
            raw = await kube_client.get(kube.JOB_QUEUES, nobody)
            found = [
                c
                for c in (raw.get("status") or {}).get("conditions") or ()
                if c["type"] == "NamespacesSelected"
            ]
            return found[0] if found else None

        found = await wait_for(condition, 30, message="NamespacesSelected on the queue")
        assert found["status"] == "False"
        assert found["reason"] == "NoNamespaceSelected"
        assert "spec.namespaceSelector (team=nobody) selects no namespace" in found["message"]
        printed = cluster.kubectl("get", "jobqueue", nobody, "-o", "json")
        assert json.loads(printed)["status"]["status"] == "VALID"  # the queue itself works
        await kube_client.create(kube.JOBS, builders.job("j", q), team)
        await wait_state(kube_client, team, "j", "SUCCEEDED")


async def test_a_job_in_a_namespace_being_deleted_is_not_admitted(
    cluster: LocalCluster, kube_client: kube.KubeClient, tenant: NewNamespace
) -> None:
    going, staying = await tenant(), await tenant()
    hold = "ebb.dev/test-hold"
    async with AsyncExitStack() as stack, batch_env(kube_client) as env:
        q = await tenant_queue(env)
        body = builders.job("late", q, suspend=True)
        del body["metadata"]["labels"][keys.QUEUE_LABEL]
        body["metadata"]["finalizers"] = [hold]
        await kube_client.create(kube.JOBS, body, going)

        async def release() -> None:
            await kube_client.patch(kube.JOBS, "late", {"metadata": {"finalizers": None}}, going)

        stack.push_async_callback(release)
        await kube_client.delete(kube.NAMESPACES, going)

        async def terminating() -> bool:
            job = await kube_client.get(kube.JOBS, "late", going)
            return bool(job["metadata"].get("deletionTimestamp"))

        await wait_for(terminating, 30, message="the namespace's Job being deleted")
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(kube.JOBS, builders.job("new", q), going)
        assert "being terminated" in info.value.message  # the API server's own refusal
        label_unreviewed(cluster, going, "late", f"{keys.QUEUE_LABEL}={q}")
        late = await wait_state(kube_client, going, "late", "RUNNABLE")
        assert annotation(late, keys.REASON_CODE) == "NAMESPACE:TERMINATING"
        assert f"namespace {going} is being deleted" in annotation(late, keys.REASON)
        assert (await kube_client.get(kube.JOBS, "late", going))["spec"]["suspend"] is True
        # Nothing else stops.
        await kube_client.create(kube.JOBS, builders.job("j", q), staying)
        await wait_state(kube_client, staying, "j", "SUCCEEDED")
