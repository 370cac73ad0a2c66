"""Labels: the label set of a run (given, or read off the training split) and the check of every split.

What a label is depends on the task (`Task.labels`): a class ("class"), a number ("number"), a list of
classes, one per word ("word"), or nothing (raw text). `prepare_labels` returns the label names and
the map from a label value in the data to what the model learns.
"""

from __future__ import annotations

import logging

from datasets import ClassLabel, Dataset

from encoder.errors import DataError, LabelSetError
from encoder.training.config import DataConfig
from encoder.tokenizer import as_text

log = logging.getLogger(__name__)
FLOAT32_MAX = 3.4028234663852886e38  # the model computes in float32 (or less)


class Numbers:
    """The label "map" of regression: a value becomes a float, or a one-line DataError."""

    def __init__(self, column: str):
        self.column = column

    def __getitem__(self, value) -> float:
        if value is None:
            raise DataError(f"data.label_column={self.column!r} has rows without a value; fill or drop them")
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if isinstance(value, bool) or number != number or abs(number) > FLOAT32_MAX:
            raise DataError(f"data.label_column={self.column!r} holds {value!r}, which is not a finite number a "
                            f"float32 holds (|x| < 3.4e38); regression needs such labels (fix or drop those rows)")
        return number


def prepare_labels(raw: dict[str, Dataset], cfg: DataConfig, kind: str):
    """(label names, value -> target map) after checking every split's labels."""
    column = cfg.label_column
    if kind == "number":
        mapping = Numbers(column)
        for ds in raw.values():
            for value in ds.unique(column):
                mapping[value]  # raises a DataError naming the first value that is not a number
        return [column], mapping  # one target, named after its column
    first = raw.get("train") or next(iter(raw.values()))
    names = _label_names(first, column, kind, cfg.label_names)
    mapping = {name: i for i, name in enumerate(names)}
    if all(n.lstrip("-").isdigit() for n in names) and not _class_label(first, column, kind):
        # names that are numbers (stars 1-5, a checkpoint trained on them): an integer label means its value
        mapping.update({int(n): i for i, n in enumerate(names)})
    else:  # integer labels are positions: a ClassLabel's, or in the order data.label_names gives
        mapping.update({i: i for i in range(len(names))})
    for split, ds in raw.items():
        if kind == "word":
            _check_words(ds, split, cfg.text_column, column)
        _check_split(ds, split, column, kind, mapping, names)
    return names, mapping


def _values(ds: Dataset, column: str, kind: str) -> list:
    """The distinct labels of a split (of every word, for labels per word)."""
    if kind == "word":
        return list({v for tags in ds[column] for v in (tags or [None])})
    return ds.unique(column)


def _class_label(ds: Dataset, column: str, kind: str) -> ClassLabel | None:
    feature = ds.features[column]
    feature = getattr(feature, "feature", feature) if kind == "word" else feature  # List(ClassLabel)
    return feature if isinstance(feature, ClassLabel) else None


def _label_names(train: Dataset, column: str, kind: str, given: list[str] | None) -> list[str]:
    feature = _class_label(train, column, kind)
    if feature is not None:
        return list(feature.names)
    if given:
        return list(given)
    values = set(_values(train, column, kind)) - {None}
    if all(isinstance(v, str) for v in values):
        return sorted(values)
    return [str(i) for i in range(int(max(values)) + 1)]


def _check_split(ds: Dataset, split: str, column: str, kind: str, mapping: dict, names: list[str]) -> None:
    values = _values(ds, column, kind)
    if None in values:
        missing = sum(v is None for v in ds[column])
        if missing == len(ds):
            raise DataError(f"the {split} split has no {column!r} labels at all (is the column missing from its "
                            f"file?); every split needs data.label_column={column!r}")
        raise DataError(f"{missing} rows of the {split} split have no {column!r}; fill or drop them")
    if len(values) == 1:
        log.warning("every example of the %s split has the label %r: metrics on it say little", split, values[0])
    bad = [v for v in values if v not in mapping or isinstance(v, bool)]
    if bad:
        raise LabelSetError(split, sorted(map(repr, bad))[:5], names)


def _check_words(ds: Dataset, split: str, text_column: str, column: str) -> None:
    for words, tags in zip(ds[text_column], ds[column]):
        if not isinstance(words, list) or len(words) != len(tags or []):
            shown = " ".join(map(as_text, words[:8])) if isinstance(words, list) else repr(words)
            count = len(words) if isinstance(words, list) else "no list of"
            raise DataError(f"the {split} split has a sentence ({shown!r}) with {count} words in "
                            f"{text_column!r} but {len(tags or [])} labels in {column!r}; "
                            f"labels per word need one label per word")
