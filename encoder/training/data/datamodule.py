"""A LightningDataModule over Hugging Face `datasets`: labelled texts, or a raw corpus for MLM.

    raw splits (loading.py) -> labels checked (labels.py) -> empty corpus texts dropped
    -> a teacher's outputs (teacher.py, when distill.teacher is set)
    -> tokenizer (trained on train and cached, or loaded) -> token ids (encoding.py, cached by
    fingerprint) -> length-grouped sampler (sampler.py) -> Collator (padding + padding_mask, + MLM masking)

The task (encoder/tasks/) says what an example carries and how its labels are read, learnt and batched
(`Task.label_values`, `target`, `collate_labels`); the data config (`DataConfig`) says where the texts are and how they are batched.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from encoder.core.collate import Collator
from encoder.core.errors import ConfigError, DataError
from encoder.core.tokenizer import (SPECIAL_TOKENS, TokenizerConfig, as_text, blank, fingerprint, get_tokenizer,
                                    load_tokenizer)
from encoder.training.config import DataConfig
from encoder.training.data.encoding import encoder_for
from encoder.training.data.labels import prepare_labels
from encoder.training.data.loading import describe, load_splits
from encoder.training.data import pages, streaming
from encoder.training.data.sampler import LengthGroupedSampler, ResumableLoader
from encoder.training.packages import default_cache_dir
from encoder.training.data.teacher import add_teacher_column, build_task

log = logging.getLogger(__name__)


def writable(cache_dir: Path) -> None:
    """Data, tokenizers and tokenized data are cached in `cache_dir`: it must exist (or be creatable) and take
    files, or the run fails later with an OSError deep in `datasets` or the tokenizer."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = cache_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"the cache folder {cache_dir} cannot take files ({e.strerror or e}); point ENCODER_CACHE "
                        f"(or paths.cache_dir) at a writable folder") from None


class TextDataModule(L.LightningDataModule):
    def __init__(self, task: str = "classification", tokenizer: dict | None = None, cache_dir: str | None = None,
                 seed: int = 0, distill: dict | None = None, **data):
        """`data`: the fields of `DataConfig` (configs/data/); `tokenizer`: those of `TokenizerConfig`;
        `distill`: those of `DistillConfig` (a teacher labels the data before tokenization)."""
        super().__init__()
        self.cfg = DataConfig(**data)
        self.task = build_task(task, distill)
        self.distill = distill  # (the LightningModule learns from the same teacher: train.py hands it on)
        self.tokenizer_cfg = TokenizerConfig(**(tokenizer or {}))
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.seed = seed
        self.label_names = list(self.cfg.label_names) if self.cfg.label_names else None
        self.tokenizer = None
        self.collator: Collator | None = None  # built once the tokenizer exists
        self.datasets: dict[str, Dataset] = {}
        self.raw: dict[str, Dataset] = {}
        self._resume_at: dict | None = None  # where a resumed run's training epoch stood

    @property
    def labelled(self) -> bool:
        return self.task.label_kind is not None

    # ---- preparing the data, once ---------------------------------------------------------
    def prepare_data(self) -> None:
        """Download/prepare files and train the tokenizer once (cached), before any process uses them."""
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return  # idempotent: train.py sets up early to learn the vocabulary and labels
        if self.labelled and not self.cfg.label_column:
            raise DataError(f"task={self.task.name} needs labels; set data.label_column")
        writable(self.cache_dir)
        start = time.perf_counter()
        if self.cfg.streaming:
            return self._setup_stream()
        raw = load_splits(self.cfg, self.cache_dir, self.seed, self.labelled)
        pages.release(pages.files_of(*raw.values()))  # (opening a file reads a part)
        mapping = None
        if self.labelled:
            self.label_names, mapping = prepare_labels(raw, self.cfg, self.task)
        raw = add_teacher_column(self.task, self._drop_empty(raw), self.cfg, self.label_names, self.cache_dir)
        self.raw = raw  # the texts as read (predictions.jsonl quotes them)
        self.tokenizer = self._tokenizer(raw.get("train") or next(iter(raw.values())))
        if self.tokenizer_cfg.trim_to_data and "validation" in raw:
            self._warn_trimmed(raw["validation"])
        self.collator = self._collator()
        encode = encoder_for(self.cfg, self.task, self.tokenizer, mapping)
        # everything that changes what encode() produces, so no stale cached tokenization is reused
        settings = fingerprint(self.tokenizer.to_str(), self.cfg.max_length, self.cfg.long_texts, self.cfg.packing,
                               self.cfg.text_column, self.cfg.text_pair_column, self.cfg.label_column,
                               self.task.name, self.task.label_kind, self.label_names)
        for split, ds in raw.items():
            if self._keeps_empty:
                self._warn_empty(ds, split)
            self.datasets[split] = ds.map(pages.releasing(pages.files_of(ds), encode), batched=True,
                                          remove_columns=ds.column_names, desc=f"tokenizing {split}",
                                          num_proc=self._processes(ds),
                                          new_fingerprint=fingerprint(ds._fingerprint, settings))
        log.info("data: %s, prepared in %.1f s", {s: len(d) for s, d in self.datasets.items()},
                 time.perf_counter() - start)
        if self.cfg.packing:
            split = "train" if "train" in self.datasets else next(iter(self.datasets))  # (train=false: test alone)
            rows = self.datasets[split]
            real = pc.sum(rows.with_format("arrow")["length"]).as_py()  # (an Arrow sum: no list of a column)
            log.info("data.packing: %d texts in %d rows of %d tokens; %.2f%% of their positions are real tokens",
                     len(raw[split]), len(rows), self.cfg.max_length, 100 * real / (len(rows) * self.cfg.max_length))
        pages.release(pages.files_of(*raw.values(), *self.datasets.values()))

    def _setup_stream(self) -> None:
        """data.streaming=true: validation held out of the stream's start and prepared now; the training rows are
        made as the loader reads (streaming.py)."""
        validation, train, identity = streaming.open_stream(self.cfg, self.cache_dir)
        self._stream_identity = identity  # (a resume must read the same corpus: load_state_dict)
        self.raw = {"validation": validation}
        texts = streaming.tokenizer_texts(train, self.cfg.text_column, self.tokenizer_cfg.train_samples)
        self.tokenizer = get_tokenizer(self.tokenizer_cfg, texts, identity, self.cache_dir)
        self.collator = self._collator()
        encode = encoder_for(self.cfg, self.task, self.tokenizer, None)
        settings = fingerprint(self.tokenizer.to_str(), self.cfg.max_length, "packed", self.cfg.text_column)
        self.datasets = {"validation": validation.map(encode, batched=True, remove_columns=validation.column_names,
                                                      desc="tokenizing validation",
                                                      new_fingerprint=fingerprint(identity, settings)),
                         "train": streaming.rows(train, encode, self.cfg.text_column, self.seed,
                                                          self.cfg.shuffle_buffer)}
        log.info("data.streaming: %d held-out validation texts (%d rows); training rows are made as they are read",
                 len(validation), len(self.datasets["validation"]))

    @property
    def _keeps_empty(self) -> bool:
        return self.task.label_kind is not None and not self.task.words

    def _drop_empty(self, raw: dict[str, Dataset]) -> dict[str, Dataset]:
        """A corpus text or a sentence of labelled words that is empty (or reads as nothing: `tokenizer.blank`) has
        nothing to learn from (dropped, counted in the log). Empty texts of labelled data are kept: they are
        examples too (counted in a warning)."""
        if self._keeps_empty:
            return raw
        out = {}
        for split, ds in raw.items():
            column, files = self.cfg.text_column, pages.files_of(ds)
            out[split] = ds.filter(pages.releasing(files, lambda b: [
                not blank(t) if isinstance(t, str) or t is None else bool(t) for t in b[column]]),
                batched=True, desc=f"dropping empty texts of {split}")
            pages.release(files)
            if len(out[split]) < len(ds):
                log.info("dropped %d empty texts of the %s split", len(ds) - len(out[split]), split)
            if len(out[split]) == 0:
                raise DataError(f"every text of the {split} split of {describe(self.cfg)} is empty; "
                                f"check data.text_column")
        return out

    def _processes(self, ds: Dataset) -> int | None:
        """data.num_proc for `datasets.map`, or None (this process) for a split too small to share out."""
        n = self.cfg.num_proc
        return n if n and n > 1 and len(ds) >= 1000 * n else None

    def _warn_empty(self, ds: Dataset, split: str) -> None:
        missing = sum(blank(t) if t is None or isinstance(t, str) else not t
                      for t in pages.texts(ds, self.cfg.text_column))
        if missing:
            log.warning("%d texts of the %s split are empty or missing; they are kept as empty texts", missing, split)

    def _tokenizer(self, train: Dataset):
        columns = [c for c in (self.cfg.text_column, self.cfg.text_pair_column, *self.cfg.negative_columns) if c]
        as_line = (lambda words: " ".join(map(as_text, words))) if self.task.words else as_text
        tokenizer = get_tokenizer(self.tokenizer_cfg, lambda: (as_line(t) for c in columns for t in pages.texts(train, c)),
                                  train._fingerprint, self.cache_dir)
        if self.cfg.long_texts == "truncate" and not self.cfg.packing:  # (packing cuts long texts into rows itself)
            tokenizer.enable_truncation(self.cfg.max_length)
        return tokenizer

    def _warn_trimmed(self, validation: Dataset, texts: int = 2000) -> None:
        """A vocabulary cut to little training text turns most words of other text into [UNK]: say so, with the
        share of [UNK] among the validation text's tokens before and after the cut."""
        rows = validation.select(range(min(texts, len(validation))))[self.cfg.text_column]
        sample = [" ".join(map(as_text, t)) if self.task.words else as_text(t) for t in rows]
        full = load_tokenizer(self.tokenizer_cfg.path)

        def unknown(tok) -> float:
            ids = [i for e in tok.encode_batch(sample, add_special_tokens=False) for i in e.ids]
            unk = tok.token_to_id("[UNK]")
            return sum(i == unk for i in ids) / max(1, len(ids))

        after, before = unknown(self.tokenizer), unknown(full)
        if after - before > 0.02:
            log.warning("tokenizer.trim_to_data kept %d of the %d tokens: %.1f%% of the validation text's tokens are "
                        "now [UNK] (%.1f%% before); train on more text, or drop tokenizer.trim_to_data",
                        self.tokenizer.get_vocab_size(), full.get_vocab_size(), 100 * after, 100 * before)

    def _collator(self) -> Collator:
        tok = self.tokenizer
        pad = tok.token_to_id("[PAD]")
        if not self.cfg.mlm_probability:
            return Collator(pad_token_id=pad, pad_to_multiple_of=self.cfg.pad_to_multiple_of,
                            collate_labels=self.task.collate_labels)
        if tok.token_to_id("[MASK]") is None:
            raise DataError("masked-language modelling needs a [MASK] token; this tokenizer has none "
                            "(train one with tokenizer=wordpiece)")
        specials = [tok.token_to_id(t) for t in SPECIAL_TOKENS if t != "[UNK]"]
        return Collator(pad_token_id=pad, pad_to_multiple_of=self.cfg.pad_to_multiple_of,
                        mlm_probability=self.cfg.mlm_probability, mask_token_id=tok.token_to_id("[MASK]"),
                        special_token_ids=specials, vocab_size=tok.get_vocab_size(), seed=self.seed,
                        document_separator=tok.token_to_id("[SEP]") if self.cfg.document_attention else None)

    # ---- loaders ----------------------------------------------------------------------------
    def _loader(self, split: str, train: bool, shard: bool = True) -> DataLoader:
        ds = self.datasets[split]
        # We shard across processes ourselves (the trainer configs set use_distributed_sampler=false).
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer and shard else (1, 0)
        if train and self.cfg.streaming:
            loader = streaming.StreamLoader(ds.select_columns(["input_ids"]), rank, world,
                                            batch_size=self.cfg.batch_size, collate_fn=self.collator,
                                            num_workers=self.cfg.num_workers, pin_memory=self.cfg.pin_memory,
                                            processed=self._batches_processed)
            if self._resume_at:
                loader.load_state_dict(self._resume_at)
                self._resume_at = None
            return loader
        lengths = ds.with_format("arrow")["length"].to_numpy()  # 3M rows: 1 ms (a list of the column: 19 s)
        pages.release(pages.files_of(ds))  # (reading it mapped 64 KB around each of its 4,000 chunks: 300 MB at 2 GB)
        if train:  # our sampler for both modes: it is seeded per epoch and can resume mid-epoch
            sampler = LengthGroupedSampler(lengths, self.cfg.batch_size, mega=50 if self.cfg.group_by_length else 1,
                                           seed=self.seed, num_replicas=world, rank=rank,
                                           keys=self._text_keys(ds) if self.task.texts_apart else None)
            if self._resume_at:
                sampler.resume(self._resume_at["epoch"], self._resume_at["consumed"])
                self._resume_at = None
            loader, extra = ResumableLoader, {"processed": self._batches_processed}
        else:  # evaluation order does not matter: sort by length so batches carry no padding
            sampler = np.argsort(lengths, kind="stable").tolist()[rank::world]
            loader, extra = DataLoader, {}
        return loader(
            ds.with_format(columns=[c for c in ds.column_names if c.startswith("input_ids")
                                    or c in ("token_type_ids", "labels", *self.task.carries)]),
            batch_size=self.cfg.batch_size if train else self.cfg.eval_batch_size,
            sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.cfg.num_workers,
            pin_memory=self.cfg.pin_memory,
            persistent_workers=self.cfg.persistent_workers and self.cfg.num_workers > 0,
            # its own generator: creating an iterator must not draw from the global RNG (dropout's)
            generator=torch.Generator().manual_seed(self.seed),
            **extra,
        )

    @staticmethod
    def _text_keys(ds: Dataset) -> list[tuple[int, ...]]:
        """Each example's texts as numbers, the same for the same token ids: a batch of texts encoded apart must not
        hold one text twice (a repeated positive is a false negative), which the sampler sees by these."""
        columns = [c for c in ds.column_names if c.startswith("input_ids")]
        keys = []
        for batch in ds.select_columns(columns).iter(batch_size=1000):
            keys += [tuple(hash(tuple(ids)) for ids in texts) for texts in zip(*(batch[c] for c in columns))]
        return keys

    def _batches_processed(self) -> int:
        """Training batches of the current epoch done so far (what a checkpoint must skip on resume)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed if self.trainer else 0

    # Lightning hands a checkpoint's loader state to ResumableLoader.load_state_dict, except when
    # trainer.estimated_stepping_batches (our schedule's length) built the loader before the restore
    # (Lightning issue #20550). A datamodule's state is restored before any loader exists, so the
    # position travels here too (restoring it twice is harmless: resume() is idempotent).
    def state_dict(self) -> dict:
        loader = self.trainer.train_dataloader if self.trainer else None
        position = loader.state_dict() if isinstance(loader, (ResumableLoader, streaming.StreamLoader)) else {}
        return {**position, **self._order()} if position else {}

    def _order(self) -> dict:
        """What the data order a resume replays depends on: a resume with other values would not be the same run.
        A stream's batches also depend on how its files are shared out among the loader's workers, and on the
        corpus itself (its files' names, sizes and times)."""
        order = {"seed": self.seed, "data.batch_size": self.cfg.batch_size}
        if self.cfg.streaming:
            order.update({"data.num_workers": self.cfg.num_workers, "corpus": self._stream_identity})
        return order

    def load_state_dict(self, state: dict) -> None:
        state = {"data.batch_size" if k == "batch_size" else k: v for k, v in (state or {}).items()}  # (before 0.3)
        for name, ours in self._order().items():
            if name in state and state[name] != ours:
                if name == "corpus":
                    raise ConfigError("the stream's files changed since the checkpoint was written (their names, "
                                      "sizes or times): a resume would read other batches; resume on the corpus it "
                                      "trained on, or start a new run from its weights (model.init_from=<checkpoint>)")
                raise ConfigError(f"the checkpoint was trained with {name}={state[name]}; a resume cannot honour "
                                  f"{name}={ours} (the interrupted epoch's data order depends on it): resume with "
                                  f"{name}={state[name]}, or start a new run without ckpt_path")
        self._resume_at = {k: v for k, v in state.items() if k not in self._order()} or None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def head_dataloader(self) -> DataLoader:
        """Every training row once, in length order, on every process: what a task that fits its head on the training
        rows' embeddings reads (`Task.fit_head`: classification with task.loss.name=setfit)."""
        return self._loader("train", train=False, shard=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.datasets:
            raise DataError("this dataset has no test split; set data.splits.test")
        return self._loader("test", train=False)
