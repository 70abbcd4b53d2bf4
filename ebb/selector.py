"""Kubernetes label selectors (matchLabels / matchExpressions), as values: which
namespaces may use a queue or a share identifier. Pure: parse once, match many times.

Semantics are Kubernetes' (metav1.LabelSelector): every matchLabels pair and every
expression must hold; `{}` selects everything. A selector Ebb cannot parse (stored
before the CRD validated it) selects nothing and says why: access fails closed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
# A label value, and a label key's name part (an optional DNS-subdomain prefix and "/").
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        found = labels.get(self.key)
        if self.operator == "In":
            return found is not None and found in self.values
        return found is None or found not in self.values  # NotIn

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        words = "in" if self.operator == "In" else "notin"
        return f"{self.key} {words} ({','.join(sorted(self.values))})"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()
    problem: str = ""  # why it could not be parsed: then it selects nothing

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.problem and all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        """kubectl's -l syntax ("team=a,tier in (x,y)"); "" for everything."""
        if self.problem:
            return f"<invalid: {self.problem}>"
        return ",".join(
            f"{r.key}={next(iter(r.values))}"
            if r.operator == "In" and len(r.values) == 1
            else str(r)
            for r in self.requirements
        )


class SelectorError(ValueError):
    pass


def _check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{where}: a label key must be a non-empty string")
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _PREFIX.match(prefix))) or (
        len(name) > 63 or not _NAME.match(name)
    ):
        raise SelectorError(f"{where}: {key!r} is not a valid label key")
    return key


def _check_value(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(f"{where}: {value!r} is not a valid label value")
    return value


def parse(raw: Any, field_path: str) -> LabelSelector:
    """A selector from its API form; raises SelectorError naming the field."""
    if not isinstance(raw, Mapping):
        raise SelectorError(f"{field_path}: must be an object with matchLabels/matchExpressions")
    requirements: list[Requirement] = []
    match_labels = raw.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError(f"{field_path}.matchLabels: must be a map of label key to value")
    for key, value in match_labels.items():
        where = f"{field_path}.matchLabels[{key}]"
        requirements.append(
            Requirement(_check_key(key, where), "In", frozenset({_check_value(value, where)}))
        )
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError(f"{field_path}.matchExpressions: must be a list")
    for i, expression in enumerate(expressions):
        where = f"{field_path}.matchExpressions[{i}]"
        if not isinstance(expression, Mapping):
            raise SelectorError(f"{where}: must be an object with key, operator, values")
        key = _check_key(expression.get("key"), f"{where}.key")
        operator = expression.get("operator")
        if operator not in OPERATORS:
            raise SelectorError(
                f"{where}.operator: {operator!r} is not one of {', '.join(OPERATORS)}"
            )
        values = expression.get("values") or []
        if not isinstance(values, list):
            raise SelectorError(f"{where}.values: must be a list of label values")
        if operator in ("In", "NotIn") and not values:
            raise SelectorError(f"{where}.values: {operator} needs at least one value")
        if operator in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"{where}.values: {operator} takes no values")
        checked = frozenset(_check_value(v, f"{where}.values") for v in values)
        requirements.append(Requirement(key, str(operator), checked))
    return LabelSelector(tuple(requirements))


def parse_or_closed(raw: Any, field_path: str) -> LabelSelector | None:
    """None when absent (everything); a selector that selects nothing, naming the
    problem, when it cannot be parsed."""
    if raw is None:
        return None
    try:
        return parse(raw, field_path)
    except SelectorError as exc:
        return LabelSelector(problem=str(exc))
