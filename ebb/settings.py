"""The one place settings are read: every setting is a flag and an environment variable.

A daemon declares its settings as a frozen dataclass whose fields carry a help text;
`load` turns each field `foo_bar` into the flag `--foo-bar` and the variable
`EBB_FOO_BAR` (flag beats variable beats default) and checks its type, so a bad
value fails at start with the flag, the variable and what is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
ENV_PREFIX = "EBB_"


def setting(default: Any, help: str, *, choices: Sequence[str] | None = None) -> Any:
    """Declare one setting (use as a dataclass field default)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None}
    if isinstance(default, list | dict | set):
        raise TypeError("settings defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=meta)


def env_name(field_name: str, prefix: str = ENV_PREFIX) -> str:
    return prefix + field_name.upper()


def prefix_of(cls: type[Any]) -> str:
    """The variables' prefix: EBB_, or a class's own `env_prefix` (a ClassVar)."""
    return str(getattr(cls, "env_prefix", ENV_PREFIX))


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


class SettingsError(ValueError):
    pass


def _convert(raw: str, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw == "":
            return None
        return _convert(raw, args[0], where)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{where}: {raw!r} is not a boolean (use true or false)")
    if origin is tuple:
        (inner, *_rest) = typing.get_args(kind)
        return tuple(_convert(p.strip(), inner, where) for p in raw.split(",") if p.strip())
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise SettingsError(f"{where}: {raw!r} is not a {kind.__name__}") from None
    return raw


def load(cls: type[T], argv: Sequence[str] | None, environ: Mapping[str, str], prog: str) -> T:
    """Build `cls` from command-line flags and environment variables."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else None,
        epilog="Every flag can also be set by an environment variable: "
        f"--foo-bar is {prefix_of(cls)}FOO_BAR.",
    )
    add_arguments(parser, cls)
    return from_arguments(cls, vars(parser.parse_args(argv)), environ)


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """A flag for each of `cls`'s settings (a command's own parser may take them too)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints, prefix = typing.get_type_hints(cls), prefix_of(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        help_text = (
            f"{f.metadata.get('help', '')} [env {env_name(f.name, prefix)}; default {f.default!r}]"
        )
        if kind is bool:
            parser.add_argument(
                flag_name(f.name),
                dest=f.name,
                default=None,
                nargs="?",
                const="true",
                metavar="BOOL",
                help=help_text,
            )
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, default=None, help=help_text)


def from_arguments(cls: type[T], args: Mapping[str, Any], environ: Mapping[str, str]) -> T:
    """`cls` from parsed flags (`add_arguments`), else environment variables, else defaults."""
    hints, prefix = typing.get_type_hints(cls), prefix_of(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        kind = hints[f.name]
        raw, where = args.get(f.name), flag_name(f.name)
        if raw is None and env_name(f.name, prefix) in environ:
            raw, where = environ[env_name(f.name, prefix)], env_name(f.name, prefix)
        if raw is None:
            continue
        value = _convert(str(raw), kind, where)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise SettingsError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        values[f.name] = value
    return cls(**values)


def describe(cls: type[Any]) -> list[tuple[str, str, str, str]]:
    """(flag, variable, default, help) for every setting: the operations docs' table."""
    return [
        (
            flag_name(f.name),
            env_name(f.name, prefix_of(cls)),
            repr(f.default),
            str(f.metadata.get("help", "")),
        )
        for f in dataclasses.fields(cls)
    ]
