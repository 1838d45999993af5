"""Shared argument handling: durations and the env-var twins of repeatable flags."""
from __future__ import annotations

import argparse

import pytest

from pipeline.cli_args import (ArgumentParser, UsageError, command_parser, duration_seconds, env_default, env_flag,
                               fill_list_env_defaults)


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topics", action="extend", nargs="+")
    args = parser.parse_args(argv)
    fill_list_env_defaults(args, "topics")
    return args


def test_repeatable_flag_replaces_its_env_twin_instead_of_extending_it(monkeypatch):
    monkeypatch.setenv("TICKERPULSE_TOPICS", "news,comments")
    assert _args(["--topics", "alerts"]).topics == ["alerts"]
    assert _args([]).topics == ["news", "comments"]
    monkeypatch.delenv("TICKERPULSE_TOPICS")
    assert _args([]).topics is None


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1.5d", 129600), ("500ms", 0.5)])
def test_durations(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text, message", [
    ("", "not a duration"), ("abc", "not a duration"), ("3y", "not a duration"),
    ("0s", "must be positive"), ("-5m", "must be positive"), ("-1h", "must be positive"),
    ("90", "90: give a unit, e.g. 90s or 90m"),
])
def test_bad_durations_are_refused(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        duration_seconds(text)


def _parser() -> ArgumentParser:
    parser = command_parser("x", "test")
    parser.add_argument("--half-life", action="extend", nargs="+", type=duration_seconds)
    parser.add_argument("--batch-size", type=int, default=env_default("batch_size", "64"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default=env_default("device", "cpu"))
    return parser


def _error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_a_negative_duration_is_a_value_with_a_clear_error(capsys):
    assert "duration must be positive: '-1h'" in _error(["--half-life", "-1h"], capsys)
    assert "duration must be positive: '-5m'" in _error(["--half-life", "1h", "-5m"], capsys)
    assert _parser().parse_args(["--half-life", "1h", "6h"]).half_life == [3600, 21600]


@pytest.mark.parametrize("variable, value, message", [
    ("TICKERPULSE_BATCH_SIZE", "abc", "TICKERPULSE_BATCH_SIZE='abc': invalid literal for int()"),
    ("TICKERPULSE_DEVICE", "tpu", "TICKERPULSE_DEVICE='tpu': choose from cpu, cuda"),
])
def test_a_bad_env_value_is_one_line_naming_the_variable(monkeypatch, capsys, variable, value, message):
    monkeypatch.setenv(variable, value)
    assert message in _error([], capsys)


def test_env_values_are_converted_to_plain_values(monkeypatch):
    monkeypatch.setenv("TICKERPULSE_BATCH_SIZE", "8")
    monkeypatch.setenv("TICKERPULSE_DEVICE", "cuda")
    args = _parser().parse_args([])
    assert args.batch_size == 8 and type(args.device) is str and args.device == "cuda"


def test_env_flags(monkeypatch):
    assert env_flag("quantize") is False
    monkeypatch.setenv("TICKERPULSE_QUANTIZE", "Yes")
    assert env_flag("quantize") is True
    monkeypatch.setenv("TICKERPULSE_QUANTIZE", "maybe")
    with pytest.raises(UsageError, match="TICKERPULSE_QUANTIZE='maybe'"):
        env_flag("quantize")


def test_horizon_over_cadence_is_bounded(capsys):
    from pipeline.cli import main

    assert main(["backfill", "--input", "x.jsonl", "--cadence", "1s", "--horizon", "30d"]) == 2
    assert "--horizon/--cadence gives 2,592,000 steps; at most 100,000" in capsys.readouterr().err
