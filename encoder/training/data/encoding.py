"""From checked examples to token ids: one strategy per kind of input, chosen once per run.

- `words`: pre-split words with a label per word; the label goes on each word's first sub-token,
  -100 on the others (and on [CLS]/[SEP]), which losses and metrics skip.
- `chunks` (data.long_texts=chunk): a text longer than max_length becomes consecutive
  [CLS] piece [SEP] examples, so no token is lost (MLM corpora).
- `packed` (data.packing=true, task=mlm's default): the texts of a batch are joined into one stream, [SEP]
  between texts, and cut into rows of exactly max_length, [CLS] piece [SEP], as `run_mlm`'s `group_texts` and
  ModernBERT's packing do: a corpus of short documents fills its rows. No token is dropped; only the last row
  of each `datasets.map` batch (1,000 texts) may be shorter. Attention crosses the text boundaries.
- `pairs` (data.text_pair_column): [CLS] a [SEP] b [SEP] with token_type_ids 0 then 1; truncation takes
  tokens from the longer text first.
- `apart` (a task with `texts_apart`, task=contrastive): the text, its pair and each of data.negative_columns
  encoded on their own, [CLS] text [SEP] each: `input_ids`, `input_ids_1`, `input_ids_2`, ...
- `single`: [CLS] text [SEP], truncated to max_length.
Each returns the columns of the tokenized dataset: input_ids (and input_ids_<i> for texts apart), length (for
length-grouped batches: the longest of an example's texts), labels (when the task has labels), token_type_ids (pairs).
"""

from __future__ import annotations

from typing import Callable

from tokenizers import Tokenizer

from encoder.core.collate import first_subtokens
from encoder.tasks import Task
from encoder.core.tokenizer import as_text
from encoder.training.config import DataConfig


def encoder_for(cfg: DataConfig, task: Task, tokenizer: Tokenizer, mapping) -> Callable[[dict], dict]:
    """The `datasets.map(batched=True)` function for this run's data and task. Each example's label becomes
    `task.target(label, mapping)`; the columns the task added (`task.carries`) are copied to every row an
    example becomes."""
    if task.words:
        return lambda batch: _words(batch, cfg, tokenizer, mapping)
    strategy = _packed if cfg.packing else _chunks if cfg.long_texts == "chunk" else \
        _apart if task.texts_apart else _pairs if cfg.text_pair_column else _single
    label_column, carry = (cfg.label_column if task.label_kind else None), task.carries

    def encode(batch: dict) -> dict:
        texts = [as_text(t) for t in batch[cfg.text_column]]
        out, owner = strategy(texts, batch, cfg, tokenizer)  # owner[i]: the example row i came from
        out["length"] = [len(ids) for ids in out["input_ids"]]
        for column in (c for c in out if c.startswith("input_ids_")):  # texts apart: the longest of an example's
            out["length"] = [max(n, len(ids)) for n, ids in zip(out["length"], out[column])]
        if label_column:
            labels = batch[label_column]
            out["labels"] = [task.target(labels[i], mapping) for i in owner]
        for column in (c for c in carry if c in batch):
            out[column] = [batch[column][i] for i in owner]
        return out

    return encode


def _single(texts: list[str], batch: dict, cfg: DataConfig, tok: Tokenizer):
    return {"input_ids": [e.ids for e in tok.encode_batch(texts)]}, range(len(texts))


def _pairs(texts: list[str], batch: dict, cfg: DataConfig, tok: Tokenizer):
    encodings = tok.encode_batch(list(zip(texts, [as_text(t) for t in batch[cfg.text_pair_column]])))
    return {"input_ids": [e.ids for e in encodings], "token_type_ids": [e.type_ids for e in encodings]}, range(len(texts))


def _apart(texts: list[str], batch: dict, cfg: DataConfig, tok: Tokenizer):
    out = {"input_ids": [e.ids for e in tok.encode_batch(texts)]}
    for i, column in enumerate([cfg.text_pair_column, *cfg.negative_columns], 1):
        out[f"input_ids_{i}"] = [e.ids for e in tok.encode_batch([as_text(t) for t in batch[column]])]
    return out, range(len(texts))


def _chunks(texts: list[str], batch: dict, cfg: DataConfig, tok: Tokenizer):
    cls, sep, piece = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"), cfg.max_length - 2
    bare = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    owner = [i for i, b in enumerate(bare) for _ in range(max(1, -(-len(b) // piece)))]
    ids = [[cls, *b[k : k + piece], sep] for b in bare for k in range(0, max(1, len(b)), piece)]
    return {"input_ids": ids}, owner


def _packed(texts: list[str], batch: dict, cfg: DataConfig, tok: Tokenizer):
    cls, sep, piece = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"), cfg.max_length - 2
    stream = []
    for e in tok.encode_batch(texts, add_special_tokens=False):  # (a text of no tokens adds no [SEP] either)
        stream += [sep, *e.ids] if stream and e.ids else e.ids
    ids = [[cls, *stream[k : k + piece], sep] for k in range(0, len(stream), piece)]
    return {"input_ids": ids}, [0] * len(ids)  # (rows belong to no one text: packing has no labels to copy)


def _words(batch: dict, cfg: DataConfig, tok: Tokenizer, mapping) -> dict:
    encodings = tok.encode_batch([list(map(as_text, w)) for w in batch[cfg.text_column]], is_pretokenized=True)
    labels = []
    for e, tags in zip(encodings, batch[cfg.label_column]):
        first = dict(first_subtokens(e.word_ids))  # token position -> word index
        labels.append([mapping[tags[first[t]]] if t in first else -100 for t in range(len(e.ids))])
    ids = [e.ids for e in encodings]
    return {"input_ids": ids, "length": [len(i) for i in ids], "labels": labels}
