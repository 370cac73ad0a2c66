"""Loading the configured splits as Hugging Face datasets, and turning loading failures into one line."""

from __future__ import annotations

import glob
import logging
import re
from pathlib import Path

import numpy as np
import pandas
import pyarrow
from datasets import Dataset, DatasetDict, load_dataset

from encoder.core.errors import DataError
from encoder.training.config import DataConfig
from encoder.training.data.sources import SOURCES

log = logging.getLogger(__name__)
SPLIT_NAMES = ("train", "validation", "test")


LOCAL_BUILDERS = ("csv", "json", "parquet", "text", "arrow")


def describe(cfg: DataConfig) -> str:
    """How error messages name the data."""
    if cfg.source:
        return cfg.source
    given = {s: f for s, f in cfg.data_files.items() if f} if isinstance(cfg.data_files, dict) else cfg.data_files
    return "data.data_files" if given else (f"{cfg.path}/{cfg.name}" if cfg.name else cfg.path)


def from_the_hub(cfg: DataConfig) -> bool:
    return not cfg.source and cfg.path not in LOCAL_BUILDERS and not Path(cfg.path).exists()


def go_offline_if_the_hub_is_unreachable() -> bool:
    """Without a network, `datasets` retries the Hub five times (about 30 s of "Retrying in Ns") before it
    looks in its cache. Check once, quickly; if the Hub cannot be reached, use the cache directly
    (Hugging Face's own offline mode, as HF_HUB_OFFLINE=1 would). True when offline."""
    import socket

    import datasets
    import huggingface_hub.constants

    if datasets.config.HF_HUB_OFFLINE:
        return True
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return False
    except OSError:
        log.warning("the Hugging Face Hub is unreachable: using the local datasets cache (%s)",
                    datasets.config.HF_DATASETS_CACHE)
        datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
        return True


def data_files(cfg: DataConfig, cache_dir: Path):
    """The files to read: an offline source's (prepared on first use), or the configured ones, each of which
    must match a file that holds something (a DataError line otherwise)."""
    if cfg.source:
        return SOURCES[cfg.source](cache_dir)
    files = cfg.data_files
    if isinstance(files, dict):  # the config lists every split; those left null are not given
        files = {split: given for split, given in files.items() if given} or None
    if cfg.path in LOCAL_BUILDERS:
        for split, given in (files.items() if isinstance(files, dict) else [(None, files)] if files else []):
            _check_files(f"data.data_files{f'.{split}' if split else ''}", given)
    return files


def local_paths(files) -> list[str]:
    """Every local file that `data_files` (a path, a glob, a list of them, or {split: any of those}) names."""
    if isinstance(files, dict):
        return [p for given in files.values() for p in local_paths(given)]
    patterns = [files] if isinstance(files, str) else list(files or [])
    return sorted({p for pattern in patterns for p in glob.glob(str(pattern)) if Path(p).is_file()})


def _check_files(key: str, given) -> None:
    for pattern in [given] if isinstance(given, str) else list(given):
        found = local_paths(pattern)
        if not found:
            raise DataError(f"{key}={pattern} matches no file (from {Path.cwd()}); check the path or the glob")
        if all(Path(p).stat().st_size == 0 for p in found):
            raise DataError(f"{key}={pattern}: {'the file is' if len(found) == 1 else 'every file it matches is'} "
                            f"empty; point it at files that hold data")


def load_splits(cfg: DataConfig, cache_dir: Path, seed: int, labelled: bool) -> dict[str, Dataset]:
    """train / validation / test as datasets (validation carved from train if the data has none)."""
    files = data_files(cfg, cache_dir)
    if not files and cfg.path in ("csv", "json", "parquet", "text"):
        raise DataError(f"data.path={cfg.path} needs files; set data.data_files.train=... (and .test=...)")
    # pandas reads "NA", "None", "NaN", "null"... in a csv as missing: a review "NA" or a label "None" would
    # silently vanish. Only an empty cell is missing.
    csv_options = {"keep_default_na": False, "na_values": [""]} if cfg.path == "csv" else {}
    offline = from_the_hub(cfg) and go_offline_if_the_hub_is_unreachable()
    # No remote code: `datasets` >= 4 never runs dataset scripts, and we never ask it to trust one.
    try:
        raw: DatasetDict = load_dataset(cfg.path, cfg.name, data_files=files, revision=cfg.revision, **csv_options)
    except Exception as e:  # noqa: BLE001 - turned into one line that says what to fix
        if offline:
            import datasets

            raise DataError(f"the Hugging Face Hub is unreachable and {describe(cfg)} is not in the local datasets "
                            f"cache ({datasets.config.HF_DATASETS_CACHE}); load it once with a network, or point "
                            f"at local files: data=local_files data.data_files.train=...") from None
        raise load_error(e, describe(cfg), cfg.path) from None
    if cfg.path == "csv":
        _refuse_duplicate_headers(raw, describe(cfg))
    out = _pick_splits(raw, cfg)
    if not out:  # (train=false reads a test split alone)
        wanted = [s for s in SPLIT_NAMES if cfg.splits.get(s)]
        raise DataError(f"{describe(cfg)} has none of the splits this run reads ({', '.join(wanted)}; it has "
                        f"{list(raw)}); name one with data.splits.{wanted[-1] if wanted else 'test'}=<split>, e.g. "
                        f"data.splits.test={next(iter(raw))}")
    if "validation" not in out and "train" in out and cfg.val_fraction:
        if len(out["train"]) < 2:  # one example for each of train and validation, at least
            raise DataError(f"the train split of {describe(cfg)} has {len(out['train'])} example, too few to carve "
                            f"a validation split from; add examples or give a validation split "
                            f"(data.data_files.validation=...)")
        out["train"], out["validation"] = _carve(out["train"], cfg.val_fraction, seed, cfg.max_eval_samples)
        log.info("carved a validation split of %d texts from train (%.0f%%%s, seed %d)", len(out["validation"]),
                 100 * cfg.val_fraction, f", at most data.max_eval_samples={cfg.max_eval_samples}"
                 if cfg.max_eval_samples else "", seed)
    for split, limit in (("train", cfg.max_train_samples), ("validation", cfg.max_eval_samples),
                         ("test", cfg.max_eval_samples)):
        if limit is not None and split in out and len(out[split]) > limit:
            out[split] = out[split].select(range(limit))
    if "validation" not in out and "train" in out:  # data.val_fraction=0: too few rows to spare any
        out["validation"] = out["train"]
        log.warning("data.val_fraction=0: validation reads the training rows, so its metrics say how well the model "
                    "fits them, not how it generalises; choose the checkpoint by a fixed schedule (experiment=small_data)")
    for split, ds in out.items():
        _check_columns(ds, split, cfg, labelled)
    return out


def _refuse_duplicate_headers(raw: DatasetDict, where: str) -> None:
    """pandas reads a csv header `text,text,label` as columns `text` and `text.1`: training would silently read
    the first. Refuse a header that names a column twice."""
    for split, ds in raw.items():
        for column in ds.column_names:
            base, dot, number = column.rpartition(".")
            if dot and number.isdigit() and base in ds.column_names:
                raise DataError(f"the {split} file of {where} names the column {base!r} twice in its header (the "
                                f"second was read as {column!r}); give every column its own name")


def _carve(train: Dataset, fraction: float, seed: int, most: int | None = None) -> tuple[Dataset, Dataset]:
    """(train, validation): a seeded share of the rows as validation (at most `most`: what validation would read
    of a bigger share stays in training), each part kept in the file's order. Not `train_test_split`, whose parts
    are shuffled views: a corpus read through one is read at random, so every page of it stays resident (or, when
    memory is short, is read from disk again and again)."""
    rows = np.random.default_rng(seed).permutation(len(train))
    held = max(1, min(len(train) - 1, round(len(train) * fraction), most or len(train)))
    return train.select(np.sort(rows[held:])), train.select(np.sort(rows[:held]))


def _pick_splits(raw: DatasetDict, cfg: DataConfig) -> dict[str, Dataset]:
    out = {}
    for split in SPLIT_NAMES:
        wanted = cfg.splits.get(split)
        if wanted is None:  # (train=false evaluates a checkpoint on a test split alone)
            continue
        if wanted in raw:
            out[split] = raw[wanted]
        elif split != "train" and wanted == split:  # a default name this dataset lacks: carve validation, skip test
            if split != "validation" or cfg.val_fraction:  # (val_fraction=0 says what it does below)
                log.warning("%s has no %s split; %s", describe(cfg), split,
                            "carving one from train" if split == "validation" else "skipping the test")
        else:
            hint = "one of them" if split == "train" else "one of them or null"
            raise DataError(f"{describe(cfg)} has no split {wanted!r} (it has {list(raw)}); "
                            f"set data.splits.{split} to {hint}")
    return out


def _check_columns(ds: Dataset, split: str, cfg: DataConfig, labelled: bool) -> None:
    label_column = cfg.label_column if labelled else None
    if label_column and type(ds.features.get(label_column)).__name__ == "Json":  # `datasets` >= 5: mixed JSON types
        kinds = sorted({type(v).__name__ for v in ds[label_column]})
        raise DataError(f"data.label_column={label_column!r} mixes types ({', '.join(kinds)}) in the "
                        f"{split} split; make every label the same type (e.g. all strings)")
    if len(ds) == 0:
        raise DataError(f"the {split} split of {describe(cfg)} is empty; point data at non-empty files")
    for key, column in (("text_column", cfg.text_column), ("text_pair_column", cfg.text_pair_column),
                        *(("negative_columns", c) for c in cfg.negative_columns), ("label_column", label_column)):
        if column is not None and column not in ds.column_names:
            raise DataError(f"data.{key}={column!r} is not a column of the {split} split; "
                            f"its columns are {ds.column_names}")


def load_error(error: Exception, where: str, builder: str = "csv") -> DataError:
    """A one-line DataError for what `datasets`/pandas/pyarrow raise on bad files, by exception type
    where one exists (the message text only where the library raises a bare ValueError/ArrowInvalid)."""
    chain = [error]  # the exception and everything it was raised from, deepest last
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    root = chain[-1]
    text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__

    def raised(kind) -> bool:
        return any(isinstance(e, kind) for e in chain)

    empty = re.search(r'Instruction "(\w+)" corresponds to no data', str(error))  # a bare ValueError
    if empty:
        return DataError(f"the {empty.group(1)} split of {where} is empty; point data at non-empty files")
    if builder == "json" and (raised(pyarrow.ArrowException) or raised(ValueError)):  # pyarrow's/pandas' JSON readers
        return DataError(f"{where} has a line that is not one JSON object ({text}); JSON-lines files hold one "
                         f"object per line, e.g. {{\"text\": \"...\", \"label\": \"...\"}}")
    # pyarrow reports bad UTF-8 as a plain ArrowInvalid: only its text tells
    if raised(UnicodeDecodeError) or any("utf8" in str(e).lower().replace("-", "") for e in chain):
        return DataError(f"{where} is not valid UTF-8 ({text}); re-encode the file as UTF-8, "
                         f"e.g. iconv -f latin1 -t utf-8")
    if raised(pandas.errors.ParserError):
        return DataError(f"{where} has a malformed row ({text}); fix or remove that row (quote fields "
                         f"that contain the delimiter)")
    if raised(pyarrow.ArrowException):
        return DataError(f"{where} has a column that mixes types ({text}); make each column's values "
                         f"one type (e.g. all labels strings)")
    if raised(FileNotFoundError):
        return DataError(f"{where}: {text}; check data.data_files / data.path")
    return DataError(f"could not load {where}: {type(root).__name__}: {text}")
