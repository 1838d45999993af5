"""Averaging runs: the mean of their weights, as a checkpoint and a bundle; mismatches refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.averaging import average_models, average_weights
from models.classifier import ModelLoadError, load_classifier
from models.data import LabelledData, load_labelled_csv
from models.engine import SentimentEngine
from models.training import TrainConfig, train

TRAIN_CSV = Path(__file__).resolve().parents[2] / "../shared/data/twitter_financial_news_sentiment/sent_train.csv"
THREE = {0: "negative", 1: "neutral", 2: "positive"}


def test_average_is_the_mean_of_each_weight(tmp_path, tiny_checkpoint):
    models = [load_classifier(tiny_checkpoint(tmp_path / f"m{i}", THREE, seed=i)) for i in range(3)]
    mean = average_weights(models)
    key = "classifier.weight"
    expected = sum(m.model.state_dict()[key] for m in models) / 3
    assert torch.allclose(mean[key], expected, atol=1e-7)
    assert not torch.equal(mean[key], models[0].model.state_dict()[key])


def test_weighted_average_mixes_in_proportion_and_keeps_shared_weights(tmp_path, tiny_checkpoint):
    start, tuned = (load_classifier(tiny_checkpoint(tmp_path / f"m{i}", THREE, seed=i)) for i in range(2))
    tuned.model.bert.embeddings.position_embeddings.weight.data.copy_(
        start.model.bert.embeddings.position_embeddings.weight.data)
    mixed = average_weights([start, tuned], mix=[1, 3])
    key = "classifier.weight"
    expected = 0.25 * start.model.state_dict()[key] + 0.75 * tuned.model.state_dict()[key]
    assert torch.allclose(mixed[key], expected, atol=1e-7)
    position = "bert.embeddings.position_embeddings.weight"
    assert torch.equal(mixed[position], start.model.state_dict()[position])
    for bad in ([1], [1, 0], [2, -1]):
        with pytest.raises(ValueError, match="one positive weight per model"):
            average_weights([start, tuned], mix=bad)


def test_weights_no_run_changed_stay_bit_exact(tmp_path, tiny_checkpoint):
    """The float mean of three equal values can be off by one ulp; a frozen weight would then
    count as trained and bloat the bundle."""
    models = [load_classifier(tiny_checkpoint(tmp_path / f"m{i}", THREE, seed=i)) for i in range(3)]
    shared = torch.full((30522, 32), 0.1) + torch.rand(30522, 32) * 1e-3
    trained = shared.clone()
    trained[7] += 0.05
    for i, m in enumerate(models):
        m.model.bert.embeddings.word_embeddings.weight.data.copy_(trained if i == 0 else shared)
    mean = average_weights(models)["bert.embeddings.word_embeddings.weight"]
    assert torch.equal(mean[8:], shared[8:]) and torch.equal(mean[:7], shared[:7])
    assert torch.allclose(mean[7], shared[7] + 0.05 / 3)


def test_models_that_differ_are_refused(tmp_path, tiny_checkpoint):
    same_shape_other_labels = tiny_checkpoint(tmp_path / "b", {0: "positive", 1: "neutral", 2: "negative"})
    other_depth = tiny_checkpoint(tmp_path / "c", THREE, layers=3)
    base = load_classifier(tiny_checkpoint(tmp_path / "a", THREE))
    for other in (same_shape_other_labels, other_depth):
        with pytest.raises(ModelLoadError, match="only runs of the same model"):
            average_weights([base, load_classifier(other)])


def test_bad_arguments_exit_2_with_one_line(tmp_path, tiny_checkpoint, capsys):
    from pipeline.cli import main

    one = tiny_checkpoint(tmp_path / "one", THREE)
    assert main(["average", "--models", str(one), "--out", str(tmp_path / "out")]) == 2
    assert "at least two" in capsys.readouterr().err.strip()
    other = tiny_checkpoint(tmp_path / "other", {0: "negative", 1: "positive"})
    capsys.readouterr()  # saving the checkpoints shows a progress bar
    assert main(["average", "--models", str(one), str(other), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().startswith("tickerpulse average: error: ")
    for weights in (["1"], ["1", "0"], ["1", "-2"]):
        assert main(["average", "--models", str(one), str(one), "--weights", *weights,
                     "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert "one positive weight per model" in err and len(err.splitlines()) == 1
    missing = tmp_path / "no-such-model"
    assert main(["average", "--models", str(one), str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and len(err.splitlines()) == 1


def test_two_runs_from_the_same_start_average_into_a_checkpoint_and_a_bundle(tmp_path):
    if not TRAIN_CSV.is_file():
        pytest.skip(f"training data not at {TRAIN_CSV}")
    data = load_labelled_csv(TRAIN_CSV, {"0": "negative", "1": "positive", "2": "neutral"})
    train_rows, valid_rows = (LabelledData(data.texts[a:b], data.labels[a:b]) for a, b in ((0, 64), (64, 88)))
    runs = []
    for data_seed in (1, 2):
        cfg = TrainConfig(epochs=1, batch_size=16, trainable_layers=1, max_length=24, seed=5, data_seed=data_seed,
                          learning_rate=3e-4, embedding_min_count=3)
        train(train_rows, valid_rows, tmp_path / f"run{data_seed}", cfg, progress=False)
        runs.append(tmp_path / f"run{data_seed}")
    weights = [load_file(str(run / "model.safetensors"))["classifier.weight"] for run in runs]
    assert not weights[0].equal(weights[1])  # another batch order, another end point

    f1 = average_models(runs, tmp_path / "avg", tmp_path / "bundle", "unit", valid_rows)
    assert 0.0 <= f1 <= 1.0
    averaged = load_file(str(tmp_path / "avg" / "model.safetensors"))["classifier.weight"]
    assert torch.allclose(averaged, (weights[0] + weights[1]) / 2, atol=1e-7)

    recorded = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert [r["training"]["data_seed"] for r in recorded["averaged_from"]] == [1, 2]
    assert recorded["valid_macro_f1"] == pytest.approx(f1, abs=1e-4) and isinstance(recorded["int8_validated"], bool)
    average_models([tmp_path / "bundle", runs[0]], tmp_path / "avg2", tmp_path / "bundle2", "unit", mix=[1, 3])
    nested = json.loads((tmp_path / "bundle2" / "bundle.json").read_text())["averaged_from"]
    assert [r["mix_weight"] for r in nested] == [0.25, 0.75]
    assert nested[0]["averaged_from"] == recorded["averaged_from"]  # a bundle ingredient keeps its history
    assert nested[0]["valid_macro_f1"] == recorded["valid_macro_f1"] and nested[1]["training"]["data_seed"] == 1
    delta = load_file(str(tmp_path / "bundle" / "delta.safetensors"))
    assert not any(k.startswith("bert.encoder.layer.0.") for k in delta)  # frozen layers are not shipped
    checkpoint = SentimentEngine(load_classifier(tmp_path / "avg"), torch.device("cpu"), "fp32")
    bundle = SentimentEngine(load_classifier(tmp_path / "bundle"), torch.device("cpu"), "fp32")
    for full, rebuilt in zip(checkpoint.predict(valid_rows.texts[:8]), bundle.predict(valid_rows.texts[:8])):
        assert rebuilt.probs == pytest.approx(full.probs, abs=0.01)
