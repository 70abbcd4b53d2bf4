"""AWS Batch's environment variables: stamped once by the webhook, the user's refused,
the attempt number derived at bind (and carried by the Binding)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ebb import keys
from ebb.jobspec import parse_job_spec
from extender.placement.protocol import BindingArgs
from extender.placement.service import Binding, attempt_number
from extender.webhook.batch_env import user_batch_env
from extender.webhook.mutation import mutate
from tests.unit.placement_objects import pod
from tests.unit.test_placement_binding import extender_with


def job(name: str = "j", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "labels": {keys.QUEUE_LABEL: "q"}},
        "spec": {
            "template": {"spec": {"containers": [{"name": "main"}, {"name": "side"}]}},
            **spec,
        },
    }


def env(out: dict[str, Any], container: int = 0) -> dict[str, Any]:
    variables = out["spec"]["template"]["spec"]["containers"][container]["env"]
    return {v["name"]: v.get("value", v.get("valueFrom")) for v in variables}


def field(path: str) -> dict[str, Any]:
    return {"fieldRef": {"fieldPath": path}}


def test_a_single_job_gets_its_id_queue_and_the_bind_time_variables_in_every_container() -> None:
    out = mutate(job(), parse_job_spec({}))
    for container in (0, 1):
        assert env(out, container) == {
            "AWS_BATCH_JQ_NAME": "q",
            "AWS_BATCH_CE_NAME": field("metadata.annotations['ebb.dev/compute-environment']"),
            "AWS_BATCH_JOB_ATTEMPT": field("metadata.annotations['ebb.dev/attempt']"),
            "AWS_BATCH_JOB_ID": "j",
        }


def test_an_array_child_gets_index_size_and_an_id_naming_its_index() -> None:
    out = mutate(job(completionMode="Indexed", completions=5), parse_job_spec({}))
    variables = env(out)
    assert variables["AWS_BATCH_JOB_ARRAY_SIZE"] == "5"
    assert variables["AWS_BATCH_JOB_ARRAY_INDEX"] == field(
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert variables["AWS_BATCH_JOB_ID"] == "j:$(AWS_BATCH_JOB_ARRAY_INDEX)"
    names = list(variables)  # $(VAR) expands only variables defined before it
    assert names.index("AWS_BATCH_JOB_ARRAY_INDEX") < names.index("AWS_BATCH_JOB_ID")


def test_a_gang_node_keeps_its_variables_and_its_id_names_the_node() -> None:
    spec = parse_job_spec({keys.NODES: "2"})
    out = mutate(job(completionMode="Indexed", completions=2, parallelism=2), spec)
    variables = env(out)
    assert variables["AWS_BATCH_JOB_NUM_NODES"] == "2"
    assert variables["AWS_BATCH_JOB_ID"] == "j#$(AWS_BATCH_JOB_NODE_INDEX)"
    assert "AWS_BATCH_JOB_ARRAY_SIZE" not in variables


def test_a_job_without_a_name_reads_it_from_the_job_controllers_label() -> None:
    raw = job()
    del raw["metadata"]["name"]
    assert env(mutate(raw, parse_job_spec({})))["AWS_BATCH_JOB_ID"] == field(
        "metadata.labels['batch.kubernetes.io/job-name']"
    )


def test_a_user_aws_batch_variable_is_refused_naming_container_and_variable() -> None:
    template = {
        "containers": [{"name": "main", "env": [{"name": "HOME", "value": "/"}]}],
        "initContainers": [{"name": "setup", "env": [{"name": "AWS_BATCH_JOB_ID"}]}],
    }
    refusal = user_batch_env(template)
    assert refusal is not None
    assert refusal.startswith("spec.template.spec.initContainers[setup].env[AWS_BATCH_JOB_ID]: ")
    assert user_batch_env({"containers": [{"name": "main", "env": [{"name": "AWS"}]}]}) is None


def test_the_attempt_is_the_index_failures_or_the_jobs_failures_plus_one() -> None:
    child = dataclasses.replace(pod("p", "q"), index_failures=2)
    assert attempt_number(child, None) == 3
    assert attempt_number(pod("p", "q"), 0) == 1
    assert attempt_number(pod("p", "q"), 2) == 3


async def test_the_binding_carries_the_attempt_and_the_nodes_environment() -> None:
    sent: list[Mapping[str, str]] = []
    asked: list[tuple[str, str]] = []

    async def post(args: BindingArgs, annotations: Mapping[str, str]) -> None:
        sent.append(annotations)

    async def failures(namespace: str, name: str) -> int:
        asked.append((namespace, name))
        return 2

    single = dataclasses.replace(pod("single", "q", namespace="ns"), job_name="j")
    child = dataclasses.replace(single, name="child", index_failures=0)
    extender = extender_with(
        {"ns/single": single, "ns/child": child},
        Binding(post, failures, concurrency=1, wait=1, assumed_pod_ttl=30),
    )
    assert await extender.bind(BindingArgs("single", "ns", "", "batch")) == ""
    assert await extender.bind(BindingArgs("child", "ns", "", "batch")) == ""
    assert sent == [
        {keys.POD_COMPUTE_ENVIRONMENT: "ce", keys.POD_ATTEMPT: "3"},
        {keys.POD_COMPUTE_ENVIRONMENT: "ce", keys.POD_ATTEMPT: "1"},
    ]
    assert asked == [("ns", "j")]  # the array child's count is on the pod


def test_a_job_exported_and_created_again_gets_ebbs_variables_afresh() -> None:
    exported = {
        "containers": [{"name": "main", "env": [{"name": "AWS_BATCH_JOB_ID", "value": "x"}]}]
    }
    assert user_batch_env(exported) is None  # Ebb's own name in a container: set afresh
    assert (
        user_batch_env(
            {"containers": [{"name": "main", "env": [{"name": "AWS_BATCH_FOO", "value": "x"}]}]}
        )
        is not None
    )


def test_stamping_twice_sets_each_variable_once() -> None:
    once = mutate(job(), parse_job_spec({}))
    twice = mutate(once, parse_job_spec({}))
    names = [v["name"] for v in twice["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert sorted(names) == sorted(set(names)) and env(twice) == env(once)
