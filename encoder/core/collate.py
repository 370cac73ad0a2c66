"""Batching: the collator, the only place a padding mask is built (training and predict share it)."""

from __future__ import annotations

import zlib
from typing import Callable

import torch


class Collator:
    """Pads `input_ids` to the longest sequence in the batch, rounded up to a multiple of 8.

    Returns `input_ids` [B, S] (long), `padding_mask` [B, S] (bool, True = padding: what
    `nn.MultiheadAttention(key_padding_mask=...)` expects), `labels` when present (as the task's
    `collate_labels` batches them: [B] class ids, floats for regression, [B, S] labels per token with
    -100 at padding, ...), and `token_type_ids` [B, S] for sentence pairs. Texts encoded apart (`input_ids_1`,
    `input_ids_2`, ...: a positive and hard negatives) are padded apart, each with its `padding_mask_<i>`.

    With `mlm_probability` > 0 (masked-language modelling) it also masks, as BERT does: that share
    of the real, non-special tokens is selected (at least one per batch); of those 80% become
    [MASK], 10% a random token, 10% stay. `labels` [B, S] then holds the original token at selected
    positions and -100 elsewhere. The random draws are seeded by `seed` and the batch's own tokens,
    so a batch is masked the same way in any process, worker or resumed run, and differently when
    the sampler groups examples differently (every epoch).

    With `document_separator` (data.document_attention: packed rows of several documents joined by
    that token) it also returns `documents` [B, S]: the index of the document each token belongs to
    within its row (a separator closes its own document), from which the encoder keeps attention and
    positions within each document.
    """

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of: int = 8, mlm_probability: float = 0.0,
                 mask_token_id: int | None = None, special_token_ids: list[int] | None = None,
                 vocab_size: int | None = None, seed: int = 0,
                 collate_labels: Callable[[list, int], torch.Tensor] | None = None,
                 document_separator: int | None = None):
        self.pad_token_id = pad_token_id
        self.collate_labels = collate_labels or (lambda targets, length: torch.as_tensor(targets))  # Task.collate_labels
        self.pad_to_multiple_of = pad_to_multiple_of
        self.mlm_probability = mlm_probability
        self.mask_token_id, self.vocab_size, self.seed = mask_token_id, vocab_size, seed
        self.special_token_ids = torch.as_tensor(special_token_ids or [], dtype=torch.long)
        self.document_separator = document_separator

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, padding_mask = self.pad([e["input_ids"] for e in examples])
        seq, lengths = input_ids.shape[1], [len(e["input_ids"]) for e in examples]
        batch = {"input_ids": input_ids, "padding_mask": padding_mask}
        for key in [k for k in examples[0] if k.startswith("input_ids_")]:  # texts encoded apart: padded apart
            suffix = key.removeprefix("input_ids")
            batch[key], batch[f"padding_mask{suffix}"] = self.pad([e[key] for e in examples])
        if "token_type_ids" in examples[0]:  # sentence pairs: segment 0 then 1; padding gets 0
            batch["token_type_ids"] = torch.zeros_like(input_ids)
            for i, e in enumerate(examples):
                batch["token_type_ids"][i, : lengths[i]] = torch.as_tensor(e["token_type_ids"], dtype=torch.long)
        if self.document_separator is not None:  # (from the ids before masking, which may draw a separator's id)
            ends = (input_ids == self.document_separator).long()
            batch["documents"] = ends.cumsum(1) - ends
        if self.mlm_probability > 0:
            batch["input_ids"], batch["labels"] = self.mask(input_ids, padding_mask)
        elif "labels" in examples[0]:
            batch["labels"] = self.collate_labels([e["labels"] for e in examples], seq)
        for key in examples[0].keys() - {"input_ids", "token_type_ids", "labels"} - batch.keys():  # a teacher's outputs
            batch[key] = torch.as_tensor([e[key] for e in examples])
        return batch

    def pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids [B, S], padding_mask [B, S]) of token-id sequences, S rounded up to the multiple."""
        lengths = [len(ids) for ids in sequences]
        if min(lengths) == 0:
            raise ValueError("an example has no tokens; every sequence needs at least its [CLS] token")
        m = self.pad_to_multiple_of
        seq = -(-max(lengths) // m) * m
        input_ids = torch.full((len(sequences), seq), self.pad_token_id, dtype=torch.long)
        padding_mask = torch.ones((len(sequences), seq), dtype=torch.bool)
        for i, ids in enumerate(sequences):
            input_ids[i, : lengths[i]] = torch.as_tensor(ids, dtype=torch.long)
            padding_mask[i, : lengths[i]] = False
        return input_ids, padding_mask

    def mask(self, input_ids: torch.Tensor, padding_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(input_ids.numpy().tobytes()))
        maskable = ~padding_mask & ~torch.isin(input_ids, self.special_token_ids)
        selected = (torch.rand(input_ids.shape, generator=g) < self.mlm_probability) & maskable
        if not selected.any() and maskable.any():  # tiny batches: still one token to learn from
            candidates = maskable.flatten().nonzero().squeeze(1)
            selected.view(-1)[candidates[torch.randint(len(candidates), (1,), generator=g)]] = True
        labels = input_ids.masked_fill(~selected, -100)
        roll = torch.rand(input_ids.shape, generator=g)
        random_ids = torch.randint(self.vocab_size, input_ids.shape, generator=g)
        masked = input_ids.masked_fill(selected & (roll < 0.8), self.mask_token_id)
        masked = torch.where(selected & (roll >= 0.8) & (roll < 0.9), random_ids, masked)
        return masked, labels


def first_subtokens(word_ids: list) -> list[tuple[int, int]]:
    """(token position, word index) of the first sub-token of each word, from an Encoding's word_ids."""
    out, previous = [], None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            out.append((position, word))
        previous = word
    return out
