"""Labels: the label set of a run (given, or read off the training split) and the check of every split.

What a label is depends on the task: members of a label set, which `Task.label_values` reads off one
example's label (a class; a list of classes, one per word; several classes per text), or values a task reads
itself (`Task.label_map`: regression's numbers). `prepare_labels` returns the label names and the map from a label value in
the data to a class index, which `Task.target` turns into what the model learns.
"""

from __future__ import annotations

import logging

from datasets import ClassLabel, Dataset

from encoder.tasks import Task
from encoder.core.errors import DataError, LabelSetError
from encoder.training.config import DataConfig
from encoder.core.tokenizer import as_text

log = logging.getLogger(__name__)


def prepare_labels(raw: dict[str, Dataset], cfg: DataConfig, task: Task):
    """(label names, value -> class index map) after checking every split's labels."""
    column = cfg.label_column
    own = task.label_map(column)
    if own is not None:  # labels that are no members of a set (regression: numbers)
        names, mapping = own
        for ds in raw.values():
            for value in ds.unique(column):
                mapping[value]  # raises a DataError naming the first value it cannot read
        return names, mapping
    values = {split: _values(ds, column, task) for split, ds in raw.items()}  # (each split read once)
    first = "train" if "train" in raw else next(iter(raw))
    names = _label_names(raw[first], column, values[first], cfg.label_names)
    mapping = {name: i for i, name in enumerate(names)}
    if all(n.lstrip("-").isdigit() for n in names) and not _class_label(raw[first], column):
        # names that are numbers (stars 1-5, a checkpoint trained on them): an integer label means its value
        mapping.update({int(n): i for i, n in enumerate(names)})
    else:  # integer labels are positions: a ClassLabel's, or in the order data.label_names gives
        mapping.update({i: i for i in range(len(names))})
    for split, ds in raw.items():
        if task.words:
            _check_words(ds, split, cfg.text_column, column)
        _check_split(ds, split, column, values[split], mapping, names)
    return names, mapping


def _values(ds: Dataset, column: str, task: Task) -> list:
    """The distinct members of the label set that a split's labels hold (`Task.label_values`), read 1,000 rows
    at a time."""
    values = set()
    for batch in ds.select_columns([column]).iter(batch_size=1000):
        for label in batch[column]:
            try:
                values.update(task.label_values(label))
            except TypeError:  # unhashable: a list where the task expects one label
                raise DataError(f"data.label_column={column!r} holds {label!r:.60}, not one label per text; "
                                f"task={task.name} needs one (for several labels per text use task=multilabel)") from None
    return list(values)


def _class_label(ds: Dataset, column: str) -> ClassLabel | None:
    feature = ds.features[column]
    feature = getattr(feature, "feature", feature)  # List(ClassLabel): a label set for several labels per row
    return feature if isinstance(feature, ClassLabel) else None


def _label_names(train: Dataset, column: str, values: list, given: list[str] | None) -> list[str]:
    feature = _class_label(train, column)
    if feature is not None:
        return list(feature.names)
    if given:
        return list(given)
    values = set(values) - {None}
    if all(isinstance(v, str) for v in values):
        return sorted(values)
    return [str(i) for i in range(int(max(values)) + 1)]


def _check_split(ds: Dataset, split: str, column: str, values: list, mapping: dict, names: list[str]) -> None:
    if not values and len(ds):  # (several labels per text: none in a whole split is a column gone astray)
        raise DataError(f"no text of the {split} split has a label in {column!r}; is data.label_column right?")
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
