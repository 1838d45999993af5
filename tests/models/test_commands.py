"""The score / eval / train commands through the real CLI dispatcher."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_checkpoint) -> Path:
    """A real (random-weight) checkpoint whose labels come in FinBERT's order."""
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_model"), {0: "positive", 1: "negative", 2: "neutral"},
                           seed=2, layers=1)


def test_score_writes_one_line_per_input_line_and_reports_bad_ones(tmp_path, tiny_model, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([
        json.dumps({"id": 1, "text": "$AAPL beats"}),
        "{not json",
        json.dumps({"id": "b", "text": "Fed holds rates"}),
        json.dumps({"text": "no id"}),
        json.dumps({"id": 3, "text": 42}),
        "",
        json.dumps(["a list"]),
        json.dumps({"id": 4, "text": "$AAPL beats"}),
    ]) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["score", "--input", str(source), "--output", str(out), "--model", str(tiny_model)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("id") for r in lines] == [1, None, "b", None, 3, None, 4]
    assert [(r["line"], r["error"]) for r in lines if "error" in r] == [
        (2, "not JSON (Expecting property name enclosed in double quotes)"), (4, "missing 'id'"),
        (5, "missing or non-string 'text'"), (7, "not a JSON object")]
    rows = [r for r in lines if "error" not in r]
    for row in rows:
        assert set(row) == {"id", "label", "score", "probs", "confidence", "model"}
        assert list(row["probs"]) == ["negative", "neutral", "positive"]
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert row["score"] == pytest.approx(row["probs"]["positive"] - row["probs"]["negative"], abs=1e-5)
        assert row["model"].startswith(tiny_model.name + "@")
    assert rows[0]["probs"] == rows[2]["probs"]
    err = capsys.readouterr().err
    assert "line 2: not JSON" in err and "line 4: missing 'id'" in err
    assert "line 5: missing or non-string 'text'" in err and "line 7: not a JSON object" in err


HUGE = b"9" * 5000


def test_score_turns_poison_lines_into_error_lines_and_keeps_going(tmp_path, tiny_model, capsys):
    """Each of these crashed score (UnicodeDecodeError, ValueError, RecursionError) or the model."""
    poison = [
        b"caf\xe9 not utf-8",
        b'{"id": ' + HUGE + b', "text": "x"}',
        b'{"id": 1, "text": "x", "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"id": 2, "text": "\\ud800 lone"}',
        b'{"id": 3, "text": "' + b"a" * 30_000 + b'"}',
        b'{"id": 4, "pad": "' + b"a" * (10 * 1024 * 1024) + b'"}',
    ]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(poison + [b'{"id": 5, "text": "NUL \\u0000 and \\u001b[2J ESC"}']) + b"\n")
    out = tmp_path / "out.jsonl"
    assert main(["score", "--input", str(source), "--output", str(out), "--model", str(tiny_model)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("error", "").split(" (")[0].split(":")[0] for r in lines] == [
        "not UTF-8", "not JSON", "not JSON", "'text' contains an unpaired surrogate escape",
        "'text' too long", "line too long", ""]
    assert lines[-1]["id"] == 5 and "label" in lines[-1]
    assert [r.get("id") for r in lines[:4]] == [None, None, None, 2]
    assert capsys.readouterr().err.count("tickerpulse score: line") == 6


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80) | st.sampled_from([HUGE, b"[" * 50_000, b'{"id": 1, "text": "\\udc80"}',
                                                           b'{"id": 1, "text": "ok"}', b"\x00\r\x1b"]), max_size=6))
def test_score_line_reader_never_raises_and_keeps_line_numbers(lines):
    """Every non-blank line gets exactly one verdict: a record to score or a reason."""
    from models.commands import _parsed_lines

    data = b"\n".join(lines) + b"\n"
    verdicts = list(_parsed_lines(io.BytesIO(data)))
    expected = [n for n, line in enumerate(data.split(b"\n")[:-1], 1) if line.strip()]
    assert [n for n, _, _ in verdicts] == expected
    for _, record, reason in verdicts:
        if reason is None:
            assert isinstance(record, dict) and "id" in record
            record["text"].encode("utf-8")  # the tokenizer gets valid text only
        else:
            assert reason and (record is None or isinstance(record, dict))


def test_score_defaults_to_the_pipelines_precision_and_quantize_is_int8(monkeypatch):
    from models.commands import _model_flags
    from pipeline.cli_args import command_parser

    parser = command_parser("score", "x")
    _model_flags(parser)
    assert parser.parse_args([]).precision == "auto"
    assert parser.parse_args(["--quantize"]).precision == "int8"
    assert parser.parse_args(["--precision", "bf16"]).precision == "bf16"
    monkeypatch.setenv("TICKERPULSE_PRECISION", "fp32")
    parser = command_parser("score", "x")
    _model_flags(parser)
    assert parser.parse_args([]).precision == "fp32"


@pytest.mark.parametrize("argv, message", [
    (["score", "--precision", "fp16"], "invalid choice: 'fp16'"),
    (["backfill", "--input", "README.md", "--precision", "int8", "--device", "cuda"], "int8 is a CPU path"),
])
def test_precision_errors_are_one_line_exit_2(argv, message, capsys):
    from pipeline.cli import main

    assert main(argv) == 2 if argv[0] != "score" else _exits_2(main, argv)
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def _exits_2(main, argv) -> bool:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code == 2


def test_a_bad_precision_env_value_is_one_line_exit_2(monkeypatch, capsys):
    from pipeline.cli import main

    monkeypatch.setenv("TICKERPULSE_PRECISION", "fast")
    with pytest.raises(SystemExit) as exc:
        main(["score", "--input", "-"])
    assert exc.value.code == 2 and "TICKERPULSE_PRECISION='fast'" in capsys.readouterr().err


def test_eval_reports_progress_on_the_progress_logger(tmp_path, tiny_model, caplog):
    data = tmp_path / "d.csv"
    data.write_text("text,label\nshares soar,1\nshares sink,0\nmeeting on monday,2\n")
    with caplog.at_level("INFO", logger="tickerpulse.progress"):
        assert main(["eval", "--data", str(data), "--model", str(tiny_model), "--json",
                     "--label-map", "0=negative,1=positive,2=neutral"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "tickerpulse.progress"]
    assert lines and lines[-1].startswith("eval: 3/3, ")


def test_eval_prints_accuracy_macro_f1_and_confusion(tmp_path, tiny_model, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\nshares soar,1\nshares sink,0\nmeeting on monday,2\n")
    args = ["eval", "--data", str(data), "--model", str(tiny_model), "--label-map", "0=negative,1=positive,2=neutral"]
    assert main(args + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 3 and sum(map(sum, result["confusion"])) == 3
    assert 0.0 <= result["macro_f1"] <= 1.0
    assert result["accuracy"] == pytest.approx(sum(result["confusion"][i][i] for i in range(3)) / 3)
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "macro-F1" in table and "confusion" in table and "accuracy" in table


def _graded_csv(path: Path) -> Path:
    """One repeated text (so one predicted class) with labels and an agreement-like grade column."""
    rows = [("positive", "all"), ("negative", "all"), ("neutral", "all"), ("positive", "all"),
            ("neutral", "75"), ("negative", "75"), ("positive", "50"), ("neutral", "50"), ("neutral", "50")]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "grade"])
        writer.writerows(("the board met on tuesday", label, grade) for label, grade in rows)
    return path


def test_eval_by_column_reports_each_group_and_cumulative_levels(tmp_path, tiny_model, capsys):
    data = _graded_csv(tmp_path / "graded.csv")
    base = ["eval", "--data", str(data), "--model", str(tiny_model), "--json", "--by", "grade"]
    assert main(base) == 0
    result = json.loads(capsys.readouterr().out)
    (predicted,) = {k for row in result["confusion"] for k, n in enumerate(row) if n}  # one text, one class
    label = ["negative", "neutral", "positive"][predicted]
    groups = result["by"]["groups"]
    assert list(groups) == ["all", "75", "50"] and result["by"]["cumulative"] is False
    gold = {"all": ["positive", "negative", "neutral", "positive"], "75": ["neutral", "negative"],
            "50": ["positive", "neutral", "neutral"]}
    for name, labels in gold.items():
        assert groups[name]["rows"] == len(labels)
        assert groups[name]["accuracy"] == pytest.approx(labels.count(label) / len(labels))
        assert sum(map(sum, groups[name]["confusion"])) == len(labels)
    summed = [[sum(g["confusion"][r][c] for g in groups.values()) for c in range(3)] for r in range(3)]
    assert summed == result["confusion"]

    assert main(base + ["--levels", "all,75,50"]) == 0
    nested = json.loads(capsys.readouterr().out)["by"]["groups"]
    assert list(nested) == [">=all", ">=75", ">=50"]
    assert [g["rows"] for g in nested.values()] == [4, 6, 9]
    assert nested[">=75"]["accuracy"] == pytest.approx((gold["all"] + gold["75"]).count(label) / 6)
    assert nested[">=50"]["confusion"] == result["confusion"]
    assert nested[">=50"]["macro_f1"] == pytest.approx(result["macro_f1"])

    assert main([a for a in base if a != "--json"] + ["--levels", "all,75,50"]) == 0  # the table
    table = capsys.readouterr().out
    assert "by grade (cumulative)" in table and ">=75" in table


@pytest.mark.parametrize("extra, message", [
    (["--by", "grade", "--levels", "all,75"], "values not in the levels ['all', '75']: ['50']"),
    (["--by", "nope"], "missing column 'nope'"),
    (["--levels", "all,75,50"], "--levels needs --by COLUMN"),
])
def test_eval_by_bad_column_or_levels_exits_2_with_one_line(tmp_path, tiny_model, capsys, extra, message):
    data = _graded_csv(tmp_path / "graded.csv")
    assert main(["eval", "--data", str(data), "--model", str(tiny_model)] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["score", "--input", "/no/such.jsonl"], "no such file"),
    (["score", "--batch-size", "0"], "must be >= 1"),
    (["score", "--device", "tpu"], "invalid choice"),
    (["score", "--half-life-typo"], "unrecognized arguments"),
    (["eval", "--data", "/no/such.csv"], "no such file"),
    (["train", "--train", "x.csv"], "required"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bad_label_map_and_unusable_model_exit_2(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\nx,0\n")
    assert main(["eval", "--data", str(data), "--label-map", "0=great"]) == 2
    assert "bad label map entry" in capsys.readouterr().err
    assert main(["eval", "--data", str(data), "--label-map", "0=negative", "--model", str(tmp_path)]) == 2
    assert "not a model directory" in capsys.readouterr().err


def _exit_code(argv: list[str]) -> int:
    """argparse errors exit (SystemExit); checks after parsing return 2 from main."""
    try:
        return main(argv)
    except SystemExit as exited:
        return int(exited.code)


def test_a_bad_env_value_is_one_line_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("TICKERPULSE_BATCH_SIZE", "abc")
    assert _exit_code(["score"]) == 2
    err = capsys.readouterr().err.strip()
    assert "TICKERPULSE_BATCH_SIZE='abc': not an integer" in err and "\n" not in err
