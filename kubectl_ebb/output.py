"""How the plugin prints: tables for people (`-o wide` for more columns), and for
machines what kubectl prints: `-o name`, `-o json|yaml` (a listing is a `kind: List` of
the objects as the API server returns them), `-o jsonpath=TEMPLATE`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import yaml

from kubectl_ebb import jsonpath

Json = dict[str, Any]
STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
FORMATS = ("json", "yaml", "name", "wide", "jsonpath=TEMPLATE")
ELLIPSIS = "…"


class OutputError(Exception):
    """An `-o` value that names no printer, or a template that does not parse."""


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A parsed `-o` value: `kind` is json, yaml, name, wide or jsonpath; `template` the
    parsed jsonpath template."""

    kind: str
    template: jsonpath.Template | None = None

    @classmethod
    def parse(cls, value: str) -> OutputFormat:
        """As kubectl: `jsonpath=TEMPLATE` (also `jsonpath='{...}'`), or one of the names."""
        kind, _, template = value.partition("=")
        if kind == "jsonpath":
            try:
                return cls("jsonpath", jsonpath.parse(template))
            except jsonpath.JsonPathError as exc:
                raise OutputError(f"error parsing jsonpath {template}: {exc}") from None
        if value in ("json", "yaml", "name", "wide"):
            return cls(value)
        raise OutputError(
            f'unable to match a printer suitable for the output format "{value}", '
            f"allowed formats are: {','.join(FORMATS)}"
        )


def annotations_of(obj: Json) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def age(stamp: str | None) -> str:
    if not stamp:
        return "?"
    seconds = datetime.now(UTC) - datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    total = int(seconds.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size:
            return f"{total // size}{unit}"
    return f"{total}s"


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut at a word boundary with an ellipsis
    (a reason cut mid-word reads as another word); a single word longer than `width` is
    the only thing ever cut inside."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    room = width - len(ELLIPSIS)
    cut = text[: room + 1].rfind(" ")
    head = text[:cut] if cut > 0 else text[:room]
    return head.rstrip(" ,;:—-") + ELLIPSIS


def last_of(shown: int, total: int, what: str) -> str:
    """What a shortened list says of itself: "last 20 of 200 attempts"."""
    return f"last {shown} of {total} {what}"


def widths_of(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> list[int]:
    return [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]


def row_text(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = widths_of(cells, headers)
    return "\n".join(row_text(r, widths) for r in [list(headers), *cells])


def as_list(items: Sequence[Json]) -> Json:
    """A listing as kubectl prints it with `-o json|yaml`."""
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def render(data: Any, output: OutputFormat) -> str:
    """`data` in a machine format (json, yaml, jsonpath); no trailing newline for json."""
    if output.kind == "json":
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    if output.kind == "yaml":
        return yaml.safe_dump(data, sort_keys=False).rstrip("\n")
    if output.template is not None:
        return output.template.render(data)
    raise OutputError(f"-o {output.kind} does not apply here; use -o json, yaml or jsonpath")


def emit(data: Any, output: OutputFormat | None, text: str) -> None:
    """A command's result: `text` for people, else `data` in the format asked for."""
    if output is None:
        print(text)
    elif output.kind == "jsonpath":
        print(render(data, output), end="")
    else:
        print(render(data, output))
