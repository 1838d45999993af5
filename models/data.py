"""Labelled CSV loading, label maps and the text normalisation shared by training and inference.

Normalisation lives here, in one function, because a model only works on text normalised the
same way it was trained on (URLs become one token, @mentions one token, cashtags are kept).
"""
from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

LABELS = ("negative", "neutral", "positive")

# Names used by public checkpoints and data sets for the three classes.
LABEL_SYNONYMS: dict[str, str] = {
    "negative": "negative", "neg": "negative", "bearish": "negative", "bear": "negative",
    "neutral": "neutral", "neu": "neutral", "none": "neutral", "mixed": "neutral",
    "positive": "positive", "pos": "positive", "bullish": "positive", "bull": "positive",
}

NORMALIZATION_VERSION = "v1"
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w$])@\w+")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """URLs -> ``url``, @mentions -> ``@user``, whitespace collapsed; cashtags ($AAPL) kept."""
    text = _URL.sub(" url ", text)
    text = _MENTION.sub("@user", text)
    return _SPACES.sub(" ", text).strip()


def canonical_label(name: str) -> str | None:
    """The LABELS entry a label name stands for, or None when it means none of them."""
    return LABEL_SYNONYMS.get(str(name).strip().lower())


def parse_label_map(spec: str) -> dict[str, str]:
    """Parse ``0=negative,1=positive,2=neutral`` (raw CSV value -> class name)."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        raw, sep, name = part.partition("=")
        canonical = canonical_label(name) if sep else None
        if not raw.strip() or canonical is None:
            raise ValueError(f"bad label map entry {part!r}: expected VALUE=negative|neutral|positive")
        mapping[raw.strip()] = canonical
    if not mapping:
        raise ValueError("empty label map")
    return mapping


@dataclass(frozen=True)
class LabelledData:
    texts: list[str]
    labels: list[int]  # indices into LABELS

    def __len__(self) -> int:
        return len(self.texts)

    def plus(self, other: LabelledData) -> LabelledData:
        return LabelledData(self.texts + other.texts, self.labels + other.labels)

    def counts(self) -> dict[str, int]:
        return {name: self.labels.count(i) for i, name in enumerate(LABELS)}


def load_labelled_csv(
    path: str | Path,
    label_map: dict[str, str] | None = None,
    text_column: str = "text",
    label_column: str = "label",
) -> LabelledData:
    """Read a ``text,label`` CSV; labels are class names or raw values mapped by ``label_map``.

    Integer labels without a map are refused: data sets disagree on their order.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {text_column, label_column} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)} (found {reader.fieldnames})")
        return _labelled(reader, path, label_map, text_column, label_column)


def file_record(role: str, path: str | Path, rows: int) -> dict[str, object]:
    """What a model was trained or validated on, for its record: the path as given, the rows
    read and the file's sha256, so the exact file can be checked later."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"role": role, "path": str(path), "rows": rows, "sha256": digest}


def read_column(path: str | Path, column: str) -> list[str]:
    """One column of a CSV, row by row (the order ``load_labelled_csv`` reads the rows in)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if column not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: missing column {column!r} (found {reader.fieldnames})")
        return [(row[column] or "").strip() for row in reader]


def nested_groups(values: Sequence[str], levels: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Row indices per group of ``values``: each distinct value in order of first appearance, or,
    with ``levels`` (strictest first, e.g. agreement ``all,75,66,50``), cumulative groups
    ``>=level`` holding the rows of that level and every stricter one."""
    if levels is None:
        groups: dict[str, list[int]] = {}
        for i, value in enumerate(values):
            groups.setdefault(value, []).append(i)
        return groups
    unknown = sorted(set(values) - set(levels))
    if unknown:
        raise ValueError(f"values not in the levels {list(levels)}: {unknown}")
    rank = {level: k for k, level in enumerate(levels)}
    return {f">={level}": [i for i, v in enumerate(values) if rank[v] <= rank[level]] for level in levels}


def _labelled(rows: Iterable[dict], path: Path, label_map: dict[str, str] | None,
              text_column: str, label_column: str) -> LabelledData:
    texts, labels = [], []
    for line, row in enumerate(rows, start=2):
        raw = (row[label_column] or "").strip()
        name = label_map.get(raw) if label_map else canonical_label(raw)
        if name is None:
            hint = "" if label_map else " (integer labels need --label-map, e.g. 0=negative,1=positive,2=neutral)"
            raise ValueError(f"{path} row {line}: unknown label {raw!r}{hint}")
        texts.append(row[text_column] or "")
        labels.append(LABELS.index(name))
    if not texts:
        raise ValueError(f"{path}: no rows")
    return LabelledData(texts, labels)


def macro_f1(gold: Sequence[int], predicted: Sequence[int], n_classes: int = len(LABELS)) -> float:
    """Unweighted mean of per-class F1 (the quality bar of docs/model.md)."""
    matrix = confusion_matrix(gold, predicted, n_classes)
    scores = []
    for k in range(n_classes):
        tp = matrix[k][k]
        fp = sum(matrix[g][k] for g in range(n_classes)) - tp
        fn = sum(matrix[k]) - tp
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / n_classes


def confusion_matrix(gold: Sequence[int], predicted: Sequence[int], n_classes: int = len(LABELS)) -> list[list[int]]:
    """Rows are gold classes, columns predicted classes."""
    matrix = [[0] * n_classes for _ in range(n_classes)]
    for g, p in zip(gold, predicted, strict=True):
        matrix[g][p] += 1
    return matrix
