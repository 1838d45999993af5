"""Batch inference built for throughput: what the pipeline's scoring stage calls.

Speed comes from not computing what is not needed: texts are sorted by length and padded only
to about the longest in their batch (rounded up to one of a few shapes), exact duplicates are
scored once (and cached across calls), no autograd state is kept, and the matrix work runs in
bf16 where the hardware has it (CUDA, CPUs with AMX or AVX-512 BF16; models/precision.py). CPU
can also run int8 dynamically-quantized linears.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from models.classifier import LoadedClassifier, ModelLoadError, load_classifier
from models.data import LABELS, normalize_text
from models.precision import resolve_precision

__all__ = ["LABELS", "Prediction", "SentimentEngine", "pad_batch", "quantize_int8", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")
# Texts per tokenizer call when several threads tokenise: large enough that the Rust tokenizer
# (which releases the GIL) dominates the per-call overhead.
TOKENIZE_CHUNK = 256
# Batches take a bounded set of shapes: rows pad to a power of two (repeating the last text),
# widths to WIDTH_STEPS_PER_OCTAVE steps between powers of two (under 1/4 wider). Every new
# shape leaves a compiled oneDNN primitive and differently sized allocations behind; with one
# shape per stream bundle the process grew by ~400 MiB in five minutes (docs/performance.md,
# "The engine's RSS").
WIDTH_STEPS_PER_OCTAVE = 8


def default_tokenizer_threads(device_type: str) -> int:
    """On CUDA the host tokenises while the GPU computes, so use the cores; on CPU the cores are
    busy with the matrix work and one tokenizer thread is enough (docs/performance.md)."""
    return min(8, os.cpu_count() or 1) if device_type == "cuda" else 1


@dataclass(frozen=True)
class Prediction:
    label: str
    probs: tuple[float, float, float]  # (negative, neutral, positive)
    score: float  # P(positive) - P(negative), in [-1, 1]
    confidence: float  # the largest probability
    model: str  # name@version of the model that produced it

    @classmethod
    def from_probs(cls, probs: Sequence[float], model: str) -> Prediction:
        neg, neu, pos = (float(p) for p in probs)
        best = max(range(3), key=lambda i: (neg, neu, pos)[i])
        return cls(LABELS[best], (neg, neu, pos), pos - neg, (neg, neu, pos)[best], model)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error, not a fallback."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' requested but torch sees no CUDA GPU (see docs/gpu.md)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


# Texts whose predictions are kept across calls (the newest, for repeats such as syndicated
# copies). An entry costs ~1.2 kB (RSS grew 3.6 MiB/min at 50 new texts/s until the bound):
# 20,000 is ~24 MB, the last ~7 minutes of a 50 msgs/s stream. At 100,000 a 30-minute stream of
# distinct texts never reached the bound, and its RSS rose 8% over the last 20 minutes.
CACHE_TEXTS = 20_000


class SentimentEngine:
    """One loaded model per process; ``predict`` is safe to call from several threads."""

    def __init__(self, classifier: LoadedClassifier, device: torch.device, precision: str = "fp32",
                 batch_size: int = 64, cache_size: int = CACHE_TEXTS, tokenizer_threads: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if precision not in ("fp32", "bf16", "int8"):
            raise ValueError(f"precision must be fp32, bf16 or int8 here, not {precision!r}")
        self.classifier = classifier
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.name = classifier.name + ("" if precision == "fp32" else f"+{precision}")
        self._cache: OrderedDict[str, Prediction] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        threads = tokenizer_threads or default_tokenizer_threads(device.type)
        # Threads start on first use, so an engine built before Beam forks its workers is safe.
        self._tokenizers = ThreadPoolExecutor(threads, thread_name_prefix="tokenize") if threads > 1 else None
        model = classifier.model.to(device).eval()
        if precision == "int8":
            model = quantize_int8(model)
        self._model = model
        self._pad_id = classifier.tokenizer.pad_token_id or 0
        self._projection = torch.zeros(len(classifier.output_labels), len(LABELS))
        for output, label in enumerate(classifier.output_labels):
            self._projection[output, label] = 1.0

    @classmethod
    def load(cls, model: str | None = None, device: str = "auto", precision: str = "auto",
             batch_size: int = 64, label_names: Sequence[str] | None = None) -> SentimentEngine:
        """``model=None`` -> the bundled default; ``precision="auto"`` -> bf16 where the device
        has fast bf16 matrix instructions, else fp32 (models/precision.py)."""
        target = resolve_device("cpu" if precision == "int8" and device == "auto" else device)
        try:
            chosen = resolve_precision(precision, target.type)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        return cls(load_classifier(model, label_names), target, chosen, batch_size)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """One Prediction per text, in order; duplicates (after normalisation) are scored once."""
        keys = [self._key(t) for t in texts]
        with self._lock:
            known = {k: self._cache[k] for k in keys if k in self._cache}
        todo = list(dict.fromkeys(k for k in keys if k not in known))
        if todo:
            fresh = dict(zip(todo, self._score(todo)))
            known.update(fresh)
            with self._lock:
                self._cache.update(fresh)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return [known[k] for k in keys]

    def _key(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}")
        return normalize_text(text) if self.classifier.normalize else text

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if self._tokenizers is None or len(texts) <= TOKENIZE_CHUNK:
            return self._encode(texts)
        chunks = [texts[i:i + TOKENIZE_CHUNK] for i in range(0, len(texts), TOKENIZE_CHUNK)]
        return [ids for chunk in self._tokenizers.map(self._encode, chunks) for ids in chunk]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.classifier.tokenizer(
            texts, truncation=True, max_length=self.classifier.max_length,
            padding=False, return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _score(self, texts: list[str]) -> list[Prediction]:
        encoded = self._tokenize(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        probs = torch.empty(len(texts), len(LABELS))
        with torch.inference_mode():
            for batch in _chunks(order, self.batch_size):
                rows = [encoded[i] for i in batch]
                rows += [rows[-1]] * (_bucket_rows(len(rows), self.batch_size) - len(rows))
                width = _bucket_width(max(len(r) for r in rows), self.classifier.max_length)
                input_ids, attention_mask = pad_batch(rows, self._pad_id, width)
                if self.device.type == "cuda":  # pinned pages copy asynchronously, overlapping the GPU
                    input_ids, attention_mask = input_ids.pin_memory(), attention_mask.pin_memory()
                with self._autocast():
                    logits = self._model(input_ids=input_ids.to(self.device, non_blocking=True),
                                         attention_mask=attention_mask.to(self.device, non_blocking=True)).logits
                probs[batch] = torch.softmax(logits[:len(batch)].float(), dim=-1).cpu() @ self._projection
        return [Prediction.from_probs(row, self.name) for row in probs.tolist()]

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 matmuls under autocast: layer norms and softmax stay fp32."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 dynamic quantization of the encoder's linear layers, per output channel (per-tensor
    scales lost ~0.01 macro-F1); the small head stays fp32 where its precision matters most."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and "classifier" not in name and "pooler" not in name}
    with warnings.catch_warnings():  # torch 2.13 flags quantized tensors as deprecated (docs/model.md)
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated", category=UserWarning)
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def pad_batch(sequences: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to ``width``, by default the longest sequence of this batch (callers make batches of
    similar length)."""
    width = width or max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


def _bucket_rows(rows: int, batch_size: int) -> int:
    """The next power of two, at most ``batch_size``."""
    return min(1 << (rows - 1).bit_length(), batch_size)


def _bucket_width(width: int, max_length: int) -> int:
    """The next of WIDTH_STEPS_PER_OCTAVE even steps up to the next power of two (exact up to
    that many tokens), at most ``max_length``."""
    step = max(1, (1 << (width - 1).bit_length()) // WIDTH_STEPS_PER_OCTAVE)
    return min(-(-width // step) * step, max(width, max_length))


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start: start + size]
