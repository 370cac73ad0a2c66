"""Helpers shared by the benchmarks: real data batches, alternating timers, a measured FLOP/s peak."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder.training.data.datamodule import TextDataModule  # noqa: E402
from machine import machine  # noqa: E402,F401  (every benchmark prints it first)
from encoder.core.model import AttentionConfig, EncoderLayer, ModelConfig  # noqa: E402

SIZES = {  # the configs/model/*.yaml dimensions
    "small": dict(embed_dim=256, num_layers=4, ffn_dim=1024, attention=AttentionConfig(num_heads=4, dropout=0.1)),
    "base": dict(embed_dim=768, num_layers=12, ffn_dim=3072, attention=AttentionConfig(num_heads=12, dropout=0.1)),
}


def default_data(max_length: int = 128, **kwargs) -> TextDataModule:
    """The default dataset (offline Rotten Tomatoes), tokenized with the default tokenizer (cached)."""
    dm = TextDataModule(source="rotten_tomatoes_critics", label_names=["rotten", "fresh"], max_length=max_length,
                        tokenizer={"kind": "wordpiece", "vocab_size": 8192, "min_frequency": 2, "lowercase": True},
                        **kwargs)
    dm.setup()
    return dm


def model_config(size: str, vocab_size: int, **overrides) -> ModelConfig:
    """BERT's recipe at a given size: post-LN, GELU, learned positions, [CLS] + pooler, attention dropout 0.1."""
    return ModelConfig(vocab_size=vocab_size, **{"pooling": "cls", "pooler": True, **SIZES[size], **overrides})


def random_batches(dm: TextDataModule, batch_size: int, count: int, seed: int = 0) -> list[dict]:
    """Batches of randomly drawn training examples (mixed lengths), padded by our collator."""
    ds = dm.datasets["train"].with_format(columns=["input_ids", "labels"])
    g = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(ds), generator=g)[: batch_size * count].tolist()
    return [dm.collator([ds[i] for i in picks[s : s + batch_size]]) for s in range(0, len(picks), batch_size)]


def full_batches(batch_size: int, length: int, count: int, vocab_size: int) -> list[dict]:
    """Batches with no padding at all."""
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(5, vocab_size, (batch_size, length), generator=g),
             "padding_mask": torch.zeros(batch_size, length, dtype=torch.bool),
             "labels": torch.randint(0, 2, (batch_size,), generator=g)} for _ in range(count)]


def real_tokens(batches: list[dict]) -> int:
    return sum(int((~b["padding_mask"]).sum()) for b in batches)


def alternate(contenders: dict, pairs: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each contender's callable in turn (A B C A B C ...), `pairs` rounds after warm-up."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in contenders}
    for _ in range(pairs):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict, slow: str, fast: str) -> float:
    """Median over rounds of slow/fast time: > 1 means `fast` is faster."""
    return statistics.median(s / f for s, f in zip(times[slow], times[fast]))


def spread(times: dict, slow: str, fast: str) -> str:
    """The per-round slow/fast ratios' range, printed beside a median ratio: " (3 rounds: 1.27-1.33x)"."""
    ratios = [s / f for s, f in zip(times[slow], times[fast])]
    return f" ({len(ratios)} round{'s' if len(ratios) > 1 else ''}: {min(ratios):.2f}-{max(ratios):.2f}x)"


def peak_flops_fp32(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large fp32 matmul on this machine: the denominator of model FLOPs utilisation."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))  # best of several: the least disturbed
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flops_per_token(cfg: ModelConfig, context: float) -> float:
    """Training FLOPs per token: 6N (N = non-embedding parameters) + 12 * layers * dim * context."""
    d, f, layers = cfg.embed_dim, cfg.ffn_dim, cfg.num_layers
    attention = 4 * d * d + (4 * d if cfg.attention.bias else 0)
    units = 2 * f if cfg.ffn == "gated" else f  # a gated feed-forward's first layer is twice as wide
    ffn = d * units + f * d + ((units + d) if cfg.bias else 0)
    norms = 2 * (2 * d if cfg.norm == "layernorm" and cfg.bias else d)
    return 6 * layers * (attention + ffn + norms) + 12 * layers * d * context


class NaiveLayer(EncoderLayer):
    """The seed-style layer: padded everywhere and `need_weights=True` (attention maps computed,
    averaged over heads and returned, which forces the unfused math path)."""

    def attention(self, x, padding_mask, index, blocked=None, rotary=None, offsets=None):
        return self.attn(x, x, x, key_padding_mask=padding_mask, attn_mask=blocked, need_weights=True)[0]
