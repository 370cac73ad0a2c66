import csv
import os
import random
import sys
import json
import re

import pytest

from conftest import compose
from encoder.core.errors import ConfigError, DataError
from encoder.training.data.datamodule import TextDataModule
from encoder.training.data.sources import rotten_tomatoes_critics, split_of

TOK = {"kind": "wordpiece", "vocab_size": 300, "min_frequency": 1, "lowercase": True}


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def module(tmp_path, **kwargs):
    values = dict(tokenizer=TOK, cache_dir=str(tmp_path / "cache"), max_length=16, batch_size=4)
    return TextDataModule(**{**values, **kwargs})


SENTENCES = [("a gorgeous, witty, seductive movie", "pos"), ("dull and lifeless", "neg"), ("a joy to watch", "pos"),
             ("tedious, overlong and flat", "neg"), ("sharp and funny", "pos"), ("a mess", "neg")] * 4


def test_offline_default_dataset_is_real_and_split_stably(rt_files):
    sizes = {}
    for split, path in rt_files.items():
        with open(path, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        sizes[split] = len(rows)
        assert {r["label"] for r in rows} == {"fresh", "rotten"}
        assert all(r["text"].strip() for r in rows)
        assert all(split_of(r["text"]) == split for r in rows[:200])  # the split is a function of the text
    # 12,808 labelled snippets minus the empty ones, split by text hash: identical on every machine
    assert sizes == {"train": 10213, "validation": 1264, "test": 1331}
    assert rotten_tomatoes_critics() == rt_files  # cached: the second call reuses the files


def test_the_english_corpus_is_general_text_without_the_texts_we_evaluate_on():
    """data=english_corpus: dictionaries, glosses, cookies, Bibles and the Rotten Tomatoes corpus, read out of their
    packages, markup-free, and no text of it shares 8 consecutive words with an evaluation text: the Bible verses
    and WordNet senses retrieval is measured on, the default data's held-out snippets, vader's."""
    from encoder.training.data.sources import _evaluation_texts, default_cache_dir, english_corpus

    csv.field_size_limit(1 << 24)  # (a Bible chapter is a long field)
    with open(english_corpus()["train"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts: dict[str, list[str]] = {}
    for row in rows:
        texts.setdefault(row["source"], []).append(row["text"])
    sizes = {source: len(t) for source, t in texts.items()}
    assert sizes["gcide"] > 120_000 and sizes["wordnet"] > 110_000 and sizes["fortunes"] > 14_000, sizes
    assert sizes["devil"] > 900 and sizes["kjv"] > 1_100 and sizes["web"] > 1_100 and sizes["rotten_tomatoes"] > 10_000
    assert 7_000_000 < sum(len(r["text"].split()) for r in rows) < 8_500_000
    assert "ABSURDITY, n. A statement or belief manifestly inconsistent with one's own opinion." in texts["devil"]
    assert not any("[1913 Webster]" in t or "\\" in t or "{" in t for t in texts["gcide"])  # (dictd markup)
    # every evaluation text of 8 words or more: none of its 8-word runs is in the corpus (a sample, independently)
    words = lambda text: " ".join(re.findall(r"[a-z0-9]+", text.lower()))  # noqa: E731
    corpus = "\n".join(" " + words(r["text"]) + " " for r in rows)
    evaluation = [w.split() for w in map(words, _evaluation_texts(default_cache_dir())) if len(w.split()) >= 8]
    random.Random(0).shuffle(evaluation)
    leaked = [" ".join(w[i : i + 8]) for w in evaluation[:400] for i in (0, len(w) - 8)
              if f" {' '.join(w[i : i + 8])} " in corpus]
    assert not leaked, leaked[:3]


def test_local_csv_string_labels_become_ids_and_validation_is_carved(tmp_path):
    dm = module(tmp_path, data_files={"train": write_csv(tmp_path / "train.csv", SENTENCES)})
    dm.setup()
    assert dm.label_names == ["neg", "pos"]
    assert set(dm.datasets) == {"train", "validation"}
    assert len(dm.datasets["train"]) + len(dm.datasets["validation"]) == len(SENTENCES)
    example = dm.datasets["train"][0]
    assert example["input_ids"][0] == dm.tokenizer.token_to_id("[CLS]")
    assert example["labels"] in (0, 1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["padding_mask"].dtype.is_floating_point is False


def test_a_carved_validation_split_is_seeded_and_both_parts_keep_the_file_order(tmp_path):
    # in the file's order, not shuffled: a corpus read through a shuffled view is read at random, every page of
    # it kept in memory (or read from disk again and again when memory is short)
    rows = [(f"review number {i}", "pos" if i % 2 else "neg") for i in range(200)]
    path = write_csv(tmp_path / "train.csv", rows)
    parts = []
    for seed in (0, 0, 1):
        dm = module(tmp_path, data_files={"train": path}, val_fraction=0.1, seed=seed)
        dm.setup()
        parts.append({split: [int(t.split()[-1]) for t in dm.raw[split]["text"]] for split in ("train", "validation")})
    train, validation = parts[0]["train"], parts[0]["validation"]
    assert len(validation) == 20 and sorted(train + validation) == list(range(200))
    assert train == sorted(train) and validation == sorted(validation)  # each in the file's order
    assert validation != list(range(180, 200)) and parts[1] == parts[0] and parts[2] != parts[0]  # seeded
    # at most data.max_eval_samples: what validation would not read of a bigger share stays in training
    dm = module(tmp_path, data_files={"train": path}, val_fraction=0.1, max_eval_samples=5)
    dm.setup()
    assert len(dm.raw["validation"]) == 5 and len(dm.raw["train"]) == 195


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_local_json_and_parquet_files(tmp_path, fmt):
    from datasets import Dataset

    ds = Dataset.from_dict({"review": [t for t, _ in SENTENCES], "stars": [int(y == "pos") for _, y in SENTENCES]})
    path = tmp_path / f"train.{fmt}"
    ds.to_json(path) if fmt == "json" else ds.to_parquet(path)
    dm = module(tmp_path, path=fmt, data_files={"train": str(path), "test": str(path)},
                text_column="review", label_column="stars", label_names=["bad", "good"])
    dm.setup()
    assert dm.label_names == ["bad", "good"] and len(dm.datasets["test"]) == len(SENTENCES)


def test_missing_text_column_lists_the_columns_that_exist(tmp_path):
    dm = module(tmp_path, data_files={"train": write_csv(tmp_path / "t.csv", SENTENCES)}, text_column="sentence")
    with pytest.raises(DataError, match=r"data.text_column='sentence' is not a column of the train split; "
                                        r"its columns are \['text', 'label'\]"):
        dm.setup()


def test_missing_label_column_is_named(tmp_path):
    dm = module(tmp_path, data_files={"train": write_csv(tmp_path / "t.csv", SENTENCES)}, label_column="stars")
    with pytest.raises(DataError, match=r"data.label_column='stars' is not a column"):
        dm.setup()


def test_empty_split_is_refused(tmp_path):
    files = {"train": write_csv(tmp_path / "t.csv", SENTENCES), "test": write_csv(tmp_path / "e.csv", [])}
    with pytest.raises(DataError, match=r"the test split of .* is empty"):
        module(tmp_path, data_files=files).setup()


def test_label_outside_the_configured_label_set_is_refused(tmp_path):
    rows = SENTENCES + [("who knows", "meh")]
    dm = module(tmp_path, data_files={"train": write_csv(tmp_path / "t.csv", rows)}, label_names=["neg", "pos"])
    with pytest.raises(DataError, match=r"the train split has labels 'meh' outside the label set \['neg', 'pos'\]"):
        dm.setup()


def test_missing_split_and_missing_files_are_named(tmp_path):
    files = {"train": write_csv(tmp_path / "t.csv", SENTENCES)}
    with pytest.raises(DataError, match=r"data.data_files has no split 'dev' \(it has \['train'\]\); set data.splits.test"):
        module(tmp_path, data_files=files, splits={"test": "dev"}).setup()
    with pytest.raises(DataError, match=r"data.path=csv needs files"):
        module(tmp_path).setup()


def test_empty_whitespace_unicode_and_very_long_texts_are_tokenized_and_truncated(tmp_path):
    odd = [("", "neg"), ("   \t ", "pos"), ("🎬🍿 très bien — 非常好 😀", "pos"), ("word " * 50_000, "neg"),
           ("\u200b\u0000zero-width and nul", "neg")]
    dm = module(tmp_path, data_files={"train": write_csv(tmp_path / "t.csv", SENTENCES + odd)})
    dm.setup()
    lengths = [len(x) for split in ("train", "validation") for x in dm.datasets[split]["input_ids"]]
    assert max(lengths) == 16 and min(lengths) >= 2  # truncated to max_length; [CLS] [SEP] at least
    for batch in dm.train_dataloader():
        assert not batch["padding_mask"].all(1).any()


def test_tokenizer_is_trained_once_and_cached(tmp_path):
    files = {"train": write_csv(tmp_path / "t.csv", SENTENCES)}
    first = module(tmp_path, data_files=files)
    first.setup()
    cached = list((tmp_path / "cache" / "tokenizers").glob("*.json"))
    assert len(cached) == 1
    second = module(tmp_path, data_files=files)
    second.setup()
    assert second.tokenizer.to_str() == first.tokenizer.to_str()
    assert len(list((tmp_path / "cache" / "tokenizers").glob("*.json"))) == 1


def test_a_tokenizer_from_the_first_n_texts_equals_one_trained_on_them_alone(tmp_path, rt_files):
    """tokenizer.train_samples (a corpus of GBs): the same tokenizer as training on the first N training texts
    written to a file of their own; cached apart from the one trained on every text."""
    from encoder.core.tokenizer import train_tokenizer

    settings = {"vocab_size": 2000, "min_frequency": 2}
    dm = TextDataModule(task="mlm", source="rotten_tomatoes_corpus", label_column=None, cache_dir=str(tmp_path / "c"),
                        max_length=64, tokenizer={**settings, "train_samples": 500})
    dm.setup()
    expected = train_tokenizer(dm.raw["train"]["text"][:500], **settings)
    expected.enable_truncation(64)  # (what the data module sets for data.max_length)
    assert dm.tokenizer.to_str() == expected.to_str()
    everything = TextDataModule(task="mlm", source="rotten_tomatoes_corpus", label_column=None, max_length=64,
                                cache_dir=str(tmp_path / "c"), tokenizer=settings)
    everything.setup()
    assert everything.tokenizer.to_str() != dm.tokenizer.to_str()
    assert len(list((tmp_path / "c" / "tokenizers").glob("*.json"))) == 2
    with pytest.raises(ConfigError, match="tokenizer.train_samples=0 must be a positive number"):
        TextDataModule(task="mlm", tokenizer={"train_samples": 0})


def test_existing_tokenizer_json_is_used_as_is(tmp_path):
    files = {"train": write_csv(tmp_path / "t.csv", SENTENCES)}
    first = module(tmp_path, data_files=files)
    first.setup()
    first.tokenizer.save(str(tmp_path / "tokenizer.json"))
    dm = module(tmp_path, data_files=files, splits={"test": None}, tokenizer={"path": str(tmp_path)})
    dm.setup()
    assert dm.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    with pytest.raises(FileNotFoundError, match="set tokenizer.path"):
        module(tmp_path, data_files=files, tokenizer={"path": str(tmp_path / "nope.json")}).setup()


def test_jsonl_with_int_labels_without_names(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": i % 3}) for i, (t, _) in enumerate(SENTENCES)))
    dm = module(tmp_path, path="json", data_files={"train": str(path)})
    dm.setup()
    assert dm.label_names == ["0", "1", "2"]


def test_corpus_long_texts_are_chunked_not_truncated_and_empty_texts_dropped(tmp_path):
    words = " ".join(f"word{i % 37} story{i % 11}" for i in range(300))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"a short line\n\n{words}\n   \nthe end\n", encoding="utf-8")
    dm = module(tmp_path, path="text", data_files={"train": str(corpus), "validation": str(corpus)},
                task="mlm", long_texts="chunk", mlm_probability=0.15)
    dm.setup()
    assert dm.label_names is None
    rows = dm.datasets["train"]["input_ids"]
    tok = dm.tokenizer
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert all(len(r) <= 16 and r[0] == cls and r[-1] == sep for r in rows)
    # every token of every non-empty line is kept, in order, across its chunks
    expected = [t for line in ("a short line", words, "the end")
                for t in tok.encode(line, add_special_tokens=False).ids]
    assert [t for r in rows for t in r[1:-1]] == expected
    assert len(rows) == 2 + -(-len(tok.encode(words, add_special_tokens=False).ids) // 14)
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].shape == batch["input_ids"].shape  # masked-LM labels, per token


def test_texts_that_read_as_nothing_are_dropped_from_a_corpus_and_counted(tmp_path, caplog):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a first text\n\u200b\u200b\n\x00\ufeff\nthe second text\n\u00ad\n", encoding="utf-8")
    caplog.set_level("INFO")
    dm = module(tmp_path, path="text", data_files={"train": str(corpus), "validation": str(corpus)},
                task="mlm", packing=True, mlm_probability=0.15, max_length=32)
    dm.setup()
    assert "dropped 3 empty texts of the train split" in caplog.text
    sep = dm.tokenizer.token_to_id("[SEP]")
    row = dm.datasets["train"]["input_ids"][0]
    assert row.count(sep) == 2 and [sep, sep] not in [row[i : i + 2] for i in range(len(row) - 1)]
    from encoder.core.tokenizer import blank

    assert blank(None) and blank(" \t\u200b\ufeff") and not blank("\u200bword") and not blank("é")


def test_packing_keeps_every_token_once_in_order_in_full_rows_with_sep_between_texts(tmp_path, caplog):
    lines = [f"line {i} " + " ".join(f"word{(i * j) % 41}" for j in range(i % 23)) for i in range(2500)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n\n", encoding="utf-8")  # (an empty text is dropped, as for chunks)
    caplog.set_level("INFO")
    dm = module(tmp_path, path="text", data_files={"train": str(corpus), "validation": str(corpus)},
                task="mlm", long_texts="truncate", packing=True, mlm_probability=0.15, max_length=32)
    dm.setup()
    rows, tok = dm.datasets["train"]["input_ids"], dm.tokenizer
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert all(r[0] == cls and r[-1] == sep for r in rows)
    # datasets.map hands 1,000 texts at a time: each batch of texts is one stream, [SEP] between texts
    streams = []
    for start in range(0, len(lines), 1000):
        encoded = [tok.encode(t, add_special_tokens=False).ids for t in lines[start : start + 1000]]
        streams.append([t for i, ids in enumerate(encoded) for t in ([sep] if i else []) + ids])
    assert [t for r in rows for t in r[1:-1]] == [t for s in streams for t in s]  # every token once, in order
    short = [i for i, r in enumerate(rows) if len(r) < 32]
    assert len(short) <= 3 and all(len(r) <= 32 for r in rows)  # full rows but a batch's last
    assert "positions are real tokens" in caplog.text
    # truncation is off under packing (long_texts=truncate would have cut each text), and the cache is keyed by it
    unpacked = module(tmp_path, path="text", data_files={"train": str(corpus), "validation": str(corpus)},
                      task="mlm", long_texts="chunk", packing=False, mlm_probability=0.15, max_length=32)
    unpacked.setup()
    assert len(unpacked.datasets["train"]) > 2 * len(rows)


@pytest.mark.parametrize("packing", [False, True])
def test_tokenizing_in_two_processes_gives_the_same_ids(tmp_path, packing):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"text {i}: " + " ".join(f"w{(i * j) % 53}" for j in range(i % 31)) for i in range(3000)),
                      encoding="utf-8")
    settings = dict(path="text", data_files={"train": str(corpus), "validation": str(corpus)}, task="mlm",
                    long_texts="chunk", packing=packing, mlm_probability=0.15)
    one, two = module(tmp_path / "one", **settings), module(tmp_path / "two", **settings, num_proc=2)
    one.setup()
    rows = list(one.datasets["train"]["input_ids"])
    for split in one.datasets.values():  # (the same data and tokenizer: `two` would find one's tokenization cached)
        for f in split.cache_files:
            os.remove(f["filename"])
    two.setup()
    rows2 = list(two.datasets["train"]["input_ids"])
    assert len(rows) > 1000 and len(two.datasets["train"].cache_files) == 2  # (two processes wrote it)
    if not packing:
        assert rows == rows2
    else:  # each process packs its own share: every text's tokens in the same order, a short row more per share
        sep = one.tokenizer.token_to_id("[SEP]")
        assert [t for r in rows for t in r[1:] if t != sep] == [t for r in rows2 for t in r[1:] if t != sep]
        assert len(rows) <= len(rows2) <= len(rows) + 2


@pytest.mark.parametrize("overrides, message", [
    (["data.packing=true"], "data.packing=true joins texts into rows that belong to no one text, so "
                            "task=classification"),
    (["task=mlm", "data.text_pair_column=b", "data.long_texts=truncate"], "data.packing=true joins single texts"),
    (["data.num_proc=0"], "data.num_proc=0 must be a positive number of processes"),
])
def test_packing_where_it_cannot_apply_is_refused_in_one_line(overrides, message, tmp_path):
    from encoder.training.config import validate

    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        validate(compose(overrides, tmp_path))


def test_offline_a_hub_dataset_that_is_not_cached_is_named_at_once(tmp_path, monkeypatch, caplog):
    import socket

    import datasets
    import huggingface_hub.constants

    def unreachable(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # restored after the test, as is the next
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    dm = module(tmp_path, path="encoder-tests/not-a-cached-dataset", data_files=None)
    with pytest.raises(DataError, match=r"^the Hugging Face Hub is unreachable and encoder-tests/not-a-cached-dataset "
                                        r"is not in the local datasets cache \(.+\); load it once with a network, or "
                                        r"point at local files: data=local_files data.data_files.train=...$"):
        dm.setup()
    assert "Retrying" not in caplog.text  # no five rounds of retries first


def test_tokenizer_training_is_deterministic_byte_for_byte(rt_files):
    # the WordPiece trainer numbered its ##-pieces in hash-map order: 4 trainings on these 2,000 texts gave
    # vocabularies of 6,449-6,453 tokens with ~5,300 ids apart. A fresh process each time, as two runs are.
    import subprocess
    import sys

    script = ("import csv, hashlib, sys; from encoder.core.tokenizer import train_tokenizer; "
              "texts = [r['text'] for r in csv.DictReader(open(sys.argv[1], encoding='utf-8'))][:2000]; "
              "print(hashlib.sha256(train_tokenizer(texts).to_str().encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", script, rt_files["train"]], capture_output=True, text=True,
                              check=True).stdout for _ in range(3)}
    assert len(digests) == 1
    from encoder.core.tokenizer import train_tokenizer

    with open(rt_files["train"], encoding="utf-8") as f:
        texts = [r["text"] for r in csv.DictReader(f)][:2000]
    first, second = train_tokenizer(texts), train_tokenizer(texts)
    assert first.to_str() == second.to_str()
    # the pieces listed to fix their ids are word pieces, not special tokens: "##s" in a text is not one token
    assert [t.content for t in first.get_added_tokens_decoder().values()] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "##s" in first.get_vocab() and "##s" not in first.encode("a ##s b").tokens
    # a corpus is read through a function, twice (the characters, then training), never held as a list: the
    # same tokenizer, and the function is called once per pass
    calls = []

    def corpus():
        calls.append(1)
        return iter(texts)

    assert train_tokenizer(corpus).to_str() == first.to_str() and len(calls) == 2
    assert train_tokenizer(iter(texts)).to_str() == first.to_str()  # a one-pass iterator is read into a list


def test_tokenizer_training_skips_long_words_exactly_as_the_regex_does():
    # the byte scan that spares most batches the regex must never miss a long word: 101 characters (not 100), of
    # one byte or two, between any of the separators `\\s` knows; each kind in a batch (1,000 texts) of its own
    from encoder.core.tokenizer import MAX_WORD_CHARS, _LONG_WORD, _without_long_words, train_tokenizer

    n = MAX_WORD_CHARS
    words = ["q" * (n + 1), "q" * n, "\u00e9" * (n + 1), "\u00e9" * 60, "\u03a9" * 200, "z\u00a0" * 70]
    texts = [f"plain text {i} here" for i in range(1000 * len(words))]
    for i, w in enumerate(words):
        for j, sep in enumerate([" ", "\t", "\x1c", "\n"]):
            texts[1000 * i + 7 * j + 5] = f"before{sep}{w}{sep}after"
    got = [t for batch in _without_long_words(texts) for t in batch]
    assert got == [_LONG_WORD.sub(" ", t) for t in texts]
    assert sum("q" * (n + 1) in t for t in got) == 0
    assert sum("q" * n in t for t in got) == 4 and sum("\u00e9" * 60 in t for t in got) == 4  # kept: not long
    # the alphabet is the one of the texts left: a character found only in long words gets no ##piece
    vocab = train_tokenizer(texts).get_vocab()
    assert "##\u03c9" not in vocab and "##q" in vocab


def test_integer_labels_match_label_names_that_are_numbers_by_value(tmp_path):
    # a model trained on stars "1","2","4","5" evaluated on a file whose stars are read as integers: 4 is "4"
    # (position 2), not position 4; a star it never learned is refused rather than read as a position
    stars = [1, 2, 4, 5] * 6
    rows = [(f"{text} {i}", star) for i, ((text, _), star) in enumerate(zip(SENTENCES, stars))]
    names = ["1", "2", "4", "5"]
    dm = module(tmp_path, data_files={"train": write_csv(tmp_path / "t.csv", rows)}, label_names=names)
    dm.setup()
    by_text = {text: star for text, star in rows}
    ids = tokenized_labels(dm)
    assert ids and all(names[label] == str(by_text[text]) for text, label in ids)
    from encoder.core.errors import LabelSetError

    with pytest.raises(LabelSetError):
        module(tmp_path, data_files={"train": write_csv(tmp_path / "u.csv", rows)}, label_names=["1", "2", "4"]).setup()


def tokenized_labels(dm):
    """(text, label id) of the training examples, texts read back from the raw split by position."""
    raw = dm.raw["train"]
    return list(zip(raw["text"], dm.datasets["train"]["labels"]))


@pytest.mark.parametrize("header", [("text", "text", "label"), ("text", "label", "label")])
def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path, header):
    rows = [("x", text, label) if header[1] == "text" else (text, label, "pos") for text, label in SENTENCES]
    path = write_csv(tmp_path / "t.csv", rows, header=header)
    with pytest.raises(DataError, match=f"names the column '{header[1]}' twice in its header"):
        module(tmp_path, data_files={"train": path}).setup()


def test_a_cache_folder_that_cannot_take_files_is_one_line(tmp_path):
    # (a read-only file system raises the same OSError family; root ignores chmod, so a path under a file
    # stands in for it here)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    files = {"train": write_csv(tmp_path / "t.csv", SENTENCES)}
    with pytest.raises(DataError, match=r"^the cache folder .*a-file/cache cannot take files \(.*\); point "
                                        r"ENCODER_CACHE \(or paths.cache_dir\) at a writable folder$"):
        module(tmp_path, data_files=files, cache_dir=str(blocker / "cache")).setup()


@pytest.mark.parametrize("task, source, extra", [
    ("mlm", "rotten_tomatoes_corpus", {"label_column": None, "packing": True, "mlm_probability": 0.15}),
    ("classification", "rotten_tomatoes_critics", {}),
])
def test_no_step_from_the_files_to_a_batch_reads_a_whole_column_as_python_objects(task, source, extra, cache_dir,
                                                                                  monkeypatch):
    # datasets' ds[column] is a lazy Column: list() or numpy over it reads row by row (19 s for 3M rows; numpy
    # held a 2 GB run over 5 minutes before its first step). Checks, tokenizer, tokenization, the real-token
    # share, the sampler and the loaders go through batches or Arrow instead.
    from datasets.arrow_dataset import Column

    def whole_column(*args, **kwargs):
        raise AssertionError("a whole column read as Python objects")

    monkeypatch.setattr(Column, "__iter__", whole_column)
    monkeypatch.setattr(Column, "__getitem__", whole_column)
    # (a vocabulary size and length no other test uses: the tokenizer is trained and the data tokenized here)
    dm = TextDataModule(task=task, source=source, max_length=61, cache_dir=str(cache_dir),
                        tokenizer={"vocab_size": 997}, **extra)
    dm.setup()
    assert next(iter(dm.train_dataloader()))["input_ids"].shape[0] == 32
    assert next(iter(dm.val_dataloader()))["input_ids"].shape[0] > 0


def resident_bytes(files) -> int:
    """This process's resident bytes of its mappings of `files` (/proc/self/smaps)."""
    total, path = 0, None
    with open("/proc/self/smaps", encoding="utf-8") as f:
        for line in f:
            head, *rest = line.split()
            if not head.endswith(":"):  # a mapping's first line: start-end perms offset dev inode [path]
                path = rest[4] if len(rest) >= 5 else None
            elif head == "Rss:" and path in files:
                total += int(rest[0]) * 1024
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc/self/smaps are Linux's")
def test_preparing_a_corpus_hands_back_the_mapped_pages_each_pass_read(tmp_path, monkeypatch):
    # datasets reads its Arrow files through memory maps: every page a pass reads stayed in the process's RSS
    # (a 2 GB corpus read as a 3.6 GB process). Each pass now hands its pages back as it goes and at its end.
    from encoder.training.data import pages

    rng = random.Random(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([str(tmp_path)] + [" ".join(f"w{rng.randrange(3000)}" for _ in range(rng.randint(5, 60)))
                                                  for _ in range(20000)]), encoding="utf-8")  # 21 batches of 1,000
    # (its first text names this test's folder: no cached copy of it exists, so every pass runs)
    monkeypatch.setattr(pages, "EVERY_BATCHES", 2)
    held, release = [], pages.release
    monkeypatch.setattr(pages, "release", lambda files: (held.append(resident_bytes(files)), release(files))[1])
    settings = dict(task="mlm", path="text", data_files={"train": str(corpus), "validation": str(corpus)},
                    label_column=None, packing=True, mlm_probability=0.15, max_length=64)
    dm = module(tmp_path, **settings)
    dm.setup()
    files = pages.files_of(dm.raw["train"])
    size = sum(os.path.getsize(f) for f in files)
    assert size > 3_000_000 and len(held) > 40  # the empty-text check, the tokenizer's passes, tokenization
    assert resident_bytes(files) < 0.02 * size  # nothing of the raw text stays mapped once prepared
    # nor during a pass: at most the batches read since the last hand-back. (The first hand-back follows the
    # files' opening, which reads each record batch's header: 64 KB of pages a batch, a third of this small file;
    # the last one also counts the tokenized files.)
    assert max(held[1:-1]) < 0.25 * size
    # nor of the tokenized rows once the sampler has read their lengths (64 KB of pages around each chunk read)
    tokenized = pages.files_of(dm.datasets["train"])
    dm.train_dataloader()
    assert resident_bytes(tokenized) < 0.02 * sum(os.path.getsize(f) for f in tokenized)
    # the same token ids as a run that keeps every page
    monkeypatch.setattr(pages, "_libc", None)
    kept = module(tmp_path / "kept", **settings)
    kept.setup()
    assert resident_bytes(pages.files_of(kept.raw["train"])) > 0.9 * size
    assert kept.datasets["train"]["input_ids"] == dm.datasets["train"]["input_ids"]
