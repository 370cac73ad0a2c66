"""data.streaming=true: a corpus read as a stream (`datasets`' IterableDataset), never tokenized up front, for
corpora that should not be prepared before training starts or do not fit on disk (local files or the Hub).

    held-out validation: the first `data.max_eval_samples` texts (1,000 if unset), prepared like any split
    tokenizer: trained on the next `tokenizer.train_samples` texts (100,000 if unset), cached
    training rows: the rest, shuffled in a buffer of `data.shuffle_buffer` texts (seeded, another order each
                   pass), tokenized and packed on the fly by the DataLoader (its workers, if any), split between
                   DDP ranks (`split_dataset_by_node`), pass after pass without end
    length: `trainer.max_steps` (a stream has no length a schedule could be planned from)
    validation and last.ckpt: every 1,000 steps unless set (one endless epoch has no epoch end until it stops)

The loader never ends a pass on its own: each DDP rank reads its share of the corpus, and shares differ in
length (files of different sizes, rows packed per rank), so a rank whose loader ended would leave the others
waiting in a collective forever. One endless epoch, ended by max_steps, keeps every rank in step.

Resuming is exact: a checkpoint records how many batches were trained on, and the resumed loader reads them
again without training on them, so the run sees the same batches as one that never stopped (the order of each
pass is fixed by the seed and the pass number; the MLM masking is seeded by each batch's tokens). Reading them
again costs time, not correctness.
"""

from __future__ import annotations

import codecs
import itertools
import logging
import os
from pathlib import Path
from typing import Callable

from datasets import Dataset, IterableDataset, load_dataset
from datasets.distributed import split_dataset_by_node
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader

from encoder.core.errors import DataError
from encoder.core.tokenizer import as_text, blank, fingerprint
from encoder.training.config import DataConfig
from encoder.training.data.loading import data_files, describe, load_error, local_paths

log = logging.getLogger(__name__)
VALIDATION = 1_000  # held-out texts when data.max_eval_samples is unset
TOKENIZER_TEXTS = 100_000  # texts the tokenizer trains on when tokenizer.train_samples is unset
SHUFFLE_BUFFER = 10_000  # texts a stream is shuffled among when data.shuffle_buffer is unset
# a streamed run is one epoch that ends at max_steps, so "each epoch" is "when it stops": unless told otherwise it
# validates (trainer.val_check_interval) and writes last.ckpt (callbacks.last_checkpoint.every_n_train_steps)
# this often instead, and a run killed on day three keeps its last checkpoint (`intervals`)
EVERY_STEPS = 1_000


def intervals(cfg: DictConfig) -> None:
    """A streamed run validates and writes last.ckpt every streaming.EVERY_STEPS steps (or at max_steps, when that
    comes first), unless trainer.val_check_interval or callbacks.last_checkpoint.every_n_train_steps says otherwise."""
    steps = min(EVERY_STEPS, cfg.trainer.max_steps)
    said = []
    with open_dict(cfg):
        if cfg.trainer.get("val_check_interval") is None:  # (Lightning counts it in batches, not optimizer steps)
            cfg.trainer.val_check_interval = steps * (cfg.trainer.get("accumulate_grad_batches") or 1)
            cfg.trainer.check_val_every_n_epoch = None
            said.append("validates")
        last = cfg.callbacks.get("last_checkpoint")
        if last is not None and last.get("every_n_train_steps") is None:
            last.every_n_train_steps = steps
            said.append("writes last.ckpt")
    if said:
        log.info("data.streaming: the run %s every %d steps (trainer.val_check_interval, "
                 "callbacks.last_checkpoint.every_n_train_steps)", " and ".join(said), steps)


def open_stream(cfg: DataConfig, cache_dir: Path) -> tuple[Dataset, IterableDataset, str]:
    """(the held-out validation texts as a Dataset, the training stream of texts, an identity of the corpus
    for caches: its files' names, sizes and times, or its Hub name and revision)."""
    files = data_files(cfg, cache_dir)
    if cfg.path in ("text", "csv", "json"):
        check_utf8(local_paths(files))
    split = cfg.splits.get("train") or "train"
    try:
        stream = load_dataset(cfg.path, cfg.name, data_files=files, revision=cfg.revision, split=split,
                              streaming=True)
    except Exception as e:  # noqa: BLE001 - one line
        raise load_error(e, describe(cfg), cfg.path) from None
    stream = stream.select_columns([cfg.text_column])
    stream = stream.filter(lambda b: [not blank(t) for t in b[cfg.text_column]], batched=True)
    held = cfg.max_eval_samples or VALIDATION
    validation = Dataset.from_list(list(stream.take(held)))
    # Not `stream.skip(held)`: with DataLoader workers or DDP ranks, `datasets` shares a skip out between them,
    # and each skips part of its own files instead of the stream's first texts (validation texts trained on).
    held_out = set(validation[cfg.text_column])
    train = stream.filter(lambda b: [t not in held_out for t in b[cfg.text_column]], batched=True)
    if cfg.max_train_samples:
        train = train.take(cfg.max_train_samples)
    return validation, train, fingerprint(describe(cfg), cfg.revision, _identity(files), held, cfg.max_train_samples)


def _identity(files) -> list:
    """The local files' names, sizes and modification times (a changed corpus is a new one; a Hub stream has
    no local files)."""
    return [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in local_paths(files)]


def check_utf8(paths: list[str]) -> None:
    """Every byte of the local text files is UTF-8, or a DataError line naming the file and the byte: read up front
    (1.4 s per GB from the page cache here), where a stream would otherwise fail hours into a run, naming no file."""
    for path in paths:
        decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 24)
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as e:
                    raise DataError(f"{path} is not valid UTF-8 (byte {offset + e.start}); re-encode it as UTF-8, "
                                    f"e.g. iconv -f latin1 -t utf-8") from None
                if not chunk:
                    break
                offset += len(chunk)


def tokenizer_texts(train: IterableDataset, column: str, count: int | None) -> Callable:
    """The function a tokenizer trains from: the first `count` training texts, read afresh each call."""
    return lambda: (as_text(row[column]) for row in train.take(count or TOKENIZER_TEXTS))


def rows(train: IterableDataset, encode: Callable[[dict], dict], column: str, seed: int,
         shuffle_buffer: int | None) -> IterableDataset:
    """Token-id rows, made on the fly as the loader reads (in its workers, if any), from the training texts
    shuffled in a buffer (0: in the files' order). The shuffle comes before packing, so a row mixes documents
    from all over the buffer, and `set_epoch` gives each pass another order."""
    buffer = SHUFFLE_BUFFER if shuffle_buffer is None else shuffle_buffer
    if buffer:
        train = train.shuffle(seed=seed, buffer_size=buffer)
    return train.map(encode, batched=True, batch_size=1000, remove_columns=[column])


class StreamLoader(DataLoader):
    """The training DataLoader over a stream: pass after pass without end (`set_epoch(pass)` before each), so
    the run ends at max_steps on every rank at once. Its state is the batches trained on (`processed()`); a
    resumed loader reads those again and trains from the next one."""

    def __init__(self, stream: IterableDataset, rank: int, world: int, *args, processed: Callable[[], int],
                 **kwargs):
        super().__init__(split_dataset_by_node(stream, rank=rank, world_size=world) if world > 1 else stream,
                         *args, **kwargs)
        self._processed, self._skip = processed, 0

    def state_dict(self) -> dict:
        return {"batches": self._processed()}

    def load_state_dict(self, state: dict) -> None:
        self._skip = state.get("batches", 0)  # (idempotent: Lightning and the data module may both hand it over)

    def __iter__(self):
        skip, self._skip = self._skip, 0
        if skip:
            log.info("resuming a stream: reading the %d batches already trained on again, without training", skip)
        for epoch in itertools.count():
            self.dataset.set_epoch(epoch)
            read = 0
            for read, batch in enumerate(super().__iter__(), 1):
                if skip:
                    skip -= 1
                    continue
                yield batch
            if not read:
                raise DataError("the training stream gave no rows: it holds no text beyond the held-out "
                                "validation (data.max_eval_samples) or this rank's share is empty")
