"""The extender wire protocol: what kube-scheduler sends decodes, what Ebb answers has the
Go field names, and bad input raises ProtocolError naming the field (nothing else)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from extender.placement.protocol import (
    BindingArgs,
    FilterResult,
    ProtocolError,
    decode_binding_args,
    decode_extender_args,
    encode_binding_result,
    encode_filter_result,
    encode_priorities,
)
from tests.unit.placement_objects import raw_node, raw_pod

POD = raw_pod("job-0", "high", cpu="2", memory="1Gi")


def body(doc: Any) -> bytes:
    # The standard library's encoder: it also writes what orjson refuses (huge integers,
    # Infinity), which is just what a decoder should meet.
    return json.dumps(doc).encode()


def test_node_cache_capable_request_and_reply() -> None:
    args = decode_extender_args(body({"Pod": POD, "Nodes": None, "NodeNames": ["a", "b", "c"]}))
    assert args.pod.queue == "high"
    assert args.pod.requests.cpu_milli == 2000
    assert args.node_names == ["a", "b", "c"]
    assert args.nodes is None
    result = FilterResult(["a"], {"b": "cpu: need 2, free 1"}, {"c": "ce x not in queue high"})
    assert orjson.loads(encode_filter_result(args, result)) == {
        "Nodes": None,
        "NodeNames": ["a"],
        "FailedNodes": {"b": "cpu: need 2, free 1"},
        "FailedAndUnresolvableNodes": {"c": "ce x not in queue high"},
        "Error": "",
    }


def test_node_objects_request_is_answered_with_the_same_objects() -> None:
    # nodeCacheCapable: false. Go marshals the whole NodeList; the scheduler reads only
    # `Nodes` back and hands those objects to its score plugins, so they must come back
    # exactly as sent.
    a, b = raw_node("a", "ce1"), raw_node("b", "ce1", gpu=2)
    nodes = {"metadata": {"resourceVersion": ""}, "items": [a, b]}
    args = decode_extender_args(body({"Pod": POD, "Nodes": nodes, "NodeNames": None}))
    assert args.node_names == ["a", "b"]
    assert args.nodes is not None
    assert [n.allocatable.gpu for n in args.nodes] == [0, 2]
    reply = orjson.loads(encode_filter_result(args, FilterResult(["b"], {"a": "full"})))
    assert reply["NodeNames"] is None
    assert reply["Nodes"]["items"] == [b]
    assert reply["FailedNodes"] == {"a": "full"}


def test_empty_node_list_as_go_marshals_it() -> None:
    args = decode_extender_args(body({"Pod": POD, "Nodes": {"metadata": {}, "items": None}}))
    assert args.node_names == []
    assert orjson.loads(encode_filter_result(args, FilterResult()))["Nodes"]["items"] == []


def test_error_reply_carries_only_the_error() -> None:
    args = decode_extender_args(body({"Pod": POD, "NodeNames": ["a"]}))
    assert orjson.loads(encode_filter_result(args, FilterResult(error="caches not synced"))) == {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": "caches not synced",
    }


def test_priorities_and_binding_replies() -> None:
    assert orjson.loads(encode_priorities([("a", 10), ("b", 0)])) == [
        {"Host": "a", "Score": 10},
        {"Host": "b", "Score": 0},
    ]
    assert orjson.loads(encode_binding_result("")) == {"Error": ""}
    assert decode_binding_args(
        body({"PodName": "p", "PodNamespace": "ns", "PodUID": "u-1", "Node": "n"})
    ) == BindingArgs("p", "ns", "u-1", "n")
    # PodUID may be empty (then the binding has no UID precondition).
    assert (
        decode_binding_args(body({"PodName": "p", "PodNamespace": "ns", "Node": "n"})).pod_uid == ""
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "body: not valid JSON"),
        (b"[]", "body: expected a JSON object"),
        (body({"NodeNames": ["a"]}), "Pod: missing"),
        (body({"Pod": [], "NodeNames": ["a"]}), "Pod: expected a v1.Pod object"),
        (
            body({"Pod": POD}),
            "NodeNames: missing: send NodeNames (nodeCacheCapable: true) or Nodes",
        ),
        (body({"Pod": POD, "NodeNames": "a"}), "NodeNames: expected a list of node names"),
        (body({"Pod": POD, "NodeNames": ["a", 1]}), "NodeNames: expected a list of strings"),
        (body({"Pod": POD, "Nodes": []}), "Nodes: expected a v1.NodeList object"),
        (body({"Pod": POD, "Nodes": {"items": {}}}), "Nodes.items: expected a list"),
        (
            body({"Pod": POD, "Nodes": {"items": [{"metadata": {}}]}}),
            "Nodes.items[0]: expected a v1.Node",
        ),
        (
            body(
                {
                    "Pod": {"spec": {"containers": [{"resources": {"requests": {"cpu": "lots"}}}]}},
                    "NodeNames": [],
                }
            ),
            "Pod.spec: 'lots' is not a quantity",
        ),
        (body({"Pod": {"metadata": "x"}, "NodeNames": []}), "Pod: not a valid v1.Pod"),
    ],
)
def test_bad_extender_args_name_the_field(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_extender_args(raw)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"PodNamespace": "ns", "Node": "n"}, "PodName: missing"),
        ({"PodName": "p", "Node": "n"}, "PodNamespace: missing"),
        ({"PodName": "p", "PodNamespace": "ns", "Node": ""}, "Node: missing"),
        ({"PodName": 3, "PodNamespace": "ns", "Node": "n"}, "PodName: expected a string"),
        ({"PodName": "..", "PodNamespace": "ns", "Node": "n"}, "PodName: '..' is not a valid"),
        ({"PodName": "p", "PodNamespace": "a.b", "Node": "n"}, "PodNamespace: 'a.b' is not a"),
        ({"PodName": "p", "PodNamespace": "ns", "Node": "N/1"}, "Node: 'N/1' is not a valid"),
        (
            {"PodName": "p", "PodNamespace": "ns", "Node": "n", "PodUID": 7},
            "PodUID: expected a string",
        ),
    ],
)
def test_bad_binding_args_name_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=f"^{message}"):
        decode_binding_args(body(doc))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Documents shaped like the real thing, with any part replaced by junk.
ARGS_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "Pod": st.one_of(JSON, st.just(POD), st.builds(lambda spec: {**POD, "spec": spec}, JSON)),
        "NodeNames": st.one_of(JSON, st.lists(st.text(max_size=5))),
        "Nodes": st.one_of(
            JSON,
            st.builds(
                lambda items: {"items": items}, st.lists(st.one_of(JSON, st.just(raw_node("x"))))
            ),
        ),
    },
)
BINDING_LIKE = st.fixed_dictionaries(
    {},
    optional={k: st.one_of(JSON, st.text()) for k in ("PodName", "PodNamespace", "PodUID", "Node")},
)


@given(st.one_of(st.binary(), JSON.map(body), ARGS_LIKE.map(body)))
def test_extender_args_decode_or_raise_protocol_error(raw: bytes) -> None:
    try:
        args = decode_extender_args(raw)
    except ProtocolError:
        return
    assert all(isinstance(name, str) for name in args.node_names)
    encode_filter_result(args, FilterResult(args.node_names))  # whatever decodes can be answered


@given(st.one_of(st.binary(), JSON.map(body), BINDING_LIKE.map(body)))
def test_binding_args_decode_or_raise_protocol_error(raw: bytes) -> None:
    try:
        args = decode_binding_args(raw)
    except ProtocolError:
        return
    assert args.pod_name and args.pod_namespace and args.node
