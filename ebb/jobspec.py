"""Ebb's Job annotations, parsed and validated.

Every error names the annotation (and the part of it) that is wrong and what is
allowed, because the webhook returns it verbatim to `kubectl create`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import orjson

from ebb import keys


class SpecError(ValueError):
    """A malformed Ebb annotation; the message names the field and what is allowed."""


class DependencyType(Enum):
    AFTER_OK = "afterok"
    AFTER_ANY = "afterany"
    AFTER_NOT_OK = "afternotok"
    N_TO_N = "n_to_n"


@dataclass(frozen=True, slots=True)
class Dependency:
    job: str
    type: DependencyType


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_TYPE_ALIASES = {t.value: t for t in DependencyType} | {"n-to-n": DependencyType.N_TO_N}


def parse_depends_on(value: str | None) -> tuple[Dependency, ...]:
    """`"prep, train:afterany, shards:n_to_n"` → dependencies (default type afterok)."""
    if value is None or not value.strip():
        return ()
    deps: list[Dependency] = []
    seen: set[str] = set()
    for position, raw_item in enumerate(value.split(",")):
        item = raw_item.strip()
        if not item:
            raise SpecError(f"{keys.DEPENDS_ON}: entry {position + 1} is empty")
        name, _, kind = item.partition(":")
        name, kind = name.strip(), kind.strip().lower() or "afterok"
        if not _NAME.match(name):
            raise SpecError(
                f"{keys.DEPENDS_ON}: {name!r} is not a Job name "
                "(lowercase letters, digits, '-' and '.', at most 253 characters)"
            )
        if kind not in _TYPE_ALIASES:
            allowed = ", ".join(t.value for t in DependencyType)
            raise SpecError(f"{keys.DEPENDS_ON}: {item!r} has type {kind!r}; allowed: {allowed}")
        if name in seen:
            raise SpecError(f"{keys.DEPENDS_ON}: {name!r} is listed twice")
        seen.add(name)
        deps.append(Dependency(name, _TYPE_ALIASES[kind]))
    return tuple(deps)


_INTEGER = re.compile(r"^\s*[-+]?[0-9]+\s*$")


def _integer(value: str) -> int:
    """An integer in ASCII digits (Python's int() also takes other scripts' digits)."""
    if not _INTEGER.match(value):
        raise ValueError(value)
    return int(value)


def parse_scheduling_priority(value: str | None) -> int:
    if value is None:
        return 0
    try:
        priority = _integer(value)
    except ValueError:
        raise SpecError(
            f"{keys.SCHEDULING_PRIORITY}: {value!r} is not an integer (allowed: 0-9999)"
        ) from None
    if not 0 <= priority <= 9999:
        raise SpecError(f"{keys.SCHEDULING_PRIORITY}: {priority} is out of range (allowed: 0-9999)")
    return priority


def parse_timeout(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        seconds = _integer(value)
    except ValueError:
        raise SpecError(
            f"{keys.TIMEOUT_SECONDS}: {value!r} is not a whole number of seconds (minimum 60)"
        ) from None
    if seconds < 60:
        raise SpecError(f"{keys.TIMEOUT_SECONDS}: {seconds} is below the minimum of 60 seconds")
    if seconds > 366 * 86400:
        raise SpecError(f"{keys.TIMEOUT_SECONDS}: {seconds} is above the maximum of one year")
    return seconds


def parse_capacity_type(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in (keys.CAPACITY_SPOT, keys.CAPACITY_ON_DEMAND):
        raise SpecError(
            f"{keys.CAPACITY_TYPE_PREFERENCE}: {value!r} is not allowed (allowed: spot, on-demand)"
        )
    return value


def parse_array_dependency(value: str | None) -> bool:
    """True for SEQUENTIAL (children run one after another in index order)."""
    if value is None:
        return False
    if value.strip().upper() != "SEQUENTIAL":
        raise SpecError(f"{keys.ARRAY_DEPENDENCY}: {value!r} is not allowed (allowed: SEQUENTIAL)")
    return True


MAX_NODES = 1000


@dataclass(frozen=True, slots=True)
class MultiNode:
    """A multi-node parallel job: `nodes` pods, one per node, all or nothing."""

    nodes: int
    main_node_index: int = 0


def parse_multi_node(nodes: str | None, main_index: str | None) -> MultiNode | None:
    if nodes is None:
        if main_index is not None:
            raise SpecError(f"{keys.MAIN_NODE_INDEX}: needs {keys.NODES} (a multi-node job)")
        return None
    try:
        count = _integer(nodes)
    except ValueError:
        raise SpecError(
            f"{keys.NODES}: {nodes!r} is not an integer (allowed: 1-{MAX_NODES})"
        ) from None
    if not 1 <= count <= MAX_NODES:
        raise SpecError(f"{keys.NODES}: {count} is out of range (allowed: 1-{MAX_NODES})")
    if main_index is None:
        return MultiNode(count)
    try:
        main = _integer(main_index)
    except ValueError:
        raise SpecError(
            f"{keys.MAIN_NODE_INDEX}: {main_index!r} is not an integer (allowed: 0-{count - 1})"
        ) from None
    if not 0 <= main < count:
        raise SpecError(
            f"{keys.MAIN_NODE_INDEX}: {main} is out of range (allowed: 0-{count - 1}, "
            f"the job has {count} nodes)"
        )
    return MultiNode(count, main)


# --- retry strategies (AWS Batch's RetryStrategy) ---------------------------------------

_GLOB_TEXT = re.compile(r"^[A-Za-z0-9.: \t]*\*?$")
_GLOB_EXIT = re.compile(r"^[0-9]*\*?$")


class RetryAction(Enum):
    RETRY = "RETRY"
    EXIT = "EXIT"


@dataclass(frozen=True, slots=True)
class ExitRule:
    action: RetryAction
    on_exit_code: str | None = None
    on_status_reason: str | None = None
    on_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RetryStrategy:
    attempts: int
    rules: tuple[ExitRule, ...] = ()


def _glob(
    entry: Mapping[str, object], key: str, where: str, pattern: re.Pattern[str], allowed: str
) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 512 or not pattern.match(value):
        raise SpecError(f"{where}.{key}: {value!r} is not a valid glob ({allowed})")
    return value


def parse_retry_strategy(value: str | None) -> RetryStrategy | None:
    """The AWS Batch RetryStrategy as JSON: attempts 1-10 and up to 5 evaluateOnExit rules."""
    if value is None:
        return None
    where = keys.RETRY_STRATEGY
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise SpecError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise SpecError(f'{where}: must be a JSON object like {{"attempts": 3}}')
    unknown = set(doc) - {"attempts", "evaluateOnExit"}
    if unknown:
        raise SpecError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
            "(allowed: attempts, evaluateOnExit)"
        )
    attempts = doc.get("attempts")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 10:
        raise SpecError(f"{where}.attempts: {attempts!r} is not allowed (an integer 1-10)")
    entries = doc.get("evaluateOnExit") or []
    if not isinstance(entries, list) or len(entries) > 5:
        raise SpecError(f"{where}.evaluateOnExit: must be a list of at most 5 rules")
    rules = []
    for i, entry in enumerate(entries):
        at = f"{where}.evaluateOnExit[{i}]"
        if not isinstance(entry, dict):
            raise SpecError(f"{at}: must be an object")
        unknown = set(entry) - {"action", "onExitCode", "onStatusReason", "onReason"}
        if unknown:
            raise SpecError(f"{at}: unknown field(s) {', '.join(sorted(unknown))}")
        action = str(entry.get("action", "")).upper()
        if action not in ("RETRY", "EXIT"):
            raise SpecError(f"{at}.action: {entry.get('action')!r} is not allowed (RETRY or EXIT)")
        text = "letters, digits, '.', ':' and spaces, optionally ending in '*'"
        rule = ExitRule(
            RetryAction(action),
            _glob(entry, "onExitCode", at, _GLOB_EXIT, "digits, optionally ending in '*'"),
            _glob(entry, "onStatusReason", at, _GLOB_TEXT, text),
            _glob(entry, "onReason", at, _GLOB_TEXT, text),
        )
        if rule.on_exit_code is None and rule.on_status_reason is None and rule.on_reason is None:
            raise SpecError(f"{at}: needs at least one of onExitCode, onStatusReason, onReason")
        if rule.on_reason not in (None, "*"):
            raise SpecError(
                f"{at}.onReason: matching the container's reason is not supported (Kubernetes "
                "podFailurePolicy cannot select on it); use onExitCode (e.g. 137 for OOMKilled) "
                "or onStatusReason"
            )
        rules.append(rule)
    return RetryStrategy(attempts, tuple(rules))


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything Ebb reads from a Job's annotations, validated."""

    depends_on: tuple[Dependency, ...] = ()
    scheduling_priority: int = 0
    retry: RetryStrategy | None = None
    timeout_seconds: int | None = None
    capacity_type: str | None = None
    sequential: bool = False
    multi_node: MultiNode | None = None


def parse_job_spec(annotations: Mapping[str, str]) -> JobSpec:
    """Parse all of Ebb's annotations; raises SpecError naming the first bad one."""
    return JobSpec(
        depends_on=parse_depends_on(annotations.get(keys.DEPENDS_ON)),
        scheduling_priority=parse_scheduling_priority(annotations.get(keys.SCHEDULING_PRIORITY)),
        retry=parse_retry_strategy(annotations.get(keys.RETRY_STRATEGY)),
        timeout_seconds=parse_timeout(annotations.get(keys.TIMEOUT_SECONDS)),
        capacity_type=parse_capacity_type(annotations.get(keys.CAPACITY_TYPE_PREFERENCE)),
        sequential=parse_array_dependency(annotations.get(keys.ARRAY_DEPENDENCY)),
        multi_node=parse_multi_node(
            annotations.get(keys.NODES), annotations.get(keys.MAIN_NODE_INDEX)
        ),
    )
