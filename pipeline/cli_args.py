"""Argument parsing shared by all commands: one-line errors, exit status 2, env-var twins."""
from __future__ import annotations

import argparse
import os
import re
from typing import NoReturn


class UsageError(Exception):
    """A bad argument found after parsing (missing file, bad range): one line, exit 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line on stderr and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def command_parser(name: str, description: str) -> ArgumentParser:
    return ArgumentParser(prog=f"tickerpulse {name}", description=description)


def env_default(name: str, default: str | None = None) -> str | None:
    """Every setting has an env-var twin, ``TICKERPULSE_<NAME>``; the flag wins over it."""
    return os.environ.get(f"TICKERPULSE_{name.upper().replace('-', '_')}", default)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def duration_seconds(text: str) -> float:
    """Parse ``90``, ``90s``, ``15m``, ``2h``, ``7d`` into seconds (argparse ``type=``)."""
    match = _DURATION.match(str(text))
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30s, 15m, 2h, 7d)")
    value = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return value


def fill_list_env_defaults(args: argparse.Namespace, *names: str) -> None:
    """Repeatable flags (``action="extend"``) take their comma-separated env-var twin only when
    not given at all: as an argparse default, the flag's values would extend the env value."""
    for name in names:
        if getattr(args, name) is None:
            value = env_default(name)
            setattr(args, name, value.split(",") if value else None)
