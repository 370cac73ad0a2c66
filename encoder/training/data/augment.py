"""distill.augment: variants of the training texts for a teacher to label (Tang et al. 2019, "Distilling
task-specific knowledge from BERT into simple neural networks"), by rules that need no external resource, applied
word by word. encoder/training/data/teacher.py writes them once to the cache and has the teacher label them."""

from __future__ import annotations

import random

P_MASK, P_SWAP, P_NGRAM = 0.1, 0.1, 0.25


def augment(texts: list[str], n: int, seed: int) -> list[str]:
    """`n` variants of each text: each word masked ([MASK]) with probability P_MASK, or with P_SWAP replaced by
    a word of the same kind (one that follows the same word somewhere in `texts`, as Tang et al. replace by
    part of speech), then with P_NGRAM only an n-gram of 1-5 words of the result kept. Deterministic for a seed."""
    rng = random.Random(seed)
    followers: dict[str, list[str]] = {}
    for text in texts:
        words = text.split()
        for before, word in zip(["<s>", *words], words):
            followers.setdefault(before.lower(), []).append(word)
    out = []
    for text in texts:
        words = text.split()
        for _ in range(n if words else 0):
            new = []
            for before, word in zip(["<s>", *words], words):
                draw = rng.random()
                if draw < P_MASK:
                    new.append("[MASK]")
                elif draw < P_MASK + P_SWAP:
                    new.append(rng.choice(followers[before.lower()]))
                else:
                    new.append(word)
            if rng.random() < P_NGRAM:
                size = rng.randint(1, min(5, len(new)))
                start = rng.randint(0, len(new) - size)
                new = new[start : start + size]
            out.append(" ".join(new))
    return out
