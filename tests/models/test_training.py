"""Training writes loadable models, reproducibly; CSV loading and metrics behave."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.classifier import load_classifier
from models.data import (
    LABELS,
    LabelledData,
    confusion_matrix,
    load_labelled_csv,
    macro_f1,
    normalize_text,
    parse_label_map,
)
from models.engine import SentimentEngine
from models.training import TrainConfig, train

TRAIN_CSV = Path(__file__).resolve().parents[2] / "../shared/data/twitter_financial_news_sentiment/sent_train.csv"
TWITTER_LABELS = {"0": "negative", "1": "positive", "2": "neutral"}


def _rows(data: LabelledData, n: int) -> LabelledData:
    return LabelledData(data.texts[:n], data.labels[:n])


@pytest.fixture(scope="module")
def small_data() -> tuple[LabelledData, LabelledData]:
    if not TRAIN_CSV.is_file():
        pytest.skip(f"training data not at {TRAIN_CSV}")
    data = load_labelled_csv(TRAIN_CSV, TWITTER_LABELS)
    return _rows(data, 200), LabelledData(data.texts[200:280], data.labels[200:280])


def test_one_epoch_on_200_rows_writes_loadable_checkpoint_and_bundle(tmp_path, small_data):
    train_rows, valid_rows = small_data
    cfg = TrainConfig(epochs=1, batch_size=16, trainable_layers=1, max_length=32, pooling="mean", seed=3)
    result = train(train_rows, valid_rows, tmp_path / "ckpt", cfg, bundle_dir=tmp_path / "bundle",
                   bundle_name="unit", progress=False)
    assert result.best_epoch == 1 and 0.0 <= result.best_macro_f1 <= 1.0
    metrics = json.loads((tmp_path / "ckpt" / "training_metrics.json").read_text())
    assert metrics["history"][0]["epoch"] == 1

    checkpoint = SentimentEngine(load_classifier(tmp_path / "ckpt"), _cpu(), "fp32")
    bundle = SentimentEngine(load_classifier(tmp_path / "bundle"), _cpu(), "fp32")
    assert checkpoint.classifier.normalize and checkpoint.classifier.max_length == 32
    assert bundle.name.startswith("unit@")
    recorded = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert recorded["labels"] == list(LABELS) and recorded["max_length"] == 32
    assert isinstance(recorded["int8_validated"], bool)
    assert recorded["int8_validated"] == (recorded["valid_macro_f1"] - recorded["int8_valid_macro_f1"] <= 0.01)
    delta = load_file(str(tmp_path / "bundle" / "delta.safetensors"))
    assert delta and all(k.startswith(("bert.encoder.layer.5.", "classifier.")) for k in delta)
    texts = valid_rows.texts[:10]
    for full, rebuilt in zip(checkpoint.predict(texts), bundle.predict(texts)):
        assert rebuilt.probs == pytest.approx(full.probs, abs=0.01)  # fp16 delta vs fp32 checkpoint


def test_training_on_cuda_writes_a_model_that_scores_on_cpu(tmp_path, small_data):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    train_rows, valid_rows = _rows(small_data[0], 64), _rows(small_data[1], 16)
    cfg = TrainConfig(epochs=1, batch_size=16, trainable_layers=1, max_length=24, seed=5, device="cuda")
    result = train(train_rows, valid_rows, tmp_path / "ckpt", cfg, progress=False)
    assert result.best_epoch == 1 and 0.0 <= result.best_macro_f1 <= 1.0
    trained = SentimentEngine(load_classifier(tmp_path / "ckpt"), _cpu(), "fp32")
    assert len(trained.predict(valid_rows.texts)) == len(valid_rows)


def test_tuned_embedding_rows_smoothing_layer_decay_and_averaging(tmp_path, small_data):
    """Frequent tokens' embedding rows learn and ship as sparse rows; the average of the last
    epochs is evaluated and recorded; the bundle still rebuilds the checkpoint's predictions."""
    train_rows, valid_rows = _rows(small_data[0], 64), _rows(small_data[1], 24)
    cfg = TrainConfig(epochs=2, batch_size=16, trainable_layers=1, max_length=32, seed=3, learning_rate=3e-4,
                      embedding_min_count=3, layer_lr_decay=0.8, label_smoothing=0.1, average_last=2)
    result = train(train_rows, valid_rows, tmp_path / "ckpt", cfg, bundle_dir=tmp_path / "bundle",
                   bundle_name="unit", progress=False)
    assert result.averaged is not None and len(result.history) == 2
    metrics = json.loads((tmp_path / "ckpt" / "training_metrics.json").read_text())
    assert metrics["averaged"]["valid_macro_f1"] == result.averaged.valid_macro_f1

    key = "bert.embeddings.word_embeddings.weight"
    delta = load_file(str(tmp_path / "bundle" / "delta.safetensors"))
    tokenizer = load_classifier(tmp_path / "ckpt").tokenizer
    counts = Counter(t for ids in tokenizer([normalize_text(t) for t in train_rows.texts],
                                            truncation=True, max_length=32)["input_ids"] for t in ids)
    changed = set(delta[key + "#rows"].tolist())
    assert changed and changed <= {t for t, n in counts.items() if n >= 3}
    assert not any(k.startswith("bert.embeddings.") and "#" not in k for k in delta)

    checkpoint = SentimentEngine(load_classifier(tmp_path / "ckpt"), _cpu(), "fp32")
    bundle = SentimentEngine(load_classifier(tmp_path / "bundle"), _cpu(), "fp32")
    texts = valid_rows.texts[:10]
    for full, rebuilt in zip(checkpoint.predict(texts), bundle.predict(texts)):
        assert rebuilt.probs == pytest.approx(full.probs, abs=0.01)


def test_continuing_from_a_bundle_starts_from_its_weights_and_ships_all_of_them(tmp_path, small_data):
    """--init-from: with a zero learning rate the continued model predicts what its start did,
    although the continuation trains other layers and no embedding rows (the start's changed rows
    and layer 5 still ship); a start with another pooling is refused."""
    train_rows, valid_rows = _rows(small_data[0], 48), _rows(small_data[1], 16)
    first = TrainConfig(epochs=1, batch_size=16, trainable_layers=1, max_length=32, seed=3, learning_rate=3e-4,
                        embedding_min_count=2)
    train(train_rows, valid_rows, tmp_path / "a", first, bundle_dir=tmp_path / "a_bundle", progress=False)
    again = TrainConfig(epochs=1, batch_size=16, trainable_layers=2, max_length=32, seed=4, learning_rate=0.0,
                        init_from=str(tmp_path / "a_bundle"))
    train(train_rows, valid_rows, tmp_path / "b", again, bundle_dir=tmp_path / "b_bundle", progress=False)
    start = SentimentEngine(load_classifier(tmp_path / "a_bundle"), _cpu(), "fp32")
    continued = SentimentEngine(load_classifier(tmp_path / "b_bundle"), _cpu(), "fp32")
    for a, b in zip(start.predict(valid_rows.texts), continued.predict(valid_rows.texts)):
        assert b.probs == pytest.approx(a.probs, abs=2e-3)
    delta = load_file(str(tmp_path / "b_bundle" / "delta.safetensors"))
    assert "bert.encoder.layer.5.output.dense.weight" in delta and "bert.encoder.layer.0.output.dense.weight" in delta
    assert len(delta["bert.embeddings.word_embeddings.weight#rows"]) > 0
    from models.classifier import ModelLoadError

    with pytest.raises(ModelLoadError, match="cannot continue from it"):
        train(train_rows, valid_rows, tmp_path / "c", TrainConfig(epochs=1, trainable_layers=1, pooling="mean",
                                                                  init_from=str(tmp_path / "a_bundle")), progress=False)


def test_keep_start_holds_the_anchored_rows_to_the_starting_model(tmp_path, small_data):
    """Learning without forgetting: continued on new rows at a high learning rate, the anchored
    rows' probabilities move less from the start model's with the KL term than without it."""
    rows, valid_rows = small_data[0], _rows(small_data[1], 16)
    anchored, new = _rows(rows, 48), LabelledData(rows.texts[48:96], rows.labels[48:96])
    first = TrainConfig(epochs=1, batch_size=16, trainable_layers=1, max_length=32, seed=3, learning_rate=3e-4)
    train(anchored, valid_rows, tmp_path / "a", first, bundle_dir=tmp_path / "a_bundle", progress=False)
    start = SentimentEngine(load_classifier(tmp_path / "a_bundle"), _cpu(), "fp32").predict(anchored.texts)
    drift = {}
    for weight in (0.0, 5.0):
        cfg = TrainConfig(epochs=2, batch_size=16, trainable_layers=2, max_length=32, seed=4, learning_rate=1e-3,
                          init_from=str(tmp_path / "a_bundle"), keep_start=weight, class_weighting=False)
        out = tmp_path / f"keep{weight}"
        train(anchored.plus(new), valid_rows, out, cfg, progress=False, anchored_rows=len(anchored) if weight else 0)
        after = SentimentEngine(load_classifier(out), _cpu(), "fp32").predict(anchored.texts)
        drift[weight] = sum(abs(x - y) for a, b in zip(start, after) for x, y in zip(a.probs, b.probs)) / len(start)
    assert drift[5.0] < 0.5 * drift[0.0], drift
    with pytest.raises(ValueError, match="keep_start needs init_from"):
        train(anchored, valid_rows, tmp_path / "c", TrainConfig(epochs=1, keep_start=1.0), progress=False,
              anchored_rows=len(anchored))


def test_kept_divergence_is_zero_at_the_start_and_ignores_unanchored_rows():
    from models.training import _kept_divergence

    start_probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    same = start_probs.log()
    assert _kept_divergence(same, [0, 1], start_probs).item() == pytest.approx(0.0, abs=1e-6)
    assert _kept_divergence(torch.zeros(2, 3), [5, 6], start_probs).item() == 0.0  # no anchored row
    moved = torch.tensor([[0.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    # only row 0 (batch position 0) is anchored; the sum is divided by the batch size, 2
    expected = sum(p * (p / (1 / 3)).log() for p in start_probs[0]) / 2
    assert _kept_divergence(moved, [0, 7], start_probs).item() == pytest.approx(expected.item(), rel=1e-5)


def test_epoch_average_keeps_untouched_weights_bit_exact():
    from models.training import _WeightAverager

    layer = torch.nn.Linear(64, 512)
    untouched = layer.weight.detach().clone()
    averager = _WeightAverager(layer, ["weight"])
    for step in range(3):
        with torch.no_grad():
            layer.weight[0] = untouched[0] + 0.01 * step  # one trained row, the rest frozen
        averager.add()
    averager.load_mean()
    assert torch.equal(layer.weight[1:], untouched[1:])
    assert torch.allclose(layer.weight[0], untouched[0] + 0.01)


def test_layer_lr_decay_gives_lower_layers_smaller_steps():
    from models.classifier import new_backbone_classifier
    from models.training import _freeze, _optimizer

    model, _ = new_backbone_classifier("cls")
    _freeze(model, 6, word_embeddings=True)
    optimizer, _ = _optimizer(model, TrainConfig(learning_rate=1e-4, layer_lr_decay=0.5), total_steps=10)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["classifier.weight"])] == (1e-4, 0.01)
    assert lr_of[id(params["bert.encoder.layer.5.attention.self.query.weight"])][0] == pytest.approx(5e-5)
    assert lr_of[id(params["bert.encoder.layer.0.attention.self.query.weight"])][0] == pytest.approx(1e-4 / 64)
    # no weight decay on embeddings: it would move rows no training text touched
    assert lr_of[id(params["bert.embeddings.word_embeddings.weight"])] == (pytest.approx(1e-4 / 128), 0.0)


@pytest.mark.parametrize("flag, value", [("--label-smoothing", "1.5"), ("--layer-lr-decay", "x"),
                                         ("--embedding-min-count", "-1"), ("--average-last", "0"),
                                         ("--keep-start", "-1"), ("--keep-start", "nan")])
def test_bad_training_option_exits_2_with_one_line(flag, value, capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--train", str(TRAIN_CSV), "--valid", str(TRAIN_CSV), "--out", "/tmp/unused", flag, value])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err.strip().splitlines()[-1]


def test_keep_start_without_init_from_exits_2_with_one_line(capsys):
    from pipeline.cli import main

    assert main(["train", "--train", str(TRAIN_CSV), "--valid", str(TRAIN_CSV), "--out", "/tmp/unused",
                 "--keep-start", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--keep-start needs --init-from" in err[0]


def test_a_bundle_records_the_files_it_was_trained_on_and_a_soup_keeps_them(tmp_path, small_data):
    import hashlib

    from pipeline.cli import main

    train_rows, valid_rows = small_data
    files = {}
    for role, texts, labels in (("train", train_rows.texts[:120], train_rows.labels[:120]),
                                ("extra_train", train_rows.texts[120:160], train_rows.labels[120:160]),
                                ("valid", valid_rows.texts, valid_rows.labels)):
        files[role] = tmp_path / f"{role}.csv"
        with open(files[role], "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["text", "label"])
            writer.writerows((text, LABELS[label]) for text, label in zip(texts, labels))
    common = ["--valid", str(files["valid"]), "--epochs", "1", "--batch-size", "16", "--max-length", "32",
              "--trainable-layers", "1", "--seed", "3", "--threads", "2"]
    for run in ("a", "b"):
        assert main(["train", "--train", str(files["train"]), "--extra-train", str(files["extra_train"]), *common,
                     "--data-seed", "1" if run == "a" else "2", "--out", str(tmp_path / run),
                     "--bundle-out", str(tmp_path / f"{run}_bundle")]) == 0
    expected = [{"role": role, "path": str(files[role]), "rows": rows,
                 "sha256": hashlib.sha256(files[role].read_bytes()).hexdigest()}
                for role, rows in (("train", 120), ("extra_train", 40), ("valid", len(valid_rows.texts)))]
    assert json.loads((tmp_path / "a_bundle" / "bundle.json").read_text())["data"] == expected
    assert json.loads((tmp_path / "a" / "training_metrics.json").read_text())["data"] == expected

    assert main(["average", "--models", str(tmp_path / "a"), str(tmp_path / "b_bundle"),
                 "--out", str(tmp_path / "soup"), "--bundle-out", str(tmp_path / "soup_bundle")]) == 0
    soup = json.loads((tmp_path / "soup_bundle" / "bundle.json").read_text())
    assert [ingredient["data"] for ingredient in soup["averaged_from"]] == [expected, expected]


def test_training_is_reproducible_with_a_seed(tmp_path, small_data):
    train_rows, valid_rows = _rows(small_data[0], 64), _rows(small_data[1], 16)
    cfg = TrainConfig(epochs=1, batch_size=16, trainable_layers=1, max_length=24, seed=5)
    runs = [train(train_rows, valid_rows, tmp_path / f"run{i}", cfg, progress=False) for i in range(2)]
    weights = [load_file(str(tmp_path / f"run{i}" / "model.safetensors"))["classifier.weight"] for i in range(2)]
    assert runs[0].history[0].train_loss == runs[1].history[0].train_loss
    assert weights[0].equal(weights[1])


def test_csv_with_names_or_mapped_integers(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["text", "label"], ["up, up", "Bullish"], ["flat", "neutral"],
                                      ["multi\nline", "NEGATIVE"]])
    data = load_labelled_csv(path)
    assert data.texts[2] == "multi\nline"
    assert data.labels == [2, 1, 0]
    assert data.counts() == dict.fromkeys(LABELS, 1)
    both = data.plus(LabelledData(["down"], [0]))
    assert both.texts[-1] == "down" and both.counts()["negative"] == 2
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["text", "label"], ["a", "0"], ["b", "2"]])
    assert load_labelled_csv(path, TWITTER_LABELS).labels == [0, 1]
    with pytest.raises(ValueError, match="need --label-map"):
        load_labelled_csv(path)


def test_csv_errors_name_the_problem(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("body,label\nx,positive\n")
    with pytest.raises(ValueError, match="missing column"):
        load_labelled_csv(path)
    path.write_text("text,label\nx,positive\ny,meh\n")
    with pytest.raises(ValueError, match="row 3: unknown label 'meh'"):
        load_labelled_csv(path)


def test_label_map_parsing():
    assert parse_label_map("0=negative, 1=Bullish,2=neutral") == TWITTER_LABELS
    for bad in ("0=good", "0negative", "=negative", ""):
        with pytest.raises(ValueError):
            parse_label_map(bad)


def test_macro_f1_and_confusion():
    gold, predicted = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    assert confusion_matrix(gold, predicted) == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # per-class F1: 0.5, 0.8, 0.6667
    assert macro_f1(gold, predicted) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1([0, 1, 2], [0, 1, 2]) == 1.0


def _cpu():
    return torch.device("cpu")
