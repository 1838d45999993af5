"""The default company table: listed companies, their names as people write them, and their symbols.

Built at start-up from the ``pytickersymbols`` package (MIT; ~1,800 members of the S&P 500/600,
NASDAQ 100, Dow, FTSE 100, DAX family, CAC 40, Euro Stoxx 50, AEX, BEL 20, IBEX 35, OMX Helsinki
and Stockholm, SMI and Nikkei 225 with their Yahoo and Google symbols) plus ``company_names.csv``
beside this module: short and former names the package lacks ("Google", "Royal Dutch Shell").
Nothing is downloaded. Rules in docs/companies.md.
"""
from __future__ import annotations

import csv
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

EXTRA_NAMES_CSV = Path(__file__).with_name("company_names.csv")

# Trailing words that say what kind of legal entity a company is, not which company:
# "Barclays PLC", "Nokia Oyj", "Siemens AG", "Apple Inc.", "Lloyds Banking Group".
_LEGAL = (
    "inc", "incorporated", "corp", "corporation", "co", "company", "companies", "plc", "ag", "se", "sa",
    "s a", "nv", "n v", "sa nv", "oyj", "abp", "ab", "asa", "a s", "as", "ltd", "limited", "llc", "lp",
    "l p", "kgaa", "se co kgaa", "co kgaa", "spa", "s p a", "group", "holding", "holdings", "the",
)
_LEGAL_TAIL = re.compile(
    r"(?:[\s,/]+(?:&\s*|and\s+)?(?:" + "|".join(w.replace(" ", r"\.?\s*") + r"\.?" for w in _LEGAL if w != "the") + r"))+\s*$",
    re.IGNORECASE,
)
# Trailing words that describe the business: "Evonik Industries" is "Evonik" in the news. A name
# shortened this way is kept only if it is no ordinary word (``is_distinctive``): "Mercury General"
# does not become "Mercury".
_DESCRIPTORS = (
    "technologies", "technology", "industries", "financial", "global", "software", "systems", "motors",
    "motor", "energy", "pharmaceuticals", "pharmaceutical", "therapeutics", "international", "brands",
    "electric", "resources", "entertainment", "interactive", "communications", "networks",
    "semiconductor", "semiconductors", "bancorp", "healthcare", "health", "petroleum", "airlines",
    "railway", "chemical", "chemicals", "laboratories", "biosciences", "sciences", "properties", "realty",
    "enterprises", "services", "solutions", "worldwide", "platforms", "labs", "foods", "insurance",
    "pizza", "mexican grill",
)
_DESCRIPTOR_TAIL = re.compile(r"(?:\s+(?:" + "|".join(_DESCRIPTORS) + r"))+$", re.IGNORECASE)
# How news writes a company's legal form: "Ball Corp", "Target Corp.", "Nokia Oyj". With one of
# these after it, a name that is also a word ("Ball") is the company.
WRITTEN_SUFFIXES = ("Inc", "Inc.", "Corp", "Corp.", "Corporation", "Co", "Co.", "Company", "plc", "PLC",
                    "Ltd", "Group", "Holdings", "AG", "SA", "SE", "NV", "N.V.", "Oyj", "AB", "ASA")
_TRAILING_AND = re.compile(r"\s+and$", re.IGNORECASE)
_THE = re.compile(r"^the\s+", re.IGNORECASE)
_PARENTHESIS = re.compile(r"\s*\([^)]*\)")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# Frankfurt (.F) and OTC listings are secondary quotes; a company's own symbol is ``symbol``.
_SECONDARY_SUFFIXES = (".F",)


@dataclass
class Company:
    symbol: str                      # the canonical symbol every mention resolves to
    listings: set[str] = field(default_factory=set)  # Yahoo and Google symbols, "BA.L", "LON:BA"
    names: set[str] = field(default_factory=set)      # as the table or company_names.csv write them
    shortened: set[str] = field(default_factory=set)  # suffixes stripped: "Nokia" for "Nokia Oyj"


def fold_accents(text: str) -> str:
    """"L'Oréal" -> "L'Oreal": people and feeds drop accents, so both spellings must match."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def short_name(stripped: str, dictionary: Dictionary) -> str | None:
    """"Evonik Industries" -> "Evonik": a name whose legal form is stripped, without the words that
    describe the business, if that is still no ordinary word ("Mercury General" stays)."""
    short = _DESCRIPTOR_TAIL.sub("", stripped)
    return short if short != stripped and len(short) >= 4 and not dictionary.ordinary(short) else None


def name_variants(name: str) -> list[str]:
    """The names a company goes by, derived from its registered one, longest first, then the
    same without accents: "L'Oréal" -> "L'Oréal", "L'Oreal"."""
    return with_folded_accents(legal_forms_stripped(name))


def with_folded_accents(names: Iterable[str]) -> list[str]:
    names = list(names)
    return list(dict.fromkeys(v for v in names + [fold_accents(n) for n in names] if v))


def legal_forms_stripped(name: str) -> list[str]:
    """The registered name, then shorter with each legal form stripped: "Lloyds Banking Group" ->
    "Lloyds Banking Group", "Lloyds Banking"; "The Southern Company" -> ..., "Southern";
    "Hornbach (retailer)" -> "Hornbach"."""
    base = _PARENTHESIS.sub("", name).strip()
    variants = [base]
    stripped = _THE.sub("", base)
    while True:
        shorter = _TRAILING_AND.sub("", _LEGAL_TAIL.sub("", stripped)).strip(" ,&/")
        if shorter == stripped or not _WORD.search(shorter):
            break
        stripped = shorter
        variants.append(stripped)
    if stripped not in variants:
        variants.append(stripped)
    return variants


class CompanyTable:
    """Companies keyed by canonical symbol, with a resolver for every symbol they trade under."""

    def __init__(self, companies: Iterable[Company]) -> None:
        self.companies: dict[str, Company] = {}
        for company in companies:
            self.companies.setdefault(company.symbol, company)
        self._listing: dict[str, str] = {}
        self._base: dict[str, set[str]] = defaultdict(set)
        owners: dict[str, set[str]] = defaultdict(set)
        for company in self.companies.values():
            for listing in company.listings | {company.symbol}:
                owners[listing.upper()].add(company.symbol)
            if "." in company.symbol:
                self._base[company.symbol.rsplit(".", 1)[0].upper()].add(company.symbol)
        for listing, symbols in owners.items():
            # A symbol two companies share resolves to the one whose own symbol it is, else to none.
            own = [s for s in symbols if s.upper() == listing]
            if len(symbols) == 1 or len(own) == 1:
                self._listing[listing] = own[0] if own else next(iter(symbols))

    def resolve(self, symbol: str) -> str:
        """Any symbol a company trades under -> its canonical symbol; an unknown one is kept.

        An exact listing wins ("BA" is Boeing, "BA.L" BAE Systems); a bare symbol otherwise
        resolves to the one company listed under it with an exchange suffix ("BARC" -> "BARC.L").
        """
        upper = symbol.upper()
        found = self._listing.get(upper)
        if found is not None:
            return found
        based = self._base.get(upper, ())
        return next(iter(based)) if len(based) == 1 else upper

    def names(self) -> Iterator[tuple[str, str, bool]]:
        """(name, canonical symbol, shortened?) for every company name; a shortened one only where
        no other company goes by it ("Nissan" is Nissan, not Nissan Chemical Industries)."""
        claimed = defaultdict(set)
        for company in self.companies.values():
            for name in company.names | company.shortened:
                claimed[name.lower()].add(company.symbol)
        for company in self.companies.values():
            for name in company.names:
                yield name, company.symbol, False
            for name in company.shortened - company.names:
                if claimed[name.lower()] == {company.symbol}:
                    yield name, company.symbol, True


def _pytickersymbols_companies(dictionary: Dictionary) -> Iterator[Company]:
    from pytickersymbols import PyTickerSymbols

    for stock in PyTickerSymbols().get_all_stocks():
        listings = {s[key] for s in stock.get("symbols") or () for key in ("yahoo", "google") if s.get(key)}
        symbol = stock.get("symbol") or next(
            (s["yahoo"] for s in stock.get("symbols") or () if s.get("yahoo")
             and not s["yahoo"].endswith(_SECONDARY_SUFFIXES)), None)
        if not symbol or not stock.get("name"):
            continue
        forms = legal_forms_stripped(stock["name"])
        registered, base = forms[0], forms[-1]
        # Stripping never leaves a bare dictionary word: "News" (News Corp), "Partners" (Partners
        # Group) and "Cooper" (The Cooper Companies) are words first. Where people do use one for
        # the company ("Apple", "Target"), company_names.csv names it.
        shortened = [v for v in forms[1:] if not dictionary.is_single_word(v)]
        short = short_name(base, dictionary)
        # Only an ordinary base needs its legal form to be the company ("Ball Corp").
        suffixed = [f"{base} {suffix}" for suffix in WRITTEN_SUFFIXES] if dictionary.ordinary(base) else []
        yield Company(symbol=symbol.upper(), listings={s.upper() for s in listings},
                      names=set(with_folded_accents([registered, *suffixed])),
                      shortened=set(with_folded_accents(shortened + ([short] if short else []))))


def _extra_names(path: Path, table: CompanyTable) -> Iterator[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            symbol = row["symbol"].strip()
            if symbol not in table.companies:
                raise ValueError(f"{path.name}: {row['name']!r} names {symbol!r}, which is not in the table")
            yield row["name"].strip(), symbol


@dataclass(frozen=True)
class Dictionary:
    """Which names are also ordinary words or places ("Apple", "Next"; "Amazon", "Mercury"), and
    so ambiguous on their own (docs/companies.md)."""

    common: frozenset[str]        # lower case
    proper_nouns: frozenset[str]  # capitalised

    @classmethod
    def load(cls) -> "Dictionary":
        """Webster's 2nd International (``english-words``, MIT): its lower-case entries are common
        words, its capitalised ones proper nouns. (Its GCIDE list capitalises every headword and
        includes units and names such as "siemens", so it cannot tell the two apart.)"""
        from english_words import get_english_words_set

        web2 = get_english_words_set(["web2"], alpha=True)
        return cls(frozenset(w for w in web2 if w.islower()),
                   frozenset(w for w in web2 if w[:1].isupper() and w[1:].islower()))

    def is_word(self, word: str) -> bool:
        lower = word.lower()
        return lower in self.common or (lower.endswith("s") and lower[:-1] in self.common)

    def is_single_word(self, name: str) -> bool:
        """One common word ("News", "Partners"), as opposed to a name or a phrase."""
        words = _WORD.findall(name)
        return len(words) == 1 and self.is_word(words[0])

    def ordinary(self, name: str) -> bool:
        """All its words are common words ("Best Buy", "Travelers"), or it is one proper noun."""
        words = _WORD.findall(name)
        return bool(words) and (all(self.is_word(w) for w in words)
                                or (len(words) == 1 and words[0] in self.proper_nouns))


def default_companies(dictionary: Dictionary) -> CompanyTable:
    """The shipped table (the pipeline builds it once per worker process)."""
    table = CompanyTable(_pytickersymbols_companies(dictionary))
    for name, symbol in _extra_names(EXTRA_NAMES_CSV, table):
        table.companies[symbol].names.update(with_folded_accents([name]))
    return table
