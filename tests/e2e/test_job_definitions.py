"""JobDefinitions (AWS Batch's, EKS) on the real control plane: registered as revisions,
submitted against with `kubectl ebb submit`, `Ref::` parameters and overrides applied by
the webhook, and bad input refused naming the field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ebb import keys, kube
from local_stack import builders
from local_stack.batch import batch_env, unique, wait_state
from local_stack.harness import LocalCluster
from tests.e2e.test_kubectl_plugin import kubectl_ebb, run_kubectl_ebb

pytestmark = pytest.mark.usefixtures("scheduler_daemon")


def definition(name: str, args: list[str], *, parameters: dict[str, str] | None = None) -> Any:
    return builders.job_definition(
        name,
        {
            "type": "container",
            "parameters": parameters or {},
            "retryStrategy": {"attempts": 2},
            "timeout": {"attemptDurationSeconds": 600},
            "tags": {"team": "genomics"},
            "propagateTags": True,
            "eksProperties": {
                "podProperties": {
                    "metadata": {"annotations": {"kwok.ebb.dev/run-seconds": "1"}},
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox:1",
                            "command": ["echo"],
                            "args": args,
                            "env": [{"name": "STAGE", "value": "align"}],
                            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
                        }
                    ],
                }
            },
        },
    )


def submit(cluster: LocalCluster, namespace: str, *args: str) -> Any:
    return orjson.loads(kubectl_ebb(cluster, "submit", "-n", namespace, "-o", "json", *args))


def refused(cluster: LocalCluster, namespace: str, *args: str) -> str:
    proc = run_kubectl_ebb(cluster, cluster.kubeconfig, "submit", "-n", namespace, *args)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


async def test_submit_against_a_definition_with_parameters_overrides_and_revisions(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=4)
        q = await env.queue(unique("q"), [ce])
        jd = unique("align")
        await kube_client.create(
            kube.JOB_DEFINITIONS,
            definition(
                f"{jd}-1", ["Ref::input", "--threads=Ref::threads"], parameters={"threads": "2"}
            ),
            namespace,
        )
        out = submit(
            cluster,
            namespace,
            *("--job-name", "first", "--job-queue", q, "--job-definition", jd),
            *("--parameters", "input=s3://bucket/a.fastq"),
        )
        assert out["jobDefinition"] == f"{jd}:1"
        job = await kube_client.get(kube.JOBS, "first", namespace)
        template = job["spec"]["template"]
        container = template["spec"]["containers"][0]
        assert container["args"] == ["s3://bucket/a.fastq", "--threads=2"]
        # The definition's vCPUs and memory, and the stamp that sends a batch pod to Ebb's
        # extender (docs/decisions/0011).
        assert container["resources"]["requests"] == {
            "cpu": "500m",
            "memory": "256Mi",
            keys.BATCH_POD_RESOURCE: "1",
        }
        assert template["metadata"]["annotations"]["team"] == "genomics"
        ann = job["metadata"]["annotations"]
        assert orjson.loads(ann[keys.RETRY_STRATEGY]) == {"attempts": 2}
        assert ann[keys.TIMEOUT_SECONDS] == "600"
        await wait_state(kube_client, namespace, "first", "SUCCEEDED")
        pods = await kube_client.list(
            kube.PODS, namespace, label_selector="batch.kubernetes.io/job-name=first"
        )
        assert pods.items[0]["spec"]["containers"][0]["args"][0] == "s3://bucket/a.fastq"
        assert "Definition: " + f"{jd}:1" in kubectl_ebb(
            cluster, "describe", "first", "-n", namespace
        )

        # An edit is a new revision; a revision itself cannot change.
        edited = definition(f"{jd}-1", ["changed"])
        edited["metadata"]["resourceVersion"] = (
            await kube_client.get(kube.JOB_DEFINITIONS, f"{jd}-1", namespace)
        )["metadata"]["resourceVersion"]
        with pytest.raises(kube.ApiError, match="spec: a job definition revision is immutable"):
            await kube_client.replace(kube.JOB_DEFINITIONS, f"{jd}-1", edited, namespace)
        await kube_client.create(
            kube.JOB_DEFINITIONS, definition(f"{jd}-2", ["rev2", "Ref::input"]), namespace
        )
        overrides = [{"name": "main", "image": "busybox:2", "args": ["override", "Ref::input"]}]
        latest = submit(
            cluster,
            namespace,
            *("--job-name", "latest", "--job-queue", q, "--job-definition", jd),
            *("--parameters", "input=x", "--container-overrides", orjson.dumps(overrides).decode()),
        )
        assert latest["jobDefinition"] == f"{jd}:2"
        pinned = submit(
            cluster,
            namespace,
            *("--job-name", "pinned", "--job-queue", q, "--job-definition", f"{jd}:1"),
            *("--parameters", "input=y"),
        )
        assert pinned["jobDefinition"] == f"{jd}:1"
        for name, image, args in (
            ("latest", "busybox:2", ["override", "x"]),
            ("pinned", "busybox:1", ["y", "--threads=2"]),
        ):
            job = await kube_client.get(kube.JOBS, name, namespace)
            container = job["spec"]["template"]["spec"]["containers"][0]
            assert (container["image"], container["args"]) == (image, args)
            await wait_state(kube_client, namespace, name, "SUCCEEDED")


async def test_bad_definitions_and_submissions_are_refused_naming_the_field(
    cluster: LocalCluster, kube_client: kube.KubeClient, namespace: str
) -> None:
    async with batch_env(kube_client) as env:
        ce = await env.compute_environment(unique("ce"), max_vcpus=4)
        q = await env.queue(unique("q"), [ce])
        jd = unique("bad")
        await kube_client.create(
            kube.JOB_DEFINITIONS, definition(f"{jd}-1", ["Ref::input"]), namespace
        )
        base = ("--job-queue", q, "--job-name")
        assert f"annotations[{keys.JOB_DEFINITION}]: job definition 'nope' does not exist" in (
            refused(cluster, namespace, *base, "a", "--job-definition", "nope")
        )
        assert "has no active revision 7 (active revisions: 1)" in refused(
            cluster, namespace, *base, "b", "--job-definition", f"{jd}:7"
        )
        assert "spec.template.spec.containers[0].args: Ref::input has no value" in refused(
            cluster, namespace, *base, "c", "--job-definition", jd
        )
        assert "spec.template.spec.containers[0].name: job definition" in refused(
            cluster,
            namespace,
            *base,
            "d",
            *("--job-definition", jd, "--parameters", "input=z"),
            *("--container-overrides", '[{"name": "sidecar", "image": "x"}]'),
        )
        too_big = definition(f"{jd}-2", ["x" * 25_000])
        with pytest.raises(kube.ApiError, match=r"spec: .* exceeds AWS Batch's limit of 24576"):
            await kube_client.create(kube.JOB_DEFINITIONS, too_big, namespace)
        gpu = definition(f"{jd}-3", [])
        gpu["spec"]["eksProperties"]["podProperties"]["containers"][0]["resources"] = {
            "limits": {"memory": "1.5Mi"}
        }
        with pytest.raises(
            kube.ApiError, match=r"resources\.limits\.memory: 1\.5Mi is not a whole"
        ):
            await kube_client.create(kube.JOB_DEFINITIONS, gpu, namespace)
        # Nothing else stops: the good definition still runs.
        submit(
            cluster,
            namespace,
            *base,
            "good",
            *("--job-definition", jd, "--parameters", "input=z"),
        )
        await wait_state(kube_client, namespace, "good", "SUCCEEDED")
        jobs = await kube_client.list(kube.JOBS, namespace)
        assert sorted(j["metadata"]["name"] for j in jobs.items) == ["good"]
