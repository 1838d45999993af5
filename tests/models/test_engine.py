"""The inference engine: same answers as an unbatched forward pass, duplicates scored once."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from models.classifier import ModelLoadError, load_classifier
from models.data import LABELS, normalize_text
from models.engine import Prediction, SentimentEngine, resolve_device
from models.precision import cpu_flags, resolve_precision

TEXTS = [
    "$AAPL up",
    "Acme Corp cuts its full-year revenue forecast as demand for widgets slows sharply in Europe",
    "RT @trader42: $TSLA deliveries miss https://t.co/abc123",
    "Fed holds rates",
    "",
    "Shares of $XYZ rally 12% after the company beats estimates and raises guidance for 2025",
]


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory, tiny_checkpoint) -> SentimentEngine:
    path = tiny_checkpoint(tmp_path_factory.mktemp("tiny"), {0: "negative", 1: "neutral", 2: "positive"}, seed=1)
    return SentimentEngine(load_classifier(path), torch.device("cpu"), "fp32", batch_size=2)


def test_bucketed_padded_batches_match_one_by_one_forward(tiny_engine):
    classifier = tiny_engine.classifier
    expected = []
    with torch.inference_mode():
        for text in TEXTS:
            encoded = classifier.tokenizer(text, truncation=True, max_length=classifier.max_length,
                                           return_tensors="pt")
            expected.append(torch.softmax(classifier.model(**encoded).logits, -1)[0].tolist())
    predictions = tiny_engine.predict(TEXTS)
    assert [p.probs for p in predictions] == [pytest.approx(e, abs=1e-5) for e in expected]


def test_batches_take_few_shapes_and_padding_rows_do_not_leak(tiny_engine):
    """Rows pad to a power of two, widths to eight steps per power of two (or the max length):
    a stream's varied bundles then reuse a few compiled shapes instead of growing memory."""
    engine = SentimentEngine(tiny_engine.classifier, torch.device("cpu"), "fp32", batch_size=16, cache_size=0)
    shapes = set()
    hook = engine._model.register_forward_pre_hook(
        lambda _module, _args, kwargs: shapes.add(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        texts = [" ".join(["profit"] * (1 + i % 37)) + f" {i}" for i in range(100)]
        alone = {t: engine.predict([t])[0] for t in texts}
        for size in (1, 3, 5, 7, 13, 19, 33, 100):
            predictions = engine.predict(texts[:size])
            assert [p.probs for p in predictions] == [pytest.approx(alone[t].probs, abs=1e-5) for t in texts[:size]]
    finally:
        hook.remove()
    max_length = engine.classifier.max_length
    widths = set(range(1, 9)) | {octave // 8 * k for octave in (16, 32, 64, 128, 256, 512) for k in range(5, 9)}
    assert all(rows in (1, 2, 4, 8, 16) and (width in widths or width == max_length) for rows, width in shapes)


def test_prediction_fields_are_consistent(tiny_engine):
    for p in tiny_engine.predict(TEXTS):
        assert sum(p.probs) == pytest.approx(1.0, abs=1e-5)
        assert -1.0 <= p.score <= 1.0 and p.score == pytest.approx(p.probs[2] - p.probs[0])
        assert p.confidence == max(p.probs) and p.label == LABELS[p.probs.index(p.confidence)]
        assert p.model == tiny_engine.name


def test_duplicates_are_scored_once_and_cached_across_calls(tiny_engine):
    normalising = dataclasses.replace(tiny_engine.classifier, normalize=True)
    engine = SentimentEngine(normalising, torch.device("cpu"), "fp32", batch_size=64)
    rows_seen = []
    hook = engine.classifier.model.bert.embeddings.register_forward_hook(
        lambda module, inputs, output: rows_seen.append(output.shape[0]))
    try:
        first = engine.predict(["same text", "other", "same text", "same  text "])
        assert sum(rows_seen) == 2  # "same  text " normalises to "same text"
        assert first[0] == first[2] == first[3]
        again = engine.predict(["other", "new one"])
        assert sum(rows_seen) == 3 and again[0] == first[1]
    finally:
        hook.remove()


def test_int8_path_stays_close_to_fp32(tiny_engine):
    quantized = SentimentEngine(tiny_engine.classifier, torch.device("cpu"), "int8")
    assert quantized.name.endswith("+int8")
    for fp32, int8 in zip(tiny_engine.predict(TEXTS), quantized.predict(TEXTS)):
        assert int8.probs == pytest.approx(fp32.probs, abs=0.05)


def test_from_probs_builds_label_score_confidence():
    p = Prediction.from_probs([0.7, 0.2, 0.1], "m@1")
    assert (p.label, p.confidence, p.model) == ("negative", 0.7, "m@1")
    assert p.score == pytest.approx(-0.6)


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ModelLoadError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_engine_agrees_with_cpu_fp32(tiny_engine):
    cuda = SentimentEngine(tiny_engine.classifier, torch.device("cuda"), "bf16", batch_size=2, cache_size=0)
    try:
        on_gpu = cuda.predict(TEXTS)
    finally:
        tiny_engine.classifier.model.to("cpu")
    for gpu, cpu in zip(on_gpu, tiny_engine.predict(TEXTS)):
        assert gpu.probs == pytest.approx(cpu.probs, abs=0.02)  # bf16 keeps ~3 significant digits


def test_non_string_text_is_a_type_error(tiny_engine):
    with pytest.raises(TypeError, match="must be str"):
        tiny_engine.predict(["ok", None])


def test_normalisation_keeps_cashtags_and_masks_urls_and_mentions():
    assert normalize_text("RT @jane_doe: $AAPL beats!  https://t.co/x1 www.ex.com/a") == "RT @user: $AAPL beats! url url"


@pytest.mark.slow
def test_bundled_default_scores_clear_headlines():
    engine = SentimentEngine.load()
    cases = {
        "Acme Corp issues profit warning, shares plunge 20%": "negative",
        "Acme beats quarterly estimates and raises full-year guidance": "positive",
        "Acme to report third-quarter results on October 24": "neutral",
    }
    predictions = engine.predict(list(cases))
    assert [p.label for p in predictions] == list(cases.values())
    for p in predictions:
        assert p.model == engine.name and engine.name.startswith("tickerpulse-minilm-ft@")
        assert all(0.0 <= x <= 1.0 for x in p.probs) and sum(p.probs) == pytest.approx(1.0, abs=1e-4)
        assert p.confidence > 0.5
    negative, positive, neutral = predictions
    assert negative.score < -0.5 < 0.5 < positive.score and abs(neutral.score) < 0.5


CPUINFO_AMX = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\nprocessor\t: 1\n"
CPUINFO_AVX2 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"


def test_auto_precision_follows_the_cpu_and_falls_back_to_fp32():
    assert cpu_flags(CPUINFO_AMX) >= {"amx_bf16", "avx512_bf16"}
    assert resolve_precision("auto", "cpu", cpu_flags(CPUINFO_AMX)) == "bf16"
    assert resolve_precision("auto", "cpu", cpu_flags(CPUINFO_AVX2)) == "fp32"
    assert resolve_precision("auto", "cpu", cpu_flags("")) == "fp32"  # no /proc/cpuinfo: the safe path
    assert resolve_precision("auto", "cuda", frozenset()) == "bf16"
    assert resolve_precision("int8", "cpu") == "int8" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="int8 is a CPU path"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_score_does_not_depend_on_its_batch_mates(tiny_engine, precision):
    """The batch-independent paths: the same text gets the same label and a score within 1e-3
    whatever it is batched with and in whatever order (the backfill and the stream batch differently)."""
    engine = SentimentEngine(tiny_engine.classifier, torch.device("cpu"), precision, batch_size=3, cache_size=0)
    texts = TEXTS + [f"{t} and more words to change the padding" for t in TEXTS]
    alone = {t: engine.predict([t])[0] for t in texts}
    for order in (texts, texts[::-1], texts[1::2] + texts[::2]):
        for text, prediction in zip(order, engine.predict(order)):
            assert prediction.label == alone[text].label
            assert prediction.score == pytest.approx(alone[text].score, abs=1e-3)
    assert engine.name.endswith("+bf16") == (precision == "bf16")


@pytest.mark.slow
def test_bundled_model_default_precision_is_batch_independent():
    assert SentimentEngine.load(device="cpu").precision == resolve_precision("auto", "cpu")
    engine = SentimentEngine(load_classifier(None), torch.device("cpu"), resolve_precision("auto", "cpu"), cache_size=0)
    texts = ["$ACME beats estimates", "Acme cuts 2,000 jobs after a profit warning",
             "Acme to report results on Thursday, shares flat in a quiet pre-market session", "ok"]
    alone = [engine.predict([t])[0] for t in texts]
    together = engine.predict(texts[::-1])[::-1]
    for a, b in zip(alone, together):
        assert a.label == b.label and a.score == pytest.approx(b.score, abs=1e-3)


def test_several_tokenizer_threads_give_the_same_predictions(tiny_engine):
    threaded = SentimentEngine(tiny_engine.classifier, torch.device("cpu"), "fp32", batch_size=7, cache_size=0,
                               tokenizer_threads=3)
    texts = [f"{t} number {i}" for i in range(200) for t in TEXTS[:3]]  # > one tokenizer chunk
    single = SentimentEngine(tiny_engine.classifier, torch.device("cpu"), "fp32", batch_size=7, cache_size=0)
    assert [p.probs for p in threaded.predict(texts)] == [p.probs for p in single.predict(texts)]


@pytest.mark.slow
def test_bundled_default_reads_results_language_recalls_and_layoffs():
    """News cases (from tests/models/data/news_headlines.csv) the bundled model gets right."""
    cases = {
        "Operating profit improved to EUR 34.5 million from EUR 27.9 million.": "positive",
        "Earnings per share rose to EUR 0.58 from EUR 0.41.": "positive",
        "Order intake rose 23% to EUR 412 million in the third quarter.": "positive",
        "Net loss per share improved to EUR 0.04 from EUR 0.19.": "positive",
        "Net sales decreased to EUR 210 million from EUR 248 million.": "negative",
        "Earnings per share fell to EUR 0.23 from EUR 0.47.": "negative",
        "Operating loss widened to EUR 12.4 million from EUR 5.1 million a year earlier.": "negative",
        "Kelby Motors recalls 1.2 million SUVs because airbags may not deploy": "negative",
        "Medtrona recalls insulin pumps after reports of battery failures": "negative",
        "Stenberg will cut 1,800 jobs and close two factories": "negative",
        "Alphabet wins multiyear cloud contract worth $2.4 billion from a federal agency": "positive",
        "FAA orders inspections of Boeing jets after in-flight panel failure": "negative",
        "Pellworth will publish its half-year report on 18 July 2025 at 8:00 a.m.": "neutral",
    }
    engine = SentimentEngine.load(precision="fp32")
    assert [p.label for p in engine.predict(list(cases))] == list(cases.values())


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known failures of the bundled model on news (docs/model.md, issue 11): "
                                       "narrowed losses read negative, an order win and an inspection neutral")
@pytest.mark.parametrize("text, label", [
    ("Operating loss narrowed to EUR 3.2 million from EUR 7.8 million in the corresponding period.", "positive"),
    ("The net loss shrank to $14 million, or 9 cents a share, from $41 million a year earlier.", "positive"),
    ("Airbus books firm order for 60 jets from an Indian low-cost airline", "positive"),
    ("Regulators order safety inspections at all of Calder Nuclear's reactors", "negative"),
])
def test_bundled_default_known_news_failures(text, label):
    """Strict xfail: each starts failing the suite (XPASS) once a new bundle gets it right."""
    (prediction,) = SentimentEngine.load(precision="fp32").predict([text])
    assert prediction.label == label
