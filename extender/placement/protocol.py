"""The kube-scheduler extender wire protocol (k8s.io/kube-scheduler/extender/v1).

kube-scheduler POSTs JSON to `<urlPrefix>/<verb>`; the keys are the Go field names:

- filter and prioritize get `ExtenderArgs`: `{"Pod": v1.Pod, "Nodes": v1.NodeList | null,
  "NodeNames": [str] | null}`. With `nodeCacheCapable: true` only `NodeNames` is set;
  otherwise only `Nodes` (whole Node objects).
- filter answers `ExtenderFilterResult`: `{"NodeNames" | "Nodes", "FailedNodes": {name:
  reason}, "FailedAndUnresolvableNodes": {name: reason}, "Error": str}`. A scheduler
  without the node cache reads only `Nodes`, so the reply mirrors the request: names
  for names, the very Node objects it sent for objects (later score plugins read them).
- prioritize answers `HostPriorityList`: `[{"Host": str, "Score": int}]`.
- bind gets `ExtenderBindingArgs` `{"PodName", "PodNamespace", "PodUID", "Node"}` and
  answers `ExtenderBindingResult` `{"Error": str}`.

Decoding checks everything it returns and raises `ProtocolError` naming the field, so
bad input becomes a 400 with a message, never an exception deeper in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ebb.model import NodeInfo, PodInfo, Raw, node_from_raw, pod_from_raw
from ebb.resources import QuantityError


class ProtocolError(ValueError):
    """A request that does not follow the extender protocol; the message names the field."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    """A filter or prioritize request."""

    pod: PodInfo
    node_names: list[str]
    # The Node objects, when the scheduler sent them (nodeCacheCapable: false), in the
    # order of node_names; `node_objects` keeps them as sent, to be echoed back.
    nodes: list[NodeInfo] | None = None
    node_objects: list[Raw] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class FilterResult:
    node_names: Sequence[str] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    unresolvable: Mapping[str, str] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True, slots=True)
class BindingArgs:
    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str

    @property
    def pod_key(self) -> str:
        return f"{self.pod_namespace}/{self.pod_name}"


# (host, score): kube-scheduler multiplies the score by the extender's weight.
HostPriority = tuple[str, int]


def _load_object(body: bytes, expected: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("body", f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ProtocolError("body", f"expected a JSON object ({expected})")
    return doc


def _pod(raw: object) -> PodInfo:
    if raw is None:
        raise ProtocolError("Pod", "missing")
    if not isinstance(raw, dict):
        raise ProtocolError("Pod", "expected a v1.Pod object")
    try:
        return pod_from_raw(raw)
    except QuantityError as exc:
        raise ProtocolError("Pod.spec", str(exc)) from None
    # pod_from_raw trusts the API server's schema; a hand-made body can break it anywhere.
    except (TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError("Pod", f"not a valid v1.Pod ({exc})") from None


def _node_names(raw: object) -> list[str]:
    if not isinstance(raw, list):
        raise ProtocolError("NodeNames", "expected a list of node names")
    # join runs in C and takes only strings: the cheapest check of 5,000 names.
    try:
        "".join(raw)
    except TypeError:
        raise ProtocolError("NodeNames", "expected a list of strings") from None
    return raw


def _nodes(raw: object) -> tuple[list[str], list[NodeInfo], list[Raw]]:
    if not isinstance(raw, dict):
        raise ProtocolError("Nodes", "expected a v1.NodeList object")
    items = raw.get("items")
    if items is None:  # Go marshals an empty NodeList's items as null
        items = []
    if not isinstance(items, list):
        raise ProtocolError("Nodes.items", "expected a list of v1.Node objects")
    names, infos = [], []
    for i, item in enumerate(items):
        where = f"Nodes.items[{i}]"
        meta = item.get("metadata") if isinstance(item, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise ProtocolError(where, "expected a v1.Node object with metadata.name")
        try:
            infos.append(node_from_raw(item))
        except (QuantityError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(where, f"not a valid v1.Node ({exc})") from None
        names.append(meta["name"])
    return names, infos, items


def decode_extender_args(body: bytes) -> ExtenderArgs:
    """A filter or prioritize request. `NodeNames`, when not null, wins over `Nodes`."""
    doc = _load_object(body, "ExtenderArgs with Pod and NodeNames or Nodes")
    pod = _pod(doc.get("Pod"))
    if doc.get("NodeNames") is not None:
        return ExtenderArgs(pod, _node_names(doc["NodeNames"]))
    if doc.get("Nodes") is None:
        raise ProtocolError(
            "NodeNames", "missing: send NodeNames (nodeCacheCapable: true) or Nodes (false)"
        )
    names, infos, objects = _nodes(doc["Nodes"])
    return ExtenderArgs(pod, names, infos, objects)


# What the API server accepts as pod and node names (DNS-1123 subdomain) and namespaces
# (DNS-1123 label); checked here so that no other string ever reaches a request path.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def decode_binding_args(body: bytes) -> BindingArgs:
    doc = _load_object(body, "ExtenderBindingArgs with PodName, PodNamespace, PodUID, Node")
    values = {}
    for key, pattern in (("PodName", _SUBDOMAIN), ("PodNamespace", _LABEL), ("Node", _SUBDOMAIN)):
        value = doc.get(key)
        if value is None or value == "":
            raise ProtocolError(key, "missing")
        if not isinstance(value, str):
            raise ProtocolError(key, "expected a string")
        if not pattern.fullmatch(value) or ".." in value:
            raise ProtocolError(key, f"{value[:64]!r} is not a valid Kubernetes name")
        values[key] = value
    uid = doc.get("PodUID")
    if uid is not None and not isinstance(uid, str):
        raise ProtocolError("PodUID", "expected a string")
    return BindingArgs(values["PodName"], values["PodNamespace"], uid or "", values["Node"])


def encode_filter_result(args: ExtenderArgs, result: FilterResult) -> bytes:
    if result.error:
        return orjson.dumps(
            {
                "Nodes": None,
                "NodeNames": None,
                "FailedNodes": {},
                "FailedAndUnresolvableNodes": {},
                "Error": result.error,
            }
        )
    doc: dict[str, Any] = {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": result.failed,
        "FailedAndUnresolvableNodes": result.unresolvable,
        "Error": "",
    }
    if args.node_objects is None:
        doc["NodeNames"] = result.node_names
    else:
        kept = set(result.node_names)
        doc["Nodes"] = {
            "metadata": {},
            "items": [
                raw
                for name, raw in zip(args.node_names, args.node_objects, strict=True)
                if name in kept
            ],
        }
    return orjson.dumps(doc)


def encode_priorities(priorities: Sequence[HostPriority]) -> bytes:
    return orjson.dumps([{"Host": host, "Score": score} for host, score in priorities])


def encode_binding_result(error: str) -> bytes:
    return orjson.dumps({"Error": error})


def encode_error(message: str) -> bytes:
    """The body of a 4xx/5xx answer: the same `Error` key the replies use."""
    return orjson.dumps({"Error": message})
