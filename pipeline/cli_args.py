"""Argument parsing shared by all commands: one-line errors, exit status 2, env-var twins."""
from __future__ import annotations

import argparse
import os
import re
from typing import Any, NoReturn


class UsageError(Exception):
    """A bad argument found after parsing (missing file, bad range): one line, exit 2."""


class EnvValue(str):
    """A default read from an env var: a bad value is reported under the variable's name."""

    variable: str

    def __new__(cls, value: str, variable: str = "") -> "EnvValue":
        self = super().__new__(cls, value)
        self.variable = variable
        return self


# Values such as -1h or -5m are values, not options: argparse's own pattern only knows -5 and -.5.
_NEGATIVE_VALUE = re.compile(r"^-\d+(?:\.\d+)?[a-zA-Z]*$|^-\.\d+[a-zA-Z]*$")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line on stderr and exits 2.

    Env-var twins are checked like flags (type and choices), and reported under the variable's
    name; a value such as ``-1h`` is a value, not an unknown option.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        for action in self._actions:
            if isinstance(action.default, EnvValue):
                self._check_env_default(action, action.default)
        parsed, rest = super().parse_known_args(args, namespace)
        for name, value in vars(parsed).items():  # plain strings from here on (DuckDB, pickling)
            if isinstance(value, EnvValue):
                setattr(parsed, name, str(value))
        return parsed, rest

    def _check_env_default(self, action: argparse.Action, value: EnvValue) -> None:
        try:
            converted = action.type(value) if callable(action.type) else value
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            self.error(f"{value.variable}={str(value)!r}: {exc}")
        if action.choices is not None and converted not in action.choices:
            self.error(f"{value.variable}={str(value)!r}: choose from {', '.join(map(str, action.choices))}")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def command_parser(name: str, description: str) -> ArgumentParser:
    return ArgumentParser(prog=f"tickerpulse {name}", description=description)


def env_variable(name: str) -> str:
    return f"TICKERPULSE_{name.upper().replace('-', '_')}"


def env_default(name: str, default: str | None = None) -> str | None:
    """Every setting has an env-var twin, ``TICKERPULSE_<NAME>``; the flag wins over it. An empty
    variable counts as unset."""
    value = os.environ.get(env_variable(name))
    return EnvValue(value, env_variable(name)) if value else default


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def env_flag(name: str, default: bool = False) -> bool:
    """A boolean env-var twin: 1/true/yes/on or 0/false/no/off; anything else is a UsageError."""
    value = env_default(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise UsageError(f"{env_variable(name)}={value!r}: expected 1/true/yes/on or 0/false/no/off")


_DURATION = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?|[-+]?\.\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(text: str) -> float:
    """Parse ``90s``, ``15m``, ``2h``, ``7d``, ``500ms`` into seconds (argparse ``type=``).

    A unit is required (a bare ``90`` is refused rather than guessed), and so is a positive value.
    """
    match = _DURATION.match(str(text))
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {str(text)!r} (use e.g. 30s, 15m, 2h, 7d)")
    if match.group(2) is None:
        raise argparse.ArgumentTypeError(f"{str(text).strip()}: give a unit, e.g. {match.group(1)}s or {match.group(1)}m")
    value = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not value > 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {str(text)!r}")
    return value


def fill_list_env_defaults(args: argparse.Namespace, *names: str) -> None:
    """Repeatable flags (``action="extend"``) take their comma-separated env-var twin only when
    not given at all: as an argparse default, the flag's values would extend the env value."""
    for name in names:
        if getattr(args, name) is None:
            value = env_default(name)
            setattr(args, name, value.split(",") if value else None)
