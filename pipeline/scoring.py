"""A RunInference ModelHandler around models.engine.SentimentEngine: Items in, scored Items out.

RunInference loads the model once per worker process (``shared.Shared``) and hands it to every
DoFn instance and thread there; ``BatchElements`` feeds the engine batches large enough for its
length bucketing to pay off.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from apache_beam.ml.inference.base import ModelHandler

from connectors.records import Item

if TYPE_CHECKING:  # torch is imported by the worker that loads the model, not at graph building
    from models.engine import Prediction, SentimentEngine

DEFAULT_BATCH_SIZE = 256


def score_item(item: Item, prediction: "Prediction") -> Item:
    return item.with_(label=prediction.label, score=prediction.score, probs=tuple(prediction.probs),
                      confidence=prediction.confidence, model=prediction.model)


class SentimentModelHandler(ModelHandler[Item, Item, "SentimentEngine"]):
    """``model=None`` is the bundled default; ``device`` is auto, cpu or cuda.

    ``precision`` defaults to auto (bf16 where the hardware has it, else fp32: both give a record
    the same score whatever its batch-mates, tests/models/test_engine.py). int8 is opt-in: it
    scales activations per batch, so a backfill and a stream over the same records would disagree.

    Batches are fixed at ``batch_size``: BatchElements flushes a partial batch at the end of every
    bundle, so full batches cost a stream no latency, and the engine runs at its best size.
    """

    def __init__(self, model: str | None = None, device: str = "auto", precision: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self._model = model
        self._device = device
        self._precision = precision

    def load_model(self) -> "SentimentEngine":
        from models.engine import SentimentEngine

        return SentimentEngine.load(self._model, self._device, precision=self._precision)

    def run_inference(self, batch: Sequence[Item], model: "SentimentEngine",
                      inference_args: dict[str, Any] | None = None) -> Iterable[Item]:
        predictions = model.predict([item.text for item in batch])
        return [score_item(item, prediction) for item, prediction in zip(batch, predictions)]

    def get_num_bytes(self, batch: Sequence[Item]) -> int:
        return sum(len(item.text) for item in batch)

    def get_metrics_namespace(self) -> str:
        return "tickerpulse_scoring"
