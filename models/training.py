"""Fine-tuning the classifier: seeded, evaluated every epoch, keeping the best by macro-F1.

The top ``trainable_layers`` encoder layers plus the head learn; word-embedding rows learn only
when asked (``embedding_min_count``), and then only the rows of tokens frequent in the training
data, so what changed (the shipped delta) stays small and rare tokens keep their meaning.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import BertPreTrainedModel, PreTrainedTokenizerBase

from models.classifier import (
    BUNDLE_CONFIG,
    LoadedClassifier,
    ModelLoadError,
    export_bundle,
    load_classifier,
    new_backbone_classifier,
    save_checkpoint,
)
from models.data import LABELS, LabelledData, confusion_matrix, macro_f1, normalize_text
from models.engine import SentimentEngine, pad_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 8e-5
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_length: int = 64
    trainable_layers: int = 6  # top encoder layers that learn; embeddings never do
    class_weighting: bool = True  # inverse sqrt frequency: helps macro-F1 with 65% neutral data
    pooling: str = "cls"  # "cls" (standard HF head, shipped) or "mean" (how the backbone was pre-trained)
    embedding_min_count: int = 0  # 0: word embeddings frozen; N: rows of tokens seen >= N times learn
    layer_lr_decay: float = 1.0  # lr multiplier per layer below the head (lower layers move less)
    label_smoothing: float = 0.0  # also tempers confidence, which the aggregation uses as relevance
    average_last: int = 1  # >1: also try the mean weights of the last N epochs as a candidate
    seed: int = 13  # initial weights of the head, dropout
    data_seed: int | None = None  # order of the training batches; None: ``seed``. Runs that share
    # ``seed`` but not ``data_seed`` start from the same weights: ingredients for ``average``
    device: str = "cpu"
    init_from: str | None = None  # a bundle or checkpoint written by ``train`` to continue from;
    # None: the packaged backbone and a new head
    keep_start: float = 0.0  # with init_from: weight of a KL term holding the anchored rows'
    # class probabilities to the starting model's (learning without forgetting, Li & Hoiem 2017)


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    valid_macro_f1: float
    valid_accuracy: float
    confusion: list[list[int]]
    seconds: float


@dataclass
class TrainResult:
    best_epoch: int  # 0 when the weight average of the last epochs won
    best_macro_f1: float
    history: list[EpochResult] = field(default_factory=list)
    averaged: EpochResult | None = None  # the weight average of the last ``average_last`` epochs


EVAL_CHUNK = 2048  # texts predicted between two progress calls


def evaluate(engine: SentimentEngine, data: LabelledData,
             on_progress: Callable[[int], object] | None = None) -> tuple[float, float, list[list[int]]]:
    """(macro-F1, accuracy, confusion matrix) of an engine on labelled data; ``on_progress(n)``
    is called after every chunk of n texts."""
    return scores(data.labels, predict_labels(engine, data.texts, on_progress))


def predict_labels(engine: SentimentEngine, texts: Sequence[str],
                   on_progress: Callable[[int], object] | None = None) -> list[int]:
    """The predicted class (index into LABELS) of each text, in chunks of EVAL_CHUNK."""
    predicted: list[int] = []
    for start in range(0, len(texts), EVAL_CHUNK):
        chunk = list(texts[start:start + EVAL_CHUNK])
        predicted += [LABELS.index(p.label) for p in engine.predict(chunk)]
        if on_progress is not None:
            on_progress(len(chunk))
    return predicted


def scores(gold: Sequence[int], predicted: Sequence[int]) -> tuple[float, float, list[list[int]]]:
    """(macro-F1, accuracy, confusion matrix) of predicted against gold class indices."""
    accuracy = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)
    return macro_f1(gold, predicted), accuracy, confusion_matrix(gold, predicted)


def train(train_data: LabelledData, valid_data: LabelledData, out_dir: Path, cfg: TrainConfig,
          bundle_dir: Path | None = None, bundle_name: str = "tickerpulse-minilm-ft",
          progress: bool = True, anchored_rows: int = 0, data: list[dict] | None = None) -> TrainResult:
    """Fine-tune from the packaged backbone; the best epoch is saved to ``out_dir`` (a standard
    HF checkpoint) and, when ``bundle_dir`` is given, exported as a delta bundle. With
    ``cfg.keep_start``, the first ``anchored_rows`` rows also learn the starting model's
    probabilities, so new rows can teach new cases without the old ones being forgotten.
    ``data`` (``models.data.file_record`` of each file) is recorded beside the settings."""
    if cfg.keep_start and (cfg.init_from is None or not 0 < anchored_rows <= len(train_data)):
        raise ValueError("keep_start needs init_from and 1..len(train_data) anchored rows")
    _seed(cfg.seed)
    device = torch.device(cfg.device)
    model, tokenizer = _starting_model(cfg)
    trained_keys = _freeze(model, cfg.trainable_layers, cfg.embedding_min_count > 0)
    exported_keys = trained_keys if cfg.init_from is None else _continued_keys(model)
    model.to(device)
    encoded = _encode(tokenizer, train_data.texts, cfg.max_length)
    if cfg.embedding_min_count > 0:
        _learn_frequent_rows_only(model, encoded, cfg.embedding_min_count)
    batches_per_epoch = -(-len(encoded) // cfg.batch_size)
    optimizer, scheduler = _optimizer(model, cfg, batches_per_epoch * cfg.epochs)
    loss_fn = torch.nn.CrossEntropyLoss(weight=_class_weights(train_data) if cfg.class_weighting else None,
                                        label_smoothing=cfg.label_smoothing).to(device)
    generator = random.Random(cfg.seed if cfg.data_seed is None else cfg.data_seed)
    result = TrainResult(best_epoch=0, best_macro_f1=-1.0)
    averager = _WeightAverager(model, trained_keys)
    start_probs = _probabilities(model, tokenizer, encoded[:anchored_rows], device) if cfg.keep_start else None

    def keep_if_best(epoch: int, f1: float) -> None:
        if f1 > result.best_macro_f1:
            result.best_epoch, result.best_macro_f1 = epoch, f1
            save_checkpoint(model, tokenizer, out_dir, cfg.max_length)
            if bundle_dir is not None:
                export_bundle(model, bundle_dir, bundle_name, cfg.max_length, exported_keys,
                              extra={"valid_macro_f1": round(f1, 4), "best_epoch": epoch or "average",
                                     "training": asdict(cfg), **({"data": data} if data else {})})

    for epoch in range(1, cfg.epochs + 1):
        started = time.monotonic()
        model.train()
        total_loss = 0.0
        batches = _length_bucketed_batches(encoded, cfg.batch_size, generator)
        for batch in tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, mininterval=10):
            input_ids, attention_mask = pad_batch([encoded[i] for i in batch], tokenizer.pad_token_id or 0)
            labels = torch.tensor([train_data.labels[i] for i in batch])
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            loss = loss_fn(logits, labels.to(device))
            if start_probs is not None:
                loss = loss + cfg.keep_start * _kept_divergence(logits, batch, start_probs)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total_loss += loss.item()
        f1, accuracy, confusion = evaluate(_engine(model, tokenizer, cfg, device), valid_data)
        epoch_result = EpochResult(epoch, total_loss / len(batches), f1, accuracy, confusion,
                                   time.monotonic() - started)
        result.history.append(epoch_result)
        log.info("epoch %d: loss %.4f  valid macro-F1 %.4f  accuracy %.4f  (%.0f s)", epoch,
                 epoch_result.train_loss, f1, accuracy, epoch_result.seconds)
        keep_if_best(epoch, f1)
        if cfg.average_last > 1 and epoch > cfg.epochs - cfg.average_last:
            averager.add()
        model.train()
    if averager.count > 1:
        started = time.monotonic()
        averager.load_mean()
        f1, accuracy, confusion = evaluate(_engine(model, tokenizer, cfg, device), valid_data)
        result.averaged = EpochResult(0, 0.0, f1, accuracy, confusion, time.monotonic() - started)
        log.info("mean of the last %d epochs: valid macro-F1 %.4f  accuracy %.4f", averager.count, f1, accuracy)
        keep_if_best(0, f1)
    if bundle_dir is not None:
        record_int8_check(bundle_dir, valid_data)
    (out_dir / "training_metrics.json").write_text(json.dumps(
        {"config": asdict(cfg), **({"data": data} if data else {}),
         "best_epoch": result.best_epoch, "best_macro_f1": result.best_macro_f1,
         "history": [asdict(h) for h in result.history],
         "averaged": asdict(result.averaged) if result.averaged else None}, indent=2) + "\n")
    return result


def record_int8_check(bundle_dir: Path, valid_data: LabelledData, tolerance: float = 0.01) -> bool:
    """Measure the int8 path against fp32 on the validation set and record in the bundle whether
    it may be the CPU default (within ``tolerance`` macro-F1)."""
    classifier = load_classifier(bundle_dir)
    fp32, _, _ = evaluate(SentimentEngine(classifier, torch.device("cpu"), "fp32"), valid_data)
    int8, _, _ = evaluate(SentimentEngine(classifier, torch.device("cpu"), "int8"), valid_data)
    bundle_file = bundle_dir / BUNDLE_CONFIG
    bundle = json.loads(bundle_file.read_text())
    bundle.update(valid_macro_f1=round(fp32, 4), int8_valid_macro_f1=round(int8, 4),
                  int8_validated=fp32 - int8 <= tolerance)
    bundle_file.write_text(json.dumps(bundle, indent=2) + "\n")
    log.info("int8 check: fp32 macro-F1 %.4f, int8 %.4f -> int8 default %s", fp32, int8, bundle["int8_validated"])
    return bundle["int8_validated"]


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _starting_model(cfg: TrainConfig) -> tuple[BertPreTrainedModel, PreTrainedTokenizerBase]:
    """The packaged backbone with a new head, or the model ``cfg.init_from`` names (which must
    have been written by ``train``: our labels in order, our normalisation, the same pooling)."""
    if cfg.init_from is None:
        return new_backbone_classifier(cfg.pooling)
    loaded = load_classifier(cfg.init_from)
    pooling = getattr(loaded.model.config, "tickerpulse_pooling", "cls")
    if loaded.output_labels != tuple(range(len(LABELS))) or not loaded.normalize or pooling != cfg.pooling:
        raise ModelLoadError(f"{cfg.init_from}: cannot continue from it: train continues only from its own "
                             f"models (labels {list(LABELS)}, normalised text, pooling {cfg.pooling}; "
                             f"this one: pooling {pooling})")
    return loaded.model, loaded.tokenizer


def _continued_keys(model: BertPreTrainedModel) -> list[str]:
    """What a bundle of a continued model stores: every weight above the embeddings (the start
    model may have changed frozen layers too) and the word-embedding rows that differ from the
    backbone; the other embeddings of a model written by ``train`` are the packaged ones."""
    return [n for n, _ in model.named_parameters() if not n.startswith("bert.embeddings.")] + [WORD_EMBEDDINGS]


def _freeze(model: BertPreTrainedModel, trainable_layers: int, word_embeddings: bool = False) -> list[str]:
    """Freeze embeddings (but the word rows when asked) and the lower layers; return the names
    of what will be trained."""
    n_layers = model.config.num_hidden_layers
    if not 1 <= trainable_layers <= n_layers:
        raise ValueError(f"trainable_layers must be in 1..{n_layers}")
    first_trained = n_layers - trainable_layers
    for name, param in model.named_parameters():
        frozen = name.startswith("bert.embeddings.") or any(
            name.startswith(f"bert.encoder.layer.{i}.") for i in range(first_trained))
        param.requires_grad = not frozen or (word_embeddings and name == WORD_EMBEDDINGS)
    return [name for name, param in model.named_parameters() if param.requires_grad]


WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"


def _learn_frequent_rows_only(model: BertPreTrainedModel, encoded: list[list[int]], min_count: int) -> int:
    """Zero the gradient of every word-embedding row whose token occurs fewer than ``min_count``
    times in the training data: those rows stay exactly as shipped with the backbone (so the
    delta stores none of them), and rows that few examples would push around cannot overfit."""
    weight = dict(model.named_parameters())[WORD_EMBEDDINGS]
    counts = torch.bincount(torch.tensor([t for ids in encoded for t in ids]), minlength=weight.shape[0])
    mask = (counts >= min_count).to(weight.dtype).unsqueeze(1)
    weight.register_hook(lambda grad: grad * mask.to(grad.device))
    return int(mask.sum())


def _depth_below_head(name: str, n_layers: int) -> int:
    """0 for the head and pooler, 1 for the top encoder layer ... n_layers + 1 for embeddings."""
    if name.startswith("bert.encoder.layer."):
        return n_layers - int(name.split(".")[3])
    return n_layers + 1 if name.startswith("bert.embeddings.") else 0


def _optimizer(model: BertPreTrainedModel, cfg: TrainConfig, total_steps: int):
    """AdamW with layer-wise lr decay; no weight decay on biases, LayerNorm and embeddings (decay
    would move every embedding row, and the delta only stores rows that training moved)."""
    groups: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decays = param.ndim > 1 and not name.startswith("bert.embeddings.")
            groups.setdefault((_depth_below_head(name, model.config.num_hidden_layers), decays), []).append(param)
    optimizer = torch.optim.AdamW([
        {"params": params, "weight_decay": cfg.weight_decay if decays else 0.0,
         "lr": cfg.learning_rate * cfg.layer_lr_decay ** depth}
        for (depth, decays), params in sorted(groups.items())], lr=cfg.learning_rate)
    warmup = max(1, int(total_steps * cfg.warmup_ratio))

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class _WeightAverager:
    """The trained weights at chosen epoch ends; ``load_mean`` puts their mean into the model
    (checkpoint averaging: a flatter, usually better-generalising point)."""

    def __init__(self, model: torch.nn.Module, keys: list[str]) -> None:
        self.params = {k: p for k, p in model.named_parameters() if k in set(keys)}
        self.snapshots: list[dict[str, torch.Tensor]] = []

    @property
    def count(self) -> int:
        return len(self.snapshots)

    @torch.no_grad()
    def add(self) -> None:
        self.snapshots.append({k: p.detach().clone() for k, p in self.params.items()})

    @torch.no_grad()
    def load_mean(self) -> None:
        for k, p in self.params.items():
            p.copy_(exact_mean([s[k] for s in self.snapshots]))


def exact_mean(tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Elementwise (weighted) mean that keeps a value all tensors share bit-exact: (a + a + a) / 3
    can be off by one ulp, and an untouched weight would then count as trained and be shipped in
    the bundle. ``weights`` (positive, any scale) default to equal."""
    stacked = torch.stack(list(tensors))
    shared = (stacked == stacked[0]).all(dim=0)
    if weights is None:
        mean = stacked.float().mean(dim=0)
    else:
        w = torch.tensor(weights, dtype=torch.float32)
        mean = torch.tensordot(w / w.sum(), stacked.float(), dims=1)
    return torch.where(shared, stacked[0], mean.to(stacked.dtype))


@torch.no_grad()
def _probabilities(model: BertPreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: list[list[int]],
                   device: torch.device, batch_size: int = 128) -> torch.Tensor:
    """The model's class probabilities for each encoded text (eval mode: no dropout)."""
    model.eval()
    probs = []
    for start in range(0, len(encoded), batch_size):
        input_ids, attention_mask = pad_batch(encoded[start:start + batch_size], tokenizer.pad_token_id or 0)
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        probs.append(logits.float().softmax(dim=-1))
    model.train()
    return torch.cat(probs)


def _kept_divergence(logits: torch.Tensor, batch: list[int], start_probs: torch.Tensor) -> torch.Tensor:
    """KL(start model || model) over the batch's anchored rows (indices below len(start_probs)),
    averaged over the whole batch so its weight does not depend on how many rows are anchored."""
    kept = [k for k, i in enumerate(batch) if i < len(start_probs)]
    if not kept:
        return logits.new_zeros(())
    target = start_probs[[batch[k] for k in kept]].to(logits.device)
    log_probs = logits[kept].float().log_softmax(dim=-1)
    return torch.nn.functional.kl_div(log_probs, target, reduction="sum") / len(batch)


def _class_weights(data: LabelledData) -> torch.Tensor:
    counts = torch.tensor([max(1, data.labels.count(i)) for i in range(len(LABELS))], dtype=torch.float)
    weights = counts.sum() / counts
    weights = weights.sqrt()
    return weights / weights.mean()


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer([normalize_text(t) for t in texts], truncation=True, max_length=max_length,
                     padding=False, return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def _length_bucketed_batches(encoded: list[list[int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length: little padding, still a different mix each epoch."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start: start + pool], key=lambda i: len(encoded[i]))
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _engine(model: BertPreTrainedModel, tokenizer: PreTrainedTokenizerBase,
            cfg: TrainConfig, device: torch.device) -> SentimentEngine:
    """Validation goes through the inference engine, so it measures what users will run."""
    classifier = LoadedClassifier(model, tokenizer, "training", tuple(range(len(LABELS))),
                                  cfg.max_length, normalize=True)
    return SentimentEngine(classifier, device, "fp32", batch_size=128, cache_size=0)
