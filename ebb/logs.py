"""Structured JSON logs (structlog) for both daemons; one line per event.

Ebb's own events and the standard library's records (aiohttp, botocore, asyncio, warnings)
go through one handler and one renderer, so every line is a JSON object with the same
fields: `event`, `level`, `logger`, `timestamp`.
"""

from __future__ import annotations

import logging
import sys

import structlog

_REDACT = ("token", "authorization", "password", "secret", "client-key")
# Ebb's loggers ("ebb.*") log at the configured level; everyone else's at warning or above,
# so a library's chatter at info does not drown Ebb's decisions.
_OWN_LOGGERS = "ebb"


def _redact(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Never log credentials, whatever a caller passes."""
    for key in list(event):
        if any(word in key.lower() for word in _REDACT):
            event[key] = "[redacted]"
    return event


def configure(level: str = "info", json: bool = True) -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        # Filtering before anything is built keeps a debug line (one per pod) free at info.
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    logging.getLogger(_OWN_LOGGERS).setLevel(numeric)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.captureWarnings(True)
