"""Which tickers an item is about: its `tickers` field, cashtags ($AAPL), and company aliases.

Pure logic (no Beam) shared by the backfill and the streaming job.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

# One to ten letters/digits starting with a letter, optionally a share class or venue suffix:
# AAPL, BRK.B, RDS-A, 7203 is refused (numeric codes need the tickers field with a letter).
_TICKER = re.compile(r"^[A-Z][A-Z0-9]{0,9}(?:[.\-][A-Z0-9]{1,4})?$")
# A cashtag starts with a letter (so "$5bn" is money, not a ticker) and is not glued to a word.
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,9}(?:[.\-][A-Za-z]{1,2}\b)?)(?![\w$])")


class InvalidTicker(ValueError):
    pass


def normalise_ticker(value: str) -> str:
    """``" $aapl "`` -> ``"AAPL"``; anything that cannot be a ticker symbol is refused."""
    ticker = value.strip().lstrip("$").upper()
    if not _TICKER.match(ticker):
        raise InvalidTicker(f"not a ticker symbol: {value[:32]!r}")
    return ticker


def cashtags(text: str) -> list[str]:
    return [match.upper() for match in _CASHTAG.findall(text)]


def load_aliases(path: str | Path) -> dict[str, str]:
    """Read a CSV with columns ``alias,ticker`` (header required), e.g. ``Apple,AAPL``."""
    aliases: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"alias", "ticker"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: alias CSV needs a header with columns alias,ticker")
        for row in reader:
            alias = (row["alias"] or "").strip()
            if not alias:
                raise ValueError(f"{path}:{reader.line_num}: empty alias")
            try:
                aliases[alias] = normalise_ticker(row["ticker"] or "")
            except InvalidTicker as exc:
                raise ValueError(f"{path}:{reader.line_num}: {exc}") from None
    return aliases


class TickerExtractor:
    """Given tickers first, then cashtags, then aliases; each ticker once, in order of appearance.

    Aliases match case-sensitively as whole words ("Apple" the company, not "apple pie").
    """

    def __init__(self, aliases: Mapping[str, str] | None = None) -> None:
        self._aliases = dict(aliases or {})
        names = sorted(self._aliases, key=len, reverse=True)  # longest first: "Apple Inc" over "Apple"
        self._alias_pattern = (
            re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, names)) + r")(?!\w)") if names else None
        )

    def extract(self, text: str, given: Iterable[str] = ()) -> tuple[str, ...]:
        found = list(given) + cashtags(text)
        if self._alias_pattern is not None:
            found += [self._aliases[match] for match in self._alias_pattern.findall(text)]
        return tuple(dict.fromkeys(found))
