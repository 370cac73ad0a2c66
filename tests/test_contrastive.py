"""task=contrastive (encoder/tasks/contrastive.py): examples of several texts each encoded on its own, batches
without a repeated text, the in-batch-negatives loss, retrieval over held-out pairs rising as a tiny model learns,
the sentence-transformers export, and the mistakes refused in one line."""

import csv
import math
import random

import pytest
import torch
import torch.nn.functional as F

import encoder
from conftest import TINY, compose
from encoder.core.errors import ConfigError, DataError
from encoder.tasks.contrastive import MultipleNegativesRankingLoss
from encoder.training.data.datamodule import TextDataModule
from encoder.training.data.sampler import LengthGroupedSampler


class Cipher:
    """A fixed one-to-one rewording, word for word (each word of the corpus stands for another one), with a quarter
    of the words dropped: an anchor and its positive share no word but by chance, so an untrained model finds
    nothing (its mean-pooled tokens overlap nowhere) and a trained one must learn which words stand together."""

    def __init__(self, texts: list[str], seed: int = 0):
        words = sorted({w for t in texts for w in t.lower().split()})
        shuffled = words[:]
        random.Random(seed).shuffle(shuffled)
        self.table, self.rnd = dict(zip(words, shuffled)), random.Random(seed)

    def __call__(self, text: str) -> str:
        words = [self.table[w] for w in text.lower().split()]
        return " ".join([w for w in words if self.rnd.random() > 0.25] or words[:1])


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, rt_files):
    """(anchor, positive, negative) rows from the critic snippets: the positive the anchor's ciphered rewording,
    the negative another snippet's; a few pairs repeated, as real pair data repeats texts."""
    folder = tmp_path_factory.mktemp("pairs")
    texts = {}
    for split, limit in (("train", 2400), ("validation", 200), ("test", 200)):
        with open(rt_files[split], encoding="utf-8") as f:
            texts[split] = [r["text"] for _, r in zip(range(limit), csv.DictReader(f)) if len(r["text"].split()) >= 6]
    cipher = Cipher([t for split in texts.values() for t in split])
    files = {}
    for split, chosen in texts.items():
        rows = [(t, cipher(t), cipher(chosen[(i + 7) % len(chosen)])) for i, t in enumerate(chosen)]
        rows += rows[:5]  # the same pairs again: a batch must not hold them twice
        files[split] = folder / f"{split}.csv"
        with open(files[split], "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("anchor", "positive", "negative"), *rows])
    return files


def data(pairs, *extra: str) -> list[str]:
    return ["task=contrastive", "data=local_files", *(f"data.data_files.{s}={p}" for s, p in pairs.items()),
            "data.text_column=anchor", "data.text_pair_column=positive", *extra]


def test_each_text_of_an_example_is_encoded_on_its_own_and_padded_apart(pairs, tmp_path):
    dm = TextDataModule(task="contrastive", data_files={s: str(p) for s, p in pairs.items()}, text_column="anchor",
                        text_pair_column="positive", negative_columns=["negative"], max_length=32,
                        tokenizer={"vocab_size": 500}, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    row, raw = dm.datasets["train"][3], dm.raw["train"][3]
    tok = dm.tokenizer
    for key, column in (("input_ids", "anchor"), ("input_ids_1", "positive"), ("input_ids_2", "negative")):
        assert row[key] == tok.encode(raw[column]).ids  # [CLS] text [SEP], never joined with another
    assert row["length"] == max(len(row[k]) for k in ("input_ids", "input_ids_1", "input_ids_2"))
    batch = next(iter(dm.train_dataloader()))
    for suffix in ("", "_1", "_2"):
        ids, mask = batch[f"input_ids{suffix}"], batch[f"padding_mask{suffix}"]
        assert ids.shape == mask.shape and ids.shape[1] % 8 == 0 and (mask == (ids == 0)).all()
    assert "token_type_ids" not in batch and "labels" not in batch


def test_no_batch_holds_a_text_twice_and_a_resume_continues_the_same_batches():
    keys = [(i % 40, 1000 + i % 25) for i in range(200)]  # anchors and positives repeated across examples
    sampler = LengthGroupedSampler([5] * 200, batch_size=8, seed=3, keys=keys)
    sampler.set_epoch(1)
    order = list(sampler)
    batches = [order[i : i + 8] for i in range(0, len(order), 8)]
    assert all(len(b) == 8 for b in batches[:-1]) and len(sampler) == len(order)
    for b in batches:  # no text twice in a batch
        texts = [t for i in b for t in keys[i]]
        assert len(texts) == len(set(texts))
    assert len(set(order)) == len(order) > 150  # each example at most once; only the last duplicates sit out
    resumed = LengthGroupedSampler([5] * 200, batch_size=8, seed=3, keys=keys)
    resumed.set_epoch(1)
    resumed.resume(1, 24)
    assert list(resumed) == order[24:]
    again = LengthGroupedSampler([5] * 200, batch_size=8, seed=3, keys=keys)
    again.set_epoch(2)
    assert list(again) != order  # another epoch, another order


def test_the_loss_is_cross_entropy_over_scaled_cosines_with_the_batchs_positives_and_negatives():
    anchors = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    positives = torch.tensor([[2.0, 0.1], [0.0, 1.0]])
    negatives = [torch.tensor([[1.0, 1.0], [-1.0, 0.0]])]
    loss, hits = MultipleNegativesRankingLoss(scale=10.0)(anchors, positives, negatives)
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    candidates = [positives[0], positives[1], negatives[0][0], negatives[0][1]]
    expected = 0.0
    for i, a in enumerate(anchors):
        logits = [10.0 * cos(a, c) for c in candidates]
        expected += -(logits[i] - math.log(sum(math.exp(x) for x in logits))) / 2
    # the first anchor's own positive is its nearest candidate, the second's is not (the first negative is)
    assert hits.tolist() == [1.0, 0.0] and loss.item() == pytest.approx(expected, rel=1e-6)
    symmetric, _ = MultipleNegativesRankingLoss(scale=10.0, symmetric=True)(anchors, positives, negatives)
    back = sum(-(10.0 * cos(p, anchors[i]) - math.log(sum(math.exp(10.0 * cos(p, a)) for a in anchors)))
               for i, p in enumerate(positives)) / 2
    assert symmetric.item() == pytest.approx((expected + back) / 2, rel=1e-6)


def test_a_tiny_embedder_learns_to_retrieve_the_held_out_positives(pairs, tmp_path):
    import train
    from sentence_transformers import SentenceTransformer
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from encoder.export import export

    out = tmp_path / "run"
    everything = ["trainer.limit_train_batches=null", "trainer.limit_val_batches=null", "trainer.limit_test_batches=null",
                  "data.max_train_samples=null", "data.max_eval_samples=null"]
    metrics = train.train(compose([*data(pairs, "data.negative_columns=[negative]"), *TINY, *everything,
                                   "trainer.max_epochs=3", "optim.lr=3e-3", "data.batch_size=32"], out))
    ndcg = [e.value for e in EventAccumulator(str(out / "tensorboard")).Reload().Scalars("val/ndcg@10")]
    # 200 distinct validation positives, sharing no word with their anchors: the same run at lr 1e-9 (untrained)
    # scores 0.045 at every epoch; this one 0.39, 0.57, 0.58
    assert len(ndcg) == 3 and ndcg[-1] > 0.45 and ndcg[-1] > ndcg[0] + 0.1
    for key in ("test/ndcg@10", "test/mrr@10", "test/map@100", "test/recall@1", "test/recall@10", "test/recall@100"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test/recall@100"] >= metrics["test/recall@10"] >= metrics["test/recall@1"]
    best = next((out / "checkpoints").glob("best-*.ckpt"))
    model = encoder.load_model(best)
    texts = ["a gorgeous, witty, seductive movie", "dull and lifeless"]
    vectors = model.embed(texts)
    assert model.predict(texts[:1])[0]["embedding"] == pytest.approx(vectors[0].tolist(), abs=1e-6)
    folder = export(best, tmp_path / "st", format="sentence-transformers")  # what search code loads
    theirs = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.allclose(theirs, vectors, atol=1e-5)
    assert F.cosine_similarity(vectors[:1], vectors[1:]).item() < 0.999  # (not one vector for everything)
    # the sentence-transformers folder is scored by the same code as any checkpoint: the same test metrics
    again = train.train(compose([*data(pairs), *TINY, *everything, "train=false", f"ckpt_path={folder}"],
                                tmp_path / "eval"))
    assert again["test/ndcg@10"] == pytest.approx(metrics["test/ndcg@10"], abs=1e-4)
    # a graded set (STS): each held-out anchor with its rewording (score 5) and another's (score 0)
    with open(pairs["test"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    graded = tmp_path / "sts.csv"
    with open(graded, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("anchor", "positive", "score"), *((r["anchor"], r["positive"], 5.0) for r in rows),
                                 *((r["anchor"], r["negative"], 0.0) for r in rows)])
    sts = train.train(compose([*data({"test": graded}), *TINY, *everything, "train=false", f"ckpt_path={best}"],
                              tmp_path / "sts"))
    assert sts["test/spearman"] > 0.5 and "test/ndcg@10" not in sts  # (untrained: 0.06)


@pytest.mark.parametrize("extra, error, message", [
    (["data.text_pair_column=null"], ConfigError, "task=contrastive learns from pairs: set data.text_pair_column"),
    (["task.loss.scale=0"], ConfigError, "task.loss.scale=0 must be a positive number"),
    (["task.loss.name=triplet"], ConfigError, "task.loss.name='triplet' is unknown; choose one of ['mnrl']"),
    (["data.batch_size=1"], ConfigError, "data.batch_size=1 has none; use 2 or more"),
    (["data.negative_columns=[nowhere]"], DataError, "data.negative_columns='nowhere' is not a column"),
])
def test_mistakes_are_one_line_before_any_training(pairs, tmp_path, extra, error, message):
    import train

    with pytest.raises(error, match=message.replace("[", r"\[").replace("(", r"\(")) as e:
        train.train(compose([*data(pairs), *TINY, *extra], tmp_path))
    assert "\n" not in str(e.value)
    assert not list(tmp_path.glob("checkpoints/*"))


def test_other_tasks_refuse_what_only_texts_apart_mean(tmp_path):
    from encoder.training.config import validate

    with pytest.raises(ConfigError, match="data.negative_columns are hard negatives of a task that encodes"):
        validate(compose(["data.negative_columns=[x]"], tmp_path))
    with pytest.raises(ConfigError, match="task.loss.name='mnrl' is unknown; choose one of \\['cross_entropy', 'setfit'\\]"):
        validate(compose(["task.loss.name=mnrl"], tmp_path))
    with pytest.raises(ConfigError, match="task=regression has one loss, set by the task: drop task.loss"):
        validate(compose(["task=regression", "+task.loss.name=mnrl", "data=vader_sentiment"], tmp_path))


@pytest.mark.parametrize("config, columns, splits", [
    ("all_nli", ("anchor", "positive", ["negative"]), {"train": "train", "validation": "dev", "test": "test"}),
    ("msmarco_triplets", ("query", "positive", ["negative"]), {"train": "train"}),
    ("stsb", ("sentence1", "sentence2", []), {"test": "test"}),
])
def test_the_hub_pair_configs_read_data_shaped_as_the_hub_holds_it(config, columns, splits, tmp_path):
    """Each Hub config composes, validates, and reads parquet files with the columns and split names its dataset has
    on the Hub (sentence-transformers/all-nli "triplet", msmarco-bm25 "triplet", stsb: a `score` per pair)."""
    from datasets import Dataset

    from encoder.training.config import validate
    from encoder.training.data.loading import SPLIT_NAMES as SPLITS

    cfg = compose(["task=contrastive", f"data={config}"], tmp_path)
    validate(cfg)
    first, second, negatives = columns
    assert (cfg.data.text_column, cfg.data.text_pair_column, list(cfg.data.negative_columns)) == columns
    assert {s: n for s, n in cfg.data.splits.items() if n} == splits
    words = "river stone cloud lamp bread ocean window tiger paper music garden silver".split()
    files = {}
    for ours, theirs in splits.items():
        rows = {first: [f"{w} {i}" for i, w in enumerate(words * 3)], second: [f"{w}s {i}" for i, w in enumerate(words * 3)],
                **{n: [f"not {w}" for w in words * 3] for n in negatives}}
        if config == "stsb":
            rows["score"] = [(i % 6) / 5 for i in range(len(words) * 3)]
        files[ours] = str(tmp_path / f"{theirs}.parquet")
        Dataset.from_dict(rows).to_parquet(files[ours])
    data = {k: v for k, v in cfg.data.items() if k not in ("_target_", "path", "name", "data_files", "splits")}
    dm = TextDataModule(task="contrastive", path="parquet", data_files=files, tokenizer={"vocab_size": 200},
                        cache_dir=str(tmp_path / "cache"), splits={s: s if s in files else None for s in SPLITS},
                        **{**data, "max_eval_samples": None})
    dm.setup()
    row = dm.datasets[next(iter(splits))][0]
    assert {"input_ids", "input_ids_1", *(f"input_ids_{i}" for i in range(2, 2 + len(negatives)))} <= set(row)
    assert ("score" in row) == (config == "stsb")


def test_graded_validation_pairs_can_be_what_checkpoints_follow(tmp_path):
    cfg = compose(["task=contrastive", "data=stsb", "objective=val/spearman"], tmp_path)
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == ("val/spearman", "max")
    assert cfg.callbacks.early_stopping.mode == "max"


def test_the_offline_pair_sets_are_real_text_split_apart():
    """data=bible_quotes and data=wordnet_senses: read out of Debian's packages (hash-checked), the Bible verses
    split by reference (no verse in two splits), the WordNet set a test split only."""
    from encoder.training.data.sources import bible_quotes, wordnet_senses

    splits = {}
    for split, path in bible_quotes().items():
        with open(path, encoding="utf-8") as f:
            splits[split] = list(csv.DictReader(f))
    assert 24_000 < len(splits["train"]) < 25_500 and 3_000 < len(splits["test"]) < 3_400
    refs = [{r["ref"] for r in rows} for rows in splits.values()]
    assert not (refs[0] & refs[1] or refs[0] & refs[2] or refs[1] & refs[2])
    every = {r["ref"]: r for rows in splits.values() for r in rows}
    assert every["Gen 1:1"]["verse"] == "In the beginning God created the heaven and the earth."
    assert every["John 11:35"] == {"ref": "John 11:35", "quote": "Jesus wept.", "verse": "Jesus wept."}
    quote = every["Gen 1:3"]["quote"]  # six words of the World English Bible's "God said, “Let there be light,”..."
    assert len(quote.split()) == 6 and quote in "God said, “Let there be light,” and there was light."
    assert not any("<" in r["verse"] or "<" in r["quote"] for r in every.values())  # (no markup left)
    with open(wordnet_senses()["test"], encoding="utf-8") as f:
        senses = list(csv.DictReader(f))
    assert 3_400 < len(senses) < 3_800 and all(len(r["example"].split()) >= 4 and r["definition"] for r in senses)


def test_a_package_whose_hash_differs_is_refused_and_nothing_is_kept(tmp_path):
    from encoder.training.packages import fetch_deb

    with pytest.raises(RuntimeError, match=r"wordnet-base_1%3a3.0-37_all.deb has sha256 61060d96\w+, expected 0{64}; "
                                           r"refusing to use it") as e:
        fetch_deb("wordnet-base", "1:3.0-37", "0" * 64, tmp_path)
    assert "\n" not in str(e.value) and not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_an_empty_set_of_judged_pairs_is_refused_in_one_line_and_leaves_nothing(tmp_path):
    import train

    empty = tmp_path / "qrels.csv"
    empty.write_text("query,document\n", encoding="utf-8")  # the header and no judged pair
    with pytest.raises(DataError, match="the test split of data.data_files is empty; point data at non-empty files"):
        train.train(compose(["task=contrastive", "data=local_files", f"data.data_files.test={empty}",
                             "data.text_column=query", "data.text_pair_column=document", "train=false",
                             "ckpt_path=all-MiniLM-L6-v2"], tmp_path / "run"))
    assert not (tmp_path / "run").exists()
