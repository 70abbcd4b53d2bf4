"""Entry point: `ebb-autoscaler` / `python -m autoscaler`."""

from __future__ import annotations

import asyncio
import os
import sys

from autoscaler.app import create_app
from autoscaler.settings import AutoscalerSettings
from ebb import logs, settings
from ebb.server import serve


def main(argv: list[str] | None = None) -> int:
    try:
        config = settings.load(AutoscalerSettings, argv, os.environ, prog="ebb-autoscaler")
    except settings.SettingsError as exc:
        print(f"ebb-autoscaler: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_json)
    asyncio.run(serve(create_app(config), config.listen_host, config.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
