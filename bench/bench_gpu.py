"""GPU throughput in bf16: the bundled model and a BERT-base-size model, and their share of peak.

For each model: the forward pass alone on batches of fixed 64-token sequences (the compute the
GPU can be judged on: items/s and achieved TFLOP/s as a share of the card's dense bf16 peak),
then the full engine on real texts (tokenisation, bucketing, transfers included).
The forward pass runs three ways: fp32 weights under bf16 autocast (what the engine does),
weights cast to bf16 (no casts between ops), and that compiled with torch.compile (fused
element-wise kernels), to show what the share of peak is limited by.
Needs a CUDA GPU; exits with a message otherwise.

    python bench/bench_gpu.py [--batch 512] [--seconds 10] [--peak-tflops N] [--no-compile]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.classifier import LoadedClassifier, load_classifier  # noqa: E402
from models.engine import SentimentEngine  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                    "H100": 756.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "4090": 165.0}
DATA = Path(__file__).resolve().parents[1] / "../shared/data/twitter_financial_news_sentiment/sent_valid.csv"
SEQ = 64


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def flops_per_item(config, seq: int = SEQ) -> float:
    """Matmul FLOPs of one sequence through the encoder (2 per multiply-add)."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    dense = 2 * seq * (4 * h * h + 2 * h * inter)  # Q, K, V, output projections + the MLP
    attention = 2 * 2 * seq * seq * h  # scores and the weighted sum
    return layers * (dense + attention)


def forward_rate(model: torch.nn.Module, batch: int, seconds: float, autocast: bool) -> float:
    ids = torch.randint(1000, 20000, (batch, SEQ), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        for _ in range(3):  # warm-up: kernels chosen, memory allocated
            model(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
        started, done = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            model(input_ids=ids, attention_mask=mask)
            done += batch
        torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def engine_rate(classifier: LoadedClassifier, texts: list[str], batch: int, passes: int = 3) -> tuple[float, float]:
    """(engine items/s, tokenizer-alone items/s). One untimed pass first: every padded length
    the texts produce meets its kernels once (lazy module loading, kernel choice)."""
    engine = SentimentEngine(classifier, torch.device("cuda"), "bf16", batch_size=batch, cache_size=0)
    engine.predict(texts)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(passes):
        engine.predict(texts)
    torch.cuda.synchronize()
    rate = passes * len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    classifier.tokenizer(texts, truncation=True, max_length=classifier.max_length)
    return rate, len(texts) / (time.perf_counter() - started)


def bert_base() -> LoadedClassifier:
    """BERT-base size (110M parameters), random weights: only its speed is measured."""
    from transformers import BertConfig, BertForSequenceClassification

    bundled = load_classifier()
    model = BertForSequenceClassification(BertConfig(num_labels=3)).eval()
    return LoadedClassifier(model, bundled.tokenizer, "bert-base-random", (0, 1, 2), SEQ, normalize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, if not in the table")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (slow to build)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA GPU visible to torch (see docs/gpu.md)")
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name, args.peak_tflops)
    with DATA.open(newline="", encoding="utf-8") as handle:
        texts = list(dict.fromkeys(row["text"] for row in csv.DictReader(handle)))  # distinct: no cache hits
    print(f"{name}, torch {torch.__version__}, seq {SEQ}, batch {args.batch}, "
          f"peak {peak or '?'} TFLOP/s")
    for classifier in (load_classifier(), bert_base()):
        model = classifier.model.to("cuda")
        engine, tokenizer = engine_rate(classifier, texts, args.batch)
        print(f"{classifier.name}: attention {model.config._attn_implementation}; engine on {len(texts)} texts "
              f"{engine:.0f} items/s (tokenizer alone {tokenizer:.0f} items/s)")
        variants = [("fp32 weights, bf16 autocast (engine)", lambda: model, True),
                    ("bf16 weights", lambda: model.to(torch.bfloat16), False)]
        if not args.no_compile:
            variants.append(("bf16 weights, torch.compile", lambda: torch.compile(model), False))
        for label, prepare, autocast in variants:
            try:
                rate = forward_rate(prepare(), args.batch, args.seconds, autocast)
            except Exception as exc:  # torch.compile needs a working compiler toolchain: report, go on
                print(f"  forward, {label:<38} failed: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            tflops = rate * flops_per_item(model.config) / 1e12
            share = f"{100 * tflops / peak:.1f}% of peak" if peak else "peak unknown"
            print(f"  forward, {label:<38} {rate:9.0f} items/s  {tflops:6.1f} TFLOP/s ({share})")
        classifier.model.to("cpu", torch.float32)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
