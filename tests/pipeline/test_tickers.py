from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.companies import Dictionary, default_companies, name_variants
from pipeline.tickers import (ALIAS, CASHTAG, FIELD, MAX_TICKERS, NAME, InvalidTicker, Linking, TickerExtractor,
                              canonical_ticker, cashtags, load_aliases, normalise_ticker)


@pytest.fixture(scope="module")
def linker() -> TickerExtractor:
    return Linking(aliases={}).extractor()


def tickers(extractor: TickerExtractor, text: str, given: tuple[str, ...] = ()) -> list[str]:
    return [ticker for ticker, _ in extractor.extract(text, given)]


def test_cashtags():
    assert cashtags("$AAPL up, $msft down; $BRK.B flat. $5bn deal, US$ x, a$AAPL, $TSLA's") == ["AAPL", "MSFT", "BRK.B", "TSLA"]


def test_normalise_ticker():
    assert normalise_ticker(" $aapl ") == "AAPL"
    assert normalise_ticker("rds-a") == "RDS-A"
    assert normalise_ticker("7203.t") == "7203.T" and normalise_ticker("ERIC-B.ST") == "ERIC-B.ST"
    for bad in ("", "$", "5BN", "7203", "AAPL MSFT", "TOOLONGTICKER1"):
        with pytest.raises(InvalidTicker):
            normalise_ticker(bad)


def test_user_aliases_alone_keep_order_dedupe_and_whole_words(tmp_path):
    csv = tmp_path / "aliases.csv"
    csv.write_text("alias,ticker\nApple,AAPL\nApple Inc,AAPL\nAlphabet,goog\n")
    extractor = Linking(aliases=load_aliases(csv), default_companies=False).extractor()
    assert extractor.extract("Apple Inc and $MSFT vs Alphabet; $AAPL", given=("NVDA",)) == (
        ("NVDA", FIELD), ("MSFT", CASHTAG), ("AAPL", CASHTAG), ("GOOG", ALIAS))
    assert extractor.extract("apple pie and Pineapple") == ()


@pytest.mark.parametrize("text, expected", [
    ("Barclays 'bad bank' chief to step down", ["BARC.L"]),
    ("Nokia wins 5G contract from Deutsche Telekom", ["NOKIA.HE", "DTE.DE"]),
    ("Barclays PLC and Nokia Oyj agree outsourcing deal", ["BARC.L", "NOKIA.HE"]),
    ("Royal Dutch Shell posts record profit", ["SHELL.AS"]),
    ("Shell to cut 2,000 jobs", ["SHELL.AS"]),
    ("Sainsbury's lifts profit forecast", ["SBRY.L"]),
    ("AB InBev beer volumes fall in Brazil", ["ABI.BR"]),
    ("Siemens AG and SAP SE sign cloud deal", ["SIE.DE", "SAP.DE"]),
    ("L'Oreal sales jump; L’Oréal shares at record", ["OR.PA"]),
    ("Apple shares rise after iPhone sales beat", ["AAPL"]),
    ("Alphabet wins multiyear contract worth $2.4 billion", ["GOOGL"]),
    ("FAA orders inspections of Boeing jets after in-flight panel failure", ["BA"]),
    ("BARCLAYS CUTS 5,000 JOBS", ["BARC.L"]),
    ("nokia earnings beat, shares up", ["NOKIA.HE"]),
    ("Toyota recalls a million cars", ["7203.T"]),
    ("Google and Facebook face EU antitrust probe", ["GOOGL", "META"]),
    ("Ball Corp to sell its aerospace unit", ["BALL"]),
    ("Evonik to cut 2,000 jobs", ["EVK.DE"]),
    ("Nissan to close seven plants", ["7201.T"]),
])
def test_company_names_link_to_one_canonical_symbol(linker, text, expected):
    assert tickers(linker, text) == expected
    assert {how for _, how in linker.extract(text)} == {NAME}


@pytest.mark.parametrize("text", [
    "Apple pie recipe", "the shell beach", "next week", "target practice", "Target practice",
    "visa application", "the Amazon rainforest", "a meta-analysis", "Meta-analysis finds no link",
    "ford the river", "gap year", "the sky turned orange", "Amazon Rainforest Deforestation Hits Record",
    "Mercury Rises In Tuna, Study Finds", "THE SAP IS RISING IN MAPLE TREES",
    "The agency's news desk says net profit rose to EUR 1.1 million", "Next quarter's profit looks weak",
])
def test_ordinary_words_link_nothing(linker, text):
    assert linker.extract(text) == ()


def test_cashtag_symbol_and_name_aggregate_together(linker):
    assert linker.extract("$BARC up 3%") == (("BARC.L", CASHTAG),)
    assert linker.extract("bank results", given=("BARC.L",)) == (("BARC.L", FIELD),)
    assert linker.extract("Barclays beats", given=("BARC",)) == (("BARC.L", FIELD),)
    assert linker.extract("$BCS and Barclays") == (("BARC.L", CASHTAG),)  # the NYSE ADR is the same company
    assert linker.extract("$GOOG $GOOGL Alphabet") == (("GOOGL", CASHTAG),)


def test_symbol_collisions_between_exchanges_are_explicit(linker):
    assert linker.extract("$BA falls") == (("BA", CASHTAG),)           # Boeing, New York
    assert linker.extract("$BA.L rises") == (("BA.L", CASHTAG),)       # BAE Systems, London
    assert tickers(linker, "BAE Systems wins frigate order") == ["BA.L"]
    assert tickers(linker, "$ZZZZ unknown symbol") == ["ZZZZ"]          # not in the table: kept as written


def test_user_alias_extends_and_overrides_the_default_table(tmp_path):
    csv = tmp_path / "aliases.csv"
    csv.write_text("alias,ticker\nBarclays,BCS\nAcme Widgets,ACME\n")
    extractor = Linking(aliases=load_aliases(csv)).extractor()
    # The user's alias wins for its spelling (its symbol still resolves to the canonical one).
    assert extractor.extract("Barclays and Acme Widgets merge") == (("BARC.L", ALIAS), ("ACME", ALIAS))
    assert extractor.extract("Nokia shares slide") == (("NOKIA.HE", NAME),)


def test_default_table_can_be_turned_off():
    extractor = Linking(aliases={}, default_companies=False).extractor()
    assert extractor.extract("Barclays and Nokia agree deal; $BARC") == (("BARC", CASHTAG),)


def test_name_variants_strip_legal_suffixes():
    assert name_variants("Nokia Oyj") == ["Nokia Oyj", "Nokia"]
    assert name_variants("Anheuser-Busch InBev SA/NV")[-1] == "Anheuser-Busch InBev"
    assert name_variants("The Southern Company")[-1] == "Southern"
    assert name_variants("Eli Lilly and Company")[-1] == "Eli Lilly"
    assert "L'Oreal" in name_variants("L'Oréal")


def test_every_shipped_name_resolves_to_a_company_in_the_table():
    table = default_companies(Dictionary.load())
    assert len(table.companies) > 1500
    for _name, symbol, _shortened in table.names():
        assert table.resolve(symbol) == symbol


def test_thousands_of_cashtags_are_capped(linker):
    text = " ".join(f"$A{i:04d}" for i in range(4200))
    found = linker.extract(text, given=("AAPL",))
    assert len(found) == MAX_TICKERS and found[0] == ("AAPL", FIELD)


def test_huge_and_non_latin_texts_give_a_bounded_result(linker):
    assert len(linker.extract("Barclays Nokia " * 10_000)) == 2
    assert linker.extract("トヨタ自動車の株価が上昇 Toyota shares rise") == (("7203.T", NAME),)
    assert linker.extract("Ǆ İstanbul 𝔸pple \u0000 \ud800") == ()


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), given_tickers=st.lists(st.sampled_from(["AAPL", "BARC", "BA.L", "ZZZ"]), max_size=5))
def test_any_text_gives_unique_canonical_tickers(linker, text, given_tickers):
    found = linker.extract(text, tuple(given_tickers))
    symbols = [ticker for ticker, _ in found]
    assert len(symbols) == len(set(symbols)) <= MAX_TICKERS
    assert all(how in (FIELD, CASHTAG, ALIAS, NAME) for _, how in found)
    assert all(linker.resolve(symbol) == symbol for symbol in symbols)


@pytest.mark.parametrize("content, message", [
    (b"alias,ticker\nApple,AAPL\nBroken,5\n", "aliases.csv:3"),
    (b"Apple,AAPL\n", "header"),
    (b"alias,ticker\n,AAPL\n", "empty alias"),
    (b"alias,ticker\n\xff\xfe,AAPL\n", "not UTF-8"),
    (b'alias,ticker\n"Apple,AAPL\n', "aliases.csv"),
    (b"alias,ticker\n" + b"A" * 300 + b",AAPL\n", "longer than 200"),
])
def test_bad_alias_csv_is_a_clear_error(tmp_path, content, message):
    csv = tmp_path / "aliases.csv"
    csv.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_aliases(csv)


@pytest.mark.parametrize("written, stored", [("GOOG", "GOOGL"), ("BARC", "BARC.L"), ("$barc", "BARC.L"),
                                             (" APC.F ", "AAPL"), ("goog", "GOOGL"), ("GOOGL", "GOOGL"),
                                             ("$brk.b", "BRK.B"), ("FOOX", "FOOX")])
def test_canonical_ticker_is_the_symbol_ingestion_stores(linker, written, stored):
    """Readers look tickers up with canonical_ticker: it must give what a record's tickers field
    and a cashtag are stored under (docs/companies.md)."""
    assert canonical_ticker(written) == stored
    assert tickers(linker, "", (normalise_ticker(written),)) == [stored]  # the tickers field
    assert tickers(linker, f"news on ${normalise_ticker(written)} today") == [stored]  # a cashtag
    assert canonical_ticker(stored) == stored
    with pytest.raises(InvalidTicker):
        canonical_ticker("not a ticker")
