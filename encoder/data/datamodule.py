"""A LightningDataModule over Hugging Face `datasets`: labelled texts, or a raw corpus for MLM.

raw splits (Hub / local files / offline source) -> checked columns and labels -> tokenizer
(trained on train, cached) -> `datasets.map(batched=True)` tokenization (cached by fingerprint)
-> length-grouped sampler -> Collator (padding + padding_mask, + masking for MLM).

`text_pair_column` adds a second text (sentence pairs: [CLS] a [SEP] b [SEP], with `token_type_ids`
0 then 1). `regression=true` reads labels as numbers (task=regression).
`word_labels=true` reads a list of words and a list of labels per example (CoNLL style: tokens,
ner_tags); each word's label goes on its first sub-token, -100 on the rest (task=token_classification).
`label_column=null` reads an unlabelled corpus (empty texts are dropped: nothing to learn from).
`long_texts=chunk` splits a text longer than `max_length` into consecutive [CLS] ... [SEP] pieces
instead of truncating it, so no text is lost. `mlm_probability` > 0 makes the collator mask.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import lightning as L
import pandas
import pyarrow
import torch
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from torch.utils.data import DataLoader

from encoder.data.collate import Collator, LengthGroupedSampler, first_subtokens
from encoder.data.sources import SOURCES, default_cache_dir
from encoder.data.tokenizer import TokenizerConfig, fingerprint, get_tokenizer
from encoder.schema import ConfigError, build, check_choice

log = logging.getLogger(__name__)
SPLIT_NAMES = ("train", "validation", "test")
LONG_TEXTS = ("truncate", "chunk")


def as_text(value) -> str:
    """A missing text (None) is read as "" (the model still sees [CLS] [SEP]); numbers etc. as their string."""
    return "" if value is None else str(value)


class DataError(ValueError):
    """The data does not fit the configuration; the message says what and how to fix it."""


class _Numbers:
    """The label "mapping" of regression: a value becomes a float, or a one-line DataError."""

    def __init__(self, column: str):
        self.column = column

    def __getitem__(self, value) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if value is None:
            raise DataError(f"data.label_column={self.column!r} has rows without a value; fill or drop them")
        if isinstance(value, bool) or number != number or number in (float("inf"), float("-inf")):
            raise DataError(f"data.label_column={self.column!r} holds {value!r}, which is not a finite number; "
                            f"regression needs numeric labels (fix or drop those rows)")
        return number


class TextDataModule(L.LightningDataModule):
    def __init__(
        self,
        path: str = "csv",
        name: str | None = None,
        revision: str | None = None,
        data_files: dict | str | None = None,
        source: str | None = None,
        splits: dict | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str | None = "label",
        regression: bool = False,
        word_labels: bool = False,
        label_names: list[str] | None = None,
        val_fraction: float = 0.1,
        max_length: int = 128,
        long_texts: str = "truncate",
        mlm_probability: float = 0.0,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        group_by_length: bool = True,
        pad_to_multiple_of: int = 8,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        tokenizer: dict | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if source is not None and source not in SOURCES:
            raise ConfigError(f"data.source={source!r} is unknown; choose one of {sorted(SOURCES)} or null")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={val_fraction} must be in (0, 1)")
        check_choice(long_texts, LONG_TEXTS, "data.long_texts")
        if not 0.0 <= mlm_probability < 1.0:
            raise ConfigError(f"data.mlm_probability={mlm_probability} must be in [0, 1) (BERT: 0.15)")
        if long_texts == "chunk" and text_pair_column:
            raise ConfigError("data.long_texts=chunk splits single texts; with data.text_pair_column use truncate")
        if max_length < 2 + (long_texts == "chunk"):
            raise ConfigError(f"data.max_length={max_length} must be at least 2 ([CLS] and [SEP])")
        if batch_size < 1 or eval_batch_size < 1 or pad_to_multiple_of < 1:
            raise ConfigError("data.batch_size, data.eval_batch_size and data.pad_to_multiple_of must be positive")
        if isinstance(data_files, dict):  # the config lists every split; those left null are not given
            data_files = {split: files for split, files in data_files.items() if files} or None
        self.path, self.name, self.data_files, self.source = path, name, data_files, source
        self.revision = revision
        self.splits = {"train": "train", "validation": "validation", "test": "test", **(splits or {})}
        self.text_column, self.text_pair_column = text_column, text_pair_column
        self.label_column, self.regression, self.word_labels = label_column, regression, word_labels
        self.label_names = list(label_names) if label_names else None
        self.val_fraction, self.max_length, self.long_texts = val_fraction, max_length, long_texts
        self.batch_size, self.eval_batch_size, self.group_by_length = batch_size, eval_batch_size, group_by_length
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.tokenizer_cfg = build(TokenizerConfig, tokenizer, "tokenizer")
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.seed = seed
        self.tokenizer = None
        self.datasets: dict[str, Dataset] = {}
        self.collator = Collator(pad_token_id=0, pad_to_multiple_of=pad_to_multiple_of,
                                 mlm_probability=mlm_probability, seed=seed)
        self._resume_at: tuple[int, int] | None = None  # (epoch, examples consumed) from a checkpoint

    # ---- loading and checking -------------------------------------------------------------
    def _describe(self) -> str:
        if self.source or not self.data_files:
            return self.source or (f"{self.path}/{self.name}" if self.name else self.path)
        return "data.data_files"

    def load_raw(self) -> dict[str, Dataset]:
        """The configured splits as Hugging Face datasets (validation carved from train if absent)."""
        data_files = SOURCES[self.source](self.cache_dir) if self.source else self.data_files
        if not data_files and self.path in ("csv", "json", "parquet", "text"):
            raise DataError(f"data.path={self.path} needs files; set data.data_files.train=... (and .test=...)")
        # No remote code: `datasets` >= 3 never runs dataset scripts unless asked, and we never ask.
        try:
            raw: DatasetDict = load_dataset(self.path, self.name, data_files=data_files, revision=self.revision)
        except Exception as e:  # noqa: BLE001 - turned into one line that says what to fix
            raise self._load_error(e) from None
        available = list(raw)
        out = {}
        for split in SPLIT_NAMES:
            wanted = self.splits.get(split)
            if wanted is None:
                continue
            if wanted not in raw:
                if split == "train":
                    raise DataError(f"{self._describe()} has no split {wanted!r} (it has {available}); "
                                    f"set data.splits.train to one of them")
                if wanted == split:  # a default name that this dataset lacks: carve validation, skip test
                    log.warning("%s has no %s split; %s", self._describe(), split,
                                "carving one from train" if split == "validation" else "skipping the test")
                    continue
                raise DataError(f"{self._describe()} has no split {wanted!r} (it has {available}); "
                                f"set data.splits.{split} to one of them or null")
            out[split] = raw[wanted]
        if "validation" not in out:
            parts = out["train"].train_test_split(test_size=self.val_fraction, seed=self.seed)
            out["train"], out["validation"] = parts["train"], parts["test"]
            log.info("carved a %.0f%% validation split from train (seed %d)", 100 * self.val_fraction, self.seed)
        for split, limit in (("train", self.max_train_samples), ("validation", self.max_eval_samples),
                             ("test", self.max_eval_samples)):
            if limit is not None and split in out and len(out[split]) > limit:
                out[split] = out[split].select(range(limit))
        for split, ds in out.items():
            if self.label_column and type(ds.features.get(self.label_column)).__name__ == "Json":  # `datasets` >= 5: mixed JSON types
                kinds = sorted({type(v).__name__ for v in ds[self.label_column]})
                raise DataError(f"data.label_column={self.label_column!r} mixes types ({', '.join(kinds)}) in the "
                                f"{split} split; make every label the same type (e.g. all strings)")
            if len(ds) == 0:
                raise DataError(f"the {split} split of {self._describe()} is empty; point data at non-empty files")
            for key, column in (("text_column", self.text_column), ("text_pair_column", self.text_pair_column),
                                ("label_column", self.label_column)):
                if column is not None and column not in ds.column_names:
                    raise DataError(f"data.{key}={column!r} is not a column of the {split} split; "
                                    f"its columns are {ds.column_names}")
        return out

    def _load_error(self, error: Exception) -> Exception:
        """A one-line DataError for what `datasets`/pandas/pyarrow raise on bad files."""
        chain = [error]  # the exception and everything it was raised from, deepest last
        while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
            chain.append(chain[-1].__cause__ or chain[-1].__context__)
        root = chain[-1]
        text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
        where = self._describe()

        def raised(kind) -> bool:
            return any(isinstance(e, kind) for e in chain)

        empty = re.search(r'Instruction "(\w+)" corresponds to no data', str(error))
        if empty:
            return DataError(f"the {empty.group(1)} split of {where} is empty; point data at non-empty files")
        # pyarrow reports bad UTF-8 in its own words, as an ArrowInvalid: check the text too
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

    def _label_values(self, ds: Dataset) -> list:
        """The distinct labels of a split (of every word, with word_labels)."""
        if self.word_labels:
            return list({v for tags in ds[self.label_column] for v in (tags or [None])})
        return ds.unique(self.label_column)

    def _label_names(self, train: Dataset) -> list[str]:
        feature = train.features[self.label_column]
        feature = getattr(feature, "feature", feature) if self.word_labels else feature  # List(ClassLabel)
        if isinstance(feature, ClassLabel):
            return list(feature.names)
        if self.label_names:
            return self.label_names
        values = set(self._label_values(train)) - {None}
        if all(isinstance(v, str) for v in values):
            return sorted(values)
        return [str(i) for i in range(int(max(values)) + 1)]

    def _label_to_id(self, names: list[str]) -> dict:
        mapping = {name: i for i, name in enumerate(names)}
        mapping.update({i: i for i in range(len(names))})  # integer labels (ClassLabel or plain ints)
        return mapping

    def _check_labels(self, ds: Dataset, split: str, mapping: dict) -> None:
        values = self._label_values(ds)
        if self.word_labels:
            for words, tags in zip(ds[self.text_column], ds[self.label_column]):
                if not isinstance(words, list) or len(words) != len(tags or []):
                    shown = " ".join(map(as_text, words[:8])) if isinstance(words, list) else repr(words)
                    raise DataError(f"the {split} split has a sentence ({shown!r}) with "
                                    f"{len(words) if isinstance(words, list) else 'no list of'} words in "
                                    f"{self.text_column!r} but {len(tags or [])} labels in {self.label_column!r}; "
                                    f"word_labels needs one label per word")
        if None in values:
            missing = sum(v is None for v in ds[self.label_column])
            raise DataError(f"{missing} rows of the {split} split have no {self.label_column!r}; "
                            f"fill or drop them")
        bad = [v for v in values if v not in mapping or isinstance(v, bool)]
        if len(values) == 1:
            log.warning("every example of the %s split has the label %r: metrics on it say little",
                        split, values[0])
        if bad:
            shown = sorted(map(repr, bad))[:5]
            raise DataError(f"the {split} split has labels {', '.join(shown)} outside the label set "
                            f"{self.label_names}; fix the data or set data.label_names")

    def _prepare_labels(self, raw: dict[str, Dataset]):
        """Check every split's labels; return the map from a label value to what the model learns."""
        if not self.label_column:
            return None
        if self.regression:
            self.label_names = [self.label_column]  # one target, named after its column
            mapping = _Numbers(self.label_column)
            for ds in raw.values():
                for value in ds.unique(self.label_column):
                    mapping[value]  # raises a DataError naming the first value that is not a number
            return mapping
        self.label_names = self._label_names(raw["train"])
        mapping = self._label_to_id(self.label_names)
        for split, ds in raw.items():
            self._check_labels(ds, split, mapping)
        return mapping

    def _drop_empty(self, raw: dict[str, Dataset]) -> dict[str, Dataset]:
        """A corpus text or a word-labelled sentence that is empty has nothing to learn from (logged).
        (Empty texts of labelled data are kept: they are examples too.)"""
        if self.label_column and not self.word_labels:
            return raw
        out = {}
        for split, ds in raw.items():
            out[split] = ds.filter(lambda b: [bool(as_text(t).strip()) if isinstance(t, str) or t is None else bool(t)
                                              for t in b[self.text_column]], batched=True,
                                   desc=f"dropping empty texts of {split}")
            if len(out[split]) < len(ds):
                log.info("dropped %d empty texts of the %s split", len(ds) - len(out[split]), split)
            if len(out[split]) == 0:
                raise DataError(f"every text of the {split} split of {self._describe()} is empty; "
                                f"check data.text_column")
        return out

    # ---- Lightning hooks ------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download/prepare files and train the tokenizer once (cached), before any process uses them."""
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return  # idempotent: train.py sets up early to learn the vocabulary and labels
        raw = self.load_raw()
        mapping = self._prepare_labels(raw)
        raw = self._drop_empty(raw)
        texts = raw["train"]
        columns = [c for c in (self.text_column, self.text_pair_column) if c]
        as_line = (lambda words: " ".join(map(as_text, words))) if self.word_labels else as_text
        self.tokenizer = get_tokenizer(
            self.tokenizer_cfg,
            lambda: (as_line(t) for c in columns for t in texts[c]),
            texts._fingerprint,
            self.cache_dir,
        )
        if self.long_texts == "truncate":
            self.tokenizer.enable_truncation(self.max_length)
        self._configure_collator()
        # everything that changes what encode() produces, so no stale cached tokenization is reused
        tokenizer_id = fingerprint(self.tokenizer.to_str(), self.max_length, self.long_texts, self.text_column,
                                   self.text_pair_column, self.label_column, self.regression, self.word_labels)
        text_col, pair_col, label_col, tok = self.text_column, self.text_pair_column, self.label_column, self.tokenizer
        cls, sep, piece = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"), self.max_length - 2

        def encode(batch):
            if self.word_labels:  # pre-split words; a label on each word's first sub-token only
                enc = tok.encode_batch([list(map(as_text, w)) for w in batch[text_col]], is_pretokenized=True)
                labels = []
                for e, tags in zip(enc, batch[label_col]):
                    first = dict((t, w) for t, w in first_subtokens(e.word_ids))
                    labels.append([mapping[tags[first[t]]] if t in first else -100 for t in range(len(e.ids))])
                ids = [e.ids for e in enc]
                return {"input_ids": ids, "length": [len(i) for i in ids], "labels": labels}
            texts = [as_text(t) for t in batch[text_col]]
            out = {}
            if self.long_texts == "chunk":  # every token kept: [CLS] piece [SEP], piece by piece
                bare = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
                owner = [i for i, b in enumerate(bare) for _ in range(max(1, -(-len(b) // piece)))]
                ids = [[cls, *b[k : k + piece], sep] for b in bare for k in range(0, max(1, len(b)), piece)]
            elif pair_col:  # [CLS] a [SEP] b [SEP]; truncation takes tokens from the longer text first
                owner = range(len(texts))
                enc = tok.encode_batch(list(zip(texts, [as_text(t) for t in batch[pair_col]])))
                ids, out["token_type_ids"] = [e.ids for e in enc], [e.type_ids for e in enc]
            else:
                owner = range(len(texts))
                ids = [e.ids for e in tok.encode_batch(texts)]
            out.update(input_ids=ids, length=[len(i) for i in ids])
            if label_col:
                out["labels"] = [mapping[batch[label_col][i]] for i in owner]
            return out

        for split, ds in raw.items():
            missing = sum(t is None or (isinstance(t, (str, list)) and not t) or (isinstance(t, str) and not t.strip())
                          for t in ds[self.text_column])
            if missing:
                log.warning("%d texts of the %s split are empty or missing; they are kept as empty texts",
                            missing, split)
            self.datasets[split] = ds.map(
                encode, batched=True, remove_columns=ds.column_names, desc=f"tokenizing {split}",
                new_fingerprint=fingerprint(ds._fingerprint, tokenizer_id, self.label_names, label_col),
            )
        log.info("data: %s", {s: len(d) for s, d in self.datasets.items()})

    @property
    def num_labels(self) -> int | None:
        return len(self.label_names) if self.label_names is not None else None

    def _configure_collator(self) -> None:
        tok = self.tokenizer
        self.collator.pad_token_id = tok.token_to_id("[PAD]")
        if self.collator.mlm_probability > 0:
            if tok.token_to_id("[MASK]") is None:
                raise DataError("masked-language modelling needs a [MASK] token; this tokenizer has none "
                                "(train one with tokenizer=wordpiece)")
            self.collator.mask_token_id = tok.token_to_id("[MASK]")
            self.collator.vocab_size = tok.get_vocab_size()
            self.collator.special_token_ids = torch.as_tensor(
                [tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")], dtype=torch.long)

    # ---- exact resume: where in which epoch the data order stood --------------------------
    def state_dict(self) -> dict:
        if self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": self.trainer.current_epoch, "consumed": done * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = (state["epoch"], state["consumed"]) if state else None

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = self.datasets[split]
        lengths = list(ds["length"])
        # We shard across processes ourselves (the trainer configs set use_distributed_sampler=false).
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        if train:  # our sampler for both modes: it is seeded per epoch and can resume mid-epoch
            sampler = LengthGroupedSampler(lengths, self.batch_size, mega=50 if self.group_by_length else 1,
                                           seed=self.seed, num_replicas=world, rank=rank)
            if self._resume_at:
                sampler.resume(*self._resume_at)
        else:  # evaluation order does not matter: sort by length so batches carry no padding
            sampler = sorted(range(len(ds)), key=lengths.__getitem__)[rank::world]
        return DataLoader(
            ds.with_format(columns=[c for c in ("input_ids", "token_type_ids", "labels") if c in ds.column_names]),
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            # its own generator: creating an iterator must not draw from the global RNG (dropout's)
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.datasets:
            raise DataError("this dataset has no test split; set data.splits.test")
        return self._loader("test", train=False)

