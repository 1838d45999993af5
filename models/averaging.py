"""Weight averaging of fine-tuned runs (a "model soup", Wortsman et al. 2022).

Runs that start from the same weights (``train`` with the same ``--seed``) but see the data in
another order or mix (``--data-seed``, ``--extra-train``) end in the same basin; the mean of
their weights usually generalises better than any one of them, at the cost and size of one
model. Runs from different starting heads do not average well: no check can tell, so validate.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from models.classifier import LoadedClassifier, ModelLoadError, backbone_path, export_bundle, load_classifier, save_checkpoint
from models.data import LabelledData
from models.engine import SentimentEngine
from models.training import evaluate, exact_mean, record_int8_check

log = logging.getLogger(__name__)


def check_mix(mix: Sequence[float] | None, models: int) -> None:
    """A mix is one positive weight per model (None: equal weights); ValueError otherwise."""
    if mix is not None and (len(mix) != models or min(mix) <= 0):
        raise ValueError(f"need one positive weight per model, got {list(mix)} for {models} models")


def average_weights(classifiers: Sequence[LoadedClassifier],
                    mix: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """The (weighted) mean of each floating-point weight; refuses models that differ in shape or
    labels. An unequal ``mix`` (one weight per model) blends a start and its fine-tuned
    continuation at a chosen point of the line between them (WiSE-FT, Wortsman et al. 2022)."""
    if len(classifiers) < 2:
        raise ValueError("averaging needs at least two models")
    check_mix(mix, len(classifiers))
    first = classifiers[0]
    states = [c.model.state_dict() for c in classifiers]
    for classifier, state in zip(classifiers[1:], states[1:]):
        same = (state.keys() == states[0].keys()
                and all(state[k].shape == states[0][k].shape for k in state)
                and classifier.model.config.id2label == first.model.config.id2label
                and (classifier.max_length, classifier.normalize) == (first.max_length, first.normalize))
        if not same:
            raise ModelLoadError(f"{classifier.name} differs from {first.name} in architecture, labels or "
                                 "input preparation: only runs of the same model can be averaged")
    return {k: exact_mean([s[k] for s in states], mix) if v.is_floating_point() else v
            for k, v in states[0].items()}


def changed_from_backbone(weights: dict[str, torch.Tensor]) -> list[str]:
    """Keys that are not the packaged backbone's weights: what a delta bundle has to store."""
    backbone = load_file(str(backbone_path() / "model.safetensors"))
    return [k for k, v in weights.items() if v.is_floating_point()
            and not (k.removeprefix("bert.") in backbone and torch.equal(v, backbone[k.removeprefix("bert.")].to(v.dtype)))]


def average_models(model_dirs: Sequence[Path], out_dir: Path, bundle_dir: Path | None = None,
                   bundle_name: str = "tickerpulse-minilm-ft", valid_data: LabelledData | None = None,
                   mix: Sequence[float] | None = None) -> float | None:
    """Average the models (checkpoints or bundles; weighted by ``mix`` if given) into ``out_dir``
    (an HF checkpoint) and, if asked, a delta bundle; returns the validation macro-F1 when
    ``valid_data`` is given."""
    classifiers = [load_classifier(path) for path in model_dirs]
    weights = average_weights(classifiers, mix)
    model = classifiers[0].model
    model.load_state_dict(weights)
    save_checkpoint(model, classifiers[0].tokenizer, out_dir, classifiers[0].max_length)
    f1 = None
    if valid_data is not None:
        engine = SentimentEngine(classifiers[0], torch.device("cpu"), "fp32", batch_size=128, cache_size=0)
        f1, accuracy, _ = evaluate(engine, valid_data)
        log.info("average of %d models: valid macro-F1 %.4f  accuracy %.4f", len(classifiers), f1, accuracy)
    if bundle_dir is not None:
        ingredients = [_training_record(Path(path)) for path in model_dirs]
        if mix is not None:
            for ingredient, share in zip(ingredients, mix):
                ingredient["mix_weight"] = share / sum(mix)
        export_bundle(model, bundle_dir, bundle_name, classifiers[0].max_length, changed_from_backbone(weights),
                      extra={"averaged_from": ingredients})
        if valid_data is not None:
            record_int8_check(bundle_dir, valid_data)
    return f1


def _training_record(path: Path) -> dict:
    """What is known of how an ingredient was trained: its config, files and validation figure,
    from a checkpoint's metrics or a bundle's own record (so a soup of soups keeps its history)."""
    metrics, bundle = path / "training_metrics.json", path / "bundle.json"
    if metrics.is_file():
        recorded = json.loads(metrics.read_text())
        return {"model": path.name, "training": recorded["config"],
                **({"data": recorded["data"]} if "data" in recorded else {}),
                "valid_macro_f1": round(recorded["best_macro_f1"], 4)}
    if bundle.is_file():
        recorded = json.loads(bundle.read_text())
        return {"model": path.name, **{key: recorded[key] for key in _PROVENANCE if key in recorded}}
    return {"model": path.name}


_PROVENANCE = ("training", "data", "averaged_from", "valid_macro_f1")
