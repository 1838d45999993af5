"""End to end: a JSONL with good and bad lines -> a real DuckDB file, with the bundled model."""
from __future__ import annotations

import json
import random

import duckdb
import pytest

from models.aggregation import AggregationConfig
from pipeline import backfill
from pipeline.cli import main
from pipeline.job_args import EXIT_ONLY_DEAD_LETTERS, pipeline_options
from pipeline.runner import make_pipeline

T0 = 1714550400000  # 2024-05-01T08:00Z, epoch ms
TABLES = ("items", "item_tickers", "ticker_sentiment", "dead_letters")

GOOD = [
    {"id": "a1", "text": "$AAPL beats estimates and raises full-year guidance", "published_at": T0, "source": "news"},
    {"id": "a2", "text": "Apple shares slump after profit warning", "published_at": T0 + 600_000, "source": "news",
     "tickers": ["aapl"]},
    {"id": "m1", "text": "Microsoft to report earnings on Tuesday", "published_at": "2024-05-01T08:20:00Z"},
    {"id": "s1", "text": "$TSLA recalls 2 million cars http://t.co/x1", "published_at": T0 + 60_000, "source": "comment"},
    {"id": "s2", "text": "$TSLA recalls 2 MILLION cars!! http://t.co/other", "published_at": T0 + 120_000, "source": "comment"},
    {"id": "s3", "text": "$tsla recalls 2 million cars", "published_at": T0 + 180_000, "source": "comment"},
    {"text": "no id here, $NVDA soars", "published_at": T0 + 240_000},
]
DUPLICATE = {"id": "a1", "text": "$AAPL beats estimates and raises full-year guidance", "published_at": T0}
BAD = [
    b'{"text": "unterminated',
    b'{"id": "x1", "published_at": 1714550400000}',
    b'{"id": "x2", "text": "caf\xe9 latin-1", "published_at": 1714550400000}',
    json.dumps({"id": "x3", "text": "a" * 1_000_000, "published_at": T0}).encode(),
    b'{"id": "x4", "text": "epoch seconds", "published_at": 1714550400}',
    b'{"id": "x5", "text": "wrong type", "published_at": 1714550400000, "tickers": "AAPL"}',
]


@pytest.fixture
def corpus(tmp_path):
    lines = [json.dumps(r).encode() for r in GOOD[:3]] + [BAD[0], json.dumps(DUPLICATE).encode()] \
        + [json.dumps(r).encode() for r in GOOD[3:]] + BAD[1:]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")  # a trailing blank line is not a record
    return path


def snapshot(db: str) -> dict[str, list]:
    con = duckdb.connect(db, read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    finally:
        con.close()


def test_backfill_jsonl_counts_dead_letters_and_idempotent_rerun(corpus, tmp_path, capsys):
    db = str(tmp_path / "tp.duckdb")
    argv = ["--input", str(corpus), "--db", db, "--half-life", "1h", "6h", "--cadence", "5m"]
    assert backfill.run(argv) == 0
    summary = capsys.readouterr().out
    assert "read 14, scored 7, dead-lettered 6, duplicates 1" in summary

    first = snapshot(db)
    assert len(first["items"]) == len(GOOD) and len(first["dead_letters"]) == len(BAD)
    con = duckdb.connect(db, read_only=True)
    try:
        dead = dict(con.execute("SELECT raw, reason FROM dead_letters").fetchall())
        assert set(dead) == set(BAD)  # the exact bytes, including the non-UTF-8 line
        assert "not UTF-8" in dead[BAD[2]] and "record too large" in dead[BAD[3]] and "before 1990" in dead[BAD[4]]
        locations = {row[0] for row in con.execute("SELECT source_location FROM dead_letters").fetchall()}
        assert f"{corpus}:4" in locations
        novelty = dict(con.execute("SELECT id, novelty_n FROM items WHERE id IN ('s1', 's2', 's3')").fetchall())
        assert novelty == {"s1": 0, "s2": 1, "s3": 2}
        tickers = con.execute("SELECT item_id, ticker, link FROM item_tickers ORDER BY ALL").fetchall()
        assert ("a2", "AAPL", "field") in tickers and ("s3", "TSLA", "cashtag") in tickers
        assert ("m1", "MSFT", "name") in tickers  # named, not tagged: the default company table
        labels = dict(con.execute("SELECT id, label FROM items").fetchall())
        assert labels["a1"] == "positive" and labels["a2"] == "negative"
        scored = con.execute("SELECT min(score), max(score), min(confidence), count(DISTINCT model) FROM items").fetchone()
        assert -1 <= scored[0] <= scored[1] <= 1 and scored[2] > 0.3 and scored[3] == 1
        points = con.execute("SELECT ticker, half_life_s, count(*) FROM ticker_sentiment GROUP BY ALL ORDER BY ALL").fetchall()
        assert {(t, h) for t, h, _ in points} == {(t, h) for t in ("AAPL", "MSFT", "NVDA", "TSLA") for h in (3600.0, 21600.0)}
        aapl = con.execute("SELECT sentiment, n_items, top_items FROM ticker_sentiment "
                           "WHERE ticker = 'AAPL' AND half_life_s = 3600 ORDER BY ts DESC LIMIT 1").fetchone()
        assert aapl[1] == 2 and aapl[2][0]["item_id"] == "a2"  # the fresher item weighs more
    finally:
        con.close()

    assert backfill.run(argv) == 0
    assert snapshot(db) == first


def test_no_default_companies_links_only_fields_cashtags_and_aliases(corpus, tmp_path):
    db = str(tmp_path / "plain.duckdb")
    aliases = tmp_path / "aliases.csv"
    aliases.write_text("alias,ticker\nMicrosoft,MSFT\n")
    assert backfill.run(["--input", str(corpus), "--db", db, "--no-default-companies"]) == 0
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM item_tickers WHERE item_id = 'm1'").fetchone() == (0,)
        assert con.execute("SELECT DISTINCT link FROM item_tickers ORDER BY 1").fetchall() == [("cashtag",), ("field",)]
    db = str(tmp_path / "aliased.duckdb")
    assert backfill.run(["--input", str(corpus), "--db", db, "--no-default-companies", "--alias-csv", str(aliases)]) == 0
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT ticker, link FROM item_tickers WHERE item_id = 'm1'").fetchall() == [("MSFT", "alias")]


def test_parquet_out_then_import_matches_the_direct_sink(corpus, tmp_path):
    direct, imported, out = str(tmp_path / "direct.duckdb"), str(tmp_path / "imported.duckdb"), tmp_path / "pq"
    argv = ["--input", str(corpus), "--half-life", "2h"]
    assert backfill.run(argv + ["--db", direct]) == 0
    assert backfill.run(argv + ["--parquet-out", str(out)]) == 0
    assert backfill.run(["--import-parquet", str(out), "--db", imported]) == 0
    assert backfill.run(["--import-parquet", str(out), "--db", imported]) == 0  # idempotent

    def comparable(db):  # ingestion times differ between two runs; everything else must not
        tables = snapshot(db)
        drop = {"items": 17, "dead_letters": 8}
        return {t: sorted(tuple(v for i, v in enumerate(row) if i != drop.get(t)) for row in rows)
                for t, rows in tables.items()}

    assert comparable(imported) == comparable(direct)


@pytest.mark.parametrize("part, message", [
    ("not parquet", "nothing imported: Invalid Input Error: File"),
    ("wrong columns", "nothing imported: Binder Error: Referenced column"),
    (None, "holds no <table>/*.parquet files"),
])
def test_an_import_that_cannot_be_done_is_one_line_and_imports_nothing(tmp_path, capsys, part, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    (out / "items").mkdir(parents=True)
    if part == "not parquet":
        (out / "items" / "part-0.parquet").write_bytes(b"not parquet")
    elif part == "wrong columns":
        pq.write_table(pa.table({"x": [1]}), out / "items" / "part-0.parquet")
    db = str(tmp_path / "x.duckdb")
    assert main(["backfill", "--import-parquet", str(out), "--db", db]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tickerpulse backfill: error: --import-parquet {out}: nothing imported: ")
    assert message in err and "\n" not in err
    assert not any(snapshot(db).values())
    (tmp_path / "plain.jsonl").write_text("{}\n")
    assert main(["backfill", "--import-parquet", str(tmp_path / "plain.jsonl"), "--db", db]) == 2
    assert "holds no <table>/*.parquet files" in capsys.readouterr().err


def test_a_model_or_device_this_machine_cannot_load_is_one_line_before_the_run(corpus, tmp_path, monkeypatch, capsys):
    import torch

    db = str(tmp_path / "x.duckdb")
    assert main(["backfill", "--input", str(corpus), "--db", db, "--model", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip() == (f"tickerpulse backfill: error: model '{tmp_path}/none' is not a "
                                               "directory (expected a local checkpoint)")
    assert main(["backfill", "--input", str(corpus), "--db", db, "--model", str(tmp_path)]) == 2
    assert "nor config.json: not a model directory" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["backfill", "--input", str(corpus), "--db", db, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tickerpulse backfill: error: device 'cuda' requested but torch sees no CUDA GPU (see docs/gpu.md)"


def test_an_unreachable_kafka_is_one_line_without_kafka_python_logs(tmp_path, monkeypatch, caplog, capsys):
    import functools

    from connectors.kafka import range as kafka_range

    monkeypatch.setattr(kafka_range, "_consumer", functools.partial(kafka_range._consumer, bootstrap_timeout_ms=1000))
    argv = ["backfill", "--kafka-bootstrap", "127.0.0.1:1", "--topics", "news", "--db", str(tmp_path / "x.duckdb")]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("tickerpulse backfill: error: cannot read Kafka at 127.0.0.1:1: ")
    assert not [r for r in caplog.records if r.name.startswith("kafka")]


def test_a_kafka_address_that_does_not_parse_names_the_flag(tmp_path, capsys):
    argv = ["backfill", "--kafka-bootstrap", "127.0.0.1:notaport", "--topics", "news", "--db", str(tmp_path / "x.duckdb")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tickerpulse backfill: error: --kafka-bootstrap 127.0.0.1:notaport: ") and "\n" not in err


def test_a_parquet_out_that_is_a_file_is_one_line(corpus, capsys):
    assert main(["backfill", "--input", str(corpus), "--parquet-out", str(corpus)]) == 2
    assert capsys.readouterr().err.strip() == f"tickerpulse backfill: error: --parquet-out {corpus} is a file, not a directory"


@pytest.mark.parametrize("argv, message", [
    (["--input", "/nonexistent/*.jsonl"], "matches no file"),
    (["--db", "x.duckdb"], "nothing to read"),
    (["--topics", "news"], "--topics needs --kafka-bootstrap"),
    (["--input", "/nonexistent/x.jsonl", "--inptu", "x"], "unrecognized arguments: --inptu"),
    (["--input", "/nonexistent/x.jsonl", "--direct_num_workers", "abc"],
     "error: argument --direct_num_workers: invalid int value: 'abc'"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    assert main(["backfill", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.parametrize("pattern, message", [
    ("gs://tickerpulse-bucket/news/x.jsonl", "--input 'gs://tickerpulse-bucket/news/x.jsonl': cannot list files there: "),
    ("s3://tickerpulse-bucket/news/x.jsonl", "--input 's3://tickerpulse-bucket/news/x.jsonl': cannot list files there: "),
    ("{dir}/d.jsonl", "--input '{dir}/d.jsonl': {dir}/d.jsonl is a directory, not a file"),
])
def test_an_input_that_cannot_be_read_as_files_is_one_line(tmp_path, capsys, pattern, message):
    (tmp_path / "d.jsonl").mkdir()
    assert main(["backfill", "--input", pattern.format(dir=tmp_path), "--db", str(tmp_path / "x.duckdb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tickerpulse backfill: error: " + message.format(dir=tmp_path)) and "\n" not in err


def test_an_unreadable_input_is_one_line(corpus, tmp_path, monkeypatch, capsys):
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(corpus) and real_access(path, mode))  # root reads all
    assert main(["backfill", "--input", str(corpus), "--db", str(tmp_path / "x.duckdb")]) == 2
    assert capsys.readouterr().err.strip() == f"tickerpulse backfill: error: --input '{corpus}': {corpus} is not readable"


def test_an_input_whose_name_is_not_utf8_is_one_line(corpus, tmp_path, capsys):
    import os

    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/name\xff.jsonl")
    os.link(corpus, name)
    assert main(["backfill", "--input", name, "--db", str(tmp_path / "x.duckdb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tickerpulse backfill: error: --input {name!r}: the name {name!r} is not UTF-8") and "\n" not in err


def test_bad_duration_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["backfill", "--input", str(tmp_path), "--half-life", "soon"])
    assert exc.value.code == 2 and "not a duration" in capsys.readouterr().err


@pytest.mark.parametrize("runner_args", [
    ["--runner=DataflowRunner", "--project=tickerpulse-test", "--region=us-central1",
     "--temp_location=gs://tickerpulse-bucket/tmp", "--setup_file=./setup.py"],
    ["--runner=FlinkRunner", "--flink_master=localhost:8081", "--environment_type=LOOPBACK"],
])
def test_pipeline_constructs_for_remote_runners(corpus, tmp_path, runner_args):
    args, beam_args = backfill.parse_args(
        ["--input", str(corpus), "--parquet-out", str(tmp_path / "out"), *runner_args])
    pipeline = make_pipeline(pipeline_options(beam_args))
    assert type(pipeline.runner).__name__ == runner_args[0].split("=")[1]
    backfill.build(pipeline, args, backfill.plan(args))
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    for step in ("Read files", "Parse", "Extract tickers", "Drop repeated ids", "Novelty", "Score",
                 "Relevance", "Aggregate", "Merge dead letters", "Write Parquet"):
        assert step in names


def test_several_inputs_globs_and_formats(tmp_path, capsys):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    with gzip.open(tmp_path / "in" / "a.jsonl.gz", "wb") as out:
        out.write(b'{"id": "g1", "text": "$AMD wins a big contract", "published_at": 1714550400000}\nnot json\n')
    (tmp_path / "in" / "b.csv").write_text("id,text,published_at,tickers\nc1,Chip stocks rally,2024-05-01T09:00:00Z,AMD NVDA\n")
    pq.write_table(pa.table({"id": ["p1"], "text": ["$NVDA guidance disappoints"], "published_at": [1714550460000]}),
                   tmp_path / "p.parquet")
    db = str(tmp_path / "mixed.duckdb")
    assert backfill.run(["--input", str(tmp_path / "in" / "*"), "--input", str(tmp_path / "p.parquet"), "--db", db]) == 0
    assert "read 4, scored 3, dead-lettered 1, duplicates 0" in capsys.readouterr().out
    con = duckdb.connect(db, read_only=True)
    try:
        assert con.execute("SELECT ticker, count(*) FROM item_tickers GROUP BY ALL ORDER BY ALL").fetchall() == [("AMD", 2), ("NVDA", 2)]
        assert con.execute("SELECT source_location FROM dead_letters").fetchall() == [(f"{tmp_path}/in/a.jsonl.gz:2",)]
    finally:
        con.close()


def test_a_db_in_a_missing_directory_is_one_line(corpus, tmp_path, capsys):
    assert main(["backfill", "--input", str(corpus), "--db", str(tmp_path / "no" / "such" / "x.duckdb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tickerpulse backfill: error: --db {tmp_path}/no/such/x.duckdb: directory {tmp_path}/no/such does not exist"


@pytest.mark.parametrize("name, problem", [
    ("target.csv", "the file exists and is not a DuckDB database"),
    ("in.jsonl", "the file exists and is not a DuckDB database"),
    (":memory:", "name a DuckDB file (an in-memory database keeps nothing)"),
    ("", "name a DuckDB file (an in-memory database keeps nothing)"),
])
def test_a_db_that_is_not_a_duckdb_file_is_one_line(corpus, tmp_path, capsys, name, problem):
    (tmp_path / "target.csv").write_text("a,b\n1,2\n")
    db = str(tmp_path / name) if name.endswith(("csv", "jsonl")) else name
    assert main(["backfill", "--input", str(corpus), "--db", db]) == 2
    assert capsys.readouterr().err.strip() == f"tickerpulse backfill: error: --db {db!r}: {problem}"
    assert (tmp_path / "target.csv").read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize("variable, value, message", [
    ("TICKERPULSE_BATCH_SIZE", "abc", "TICKERPULSE_BATCH_SIZE='abc'"),
    ("TICKERPULSE_TOP_K", "five", "TICKERPULSE_TOP_K='five'"),
    ("TICKERPULSE_QUANTIZE", "perhaps", "TICKERPULSE_QUANTIZE='perhaps'"),
    ("TICKERPULSE_CADENCE", "300", "300: give a unit, e.g. 300s or 300m"),
])
def test_a_bad_env_value_is_one_line(corpus, tmp_path, monkeypatch, capsys, variable, value, message):
    monkeypatch.setenv(variable, value)
    try:
        code = main(["backfill", "--input", str(corpus), "--db", str(tmp_path / "x.duckdb")])
    except SystemExit as exited:
        code = exited.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err


def test_a_negative_half_life_is_a_clear_error(corpus, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["backfill", "--input", str(corpus), "--half-life", "-1h"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "duration must be positive: '-1h'" in err and "\n" not in err


def test_a_run_that_stores_only_dead_letters_warns_and_exits_3(tmp_path, capsys):
    path = tmp_path / "no_times.csv"
    path.write_text("id,text\n1,$AAPL beats\n2,$MSFT misses\n")
    db = str(tmp_path / "x.duckdb")
    assert main(["backfill", "--input", str(path), "--db", db]) == EXIT_ONLY_DEAD_LETTERS == 3
    captured = capsys.readouterr()
    assert "scored 0, dead-lettered 2" in captured.out
    assert "warning: all 2 records were dead-lettered, none stored" in captured.err
    assert snapshot(db)["dead_letters"] and not snapshot(db)["items"]


def test_damaged_files_are_dead_letters_and_the_other_files_are_stored(corpus, tmp_path, capsys):
    import gzip
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    compressed = bytearray(gzip.compress(corpus.read_bytes()))
    compressed[20:70] = b"\x00" * 50
    (tmp_path / "corrupt.jsonl.gz").write_bytes(bytes(compressed))
    (tmp_path / "notgz.jsonl.gz").write_bytes(b"plain text\n")
    (tmp_path / "not.parquet").write_bytes(b"not parquet")
    (tmp_path / "empty.parquet").write_bytes(b"")
    table = io.BytesIO()
    pq.write_table(pa.table({"id": ["z1"], "text": ["$NVDA guidance disappoints"], "published_at": [T0]}), table)
    (tmp_path / "p.parquet.gz").write_bytes(gzip.compress(table.getvalue()))
    damaged = ["corrupt.jsonl.gz", "notgz.jsonl.gz", "not.parquet", "empty.parquet"]
    db = str(tmp_path / "x.duckdb")
    assert backfill.run(["--db", db, "--input", str(corpus), "--input", str(tmp_path / "p.parquet.gz"),
                         *[a for name in damaged for a in ("--input", str(tmp_path / name))]]) == 0
    assert "read 19, scored 8, dead-lettered 10, duplicates 1" in capsys.readouterr().out
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM items WHERE id = 'z1'").fetchone() == (1,)
        reasons = dict(con.execute("SELECT source_location, reason FROM dead_letters").fetchall())
    assert reasons[str(tmp_path / "corrupt.jsonl.gz")].startswith("cannot decompress")
    assert reasons[str(tmp_path / "notgz.jsonl.gz")].startswith("cannot decompress")
    assert reasons[f"{tmp_path}/not.parquet:#1"].startswith("not Parquet")
    assert reasons[f"{tmp_path}/empty.parquet:#1"].startswith("not Parquet")


def split_feed(seed: int, runs: int = 3) -> list[list[dict]]:
    """Records for several backfills into one file: overlapping times, syndicated copies within and
    across runs, and ids that come back in a later run with another text, time and tickers."""
    rng = random.Random(seed)
    stories = ["$AAPL beats estimates and raises full-year guidance", "$MSFT shares slump after a profit warning",
               "$AAPL and $MSFT sign a cloud partnership", "Regulator opens a probe into $TSLA autopilot",
               "$TSLA recalls 2 million cars", "$NVDA to report earnings on Tuesday"]
    feed: list[list[dict]] = [[] for _ in range(runs)]
    for n in range(90):
        run = rng.randrange(runs)
        text = rng.choice(stories) + rng.choice(["", "!", " http://t.co/x", " (update)"])
        feed[run].append({"id": f"r{n}", "text": text, "published_at": T0 + rng.randrange(6 * 3600) * 1000})
    for run in range(1, runs):  # a stored id again, with different content
        earlier = rng.choice(feed[rng.randrange(run)])
        feed[run].append({"id": earlier["id"], "text": "$GOOGL crashes after a fraud scandal",
                          "published_at": earlier["published_at"] + 600_000})
    return feed


@pytest.mark.parametrize("seed, via_parquet", [(3, False), (8, False), (5, True)])
def test_backfills_into_one_file_store_points_equal_to_the_macro_over_its_items(tmp_path, capsys, seed, via_parquet,
                                                                                points_equal_the_macro):
    """Several runs into one file, each a direct backfill or (after the first) a --parquet-out run
    imported into it; the Parquet runs are computed with other settings than the import's flags."""
    db, runs = str(tmp_path / "tp.duckdb"), split_feed(seed)
    settings = ["--half-life", "1h", "--cadence", "5m", "--horizon", "2h"]
    first_run: dict[str, int] = {}
    for index, records in enumerate(runs):
        path = tmp_path / f"run{index}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        repeated = sum(r["id"] in first_run for r in records)
        if via_parquet and index:
            out = str(tmp_path / f"pq{index}")
            assert backfill.run(["--input", str(path), "--parquet-out", out, *settings]) == 0
            capsys.readouterr()
            assert backfill.run(["--import-parquet", out, "--db", db]) == 0  # the default 3d horizon, 1h
            assert f"{len(records) - repeated:,} new items" in capsys.readouterr().out
        else:
            assert backfill.run(["--input", str(path), "--db", db, *settings]) == 0
            assert f"read {len(records)}, scored {len(records) - repeated}, dead-lettered 0, duplicates {repeated}" \
                in capsys.readouterr().out
        for r in records:
            first_run.setdefault(r["id"], index)
    points_equal_the_macro(db, AggregationConfig(half_lives_s=(3600.0,), cadence_s=300.0, horizon_s=7200.0))
    with duckdb.connect(db, read_only=True) as con:
        stored = {row[0]: row[1:] for row in con.execute(
            "SELECT id, text, epoch(ts), text_key, novelty_n FROM items").fetchall()}
        tickers = set(con.execute("SELECT item_id, ticker FROM item_tickers").fetchall())
    kept = {r["id"]: r for index, records in enumerate(runs) for r in records if first_run[r["id"]] == index}
    assert {i: text for i, (text, *_) in stored.items()} == {i: r["text"] for i, r in kept.items()}
    assert "GOOGL" not in {ticker for _, ticker in tickers}  # no ticker of a dropped copy
    for item_id, (_, ts, key, novelty_n) in stored.items():  # earlier copies stored before or with it
        earlier = [other for other, (_, other_ts, other_key, _) in stored.items()
                   if other_key == key and first_run[other] <= first_run[item_id]
                   and ts - 7200 < other_ts and (other_ts, other) < (ts, item_id)]
        assert novelty_n == len(earlier), item_id
