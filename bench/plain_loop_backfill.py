"""The backfill a user would write by hand: the baseline of bench_backfill's whole-process comparison.

    python bench/plain_loop_backfill.py IN.jsonl OUT.duckdb [--model PATH] [--batch-size 64]

One loop, no framework: read the JSONL, tokenise each batch in input order with the model's
transformers tokenizer (dynamic padding to the batch's longest text), run the fp32 model under
``torch.no_grad``, and insert ``(id, text, published_at, label, score)`` rows into DuckDB with
``executemany``. It loads the same classifier the pipeline does (``load_classifier``) and
normalises texts the same way, so both score the same inputs; it links no tickers and computes
no per-ticker sentiment, so it does less than ``backfill``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import duckdb
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.classifier import load_classifier  # noqa: E402
from models.data import LABELS, normalize_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("db")
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    classifier = load_classifier(args.model)
    model, tokenizer = classifier.model.eval(), classifier.tokenizer
    with open(args.input, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    con = duckdb.connect(args.db)
    con.execute("CREATE TABLE items (id VARCHAR PRIMARY KEY, text VARCHAR, published_at BIGINT, "
                "label VARCHAR, score DOUBLE)")
    for start in range(0, len(records), args.batch_size):
        batch = records[start:start + args.batch_size]
        texts = [normalize_text(r["text"]) if classifier.normalize else r["text"] for r in batch]
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=classifier.max_length,
                            return_tensors="pt")
        with torch.no_grad():
            probs = torch.softmax(model(**encoded).logits, dim=-1)
        rows = []
        for record, row in zip(batch, probs.tolist()):
            by_label = {LABELS[classifier.output_labels[i]]: p for i, p in enumerate(row)}
            label = max(by_label, key=by_label.get)
            rows.append((record["id"], record["text"], record["published_at"], label,
                         by_label["positive"] - by_label["negative"]))
        con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", rows)
    con.close()
    print(f"plain loop: {len(records)} items into {args.db}")


if __name__ == "__main__":
    main()
