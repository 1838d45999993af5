"""Tiny real checkpoints (random weights, the backbone's tokenizer) for fast model tests."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from models.classifier import backbone_path


def _save_tiny_checkpoint(path: Path, id2label: dict[int, str], seed: int = 0, layers: int = 2) -> Path:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, num_labels=len(id2label), id2label=id2label,
                        label2id={v: k for k, v in id2label.items()})
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(backbone_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Callable[..., Path]:
    """``tiny_checkpoint(path, id2label, seed=0, layers=2)`` writes a loadable HF classifier."""
    return _save_tiny_checkpoint
