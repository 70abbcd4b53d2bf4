from __future__ import annotations

from dataclasses import dataclass

import pytest

from ebb.settings import SettingsError, describe, load, setting


@dataclass(frozen=True)
class Example:
    """An example daemon."""

    port: int = setting(8080, "Port.")
    name: str = setting("x", "Name.")
    debug: bool = setting(False, "Debug.")
    ratio: float = setting(0.5, "Ratio.")
    zones: tuple[str, ...] = setting(("a",), "Zones.")
    mode: str = setting("fast", "Mode.", choices=("fast", "slow"))


def test_defaults() -> None:
    assert load(Example, [], {}, "x") == Example()


def test_environment_then_flags_win() -> None:
    env = {"EBB_PORT": "9000", "EBB_NAME": "env", "EBB_DEBUG": "true", "EBB_ZONES": "b, c"}
    got = load(Example, ["--name", "flag", "--ratio=0.25"], env, "x")
    assert got == Example(port=9000, name="flag", debug=True, ratio=0.25, zones=("b", "c"))


def test_bare_boolean_flag_means_true() -> None:
    assert load(Example, ["--debug"], {}, "x").debug is True


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "eighty"], {}, "--port: 'eighty' is not a int"),
        ([], {"EBB_PORT": "x"}, "EBB_PORT: 'x' is not a int"),
        ([], {"EBB_DEBUG": "maybe"}, "EBB_DEBUG: 'maybe' is not a boolean (use true or false)"),
        (["--mode", "medium"], {}, "--mode: 'medium' is not one of fast, slow"),
    ],
)
def test_bad_values_name_the_flag_or_variable(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load(Example, argv, env, "x")
    assert str(info.value) == message


def test_describe_lists_flag_and_variable() -> None:
    rows = describe(Example)
    assert rows[0] == ("--port", "EBB_PORT", "8080", "Port.")
