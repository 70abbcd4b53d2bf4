"""Job definitions: parsing, resolving revisions, Ref:: parameters and overrides."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebb import keys
from ebb.jobdefinition import (
    DefinitionError,
    apply_definition,
    complete_resources,
    job_definition_from_raw,
    parse_reference,
    substitute,
)


def raw(name: str = "train-1", **spec: Any) -> dict[str, Any]:
    pod = spec.pop("pod", None) or {
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "command": ["run", "Ref::input"],
                "resources": {"limits": {"cpu": "1", "memory": "2048Mi"}},
            }
        ]
    }
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"eksProperties": {"podProperties": pod}, **spec},
    }


def job(annotations: dict[str, str], containers: list[Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "namespace": "ns", "annotations": annotations},
        "spec": {"template": {"spec": {"containers": containers or []}}},
    }


def test_requests_are_copied_from_limits() -> None:
    definition = job_definition_from_raw(raw())
    assert definition.pod["containers"][0]["resources"] == {
        "limits": {"cpu": "1", "memory": "2048Mi"},
        "requests": {"cpu": "1", "memory": "2048Mi"},
    }
    assert (definition.name, definition.revision, definition.namespace) == ("train", 1, "ns")


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"limits": {"memory": "3Mi"}}, "limits.memory: 3Mi is not a whole number of MiB"),
        ({"limits": {"memory": "1000000"}}, "limits.memory: 1000000 is not a whole number"),
        ({"limits": {keys.GPU_RESOURCE: "0.5"}}, "not a whole number of GPUs"),
        (
            {"limits": {keys.GPU_RESOURCE: "1"}, "requests": {keys.GPU_RESOURCE: "2"}},
            f"requests[{keys.GPU_RESOURCE}]: must equal the limit",
        ),
        ({"limits": {"ephemeral-storage": "1Gi"}}, "limits.ephemeral-storage: not supported"),
        ({"limits": {"cpu": "2"}, "requests": {"cpu": "3"}}, "requests.cpu: 3 exceeds the limit"),
        ({"limits": {"cpu": "lots"}}, "limits.cpu: 'lots' is not a quantity"),
    ],
)
def test_resources_follow_aws_batch_on_eks(resources: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match=r"^res") as info:
        complete_resources(resources, "res")
    assert message in str(info.value)


def test_millicores_are_accepted() -> None:
    assert complete_resources({"limits": {"cpu": "250m"}}, "r") == {
        "limits": {"cpu": "250m"},
        "requests": {"cpu": "250m"},
    }


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (raw("train"), "metadata.name: 'train' must be <definition name>-<revision>"),
        (raw(type="multinode"), "spec.type: 'multinode' is not supported"),
        (raw(containerProperties={}), "spec: unknown field(s) containerProperties"),
        (raw(timeout={"attemptDurationSeconds": 5}), "spec.timeout.attemptDurationSeconds: 5"),
        (raw(retryStrategy={"attempts": 11}), "spec.retryStrategy.attempts: 11"),
        (raw(parameters={"a": 1}), "spec.parameters[a]: must be a string"),
        (raw(pod={"containers": []}), "podProperties.containers: must be a list of at least"),
        (raw(pod={"containers": [{"name": "a"}]}), "podProperties.containers[0].image: is"),
        (
            raw(pod={"containers": [{"image": "x", "ports": []}]}),
            "containers[0]: unknown field(s) ports",
        ),
        (
            raw(pod={"containers": [{"image": "x"}], "volumes": [{"name": "v", "nfs": {}}]}),
            "podProperties.volumes[0]: unknown field(s) nfs",
        ),
        (raw(tags={"x": "y" * 30_000}), "exceeds AWS Batch's limit of 24576 bytes"),
    ],
)
def test_bad_definitions_name_the_field(obj: Any, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        job_definition_from_raw(obj)
    assert message in str(info.value)


def test_reference_names_the_latest_or_one_revision() -> None:
    revisions = [job_definition_from_raw(raw(f"train-{r}")) for r in (1, 2, 3)]
    for reference, revision in (("train", 3), ("train:1", 1), ("train:2", 2)):
        built = apply_definition(
            job({keys.JOB_DEFINITION: reference, keys.PARAMETERS: '{"input": "a"}'}), revisions
        )
        assert built["metadata"]["annotations"][keys.JOB_DEFINITION] == f"train:{revision}"
    with pytest.raises(DefinitionError, match=r"no active revision 9 .active revisions: 1, 2, 3"):
        apply_definition(job({keys.JOB_DEFINITION: "train:9"}), revisions)
    with pytest.raises(DefinitionError, match="'other' does not exist"):
        apply_definition(job({keys.JOB_DEFINITION: "other"}), revisions)
    with pytest.raises(DefinitionError, match="is not NAME or NAME:REVISION"):
        parse_reference("train:0")


def test_parameters_defaults_and_overrides() -> None:
    definition = job_definition_from_raw(
        raw(
            parameters={"input": "default", "n": "1"},
            retryStrategy={"attempts": 3},
            schedulingPriority=7,
            tags={"team": "a"},
            propagateTags=True,
        )
    )
    override = {
        "name": "main",
        "image": "busybox:2",
        "args": ["--n=Ref::n"],
        "env": [{"name": "X", "value": "1"}],
        "resources": {"limits": {"cpu": "2", "memory": "4096Mi"}},
    }
    built = apply_definition(
        job(
            {
                keys.JOB_DEFINITION: "train",
                keys.PARAMETERS: '{"n": "8"}',
                keys.SCHEDULING_PRIORITY: "9",
            },
            [override],
        ),
        [definition],
    )
    template = built["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert container["command"] == ["run", "default"]
    assert container["args"] == ["--n=8"]
    assert container["image"] == "busybox:2"
    assert container["env"] == [{"name": "X", "value": "1"}]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4096Mi"}
    assert template["spec"]["restartPolicy"] == "Never"
    assert template["metadata"]["annotations"] == {"team": "a"}
    ann = built["metadata"]["annotations"]
    assert orjson.loads(ann[keys.RETRY_STRATEGY]) == {"attempts": 3}
    assert ann[keys.SCHEDULING_PRIORITY] == "9"  # the Job's own wins


@pytest.mark.parametrize(
    ("annotations", "containers", "message"),
    [
        ({}, [], "containers[0].command: Ref::input has no value"),
        (
            {keys.PARAMETERS: '{"input": "a"}'},
            [{"name": "side", "image": "x"}],
            "spec.template.spec.containers[0].name: job definition train:1 has no container "
            "'side' to override (its containers: main)",
        ),
        ({keys.PARAMETERS: "[1]"}, [], f"annotations[{keys.PARAMETERS}]: must be a JSON object"),
    ],
)
def test_bad_submissions_name_the_field(
    annotations: dict[str, str], containers: list[Any], message: str
) -> None:
    definition = job_definition_from_raw(raw())
    with pytest.raises(DefinitionError) as info:
        apply_definition(
            job({keys.JOB_DEFINITION: "train", **annotations}, containers), [definition]
        )
    assert message in str(info.value)


_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@given(
    st.dictionaries(_NAMES, st.text(max_size=10), min_size=1),
    st.text(alphabet="ab -=/.:", max_size=10),
)
def test_every_placeholder_is_replaced_by_its_value(values: dict[str, str], text: str) -> None:
    """Values are inserted as they are (a value holding "Ref::x" is not substituted again)."""
    words = [f"{text}Ref::{name}" for name in values] + [text]
    assert substitute(words, values, "w") == [f"{text}{v}" for v in values.values()] + [text]
