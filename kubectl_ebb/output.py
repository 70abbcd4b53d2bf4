"""How the plugin prints: tables for people, `-o json|yaml` for machines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import yaml

Json = dict[str, Any]
STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")


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


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["   ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    ]
    return "\n".join(lines)


def emit(data: Any, output: str | None, text: str) -> None:
    if output == "json":
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(text)
