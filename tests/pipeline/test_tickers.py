from __future__ import annotations

import pytest

from pipeline.tickers import InvalidTicker, TickerExtractor, cashtags, load_aliases, normalise_ticker


def test_cashtags():
    assert cashtags("$AAPL up, $msft down; $BRK.B flat. $5bn deal, US$ x, a$AAPL, $TSLA's") == ["AAPL", "MSFT", "BRK.B", "TSLA"]


def test_normalise_ticker():
    assert normalise_ticker(" $aapl ") == "AAPL"
    assert normalise_ticker("rds-a") == "RDS-A"
    for bad in ("", "$", "5BN", "AAPL MSFT", "TOOLONGTICKER1"):
        with pytest.raises(InvalidTicker):
            normalise_ticker(bad)


def test_extractor_order_dedup_and_whole_word_aliases(tmp_path):
    csv = tmp_path / "aliases.csv"
    csv.write_text("alias,ticker\nApple,AAPL\nApple Inc,AAPL\nAlphabet,goog\n")
    extractor = TickerExtractor(load_aliases(csv))
    assert extractor.extract("Apple Inc and $MSFT vs Alphabet; $AAPL", given=("NVDA",)) == ("NVDA", "MSFT", "AAPL", "GOOG")
    assert extractor.extract("apple pie and Pineapple") == ()


def test_bad_alias_csv_names_the_line(tmp_path):
    csv = tmp_path / "aliases.csv"
    csv.write_text("alias,ticker\nApple,AAPL\nBroken,5\n")
    with pytest.raises(ValueError, match="aliases.csv:3"):
        load_aliases(csv)
    (tmp_path / "nohdr.csv").write_text("Apple,AAPL\n")
    with pytest.raises(ValueError, match="header"):
        load_aliases(tmp_path / "nohdr.csv")
