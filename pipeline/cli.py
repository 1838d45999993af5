"""One entry point for every TickerPulse command (``tickerpulse`` = ``python run_pipeline.py``).

Each command lives in its own module exposing ``run(argv) -> int``; it is imported only when
called, so ``tickerpulse query`` never pays for torch or Beam start-up.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

from pipeline.cli_args import UsageError

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pipeline.demo:run", "start a local broker, replay the sample corpus, stream it, print sentiment"),
    "backfill": ("pipeline.backfill:run", "score files or a Kafka offset/time range into DuckDB"),
    "stream": ("pipeline.stream:run", "continuous job: Kafka -> scores -> DuckDB, resumes from committed offsets"),
    "score": ("models.commands:score", "score a JSONL file with the sentiment model"),
    "train": ("models.commands:train", "fine-tune the sentiment classifier on a labelled CSV"),
    "average": ("models.commands:average", "average the weights of runs trained with the same --seed (a model soup)"),
    "eval": ("models.commands:evaluate", "accuracy, macro-F1 and confusion matrix on a labelled CSV"),
    "query": ("dashboards.commands:query", "run SQL against a TickerPulse DuckDB file"),
    "trend": ("dashboards.commands:trend", "sentiment trend of one ticker by time bucket"),
    "dashboard": ("dashboards.commands:dashboard", "serve the live dashboard over a DuckDB file"),
    "broker": ("pipeline.broker:run", "run the embedded Kafka-protocol broker until Ctrl-C (for trying stream by hand)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: tickerpulse <command> [options]   (python run_pipeline.py <command> --help)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


# Logged by Beam on the root logger at import time when the optional GCP clients are absent.
_BEAM_IMPORT_NOTICES = ("apitools not found",)


def _not_a_beam_import_notice(record: logging.LogRecord) -> bool:
    return not (record.name == "root" and str(record.msg).startswith(_BEAM_IMPORT_NOTICES))


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _configure_logging(setting: str) -> None:
    """Our own modules (and the ``tickerpulse.progress`` lines) log at ``setting`` (a level name,
    any case); libraries (Beam, kafka-python) only from WARNING up, and Beam's import-time notice
    about optional cloud clients not at all."""
    level = setting.strip().upper()
    if level not in _LOG_LEVELS:
        raise UsageError(f"TICKERPULSE_LOG_LEVEL={setting!r}: use one of {', '.join(_LOG_LEVELS)}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().addFilter(_not_a_beam_import_notice)
    for package in ("pipeline", "models", "connectors", "dashboards", "tickerpulse", "__main__"):
        logging.getLogger(package).setLevel(level)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        _configure_logging(os.environ.get("TICKERPULSE_LOG_LEVEL", "INFO"))
    except UsageError as exc:
        print(f"tickerpulse: error: {exc}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"tickerpulse: error: unknown command {name!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    command = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(command(rest) or 0)
    except UsageError as exc:
        print(f"tickerpulse {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
