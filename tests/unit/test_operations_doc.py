"""docs/operations.md lists every setting of both daemons, as the code has them."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_settings_tables_match_the_code() -> None:
    generator = runpy.run_path(str(ROOT / "hack" / "settings_doc.py"))
    doc = (ROOT / "docs" / "operations.md").read_text()
    assert doc == generator["render"](doc), "run: python hack/settings_doc.py"
    assert "`--extender-max-body-bytes` | `EBB_EXTENDER_MAX_BODY_BYTES`" in doc
    assert "`--interruption-queue-url` | `EBB_INTERRUPTION_QUEUE_URL`" in doc
