"""Which tickers an item is about, and how each was found (docs/companies.md).

Four sources, in this order of precedence: the record's own ``tickers`` field, cashtags
($AAPL), the user's aliases (``--alias-csv``), and company names from the default table
(pipeline/companies.py). Every symbol resolves to its company's canonical one, so "$BARC",
"BARC.L" and "Barclays" count as one ticker. Pure logic (no Beam), shared by backfill and stream.
"""
from __future__ import annotations

import csv
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import ahocorasick

from pipeline.companies import CompanyTable, Dictionary, default_companies

# One to ten letters/digits starting with a letter, or a numeric code with a venue (7203.T), then up
# to two class or venue suffixes: AAPL, BRK.B, RDS-A, ERIC-B.ST. A bare 7203 is refused.
_TICKER = re.compile(r"^(?:[A-Z][A-Z0-9]{0,9}|[0-9]{3,6}(?=\.))(?:[.\-][A-Z0-9]{1,4}){0,2}$")
# A cashtag starts with a letter (so "$5bn" is money, not a ticker) and is not glued to a word.
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,9}(?:[.\-][A-Za-z]{1,2}\b)?)(?![\w$])")
_NON_WORD = re.compile(r"[\W_]", re.UNICODE)
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)

# Tickers one item can carry, from all sources together: a text with thousands of cashtags is
# spam, and each ticker it names costs a sentiment point per step (docs/companies.md).
MAX_TICKERS = 64

# Names are looked for in a text's first 20,000 characters (the parser's cap on a text's length).
MAX_NAME_SCAN_CHARS = 20_000

FIELD, CASHTAG, ALIAS, NAME = "field", "cashtag", "alias", "name"

# Words that say a text is about a company ("Apple shares", "Next raises profit guidance"): a name
# that is also an ordinary word links only beside one of them (docs/companies.md).
COMPANY_CUES = frozenset("""
    share shares stock stocks shareholder shareholders investor investors analyst analysts stake
    earnings profit profits revenue revenues sales results quarterly q1 q2 q3 q4 fy h1 h2
    guidance dividend dividends buyback ipo valuation eps ebitda margin margins turnover
    ceo cfo coo chairman chairwoman executive executives boss founder board
    acquire acquires acquired acquisition acquisitions merger merge merges takeover bid bids deal
    deals contract contracts order orders invest invests investment divest spinoff sells buys
    layoffs job jobs recall recalls lawsuit lawsuits sues sued fined probe antitrust regulator
    regulators settlement settles plant factory factories store stores outlets customers
    subscribers subscriptions users deliveries shipments shoppers plants hire hires sell unit business
    forecast forecasts outlook warns headquarters spin output
    upgrade upgrades upgraded downgrade downgrades downgraded rating beats misses estimates
    company firm firms maker retailer retailers chain lender insurer carrier airline brewer automaker
    carmaker chipmaker drugmaker miner supplier suppliers manufacturer conglomerate rival rivals
    subsidiary subsidiaries brand brands
    inc corp plc ltd ag nyse nasdaq ftse dax lse billion bn
""".split())
# "Next week", "Next quarter": an ordinary-word name followed by one of these is the word.
TIME_WORDS = frozenset("week weeks month months year years quarter quarters day days season decade time weekend".split())


class InvalidTicker(ValueError):
    pass


def normalise_ticker(value: str) -> str:
    """``" $aapl "`` -> ``"AAPL"``; anything that cannot be a ticker symbol is refused."""
    ticker = value.strip().lstrip("$").upper()
    if not _TICKER.match(ticker):
        raise InvalidTicker(f"not a ticker symbol: {value[:32]!r}")
    return ticker


@functools.lru_cache(maxsize=1)
def _default_table() -> CompanyTable:
    """The default company table ingestion links with (``Linking.extractor``), built once."""
    return default_companies(Dictionary.load())


def canonical_ticker(value: str) -> str:
    """The symbol ingestion stores for ``value`` given in a record's ``tickers`` or as a cashtag,
    with the default company table: ``normalise_ticker`` then the company's canonical symbol
    (``CompanyTable.resolve``): "GOOG" -> "GOOGL", "$barc" -> "BARC.L", an unknown symbol as
    normalised. What readers (``trend --ticker``, the dashboard's filter) look a ticker up by."""
    return _default_table().resolve(normalise_ticker(value))


def cashtags(text: str) -> list[str]:
    return [match.upper() for match in _CASHTAG.findall(text)]


def load_aliases(path: str | Path) -> dict[str, str]:
    """Read a CSV with columns ``alias,ticker`` (header required), e.g. ``Apple,AAPL``."""
    aliases: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"alias", "ticker"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: alias CSV needs a header with columns alias,ticker")
            for row in reader:
                alias = (row["alias"] or "").strip()
                if not alias:
                    raise ValueError(f"{path}:{reader.line_num}: empty alias")
                if len(alias) > 200:
                    raise ValueError(f"{path}:{reader.line_num}: alias longer than 200 characters")
                try:
                    aliases[alias] = normalise_ticker(row["ticker"] or "")
                except InvalidTicker as exc:
                    raise ValueError(f"{path}:{reader.line_num}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: alias CSV is not UTF-8 (byte {exc.start})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: malformed alias CSV: {exc}") from None
    return aliases


@dataclass(frozen=True)
class Linking:
    """How a job links items to tickers: the user's aliases, and whether the default table is on."""

    aliases: Mapping[str, str]
    default_companies: bool = True

    def extractor(self) -> "TickerExtractor":
        if not self.default_companies:
            return TickerExtractor(aliases=self.aliases)
        dictionary = Dictionary.load()
        return TickerExtractor(default_companies(dictionary), self.aliases, dictionary)


@dataclass(frozen=True)
class _Name:
    """One way of writing a company's name, and what a match of it needs before it links."""

    shape: str         # the name as written, punctuation as spaces (the text is compared in that form)
    symbol: str
    how: str           # ALIAS or NAME
    common: bool       # also an ordinary word or place ("Apple", "Amazon"): needs company context
    word: bool         # ...made of common words ("Best Buy"): capitals on its later words mark the company
    acronym: bool      # no lower-case letters ("BP", "HSBC", "SAP")


def _shape(text: str) -> str:
    return _NON_WORD.sub(" ", text)


def _lower(text: str) -> str:
    """Lower case without changing the length (so match offsets stay offsets into ``text``)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


class TickerExtractor:
    """(ticker, how) pairs for one text: each ticker once, in order of precedence then appearance.

    ``companies`` is the default table (names and symbol resolution) or None for cashtags and
    aliases alone; ``aliases`` (the user's, matched case-sensitively as written, no context needed)
    extend it and win over a default name spelled the same; ``dictionary`` says which names are
    ordinary words.
    """

    def __init__(self, companies: CompanyTable | None = None, aliases: Mapping[str, str] | None = None,
                 dictionary: Dictionary | None = None) -> None:
        self._companies = companies
        self._dictionary = dictionary or Dictionary(frozenset(), frozenset())
        by_key: dict[str, list[_Name]] = {}
        if companies is not None:
            for name, symbol, shortened in companies.names():
                key = _lower(_shape(name)).strip()
                # "Q2" (Holdings) is a quarter first; "1&1" (shape "1 1") would match "EUR 1.1 million"
                if key not in COMPANY_CUES and key not in TIME_WORDS and any(c.isalpha() for c in key):
                    by_key.setdefault(key, []).append(self._name(name, symbol, shortened))
            by_key = {key: names for key, names in by_key.items() if len({n.symbol for n in names}) == 1}
        for alias, ticker in (aliases or {}).items():  # the user's alias replaces a default name written the same
            by_key[_lower(_shape(alias)).strip()] = [_Name(
                shape=_shape(alias).strip(), symbol=self.resolve(ticker), how=ALIAS, common=False, word=False,
                acronym=False)]
        self._automaton = None
        if any(by_key):
            self._automaton = ahocorasick.Automaton()
            for key, names in by_key.items():
                if key:
                    self._automaton.add_word(f" {key} ", (len(key), tuple(names)))
            self._automaton.make_automaton()

    def _name(self, name: str, symbol: str, shortened: bool) -> _Name:
        """Ordinary words, acronyms of two letters or that spell a word ("GE", "SAP"), and one-word
        names cut from longer ones (often a person or place: "Emerson" of Emerson Electric, "Dover"
        of Dover Corporation) are common: they link only in company context."""
        shape = _shape(name).strip()
        words = _TOKEN.findall(name)
        acronym = not any(c.islower() for c in name)
        ordinary = self._dictionary.ordinary(name)
        word = ordinary and all(self._dictionary.is_word(w) for w in words) and not acronym
        common = (len(shape) <= 2 or ordinary) if acronym else (ordinary or (shortened and len(words) == 1))
        return _Name(shape=shape, symbol=symbol, how=NAME, common=common, word=word, acronym=acronym)

    def resolve(self, symbol: str) -> str:
        return self._companies.resolve(symbol) if self._companies is not None else symbol

    def extract(self, text: str, given: Iterable[str] = ()) -> tuple[tuple[str, str], ...]:
        found: dict[str, str] = {}
        for ticker in given:
            found.setdefault(self.resolve(ticker), FIELD)
        for tag in cashtags(text):
            found.setdefault(self.resolve(tag), CASHTAG)
        if self._automaton is not None and len(found) < MAX_TICKERS:
            names = self._names(text[:MAX_NAME_SCAN_CHARS], has_cashtag=CASHTAG in found.values())
            for how in (ALIAS, NAME):
                for name in names:
                    if name.how == how:
                        found.setdefault(name.symbol, how)
        return tuple(found.items())[:MAX_TICKERS]

    def _names(self, text: str, has_cashtag: bool) -> list[_Name]:
        """The names the text mentions, leftmost-longest, each kept only if its spelling and its
        context say it is the company (docs/companies.md, "When a name links")."""
        padded = f" {_lower(_shape(text))} "
        hits: list[tuple[int, int, tuple[_Name, ...]]] = []
        for end, (length, names) in self._automaton.iter(padded):
            start = end - length - 1  # ``end`` is the key's closing space in ``padded``, one char ahead of ``text``
            hits.append((start, start + length, names))
        if not hits:
            return []
        hits.sort(key=lambda hit: (hit[0], -hit[1]))
        shouting = _is_shouting(text)
        title_case = shouting or _is_title_case(text)
        sure: list[tuple[int, _Name]] = []
        unsure: list[tuple[int, _Name]] = []  # decided once the whole text is seen
        spans: list[tuple[int, int]] = []
        taken_to = -1
        for start, end, names in hits:
            if start < taken_to:
                continue
            written = _shape(text[start:end])
            name = _spelled(names, written, shouting)
            if name is None:
                continue
            taken_to = end
            if name.how == ALIAS:
                sure.append((start, name))
                continue
            if name.common and (_glued(text, start, end) or _before_time_word(padded, end)):
                continue  # "a meta-analysis", "next week"
            if name.common and name.word and not title_case and _capitalised_later_word(written):
                sure.append((start, name))  # "Best Buy warns", "Legal & General sells": capitals a phrase would not have
            elif name.common or (written == written.lower() != name.shape):
                unsure.append((start, name))  # an ordinary word, or a name in lower case
                spans.append((start, end))
            else:
                sure.append((start, name))
        if unsure and (has_cashtag or sure or _has_cue(text, spans)):
            sure = sorted(sure + unsure, key=lambda hit: hit[0])
        return [name for _, name in sure]


def _spelled(names: tuple[_Name, ...], written: str, shouting: bool) -> _Name | None:
    """The name that ``written`` (the text's own spelling) is a fair spelling of, if any.

    Exact spelling always; an all-caps headline may shout any name; a stylised all-caps name of
    four or more letters may be written capitalised ("FANUC", "Fanuc"), a camel-cased one with
    either first letter ("EBay", "eBay"); lower case ("nokia") only for a name that is no acronym
    or ordinary word, and then only in company context.
    """
    for name in names:
        shape = name.shape
        if (written == shape or (shouting and written == shape.upper())
                or (name.how == NAME and name.acronym and len(shape) >= 4 and written == shape.capitalize())
                or (name.how == NAME and written[1:] == shape[1:] and written[:1].lower() == shape[:1].lower()
                    and any(c.isupper() for c in shape[1:]))):
            return name
    for name in names:
        if name.how == NAME and not name.acronym and not name.common and written == written.lower():
            return name
    return None


def _glued(text: str, start: int, end: int) -> bool:
    return (start > 0 and text[start - 1] == "-") or (end < len(text) and text[end] == "-")


def _before_time_word(padded: str, end: int) -> bool:
    following = padded[end + 1:end + 12].split(maxsplit=1)
    return bool(following) and following[0] in TIME_WORDS


def _capitalised_later_word(written: str) -> bool:
    """In a sentence-case text, capitals on the later words of a phrase ("Best Buy", "Legal &
    General") mark a name. (A single capitalised word mid-sentence does not: "the white cliffs of
    Dover" is the town.)"""
    words = written.split()
    return len(words) > 1 and all(w[:1].isupper() or not w[:1].isalpha() for w in words[1:])


def _is_shouting(text: str) -> bool:
    """At least 8 capitals and 80% of the cased letters ("BARCLAYS CUTS JOBS")."""
    upper = sum(map(str.isupper, text))
    return upper >= 8 and upper >= 4 * sum(map(str.islower, text))


def _is_title_case(text: str) -> bool:
    """Headline style ("Apple Picking Season Opens Early"): capitals say nothing about names."""
    words = [w for w in _TOKEN.findall(text) if len(w) >= 4 and w.isalpha()]
    return len(words) >= 2 and sum(w[0].isupper() for w in words) >= 0.6 * len(words)


def _has_cue(text: str, names: list[tuple[int, int]]) -> bool:
    """A company cue outside the ambiguous names themselves ("Best Buy" is not a cue for itself)."""
    for start, end in names:
        text = text[:start] + " " * (end - start) + text[end:]
    return not COMPANY_CUES.isdisjoint(_TOKEN.findall(_lower(text)))
