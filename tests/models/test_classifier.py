"""Loading checkpoints: label mapping onto (negative, neutral, positive), refusals, the bundle."""
from __future__ import annotations

import json

import pytest
import torch

from models.classifier import (
    BUNDLED_DIR,
    SPARSE_ROWS,
    ModelLoadError,
    apply_delta,
    label_projection,
    load_classifier,
    sparse_row_delta,
)
from models.engine import SentimentEngine


@pytest.mark.parametrize("names, expected", [
    (["negative", "neutral", "positive"], (0, 1, 2)),
    (["Bearish", "Bullish", "Neutral"], (0, 2, 1)),  # twitter-financial-news order
    (["positive", "negative", "neutral"], (2, 0, 1)),  # FinBERT order
    (["LABEL_0", "LABEL_1", "LABEL_2"], (0, 1, 2)),
    (["LABEL_0", "LABEL_1"], (0, 2)),
    (["NEG", "POS"], (0, 2)),
])
def test_label_projection_maps_names_and_orders(names, expected):
    assert label_projection(dict(enumerate(names))) == expected


def test_label_projection_override_for_generic_labels():
    assert label_projection(dict(enumerate(["LABEL_0", "LABEL_1", "LABEL_2"])),
                            ["positive", "negative", "neutral"]) == (2, 0, 1)


@pytest.mark.parametrize("names, message", [
    (["joy", "anger", "neutral"], "cannot map checkpoint labels ['joy', 'anger']"),
    (["positive", "positive", "negative"], "once each"),
    (["neutral", "positive"], "once each"),
    (["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3"], "cannot map"),
])
def test_label_projection_refuses_unmappable(names, message):
    with pytest.raises(ModelLoadError, match=message.replace("[", r"\[").replace("]", r"\]")):
        label_projection(dict(enumerate(names)))


def test_checkpoint_with_other_label_order_reports_our_order(tmp_path, tiny_checkpoint):
    path = tiny_checkpoint(tmp_path / "bullbear", {0: "bullish", 1: "bearish", 2: "neutral"})
    classifier = load_classifier(path)
    assert classifier.output_labels == (2, 0, 1)
    assert classifier.name.startswith("bullbear@")
    text = "Shares of $ACME jump after record quarter"
    encoded = classifier.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        raw = torch.softmax(classifier.model(**encoded).logits, dim=-1)[0].tolist()
    (prediction,) = SentimentEngine(classifier, torch.device("cpu"), "fp32").predict([text])
    bullish, bearish, neutral = raw
    assert prediction.probs == pytest.approx((bearish, neutral, bullish), abs=1e-5)


def test_unmappable_checkpoint_is_refused_with_its_labels(tmp_path, tiny_checkpoint):
    path = tiny_checkpoint(tmp_path / "emotions", {0: "joy", 1: "anger", 2: "fear"})
    with pytest.raises(ModelLoadError, match="joy"):
        load_classifier(path)


def test_missing_or_non_model_directory_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_classifier(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load_classifier(tmp_path)


def test_bundle_is_small_and_holds_only_trained_weights():
    bundle = json.loads((BUNDLED_DIR / "bundle.json").read_text())
    delta = BUNDLED_DIR / bundle["delta"]
    assert delta.stat().st_size < 25 * 1024 * 1024
    from safetensors import safe_open

    with safe_open(str(delta), "pt") as handle:
        keys = list(handle.keys())
        dense = [k for k in keys if "#" not in k]
        assert all(handle.get_tensor(k).dtype == torch.float16 for k in dense)
        sparse_rows = [k for k in keys if k.endswith(SPARSE_ROWS)]
        # embeddings only as changed rows, never the whole 30k-row matrix
        assert all(len(handle.get_tensor(k)) < 30522 for k in sparse_rows)
    assert "classifier.weight" in keys
    assert not any(k.startswith("bert.embeddings.") for k in dense)


def test_sparse_row_delta_stores_only_changed_rows_and_restores_them():
    torch.manual_seed(0)
    key = "bert.embeddings.word_embeddings.weight"
    base = torch.randn(50, 8)
    tuned = base.clone()
    tuned[[3, 17, 41]] += torch.randn(3, 8) * 0.01
    delta = sparse_row_delta(key, tuned, base)
    assert delta[key + SPARSE_ROWS].tolist() == [3, 17, 41]
    assert delta[key + "#int8_diff"].dtype == torch.int8
    restored = apply_delta({key: base}, {**delta, "classifier.bias": torch.ones(3, dtype=torch.float16)})
    assert restored["classifier.bias"].dtype == torch.float32
    assert torch.equal(restored[key][[0, 4, 49]], base[[0, 4, 49]])  # untouched rows exact
    half_step = delta[key + "#row_scale"][:, None] / 2  # int8 rounding: at most half a step per row
    assert ((restored[key][[3, 17, 41]] - tuned[[3, 17, 41]]).abs() <= half_step + 1e-6).all()
    with pytest.raises(ModelLoadError, match="does not have"):
        apply_delta({}, delta)


def test_bundled_model_loads_with_versioned_name():
    classifier = load_classifier()
    assert classifier.name.startswith("tickerpulse-minilm-ft@")
    assert classifier.output_labels == (0, 1, 2)
    assert classifier.normalize
