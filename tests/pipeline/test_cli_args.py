"""Shared argument handling: durations and the env-var twins of repeatable flags."""
from __future__ import annotations

import argparse

import pytest

from pipeline.cli_args import duration_seconds, fill_list_env_defaults


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


@pytest.mark.parametrize("text, seconds", [("90", 90), ("15m", 900), ("2h", 7200), ("1.5d", 129600)])
def test_durations(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0s", "-5m", "3y"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        duration_seconds(text)
