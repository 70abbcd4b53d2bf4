"""The bad-input matrix, in process: malformed Job annotations and AdmissionReviews sent
to the webhook, malformed extender requests, and malformed SQS messages. Each row is one
bad input, the status it must get and the text of the error, which names the field; after
each, a good request must still get its normal answer (the daemon keeps serving). The
CRDs, whose validation is the API server's, are in tests/e2e/test_bad_input.py.

The webhook and the extender are mounted as the scheduler daemon mounts them (one aiohttp
application, with its body limits); the webhook's view of queues,
Jobs and capacity is a fixed one instead of the daemon's caches. A hypothesis fuzz of the
webhook endpoints closes the file (the extender's is in test_placement_http.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.interruptions import STATE_CHANGE, NoticeError, event, parse_notice
from ebb import keys
from ebb.model import JobQueue
from ebb.resources import Resources
from ebb.server import MAX_BODY_BYTES
from extender.jobs.admission import CapacityLimit, NodeShape
from extender.jobs.snapshot import JobInfo
from extender.placement.routes import add_routes as add_placement_routes
from extender.settings import SchedulerSettings
from extender.webhook import context, routes
from tests.unit.jobs.factories import job as job_info
from tests.unit.jobs.factories import raw_job
from tests.unit.test_placement_http import BATCH_POD, Daemon

Client = TestClient[web.Request, web.Application]
# The daemon's (larger: without nodeCacheCapable, extender requests carry whole Nodes).
EXTENDER_LIMIT = SchedulerSettings().extender_max_body_bytes
GIB = 2**30
ADMITTER = "system:serviceaccount:ebb-system:ebb-scheduler"

# --- the daemon: webhook and extender on one application --------------------------------

QUEUES = {
    "q": JobQueue("q", 1, ("ce",)),
    "off": JobQueue("off", 1, ("ce",), state="DISABLED"),
}
CAPACITY = {
    "ce": CapacityLimit(
        Resources(16_000, 64 * GIB, 0), nodes=(NodeShape("m.xl", 4, Resources(4_000, 14 * GIB), 8),)
    )
}
JOBS: dict[str, JobInfo] = {
    "ns/b": job_info("b", annotations={keys.DEPENDS_ON: "a"}),
    "ns/arr": job_info("arr", completions=5, indexed=True),
}


async def nothing(*_: str) -> None:
    return None


CONTEXT = context.WebhookContext(
    queue=QUEUES.get,
    queue_names=lambda: list(QUEUES),
    refresh_queue=nothing,
    refresh_job=nothing,
    refresh_compute_environment=nothing,
    job=lambda namespace, name: JOBS.get(f"{namespace}/{name}"),
    capacity=lambda: CAPACITY,
    admitter=lambda: ADMITTER,
)


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[Client]:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    extender = Daemon().extender
    add_placement_routes(app, lambda: extender, max_body_bytes=EXTENDER_LIMIT, read_timeout=5.0)
    routes.add_routes(app, lambda: CONTEXT)
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client
    await test_client.close()


def admission(obj: Any, *, uid: str = "u-1", operation: str = "CREATE", **extra: Any) -> Any:
    request = {"uid": uid, "operation": operation, "object": obj, **extra}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def new_job(
    name: str = "a",
    *,
    annotations: dict[str, Any] | None = None,
    queue: str = "q",
    cpu: str = "1",
    **kwargs: Any,
) -> dict[str, Any]:
    raw = raw_job(name, queue=queue, cpu=cpu, suspend=False, **kwargs)
    raw["metadata"]["annotations"] = annotations or {}
    for k in ("uid", "resourceVersion", "creationTimestamp"):
        del raw["metadata"][k]
    del raw["status"]
    return raw


def with_spec(job: dict[str, Any], **spec: Any) -> dict[str, Any]:
    job["spec"].update(spec)
    return job


def with_template(job: dict[str, Any], **pod_spec: Any) -> dict[str, Any]:
    job["spec"]["template"]["spec"].update(pod_spec)
    return job


def with_meta(job: dict[str, Any], **meta: Any) -> dict[str, Any]:
    job["metadata"].update(meta)
    return job


def retry(doc: Any) -> dict[str, str]:
    return {keys.RETRY_STRATEGY: doc if isinstance(doc, str) else json.dumps(doc)}


async def send(client: Client, path: str, body: Any) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()  # also huge integers
    async with client.post(path, data=data) as resp:
        return resp.status, await resp.text()


async def still_serving(client: Client) -> None:
    """A good request to each endpoint gets its normal answer."""
    status, text = await send(client, routes.MUTATE_PATH, admission(new_job("good")))
    assert status == 200, text
    response = orjson.loads(text)["response"]
    assert response["allowed"] is True and response["patch"]
    status, text = await send(client, "/scheduler/filter", {"Pod": BATCH_POD, "NodeNames": ["a"]})
    assert (status, orjson.loads(text)["NodeNames"]) == (200, ["a"])


# --- the matrix ----------------------------------------------------------------------

MUTATE, VALIDATE = routes.MUTATE_PATH, routes.VALIDATE_PATH
DEPENDS = keys.DEPENDS_ON
ANNOTATION = "metadata.annotations[{}]"


@dataclass(frozen=True)
class Bad:
    id: str
    path: str
    body: Any
    status: int  # the HTTP status; 200 with "allowed": false for a rejected AdmissionReview
    error: str  # in the error message: it names the field


def rejected(id: str, job: Any, error: str, *, path: str = MUTATE, **extra: Any) -> Bad:
    return Bad(id, path, admission(job, **extra), 200, error)


HUGE = 10**30
OVERSIZE = b'{"request": "' + b"x" * MAX_BODY_BYTES + b'"}'

WEBHOOK_ROWS = [
    # The AdmissionReview itself.
    Bad("review-truncated-json", MUTATE, b'{"request": {"uid": "u', 400, "body: not valid JSON"),
    Bad("review-not-utf8", MUTATE, b"\xff\xfe{}", 400, "body: not valid JSON"),
    Bad("review-not-an-object", VALIDATE, b"[1, 2]", 400, "body: must be an AdmissionReview"),
    Bad("review-no-request", MUTATE, {"kind": "AdmissionReview"}, 400, "request: "),
    Bad("review-request-a-string", MUTATE, {"request": "x"}, 400, "request: "),
    Bad("review-no-uid", MUTATE, {"request": {"object": new_job()}}, 400, "request.uid"),
    Bad("review-oversize", MUTATE, OVERSIZE, 413, "body size"),
    rejected("review-object-a-list", [new_job()], "object: must be a Job object"),
    rejected("review-metadata-a-string", with_meta(new_job(), labels="q"), "metadata.labels: "),
    rejected(
        "review-annotations-a-list", with_meta(new_job(), annotations=["x"]), "metadata.annotations"
    ),
    rejected(
        "annotation-not-a-string",
        new_job(annotations={DEPENDS: 5}),
        f"metadata.annotations[{DEPENDS}]: must be a string",
    ),
    rejected(
        "update-old-object-a-list",
        new_job(),
        "oldObject: must be a Job object",
        path=VALIDATE,
        operation="UPDATE",
        oldObject=[1],
    ),
    # Queues.
    rejected(
        "unknown-queue", new_job(queue="nope"), "metadata.labels[ebb.dev/queue]: job queue 'nope'"
    ),
    rejected("unicode-queue", new_job(queue="köln"), "job queue 'köln' does not exist"),
    rejected("disabled-queue", new_job(queue="off"), "job queue 'off' is DISABLED"),
    # Dependencies.
    rejected(
        "dependency-cycle",
        new_job(annotations={DEPENDS: "b"}),
        f"{ANNOTATION.format(DEPENDS)}: dependency cycle a → b → a",
    ),
    rejected("depends-on-itself", new_job(annotations={DEPENDS: "a"}), "dependency cycle a → a"),
    rejected(
        "dependency-bad-name",
        new_job(annotations={DEPENDS: "Bad_Name"}),
        f"{ANNOTATION.format(DEPENDS)}: 'Bad_Name' is not a Job name",
    ),
    rejected(
        "dependency-unicode-name", new_job(annotations={DEPENDS: "jöb"}), "'jöb' is not a Job name"
    ),
    rejected(
        "dependency-name-too-long",
        new_job(annotations={DEPENDS: "a" * 300}),
        f"{ANNOTATION.format(DEPENDS)}: 'aaaa",
    ),
    rejected(
        "dependency-unknown-type",
        new_job(annotations={DEPENDS: "x:afterwards"}),
        "has type 'afterwards'; allowed: afterok",
    ),
    rejected("dependency-empty-entry", new_job(annotations={DEPENDS: "x,,y"}), "entry 2 is empty"),
    rejected("dependency-twice", new_job(annotations={DEPENDS: "x, x"}), "'x' is listed twice"),
    rejected(
        "n-to-n-not-an-array",
        new_job(annotations={DEPENDS: "arr:n_to_n"}),
        "arr:n_to_n needs this Job to be an array job",
    ),
    rejected(
        "n-to-n-other-size",
        new_job(annotations={DEPENDS: "arr:n_to_n"}, completions=3, indexed=True),
        "arr:n_to_n needs arrays of the same size (arr has 5 children, this one 3)",
    ),
    # Retry strategies.
    rejected(
        "retry-truncated-json",
        new_job(annotations=retry('{"attempts": 3')),
        f"{ANNOTATION.format(keys.RETRY_STRATEGY)}: not valid JSON",
    ),
    rejected(
        "retry-huge-attempts",
        new_job(annotations=retry({"attempts": HUGE})),
        f"{ANNOTATION.format(keys.RETRY_STRATEGY)}.attempts: 1e+30 is not allowed",
    ),
    rejected(
        "retry-attempts-a-string",
        new_job(annotations=retry({"attempts": "3"})),
        ".attempts: '3' is not allowed (an integer 1-10)",
    ),
    rejected(
        "retry-attempts-a-float",
        new_job(annotations=retry({"attempts": 2.5})),
        ".attempts: 2.5 is not allowed",
    ),
    rejected(
        "retry-rules-not-a-list",
        new_job(annotations=retry({"attempts": 2, "evaluateOnExit": {"action": "EXIT"}})),
        ".evaluateOnExit: must be a list",
    ),
    rejected(
        "retry-invalid-exit-code-glob",
        new_job(
            annotations=retry(
                {"attempts": 2, "evaluateOnExit": [{"onExitCode": "1*2", "action": "EXIT"}]}
            )
        ),
        ".evaluateOnExit[0].onExitCode: '1*2' is not a valid glob",
    ),
    rejected(
        "retry-unicode-status-glob",
        new_job(
            annotations=retry(
                {"attempts": 2, "evaluateOnExit": [{"onStatusReason": "Höst*", "action": "RETRY"}]}
            )
        ),
        ".evaluateOnExit[0].onStatusReason: 'Höst*' is not a valid glob",
    ),
    rejected(
        "retry-huge-glob",
        new_job(
            annotations=retry(
                {"attempts": 2, "evaluateOnExit": [{"onExitCode": "1" * 600, "action": "EXIT"}]}
            )
        ),
        ".evaluateOnExit[0].onExitCode: '1111",
    ),
    rejected(
        "retry-and-restart-policy",
        with_template(new_job(annotations=retry({"attempts": 2})), restartPolicy="OnFailure"),
        "spec.template.spec.restartPolicy: a retry strategy needs Never",
    ),
    # The other annotations.
    rejected(
        "priority-huge",
        new_job(annotations={keys.SCHEDULING_PRIORITY: str(HUGE)}),
        f"{ANNOTATION.format(keys.SCHEDULING_PRIORITY)}: {HUGE} is out of range",
    ),
    rejected(
        "priority-unicode-digits",
        new_job(annotations={keys.SCHEDULING_PRIORITY: "٣"}),  # Arabic-Indic three
        f"{ANNOTATION.format(keys.SCHEDULING_PRIORITY)}: '٣' is not an integer",
    ),
    rejected(
        "timeout-huge",
        new_job(annotations={keys.TIMEOUT_SECONDS: str(HUGE)}),
        f"{ANNOTATION.format(keys.TIMEOUT_SECONDS)}: {HUGE} is above the maximum",
    ),
    rejected(
        "timeout-negative",
        new_job(annotations={keys.TIMEOUT_SECONDS: "-5"}),
        "-5 is below the minimum of 60 seconds",
    ),
    rejected(
        "capacity-type-unknown",
        new_job(annotations={keys.CAPACITY_TYPE_PREFERENCE: "reserved"}),
        f"{ANNOTATION.format(keys.CAPACITY_TYPE_PREFERENCE)}: 'reserved' is not allowed",
    ),
    rejected(
        "sequential-not-an-array",
        new_job(annotations={keys.ARRAY_DEPENDENCY: "SEQUENTIAL"}),
        f"{ANNOTATION.format(keys.ARRAY_DEPENDENCY)}: SEQUENTIAL needs an array job",
    ),
    # The Job's spec.
    rejected(
        "array-huge",
        new_job(completions=10**6, indexed=True),
        "spec.completions: 1000000 children exceed the array job limit of 100000",
    ),
    rejected(
        "completions-a-string",
        with_spec(new_job(), completions="10", completionMode="Indexed"),
        "spec.completions: must be an integer",
    ),
    rejected(
        "template-a-string", with_spec(new_job(), template="pod"), "spec.template: must be a pod"
    ),
    rejected(
        "cpu-not-a-quantity",
        new_job(cpu="lots"),
        "spec.template.spec.containers[].resources: ",
    ),
    rejected(
        "cpu-huge",
        new_job(cpu="1e9"),
        "spec.template.spec.containers[].resources.requests.cpu: 1e+09 vCPUs per pod exceeds",
    ),
    rejected(
        "gpu-on-a-cpu-queue",
        new_job(gpu=1),
        f"resources.requests[{keys.GPU_RESOURCE}]: 1 GPUs per pod",
    ),
    # Updates.
    rejected(
        "update-changes-queue",
        new_job(queue="other"),
        "metadata.labels[ebb.dev/queue]: is immutable",
        path=VALIDATE,
        operation="UPDATE",
        oldObject=new_job(),
    ),
    rejected(
        "update-unsuspends",
        with_spec(new_job(), suspend=False),
        "spec.suspend: only Ebb admits Jobs",
        path=VALIDATE,
        operation="UPDATE",
        oldObject=with_spec(new_job(), suspend=True),
        userInfo={"username": "mallory"},
    ),
]

EXTENDER_ROWS = [
    Bad("filter-truncated-json", "/scheduler/filter", b'{"Pod": {', 400, "body: not valid JSON"),
    Bad("filter-not-an-object", "/scheduler/filter", b'"Pod"', 400, "body: expected a JSON object"),
    Bad("filter-no-pod", "/scheduler/filter", {"NodeNames": ["a"]}, 400, "Pod: missing"),
    Bad("filter-pod-a-list", "/scheduler/filter", {"Pod": [1]}, 400, "Pod: expected a v1.Pod"),
    Bad(
        "filter-node-names-a-string",
        "/scheduler/filter",
        {"Pod": BATCH_POD, "NodeNames": "a"},
        400,
        "NodeNames: expected a list",
    ),
    Bad(
        "filter-node-names-numbers",
        "/scheduler/filter",
        {"Pod": BATCH_POD, "NodeNames": [1, HUGE]},
        400,
        "NodeNames: expected a list of strings",
    ),
    Bad(
        "prioritize-nodes-items-a-dict",
        "/scheduler/prioritize",
        {"Pod": BATCH_POD, "Nodes": {"items": {"a": 1}}},
        400,
        "Nodes.items: expected a list",
    ),
    Bad(
        "filter-node-without-name",
        "/scheduler/filter",
        {"Pod": BATCH_POD, "Nodes": {"items": [{"metadata": {}}]}},
        400,
        "Nodes.items[0]: expected a v1.Node object with metadata.name",
    ),
    Bad("bind-no-pod-name", "/scheduler/bind", {"Node": "a"}, 400, "PodName: missing"),
    Bad(
        "bind-unicode-pod-name",
        "/scheduler/bind",
        {"PodName": "pöd", "PodNamespace": "ns", "PodUID": "u", "Node": "a"},
        400,
        "PodName: 'pöd' is not a valid Kubernetes name",
    ),
    Bad(
        "bind-uid-a-number",
        "/scheduler/bind",
        {"PodName": "p", "PodNamespace": "ns", "PodUID": 7, "Node": "a"},
        400,
        "PodUID: expected a string",
    ),
    Bad(
        "filter-oversize",
        "/scheduler/filter",
        b'{"NodeNames": ["' + b"n" * EXTENDER_LIMIT + b'"]}',
        413,
        "body: ",
    ),
]


@pytest.mark.parametrize("row", WEBHOOK_ROWS + EXTENDER_ROWS, ids=lambda row: row.id)
async def test_bad_request_is_answered_naming_the_field_and_the_daemon_goes_on(
    client: Client, row: Bad
) -> None:
    status, text = await send(client, row.path, row.body)
    assert status == row.status, text
    if row.path.startswith("/webhook") and status == 200:
        response = orjson.loads(text)["response"]
        assert response["allowed"] is False
        assert response["uid"] == "u-1"
        assert response["status"]["code"] == 422
        text = response["status"]["message"]
        assert text.startswith("Ebb: ")
    elif row.path.startswith("/scheduler"):
        text = orjson.loads(text)["Error"]
    assert row.error in text
    await still_serving(client)


# --- SQS messages (the consumer logs and drops what parse_notice refuses) -------------

GOOD_NOTICE = event(STATE_CHANGE, "i-0abc12345", region="us-east-1", state="terminated")
NOTICE_ROWS = [
    ("notice-truncated-json", orjson.dumps(GOOD_NOTICE)[:-7], "body: not valid JSON"),
    ("notice-empty", b"", "body: not valid JSON"),
    ("notice-not-utf8", b"\xff\xfe\xfd", "body: not valid JSON"),
    ("notice-a-number", b"12", "body: must be an EventBridge event object, not int"),
    ("notice-huge-number", str(HUGE).encode(), "body: "),
    ("notice-other-source", {**GOOD_NOTICE, "source": "aws.s3"}, "source: 'aws.s3' is not aws.ec2"),
    ("notice-unicode-source", {**GOOD_NOTICE, "source": "aws.ec2\u200b"}, "source: "),
    ("notice-no-detail-type", {**GOOD_NOTICE, "detail-type": None}, "detail-type: None is not"),
    ("notice-detail-a-list", {**GOOD_NOTICE, "detail": ["i-0abc12345"]}, "detail: must be"),
    (
        "notice-bad-instance-id",
        {**GOOD_NOTICE, "detail": {"instance-id": "i-ZZZ", "state": "terminated"}},
        "detail.instance-id: 'i-ZZZ' is not an instance id",
    ),
    (
        "notice-huge-instance-id",
        {**GOOD_NOTICE, "detail": {"instance-id": "i-" + "0" * 10_000, "state": "x"}},
        "detail.instance-id: 'i-000",
    ),
    (
        "notice-state-a-number",
        {**GOOD_NOTICE, "detail": {"instance-id": "i-0abc12345", "state": 16}},
        "detail.state: 16 is not an instance state",
    ),
]


@pytest.mark.parametrize(
    ("body", "error"), [r[1:] for r in NOTICE_ROWS], ids=[r[0] for r in NOTICE_ROWS]
)
def test_bad_sqs_message_is_refused_naming_the_field(body: Any, error: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(NoticeError) as info:
        parse_notice(raw)
    assert error in str(info.value)
    assert len(str(info.value)) < 400  # a huge field is not echoed whole into the log
    assert parse_notice(orjson.dumps(GOOD_NOTICE)).instance_id == "i-0abc12345"


def test_the_matrix_has_at_least_40_rows_per_the_issue() -> None:
    assert len(WEBHOOK_ROWS) + len(EXTENDER_ROWS) + len(NOTICE_ROWS) >= 40
    ids = [row.id for row in WEBHOOK_ROWS + EXTENDER_ROWS] + [r[0] for r in NOTICE_ROWS]
    assert len(ids) == len(set(ids))


# --- a fuzz of the webhook's endpoints --------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
ANNOTATION_VALUES = st.one_of(
    JSON,
    st.text(max_size=40),
    st.sampled_from(['{"attempts": 2}', "a:afterany", "b", "SEQUENTIAL", "120", "spot", "{"]),
)
ANNOTATIONS = st.dictionaries(
    st.sampled_from(
        [
            keys.DEPENDS_ON,
            keys.RETRY_STRATEGY,
            keys.SCHEDULING_PRIORITY,
            keys.TIMEOUT_SECONDS,
            keys.CAPACITY_TYPE_PREFERENCE,
            keys.ARRAY_DEPENDENCY,
        ]
    ),
    ANNOTATION_VALUES,
    max_size=4,
)


def fuzzed_job(annotations: Any, labels: Any, spec: Any, completions: Any) -> Any:
    job = new_job("fuzz")
    job["metadata"]["annotations"] = annotations
    if labels is not None:
        job["metadata"]["labels"] = labels
    if spec is not None:
        job["spec"] = spec
    elif completions is not None:
        job["spec"].update(completions=completions, completionMode="Indexed")
    return job


OBJECTS = st.one_of(
    JSON,
    st.builds(
        fuzzed_job,
        ANNOTATIONS,
        st.none()
        | JSON
        | st.dictionaries(st.just(keys.QUEUE_LABEL), st.sampled_from(["q", "off", "x"])),
        st.none() | JSON,
        st.none() | st.integers() | JSON,
    ),
)
REVIEWS = st.builds(
    lambda obj, old, op, uid, user: admission(
        obj, uid=uid, operation=op, oldObject=old, userInfo=user
    ),
    OBJECTS,
    OBJECTS,
    st.sampled_from(["CREATE", "UPDATE", "DELETE"]),
    st.text(min_size=1, max_size=8),
    st.one_of(JSON, st.fixed_dictionaries({"username": st.text(max_size=8)})),
)


def as_json(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # also huge integers, NaN and Infinity, unlike orjson


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from([MUTATE, VALIDATE]),
    body=st.one_of(st.binary(max_size=64), JSON.map(as_json), REVIEWS.map(as_json)),
)
async def test_fuzzed_admission_reviews_get_an_answer_never_a_crash(
    client: Client, path: str, body: bytes
) -> None:
    status, text = await send(client, path, body)
    assert status in (200, 400), text
    if status == 400:
        assert text.split(":", 1)[0] in ("body", "request", "request.uid"), text
        return
    reply = orjson.loads(text)
    response = reply["response"]
    assert reply["kind"] == "AdmissionReview" and isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert response["status"]["message"].startswith("Ebb: ")
    if "patch" in response:
        patch = orjson.loads(base64.b64decode(response["patch"]))
        assert {op["path"] for op in patch} <= {"/metadata", "/spec"}
