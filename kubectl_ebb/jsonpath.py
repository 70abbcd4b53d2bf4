"""kubectl's JSONPath templates (`-o jsonpath=...`), the subset people write:

    {.items[*].metadata.name}                        fields, `[*]`, results joined by spaces
    {range .items[*]}{.metadata.name}{"\\n"}{end}      iterate; "..." literals with escapes
    {.metadata.annotations.ebb\\.dev/state}           `\\.` keeps a dot in a key
    {.items[0]} {.items[-1:]} {.items[0:4:2]}        index and slice
    {['metadata']['name']} {.items[*]['a','b']}      quoted names, unions
    {..name}                                         recursive descent
    {.items[?(@.status.status=="VALID")].metadata.name}   filters (== != < <= > >=, or @.x)
    {$} {@}                                          the root, the current object

As kubectl prints them: strings as they are, lists and objects as compact JSON, a missing
key as nothing (kubectl get's --allow-missing-template-keys=true).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


class JsonPathError(Exception):
    """A template that does not parse; says where."""


# --- the parsed form -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # "*" for every value


@dataclass(frozen=True, slots=True)
class Recursive:
    name: str  # `..name`: every value under key `name`, at any depth


@dataclass(frozen=True, slots=True)
class Slice:
    start: int | None
    stop: int | None
    step: int | None
    single: bool  # `[i]`, not `[i:j]`


@dataclass(frozen=True, slots=True)
class Union:
    parts: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class Filter:
    left: Path
    op: str | None  # None: the left side exists
    right: Path | Literal | None


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


@dataclass(frozen=True, slots=True)
class Path:
    from_root: bool
    steps: tuple[Field | Recursive | Slice | Union | Filter, ...]


@dataclass(frozen=True, slots=True)
class Range:
    over: Path
    body: tuple[Node, ...]


Node = str | Literal | Path | Range

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


# --- parsing ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def take(self, n: int = 1) -> str:
        out = self.text[self.pos : self.pos + n]
        self.pos += n
        return out

    def skip_spaces(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def expect(self, s: str) -> None:
        if self.take(len(s)) != s:
            raise JsonPathError(f"expected {s!r} at {self.pos - len(s)} in {self.text!r}")

    def done(self) -> bool:
        return self.pos >= len(self.text)


def _quoted(r: _Reader) -> str:
    """A '...' or "..." string; double-quoted ones take JSON's escapes (\\n, \\t, \\")."""
    quote = r.take()
    start = r.pos
    while not r.done() and r.peek() != quote:
        r.take(2 if r.peek() == "\\" else 1)
    if r.done():
        raise JsonPathError(f"unterminated string at {start - 1} in {r.text!r}")
    raw = r.text[start : r.pos]
    r.take()
    try:
        return str(json.loads(f'"{raw}"')) if quote == '"' else raw.replace("\\'", "'")
    except json.JSONDecodeError as exc:
        raise JsonPathError(f"bad escape in {raw!r}: {exc}") from None


def _name(r: _Reader) -> str:
    """A field name after `.`: up to `.`, `[`, a space, `)` or an operator; `\\.` escapes."""
    out = []
    while not r.done() and r.peek() not in ".[] )}=!<>,":
        if r.peek() == "\\":
            r.take()
        out.append(r.take())
    return "".join(out)


def _int(r: _Reader) -> int | None:
    start = r.pos
    if r.peek() == "-":
        r.take()
    while r.peek().isdigit():
        r.take()
    text = r.text[start : r.pos].strip()
    if text in ("", "-"):
        if text:
            raise JsonPathError(f"bad index at {start} in {r.text!r}")
        return None
    return int(text)


def _bracket(r: _Reader) -> Field | Slice | Union | Filter:
    r.expect("[")
    r.skip_spaces()
    if r.peek() == "?":
        r.take()
        r.expect("(")
        r.skip_spaces()
        left = _path(r)
        r.skip_spaces()
        op = next((o for o in _COMPARE if r.peek(len(o)) == o), None)
        right: Path | Literal | None = None
        if op:
            r.take(len(op))
            r.skip_spaces()
            right = _operand(r)
            r.skip_spaces()
        r.expect(")")
        r.skip_spaces()
        r.expect("]")
        return Filter(left, op, right)
    if r.peek() == "*":
        r.take()
        r.skip_spaces()
        r.expect("]")
        return Field("*")
    parts: list[Path] = []
    while True:
        r.skip_spaces()
        if r.peek() in ("'", '"'):
            keys = _quoted(r).split(".")  # kubectl: ['a.b'] is the path a.b
            parts.append(Path(False, tuple(Field(k) for k in keys)))
        else:
            numbers = [_int(r)]
            while r.peek() == ":":
                r.take()
                numbers.append(_int(r))
            if len(numbers) > 3 or (len(numbers) == 1 and numbers[0] is None):
                raise JsonPathError(f"bad subscript at {r.pos} in {r.text!r}")
            start, stop, step = [*numbers, None, None][:3]
            parts.append(Path(False, (Slice(start, stop, step, single=len(numbers) == 1),)))
        r.skip_spaces()
        if r.peek() != ",":
            break
        r.take()
    r.expect("]")
    if len(parts) == 1:
        only = parts[0].steps
        if len(only) == 1 and isinstance(only[0], (Field, Slice)):
            return only[0]
    return Union(tuple(parts))


def _operand(r: _Reader) -> Path | Literal:
    if r.peek() in ("'", '"'):
        return Literal(_quoted(r))
    if r.peek() in ("@", "$", "."):
        return _path(r)
    start = r.pos
    while not r.done() and r.peek() not in " )":
        r.take()
    word = r.text[start : r.pos]
    if word in ("true", "false"):
        return Literal(word == "true")
    try:
        return Literal(float(word) if "." in word else int(word))
    except ValueError:
        raise JsonPathError(f"bad value {word!r} in a filter in {r.text!r}") from None


def _path(r: _Reader) -> Path:
    from_root = False
    if r.peek() == "$":
        r.take()
        from_root = True
    elif r.peek() == "@":
        r.take()
    steps: list[Field | Recursive | Slice | Union | Filter] = []
    while not r.done():
        if r.peek(2) == "..":
            r.take(2)
            if r.peek() == "[":
                steps.append(Recursive("*"))
                continue
            steps.append(Recursive(_name(r)))
        elif r.peek() == ".":
            r.take()
            name = _name(r)
            if name:
                steps.append(Field(name))
        elif r.peek() == "[":
            steps.append(_bracket(r))
        else:
            break
    return Path(from_root, tuple(steps))


def _action(r: _Reader) -> Node | tuple[str, Path | None]:
    """One `{...}`: a path, a literal, or `range PATH` / `end` (returned as markers)."""
    r.skip_spaces()
    node: Node | tuple[str, Path | None]
    if r.text.startswith("range ", r.pos):
        r.take(len("range "))
        r.skip_spaces()
        node = ("range", _path(r))
    elif r.text.startswith("end", r.pos) and r.text[r.pos + 3 : r.pos + 4] in (" ", "}"):
        r.take(3)
        node = ("end", None)
    elif r.peek() in ("'", '"'):
        node = Literal(_quoted(r))
    else:
        node = _path(r)
    r.skip_spaces()
    if r.peek() != "}":
        raise JsonPathError(f"unexpected {r.peek()!r} at {r.pos} in {r.text!r}")
    r.take()
    return node


def parse(template: str) -> Template:
    r = _Reader(template)
    stack: list[tuple[Path | None, list[Node]]] = [(None, [])]
    while not r.done():
        brace = template.find("{", r.pos)
        if brace < 0:
            stack[-1][1].append(r.take(len(template) - r.pos))
            break
        if brace > r.pos:
            stack[-1][1].append(r.take(brace - r.pos))
        r.take()
        node = _action(r)
        if isinstance(node, tuple):
            marker, over = node
            if marker == "range":
                stack.append((over, []))
                continue
            if len(stack) == 1:
                raise JsonPathError(f"{{end}} without {{range}} in {template!r}")
            over, body = stack.pop()
            assert over is not None
            stack[-1][1].append(Range(over, tuple(body)))
        else:
            stack[-1][1].append(node)
    if len(stack) > 1:
        raise JsonPathError(f"{{range}} without {{end}} in {template!r}")
    return Template(tuple(stack[0][1]))


# --- evaluation ------------------------------------------------------------------------


def _children(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        yield from value.values()
    elif isinstance(value, list):
        yield from value


def _descend(value: Any, name: str) -> Iterator[Any]:
    """`..name`: the value's own `name`, then its children's, depth first."""
    if isinstance(value, dict) and name != "*" and name in value:
        yield value[name]
    for child in _children(value):
        if name == "*":
            yield child
        yield from _descend(child, name)


def _step(
    values: list[Any], step: Field | Recursive | Slice | Union | Filter, root: Any
) -> list[Any]:
    if isinstance(step, Union):
        # As kubectl: each part over every value, then the next part.
        return [found for part in step.parts for v in values for found in evaluate(part, v, root)]
    out: list[Any] = []
    for value in values:
        match step:
            case Field("*"):
                out.extend(_children(value))
            case Field(name):
                if isinstance(value, dict) and name in value:
                    out.append(value[name])
            case Recursive(name):
                out.extend(_descend(value, name))
            case Slice(start, stop, step_, single):
                if not isinstance(value, list):
                    continue
                if single:
                    assert start is not None
                    if not -len(value) <= start < len(value):
                        # kubectl's error, even where missing keys print nothing.
                        raise JsonPathError(
                            f"array index out of bounds: index {start}, length {len(value)}"
                        )
                    out.append(value[start])
                else:
                    out.extend(value[start:stop:step_])
            case Filter(left, op, right):
                out.extend(v for v in _children(value) if _matches(left, op, right, v, root))
    return out


def _matches(left: Path, op: str | None, right: Path | Literal | None, v: Any, root: Any) -> bool:
    found = evaluate(left, v, root)
    if op is None:
        return bool(found)
    if isinstance(right, Literal):
        wanted = [right.value]
    else:
        assert right is not None
        wanted = evaluate(right, v, root)
    if not found or not wanted:
        return False
    a, b = found[0], wanted[0]
    numbers = (int, float)
    comparable = (isinstance(a, numbers) and isinstance(b, numbers)) or type(a) is type(b)
    return comparable and _COMPARE[op](a, b)


def evaluate(path: Path, current: Any, root: Any) -> list[Any]:
    values = [root if path.from_root else current]
    for step in path.steps:
        values = _step(values, step, root)
    return values


def text_of(value: Any) -> str:
    """As kubectl prints a result: strings bare, lists and objects as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return str(value)


@dataclass(frozen=True, slots=True)
class Template:
    nodes: tuple[Node, ...]

    def render(self, data: Any) -> str:
        return "".join(_render(self.nodes, data, data))


def _render(nodes: tuple[Node, ...], current: Any, root: Any) -> Iterator[str]:
    for node in nodes:
        match node:
            case str():
                yield node
            case Literal(value):
                yield text_of(value)
            case Path():
                yield " ".join(text_of(v) for v in evaluate(node, current, root))
            case Range(over, body):
                for item in evaluate(over, current, root):
                    yield from _render(body, item, root)
