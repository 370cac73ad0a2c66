"""Token classification (task=token_classification): word labels aligned to sub-tokens, seqeval-style
entity scores, and a real run on a small local file in the Hub's CoNLL format."""

import json
import random
import subprocess
import sys

import pytest
import torch

import encoder
from conftest import TINY, compose
from encoder.core.errors import DataError
from encoder.training.data.datamodule import TextDataModule
from encoder.core.entity_f1 import EntityF1, entities

CONLL = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]  # the Hub's order


def test_entities_are_counted_as_seqeval_does():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert entities(["O", "I-ORG", "I-ORG", "B-ORG"]) == {("ORG", 1, 3), ("ORG", 3, 4)}  # I- after O starts one
    assert entities(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}  # a type change starts one
    metric = EntityF1(CONLL)
    ids = {n: i for i, n in enumerate(CONLL)}
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]  # 2 of 3 predicted entities right, 2 of 3 found
    to_ids = lambda rows: torch.tensor([[ids[t] for t in r] + [-100] * (4 - len(r)) for r in rows])  # noqa: E731
    metric.update(to_ids(pred), to_ids(true))
    scores = metric.compute()
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)


def write_conll(path, n=160, seed=0):
    """Sentences in the Hub's CoNLL format: {"tokens": [...], "ner_tags": [class ids]}."""
    rnd = random.Random(seed)
    people, orgs, places = ["John Smith", "Maria", "Ahmed Khan"], ["Acme Corp", "Reuters"], ["Paris", "New York"]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            parts = [(rnd.choice(people), "PER"), ("works", None), ("for", None), (rnd.choice(orgs), "ORG"),
                     ("in", None), (rnd.choice(places), "LOC"), (".", None)]
            tokens, tags = [], []
            for text, kind in parts:
                for k, word in enumerate(text.split()):
                    tokens.append(word)
                    tags.append(CONLL.index(f"{'B' if k == 0 else 'I'}-{kind}") if kind else 0)
            f.write(json.dumps({"tokens": tokens, "ner_tags": tags}) + "\n")
    return str(path)


def test_each_word_label_sits_on_its_first_sub_token(tmp_path):
    path = write_conll(tmp_path / "train.jsonl")
    dm = TextDataModule(path="json", data_files={"train": path, "validation": path}, text_column="tokens",
                        label_column="ner_tags",
                        task="token_classification", label_names=CONLL, max_length=32, cache_dir=str(tmp_path / "c"),
                        tokenizer={"vocab_size": 60, "min_frequency": 1})  # tiny vocabulary: words split up
    dm.setup()
    row = dm.datasets["train"][0]
    tok = dm.tokenizer
    encoding = tok.encode(json.loads(open(path).readline())["tokens"], is_pretokenized=True)
    tags = json.loads(open(path).readline())["ner_tags"]
    assert len(encoding.ids) > len(tags) + 2  # some words became several sub-tokens
    previous = None
    for position, word in enumerate(encoding.word_ids):
        expected = -100 if word is None or word == previous else tags[word]
        assert row["labels"][position] == expected
        previous = word
    batch = dm.collator([dm.datasets["train"][i] for i in range(3)])
    assert batch["labels"].shape == batch["input_ids"].shape and (batch["labels"][batch["padding_mask"]] == -100).all()


def test_a_sentence_whose_labels_do_not_match_its_words_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"tokens": ["a", "b"], "ner_tags": [0, 0]}\n{"tokens": ["a", "b", "c"], "ner_tags": [0]}\n')
    dm = TextDataModule(path="json", data_files={"train": str(path)}, text_column="tokens", label_column="ner_tags",
                        task="token_classification", label_names=CONLL, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="the train split has a sentence \\('a b c'\\) with 3 words in 'tokens' but 1 labels"):
        dm.setup()


def test_token_classification_trains_scores_entities_and_tags_words(tmp_path):
    import train

    files = {s: write_conll(tmp_path / f"{s}.jsonl", seed=i) for i, s in enumerate(("train", "validation", "test"))}
    overrides = ["task=token_classification", *TINY, "data=local_files", "data.path=json",
                 *(f"data.data_files.{s}={p}" for s, p in files.items()), f"data.label_names=[{','.join(CONLL)}]",
                 "tokenizer.vocab_size=200", "tokenizer.min_frequency=1", "trainer.max_epochs=3", "optim.lr=3e-3"]
    out = tmp_path / "run"
    metrics = train.train(compose(overrides, out))
    for key in ("test/acc", "test/f1", "test/precision", "test/recall", "best_val/f1"):
        assert key in metrics, key
    assert metrics["test/acc"] > 0.6  # the templates are easy: well above always-"O" (~0.4 of words)
    # entities are scored as wholes: found at all (always-"O" scores 0), and F1 is their precision and recall's
    p, r = metrics["test/precision"], metrics["test/recall"]
    assert metrics["test/f1"] > 0.3 and metrics["test/f1"] == pytest.approx(2 * p * r / (p + r), abs=1e-4)
    best = next((out / "checkpoints").glob("best-epoch*-f1*.ckpt"))
    assert torch.load(best, weights_only=True)["hyper_parameters"]["task"] == "token_classification"
    predictor = encoder.load_model(best)
    result = predictor.predict(["Maria works for Reuters in Paris .", ["Ahmed", "Khan"], ""])
    assert result[0]["words"] == ["Maria", "works", "for", "Reuters", "in", "Paris", "."]
    assert len(result[0]["tags"]) == 7 and set(result[0]["tags"]) <= set(CONLL)
    assert len(result[1]["tags"]) == 2 and result[2] == {"words": [], "tags": []}
    done = subprocess.run([sys.executable, "-m", "encoder.predict", str(best), "John Smith works in Paris"],
                          capture_output=True, text=True, check=True)
    assert len(json.loads(done.stdout)["tags"]) == 5
