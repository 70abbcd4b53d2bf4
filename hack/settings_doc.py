"""Rewrite the settings tables in docs/operations.md from the daemons' settings.

    python hack/settings_doc.py

Each table sits between `<!-- settings: NAME -->` and `<!-- end settings -->`;
tests/unit/test_operations_doc.py fails when they drift from the code.
"""

from __future__ import annotations

import re
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autoscaler.settings import AutoscalerSettings  # noqa: E402
from ebb.settings import describe  # noqa: E402
from extender.settings import SchedulerSettings  # noqa: E402
from kubectl_ebb.ui import UiSettings  # noqa: E402

TABLES = {
    "ebb-scheduler": SchedulerSettings,
    "ebb-autoscaler": AutoscalerSettings,
    "kubectl-ebb-ui": UiSettings,
}
DOC = ROOT / "docs" / "operations.md"


def table(settings: type) -> str:
    rows = ["| flag | environment variable | default | what it does |", "|---|---|---|---|"]
    for flag, env, default, help_text in describe(settings):
        rows.append(f"| `{flag}` | `{env}` | `{default}` | {help_text.replace('|', '/')} |")
    return "\n".join(rows)


def fill(settings: type, match: re.Match[str]) -> str:
    return match.group(1) + table(settings) + match.group(2)


def render(text: str) -> str:
    for name, settings in TABLES.items():
        pattern = re.compile(
            rf"(<!-- settings: {name} -->\n).*?(\n<!-- end settings -->)", re.DOTALL
        )
        text = pattern.sub(partial(fill, settings), text)
    return text


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text()))
