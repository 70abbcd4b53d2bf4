"""Dependencies on the real control plane: chains, runtime dependencies, types, cycles,
and array dependencies (SEQUENTIAL, N_TO_N)."""

from __future__ import annotations

import itertools

import pytest

from ebb import keys, kube
from local_stack import builders
from local_stack.batch import annotation, batch_env, unique, wait_state

pytestmark = pytest.mark.usefixtures("scheduler_daemon")


async def test_a_failed_middle_job_fails_its_descendants_with_the_reason(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])

        async def create(
            name: str, depends: str | None, run_seconds: float = 1, exit_code: int | None = None
        ) -> None:
            ann = {keys.DEPENDS_ON: depends} if depends else {}
            body = builders.job(
                name, q, annotations=ann, run_seconds=run_seconds, exit_code=exit_code
            )
            await kube_client.create(kube.JOBS, body, namespace)

        # Runtime dependencies: the leaves exist before what they wait for.
        await create("leaf", "middle2")
        await create("middle2", "middle")
        leaf = await wait_state(kube_client, namespace, "leaf", "PENDING")
        assert "job middle2" in annotation(leaf, keys.REASON)
        waiting = await wait_state(kube_client, namespace, "middle2", "PENDING")
        assert "job middle (not created yet)" in annotation(waiting, keys.REASON)
        await create("root", None, run_seconds=1)
        await create("middle", "root", run_seconds=1, exit_code=3)
        await create("report", "middle:afterany", run_seconds=1)
        await create("on-failure", "middle:afternotok", run_seconds=1)
        await create("on-success", "middle:afternotok,root", run_seconds=1)

        root = await wait_state(kube_client, namespace, "root", "SUCCEEDED")
        middle = await wait_state(kube_client, namespace, "middle", "FAILED")
        assert annotation(root, keys.STATE) == "SUCCEEDED"
        assert '"exitCode":3' in annotation(middle, keys.ATTEMPTS)
        m2 = await wait_state(kube_client, namespace, "middle2", "FAILED")
        assert annotation(m2, keys.REASON) == "dependency middle failed"
        assert annotation(m2, keys.REASON_CODE) == "DEPENDENCY:FAILED"
        leaf = await wait_state(kube_client, namespace, "leaf", "FAILED")
        assert annotation(leaf, keys.REASON) == "dependency middle2 failed"
        # Failed before it ever started: no pod was created, and Kubernetes agrees.
        conditions = {c["type"]: c for c in leaf["status"]["conditions"]}
        assert conditions["Failed"]["reason"] == "EbbDependencyFailed"
        pods = await kube_client.list(kube.PODS, namespace, label_selector="job-name=leaf")
        assert pods.items == []
        await wait_state(kube_client, namespace, "report", "SUCCEEDED")
        await wait_state(kube_client, namespace, "on-failure", "SUCCEEDED")


async def test_afternotok_job_fails_when_its_dependency_succeeds(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(kube.JOBS, builders.job("fine", q), namespace)
        await kube_client.create(
            kube.JOBS,
            builders.job("cleanup", q, annotations={keys.DEPENDS_ON: "fine:afternotok"}),
            namespace,
        )
        done = await wait_state(kube_client, namespace, "cleanup", "FAILED")
        assert annotation(done, keys.REASON) == "dependency fine succeeded (afternotok)"


async def test_dependency_cycles_are_rejected(kube_client: kube.KubeClient, namespace: str) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), nodes=0)
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(
            kube.JOBS, builders.job("a", q, annotations={keys.DEPENDS_ON: "b"}), namespace
        )
        await kube_client.create(
            kube.JOBS, builders.job("b", q, annotations={keys.DEPENDS_ON: "c"}), namespace
        )
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(
                kube.JOBS, builders.job("c", q, annotations={keys.DEPENDS_ON: "a"}), namespace
            )
        assert "dependency cycle c → a → b → c" in info.value.message
        with pytest.raises(kube.ApiError) as info:
            await kube_client.create(
                kube.JOBS, builders.job("self", q, annotations={keys.DEPENDS_ON: "self"}), namespace
            )
        assert "dependency cycle self → self" in info.value.message


async def test_sequential_array_runs_children_in_index_order(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"))
        q = await env.queue(unique("q"), [ce])
        await kube_client.create(
            kube.JOBS,
            builders.job(
                "seq",
                q,
                completions=4,
                parallelism=4,
                indexed=True,
                run_seconds=0.5,
                annotations={keys.ARRAY_DEPENDENCY: "SEQUENTIAL"},
            ),
            namespace,
        )
        done = await wait_state(kube_client, namespace, "seq", "SUCCEEDED")
        assert done["spec"]["parallelism"] == 1
        import orjson

        attempts = orjson.loads(annotation(done, keys.ATTEMPTS))
        ordered = sorted(attempts, key=lambda a: a["startedAt"])
        assert [a["index"] for a in ordered] == [0, 1, 2, 3]
        assert all(a["stoppedAt"] <= b["startedAt"] for a, b in itertools.pairwise(ordered))


async def test_n_to_n_child_waits_for_the_same_index(
    kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=16, nodes=2, node_cpu="8")
        q = await env.queue(unique("q"), [ce])
        # "second" index i may only start after "first" index i succeeded.
        await kube_client.create(
            kube.JOBS,
            builders.job(
                "second",
                q,
                completions=3,
                parallelism=3,
                indexed=True,
                run_seconds=0.5,
                annotations={keys.DEPENDS_ON: "first:n_to_n"},
            ),
            namespace,
        )
        waiting = await wait_state(kube_client, namespace, "second", "PENDING")
        assert "job first (not created yet)" in annotation(waiting, keys.REASON)
        await kube_client.create(
            kube.JOBS,
            builders.job("first", q, completions=3, parallelism=3, indexed=True, run_seconds=3),
            namespace,
        )
        second = await wait_state(kube_client, namespace, "second", "STARTING", "RUNNING")
        gates = second["spec"]["template"]["spec"]["schedulingGates"]
        assert gates == [{"name": keys.N_TO_N_GATE}]
        done = await wait_state(kube_client, namespace, "second", "SUCCEEDED", timeout=90)
        first_done = await kube_client.get(kube.JOBS, "first", namespace)
        import orjson

        starts = {a["index"]: a["startedAt"] for a in orjson.loads(annotation(done, keys.ATTEMPTS))}
        ends = {
            a["index"]: a["stoppedAt"] for a in orjson.loads(annotation(first_done, keys.ATTEMPTS))
        }
        assert all(starts[i] >= ends[i] for i in range(3))
