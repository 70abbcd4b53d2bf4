"""Entry point: `ebb-scheduler` / `python -m extender`."""

from __future__ import annotations

import asyncio
import os
import sys

from ebb import logs, settings
from ebb.server import serve
from extender.app import create_app, prepare_tls, serving_context
from extender.settings import SchedulerSettings


def main(argv: list[str] | None = None) -> int:
    try:
        config = settings.load(SchedulerSettings, argv, os.environ, prog="ebb-scheduler")
    except settings.SettingsError as exc:
        print(f"ebb-scheduler: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_json)
    asyncio.run(_serve(config))
    return 0


async def _serve(config: SchedulerSettings) -> None:
    await prepare_tls(config)
    ssl_context = serving_context(config)
    extra = [(config.listen_host, config.ops_port, None)] if config.ops_port else []
    await serve(
        create_app(config, ssl_context),
        config.listen_host,
        config.port,
        ssl_context=ssl_context,
        extra_sites=extra,
    )


if __name__ == "__main__":
    sys.exit(main())
