"""Every line a daemon writes is one JSON object naming its logger: Ebb's own events and
the standard library's (aiohttp, botocore, asyncio, warnings) alike."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a child: logs.configure sets the process-wide root logger.
_SCRIPT = """
import logging, warnings
import structlog
from ebb import logs
logs.configure("info")
log = structlog.get_logger("ebb.placement")
log.info("launched", instance="i-1", token="s3cret")
log.debug("bound", pod="ns/p")
logging.getLogger("botocore.credentials").warning("Found credentials in environment")
logging.getLogger("aiohttp.server").info("chatter below warning")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("asyncio").exception("Task exception was never retrieved")
warnings.warn("old call", DeprecationWarning, stacklevel=1)
"""


def test_every_line_is_json_with_a_logger_name_and_debug_lines_stay_out_at_info() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", _SCRIPT],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(e["logger"], e["level"], e["event"].splitlines()[0]) for e in lines] == [
        ("ebb.placement", "info", "launched"),
        ("botocore.credentials", "warning", "Found credentials in environment"),
        ("asyncio", "error", "Task exception was never retrieved"),
        ("py.warnings", "warning", lines[3]["event"].splitlines()[0]),
    ]
    assert "DeprecationWarning: old call" in lines[3]["event"]
    assert lines[0]["token"] == "[redacted]"
    assert "ZeroDivisionError" in lines[2]["exception"]
    assert all(e["timestamp"].endswith("Z") for e in lines)
