"""The score / eval / train commands through the real CLI dispatcher."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_checkpoint) -> Path:
    """A real (random-weight) checkpoint whose labels come in FinBERT's order."""
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_model"), {0: "positive", 1: "negative", 2: "neutral"},
                           seed=2, layers=1)


def test_score_writes_one_line_per_good_input_and_reports_bad_ones(tmp_path, tiny_model, capsys):
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
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, "b", 4]
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


@pytest.mark.parametrize("argv, message", [
    (["score", "--input", "/no/such.jsonl"], "no such file"),
    (["score", "--batch-size", "0"], "must be >= 1"),
    (["score", "--device", "tpu"], "invalid choice"),
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
