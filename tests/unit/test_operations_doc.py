"""docs/operations.md lists every setting of both daemons, as it is today."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.settings import AutoscalerSettings
from ebb.settings import describe
from extender.settings import SchedulerSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


@pytest.mark.parametrize("settings", [SchedulerSettings, AutoscalerSettings])
def test_every_flag_and_variable_is_documented(settings: type) -> None:
    for flag, env, default, help_text in describe(settings):
        assert f"| `{flag}` | `{env}` | `{default}` |" in DOC, flag
        assert help_text.replace("|", "/") in DOC, flag
