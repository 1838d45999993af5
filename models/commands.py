"""CLI commands of the model: ``score`` (JSONL in, JSONL out), ``train``, ``average`` and ``eval``."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from models.precision import add_precision_args
from pipeline.cli_args import ArgumentParser, UsageError, command_parser, env_default
from pipeline.parse import MAX_RECORD_BYTES, MAX_TEXT_CHARS

log = logging.getLogger(__name__)
SCORE_CHUNK = 512  # lines scored together: enough for full batches, small enough to stream


def _model_flags(parser: ArgumentParser) -> None:
    parser.add_argument("--model", default=env_default("model"),
                        help="local checkpoint or bundle directory (default: the bundled model)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=env_default("device", "auto"))
    add_precision_args(parser)
    parser.add_argument("--batch-size", type=_positive_int, default=env_default("batch_size", "64"))
    parser.add_argument("--model-labels", default=env_default("model_labels"),
                        help="comma-separated class names of the checkpoint's outputs, in order, "
                             "for checkpoints whose labels say nothing (LABEL_0, ...)")


def _load_engine(args: argparse.Namespace):
    from models.classifier import ModelLoadError
    from models.engine import SentimentEngine

    labels = [n.strip() for n in args.model_labels.split(",")] if args.model_labels else None
    try:
        return SentimentEngine.load(args.model, device=args.device, precision=args.precision,
                                    batch_size=args.batch_size, label_names=labels)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from exc


def score(argv: list[str]) -> int:
    """Score ``{"id", "text"}`` JSON lines; a malformed line gets an error line and is skipped.

    The output has one line per non-blank input line, in order: a score, or
    ``{"line": N, "error": REASON}`` (with ``"id"`` when the line had one).
    """
    parser = command_parser("score", "score a JSONL file with the sentiment model")
    parser.add_argument("--input", default="-", help="JSONL input, '-' for stdin")
    parser.add_argument("--output", default="-", help="JSONL output, '-' for stdout")
    _model_flags(parser)
    args = parser.parse_args(argv)
    if args.input != "-" and not Path(args.input).is_file():
        raise UsageError(f"--input {args.input}: no such file")
    from models.data import LABELS

    engine = _load_engine(args)
    scored = bad = 0
    with _open(args.input, "rb") as source, _open(args.output, "w") as sink:
        for chunk in _chunks(_parsed_lines(source), SCORE_CHUNK):
            good = [rec for _, rec, reason in chunk if reason is None]
            predictions = iter(engine.predict([rec["text"] for rec in good]))
            for n, rec, reason in chunk:
                if reason is not None:
                    bad += 1
                    print(f"tickerpulse score: line {n}: {reason}", file=sys.stderr)
                    error = {"line": n, "error": reason}
                    if isinstance(rec, dict) and "id" in rec:
                        error["id"] = rec["id"]
                    sink.write(json.dumps(error) + "\n")
                    continue
                pred = next(predictions)
                sink.write(json.dumps({
                    "id": rec["id"], "label": pred.label, "score": round(pred.score, 6),
                    "probs": dict(zip(LABELS, (round(p, 6) for p in pred.probs))),
                    "confidence": round(pred.confidence, 6), "model": pred.model,
                }) + "\n")
            sink.flush()
            scored += len(good)
    log.info("scored %d lines, %d malformed (error lines in the output)", scored, bad)
    return 0


def _parsed_lines(source: IO[bytes]) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record, reason it is malformed or None) for each non-blank line of bytes.

    A malformed line's record is the decoded object when there was one (for its id), else None.
    """
    for number, line in enumerate(iter(source.readline, b""), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_RECORD_BYTES:
            yield number, None, f"line too long: {len(line):,} bytes > {MAX_RECORD_BYTES:,}"
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield number, None, f"not UTF-8: byte {exc.start} is invalid"
            continue
        except json.JSONDecodeError as exc:
            yield number, None, f"not JSON ({exc.msg})"
            continue
        except RecursionError:
            yield number, None, "not JSON (too deeply nested)"
            continue
        except ValueError as exc:  # an integer beyond Python's int-string limit
            yield number, None, f"not JSON ({exc})"
            continue
        yield number, record if isinstance(record, dict) else None, _malformed(record)


def _malformed(record: object) -> str | None:
    """Why a decoded line cannot be scored, or None; the text rules are the pipelines' (parse.py)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if "id" not in record:
        return "missing 'id'"
    text = record.get("text")
    if not isinstance(text, str):
        return "missing or non-string 'text'"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "'text' contains an unpaired surrogate escape"
    if len(text) > MAX_TEXT_CHARS:
        return f"'text' too long: {len(text)} characters > {MAX_TEXT_CHARS}"
    return None


def train(argv: list[str]) -> int:
    """Fine-tune on a labelled CSV; keeps the best epoch by validation macro-F1."""
    from models.training import TrainConfig

    defaults = TrainConfig()
    parser = command_parser("train", "fine-tune the sentiment classifier on a labelled CSV")
    parser.add_argument("--train", required=True, help="CSV with text,label columns")
    parser.add_argument("--valid", required=True, help="CSV evaluated after every epoch (never trained on)")
    parser.add_argument("--out", required=True, help="directory for the best checkpoint (HF format)")
    parser.add_argument("--bundle-out", help="also export the best epoch as a delta bundle here")
    parser.add_argument("--bundle-name", default="tickerpulse-minilm-ft")
    _data_flags(parser)
    parser.add_argument("--epochs", type=_positive_int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--max-length", type=_positive_int, default=defaults.max_length)
    parser.add_argument("--trainable-layers", type=_positive_int, default=defaults.trainable_layers)
    parser.add_argument("--no-class-weighting", action="store_true")
    parser.add_argument("--pooling", choices=("mean", "cls"), default=defaults.pooling)
    parser.add_argument("--warmup-ratio", type=_fraction, default=defaults.warmup_ratio)
    parser.add_argument("--embedding-min-count", type=_non_negative_int, default=defaults.embedding_min_count,
                        help="0: word embeddings frozen; N: embedding rows of tokens seen >= N times "
                             "in --train learn (shipped as sparse int8 differences)")
    parser.add_argument("--layer-lr-decay", type=_fraction, default=defaults.layer_lr_decay,
                        help="lr multiplier per layer below the head, e.g. 0.9")
    parser.add_argument("--label-smoothing", type=_fraction, default=defaults.label_smoothing)
    parser.add_argument("--average-last", type=_positive_int, default=defaults.average_last,
                        help="also evaluate the mean weights of the last N epochs; kept if best")
    parser.add_argument("--extra-train", help="another CSV added to the training rows, labels by name "
                                              "(e.g. the Surge tweets: Positive/Negative)")
    parser.add_argument("--extra-text-column", default="text")
    parser.add_argument("--extra-label-column", default="label")
    parser.add_argument("--init-from", metavar="DIR", help="continue from a bundle or checkpoint written by "
                                                       "train (default: the packaged backbone and a new head)")
    parser.add_argument("--keep-start", type=_non_negative_float, default=defaults.keep_start, metavar="WEIGHT",
                        help="with --init-from: also hold the --train rows' class probabilities to the "
                             "starting model's (KL term of this weight), so --extra-train rows teach new "
                             "cases without the --train rows' being forgotten")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds the head's initial weights and dropout")
    parser.add_argument("--data-seed", type=int, default=defaults.data_seed,
                        help="seeds the batch order (default: --seed); vary it, not --seed, for runs to average")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=env_default("device", "auto"))
    parser.add_argument("--threads", type=_positive_int, default=env_default("threads"),
                        help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.keep_start and not args.init_from:
        raise UsageError("--keep-start needs --init-from (the model whose predictions to keep)")
    from models.data import file_record

    train_data, valid_data = _read_csv(args.train, args), _read_csv(args.valid, args)
    data = [file_record("train", args.train, len(train_data)), file_record("valid", args.valid, len(valid_data))]
    anchored_rows = len(train_data) if args.keep_start else 0
    if args.extra_train:
        extra = _read_csv(args.extra_train, argparse.Namespace(
            label_map=None, text_column=args.extra_text_column, label_column=args.extra_label_column))
        log.info("adding %d rows %s from %s", len(extra), extra.counts(), args.extra_train)
        train_data = train_data.plus(extra)
        data.insert(1, file_record("extra_train", args.extra_train, len(extra)))

    import torch

    from models.classifier import ModelLoadError
    from models.engine import resolve_device
    from models.training import train as run_training

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from exc
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                      max_length=args.max_length, trainable_layers=args.trainable_layers,
                      class_weighting=not args.no_class_weighting, pooling=args.pooling,
                      warmup_ratio=args.warmup_ratio, embedding_min_count=args.embedding_min_count,
                      layer_lr_decay=args.layer_lr_decay, label_smoothing=args.label_smoothing,
                      average_last=args.average_last, seed=args.seed, data_seed=args.data_seed,
                      device=device.type, init_from=args.init_from, keep_start=args.keep_start)
    if not 1 <= cfg.trainable_layers <= 6:
        raise UsageError("--trainable-layers must be between 1 and the backbone's 6 layers")
    log.info("training on %d rows %s, validating on %d rows", len(train_data), train_data.counts(), len(valid_data))
    try:
        result = run_training(train_data, valid_data, Path(args.out), cfg,
                              bundle_dir=Path(args.bundle_out) if args.bundle_out else None,
                              bundle_name=args.bundle_name, progress=True, anchored_rows=anchored_rows,
                              data=data)
    except ModelLoadError as exc:  # --init-from that cannot be continued
        raise UsageError(str(exc)) from exc
    best = f"epoch {result.best_epoch}" if result.best_epoch else f"mean of the last {args.average_last} epochs"
    print(f"best {best}: valid macro-F1 {result.best_macro_f1:.4f} -> {args.out}")
    return 0


def average(argv: list[str]) -> int:
    """Average the weights of training runs that started from the same weights (a model soup)."""
    parser = command_parser("average", "average the weights of runs trained with the same --seed (a model soup)")
    parser.add_argument("--models", nargs="+", required=True, metavar="DIR",
                        help="two or more checkpoints (train --out) or bundles (train --bundle-out)")
    parser.add_argument("--out", required=True, help="directory for the averaged checkpoint (HF format)")
    parser.add_argument("--bundle-out", help="also export it as a delta bundle here")
    parser.add_argument("--bundle-name", default="tickerpulse-minilm-ft")
    parser.add_argument("--weights", nargs="+", type=float, metavar="W",
                        help="one positive weight per model (default: equal), e.g. 1 2 for a third of the first")
    parser.add_argument("--valid", help="CSV to report the average's macro-F1 on (and to check its int8 path)")
    _data_flags(parser)
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        raise UsageError("--models needs at least two model directories")
    from models.averaging import average_models, check_mix
    from models.classifier import ModelLoadError

    try:
        check_mix(args.weights, len(args.models))
    except ValueError as exc:
        raise UsageError(f"--weights: {exc}") from exc
    valid_data = _read_csv(args.valid, args) if args.valid else None

    try:
        f1 = average_models([Path(m) for m in args.models], Path(args.out),
                            Path(args.bundle_out) if args.bundle_out else None, args.bundle_name, valid_data,
                            args.weights)
    except ModelLoadError as exc:  # missing files, or runs of different models
        raise UsageError(str(exc)) from exc
    print(f"average of {len(args.models)} models -> {args.out}" + (f": valid macro-F1 {f1:.4f}" if f1 is not None else ""))
    return 0


def evaluate(argv: list[str]) -> int:
    """Accuracy, macro-F1 and the confusion matrix of a model on a labelled CSV, overall and,
    with ``--by COLUMN``, per group of rows."""
    parser = command_parser("eval", "accuracy, macro-F1 and confusion matrix on a labelled CSV")
    parser.add_argument("--data", required=True, help="CSV with text,label columns")
    _data_flags(parser)
    _model_flags(parser)
    parser.add_argument("--by", metavar="COLUMN",
                        help="also report each value of this column as a group (e.g. agreement)")
    parser.add_argument("--levels", metavar="V1,V2,...",
                        help="with --by: the column's values, strictest first; groups become cumulative "
                             "(>=V2 holds the rows of V1 and V2), e.g. all,75,66,50")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.levels and not args.by:
        raise UsageError("--levels needs --by COLUMN")
    data = _read_csv(args.data, args)
    groups = _groups(args) if args.by else {}

    from models.data import LABELS
    from models.training import predict_labels, scores
    from pipeline.progress import ProgressMeter

    engine = _load_engine(args)
    started = time.monotonic()
    progress = ProgressMeter("eval", total=len(data))
    progress.start()  # counts come after each chunk of EVAL_CHUNK texts
    predicted = predict_labels(engine, data.texts, on_progress=progress.add)
    progress.done()
    seconds = time.monotonic() - started
    f1, accuracy, confusion = scores(data.labels, predicted)
    by_group = {}
    for name, rows in groups.items():
        g_f1, g_acc, g_conf = scores([data.labels[i] for i in rows], [predicted[i] for i in rows])
        by_group[name] = {"rows": len(rows), "accuracy": g_acc, "macro_f1": g_f1, "confusion": g_conf}
    if args.json:
        result = {"model": engine.name, "rows": len(data), "accuracy": accuracy, "macro_f1": f1,
                  "confusion": confusion, "labels": list(LABELS), "items_per_s": len(data) / seconds}
        if args.by:
            result["by"] = {"column": args.by, "cumulative": bool(args.levels), "groups": by_group}
        print(json.dumps(result))
        return 0
    print(f"model     {engine.name}  ({engine.device.type}, {engine.precision})")
    print(f"data      {args.data}  ({len(data)} rows, {len(data) / seconds:.0f} items/s)")
    print(f"accuracy  {accuracy:.4f}")
    print(f"macro-F1  {f1:.4f}")
    print("confusion (rows = gold, columns = predicted)")
    print(" " * 10 + "".join(f"{name:>10}" for name in LABELS))
    for name, row in zip(LABELS, confusion):
        print(f"{name:>10}" + "".join(f"{count:>10}" for count in row))
    if by_group:
        print(f"by {args.by}" + (" (cumulative)" if args.levels else ""))
        print(f"{'group':>10}{'rows':>8}{'accuracy':>10}{'macro-F1':>10}  confusion")
        for name, g in by_group.items():
            print(f"{name:>10}{g['rows']:>8}{g['accuracy']:>10.4f}{g['macro_f1']:>10.4f}  {g['confusion']}")
    return 0


def _groups(args: argparse.Namespace) -> dict[str, list[int]]:
    from models.data import nested_groups, read_column

    levels = [v.strip() for v in args.levels.split(",") if v.strip()] if args.levels else None
    try:
        return nested_groups(read_column(args.data, args.by), levels)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _data_flags(parser: ArgumentParser) -> None:
    parser.add_argument("--label-map", help="raw label -> class, e.g. 0=negative,1=positive,2=neutral")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")


def _read_csv(path: str, args: argparse.Namespace):
    from models.data import load_labelled_csv, parse_label_map

    if not Path(path).is_file():
        raise UsageError(f"{path}: no such file")
    try:
        label_map = parse_label_map(args.label_map) if args.label_map else None
        return load_labelled_csv(path, label_map, args.text_column, args.label_column)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


@contextmanager
def _open(path: str, mode: str) -> Iterator[IO]:
    """``-`` is stdin (read as bytes) or stdout; files are bytes (``rb``) or UTF-8 text (``w``)."""
    if path == "-":
        yield sys.stdin.buffer if mode == "rb" else sys.stdout
        return
    with open(path, mode, encoding=None if "b" in mode else "utf-8") as handle:
        yield handle


def _chunks(items, size):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0.0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value
