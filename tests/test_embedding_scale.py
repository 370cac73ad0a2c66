"""Embedding training that scales (encoder/tasks/contrastive.py): the cached loss (GradCache) gives the uncached
loss and gradients, negatives gathered from two real gloo processes give one process's loss and gradients on the
concatenated batch, Matryoshka prefixes and truncated evaluation, and the bad values refused in one line."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import TINY, compose
from test_contrastive import data, pairs  # noqa: F401 (pairs: the fixture of ciphered pairs)
from encoder.core.errors import ConfigError
from encoder.core.model import AttentionConfig, ModelConfig
from encoder.tasks.contrastive import Contrastive, EncoderForSentenceEmbedding, MultipleNegativesRankingLoss, embedded


def tiny_model(dropout: float = 0.0, seed: int = 0) -> EncoderForSentenceEmbedding:
    torch.manual_seed(seed)
    return EncoderForSentenceEmbedding(ModelConfig(vocab_size=60, embed_dim=16, num_layers=2, ffn_dim=32,
                                                   attention=AttentionConfig(num_heads=2, dropout=dropout),
                                                   dropout=dropout, max_positions=32))


def batch_of(rows: int, texts: int = 3, seed: int = 1) -> dict:
    """`rows` examples of `texts` texts each (anchor, positive, negatives), of varied lengths, padded apart."""
    g = torch.Generator().manual_seed(seed)
    batch = {}
    for t in range(texts):
        lengths = torch.randint(2, 12, (rows,), generator=g)
        ids = torch.randint(5, 60, (rows, 12), generator=g)
        mask = torch.arange(12)[None, :] >= lengths[:, None]
        suffix = "" if t == 0 else f"_{t}"
        batch[f"input_ids{suffix}"], batch[f"padding_mask{suffix}"] = ids.masked_fill(mask, 0), mask
    return batch


def loss_and_grads(task: Contrastive, model, batch) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    loss = task.step(model, batch).loss
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("options", [{}, {"symmetric": True}, {"matryoshka_dims": [4, 8, 16]}])
def test_the_cached_loss_gives_the_uncached_loss_and_gradients(options):
    model, batch = tiny_model(), batch_of(10)
    plain = loss_and_grads(Contrastive(options), model, batch)
    cached = loss_and_grads(Contrastive({**options, "mini_batch_size": 3}), model, batch)  # 4 chunks, the last of 1
    assert cached[0] == pytest.approx(plain[0], abs=1e-5)
    for a, b in zip(plain[1], cached[1]):
        assert torch.allclose(a, b, atol=1e-5)


def test_the_cached_loss_replays_dropout_as_the_first_pass_drew_it():
    """With dropout, the cached gradient is the gradient of the loss of the embeddings the first pass computed: the
    second pass draws the same masks (the same run embedding chunk by chunk with its graph alive gives it)."""
    model, batch = tiny_model(dropout=0.3).train(), batch_of(8)
    torch.manual_seed(5)
    cached = loss_and_grads(Contrastive({"mini_batch_size": 3}), model, batch)
    torch.manual_seed(5)
    model.zero_grad()
    texts = [(batch[k], batch[k.replace("input_ids", "padding_mask")]) for k in ("input_ids", "input_ids_1",
                                                                             "input_ids_2")]
    vectors = [embedded(model, ids, mask, 3) for ids, mask in texts]  # the same chunks, in the same order
    loss, _ = MultipleNegativesRankingLoss()(vectors[0], vectors[1], vectors[2:])
    loss.backward()
    assert cached[0] == pytest.approx(loss.item(), abs=1e-5)
    for p, g in zip(model.parameters(), cached[1]):
        assert torch.allclose(p.grad, g, atol=1e-5)
    torch.manual_seed(6)  # (and another draw gives another loss: dropout is on)
    assert loss_and_grads(Contrastive({"mini_batch_size": 3}), model, batch)[0] != pytest.approx(cached[0], abs=1e-4)


def _rank(rank: int, world: int, store: str, options: dict, sizes: list[int], out: str) -> None:
    """One DDP rank: its own rows of the batch, the loss with every rank's candidates, weighted by its share of the
    rows (as one process's mean over all of them), then the gradients summed over ranks."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model, batch = tiny_model(), batch_of(sum(sizes))
        start = sum(sizes[:rank])
        mine = {k: v[start : start + sizes[rank]] for k, v in batch.items()}
        loss = Contrastive({"gather_across_devices": True, **options}).step(model, mine).loss
        (loss * sizes[rank] / sum(sizes)).backward()
        total = loss.detach() * sizes[rank] / sum(sizes)
        dist.all_reduce(total)
        grads = [p.grad for p in model.parameters()]
        for g in grads:
            dist.all_reduce(g)
        if rank == 0:
            torch.save({"loss": total.item(), "grads": grads}, out)
    finally:
        dist.destroy_process_group()


# ranks may hold different numbers of rows (an epoch's last batch); the cached loss takes each rank's loss as DDP
# weighs it, alike (its cached gradients are each rank's loss's, unweighted): equal shares
@pytest.mark.parametrize("options, sizes", [({"symmetric": True}, [5, 3]), ({"mini_batch_size": 2}, [4, 4])])
def test_negatives_gathered_from_two_processes_give_one_process_on_the_whole_batch(tmp_path, options, sizes):
    mp.spawn(_rank, args=(2, str(tmp_path / "store"), options, sizes, str(tmp_path / "out.pt")), nprocs=2)
    ranks = torch.load(tmp_path / "out.pt")
    alone = loss_and_grads(Contrastive(options), tiny_model(), batch_of(sum(sizes)))
    assert ranks["loss"] == pytest.approx(alone[0], abs=1e-5)
    for a, b in zip(alone[1], ranks["grads"]):
        assert torch.allclose(a, b, atol=1e-5)


def test_without_the_gather_each_process_sees_only_its_own_rows(tmp_path):
    """(What the gather changes: the same two processes without it are not one process on the whole batch.)"""
    sizes = [4, 4]
    mp.spawn(_rank, args=(2, str(tmp_path / "store"), {"gather_across_devices": False}, sizes,
                          str(tmp_path / "out.pt")), nprocs=2)
    alone = loss_and_grads(Contrastive(), tiny_model(), batch_of(8))
    apart = torch.load(tmp_path / "out.pt")["loss"]
    assert apart < alone[0] - 0.1, (apart, alone[0])  # fewer candidates: an easier loss


def test_the_matryoshka_loss_sums_the_loss_of_each_prefix():
    anchors, positives, negatives = torch.randn(6, 16), torch.randn(6, 16), [torch.randn(6, 16)]
    plain = MultipleNegativesRankingLoss()
    expected = sum(plain(anchors[:, :d], positives[:, :d], [negatives[0][:, :d]])[0] for d in (4, 8, 16))
    assert Contrastive({"matryoshka_dims": [4, 8, 16]}).loss(anchors, positives, negatives)[0].item() == \
        pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("extra, message", [
    (["task.loss.matryoshka_dims=[32,16]"], "task.loss.matryoshka_dims=[32, 16] must be increasing widths"),
    (["task.loss.matryoshka_dims=[16,128]"], "task.loss.matryoshka_dims goes up to 128, above the embedding's 64 "
                                             "dimensions"),
    (["task.truncate_dim=65"], "task.truncate_dim goes up to 65, above the embedding's 64 dimensions"),
    (["task.truncate_dim=0"], "task.truncate_dim=0 must be a positive integer"),
    (["task.loss.mini_batch_size=64"], "task.loss.mini_batch_size=64 is above data.batch_size=16"),
    (["task.loss.mini_batch_size=0"], "task.loss.mini_batch_size=0 must be a positive integer"),
    (["task.loss.gather_across_devices=yes"], "task.loss.gather_across_devices='yes' must be true or false"),
])
def test_bad_values_are_refused_in_one_line(tmp_path, rt_files, extra, message):
    import train

    overrides = ["task=contrastive", "data=local_files", *(f"data.data_files.{s}={p}" for s, p in rt_files.items()),
                 "data.text_pair_column=text", "data.label_column=null", *TINY, "data.batch_size=16", *extra]
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as e:
        train.train(compose(overrides, tmp_path))
    assert "\n" not in str(e.value) and not (tmp_path / "checkpoints").exists()


def test_truncate_dim_is_refused_by_a_task_without_embeddings(tmp_path, rt_files):
    import train

    with pytest.raises(ConfigError, match="task.truncate_dim cuts sentence embeddings; task=classification"):
        train.train(compose([*TINY, "task.truncate_dim=8"], tmp_path))


def test_a_cached_run_trains_the_same_weights_as_an_uncached_one(tmp_path, rt_files):
    """Through train.py and Lightning's backward, 8 optimizer steps: the same weights either way (no dropout: the
    two runs draw no random numbers differently)."""
    import train

    overrides = ["task=contrastive", "data=local_files", *(f"data.data_files.{s}={p}" for s, p in rt_files.items()),
                 "data.text_pair_column=text", "data.label_column=null", *TINY, "model.dropout=0",
                 "model.attention.dropout=0", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    weights = []
    for name, extra in (("plain", []), ("cached", ["task.loss.mini_batch_size=5"])):
        train.train(compose([*overrides, *extra], tmp_path / name))
        weights.append(torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.allclose(weights[0][key], weights[1][key], atol=1e-5), key


@pytest.fixture(scope="module")
def matryoshka_run(tmp_path_factory, pairs):
    """A tiny embedder trained with the loss at 8 and 64 of its 64 dimensions, and its test metrics."""
    import train

    out = tmp_path_factory.mktemp("matryoshka")
    metrics = train.train(compose([*data(pairs), *TINY, "task.loss.matryoshka_dims=[8,64]", "trainer.max_epochs=2",
                                   "optim.lr=3e-3", "data.max_eval_samples=null", "trainer.limit_test_batches=null"],
                                  out / "run"))
    return out, next((out / "run" / "checkpoints").glob("best-*.ckpt")), metrics


def test_a_truncated_evaluation_scores_the_first_dimensions_as_a_user_would(matryoshka_run, pairs):
    import csv

    import train
    from encoder import load_model
    from encoder.core.retrieval import retrieval_metrics, retrieval_set

    out, best, metrics = matryoshka_run
    assert 0.0 < metrics["test/ndcg@10@8d"] < 1.0 and "test/ndcg@10@64d" not in metrics  # (64: test/ndcg@10)
    cut = train.train(compose([*data(pairs), *TINY, "train=false", f"ckpt_path={best}", "task.truncate_dim=8",
                               "data.max_eval_samples=null", "trainer.limit_test_batches=null"], out / "cut"))
    assert cut["test/ndcg@10"] == pytest.approx(metrics["test/ndcg@10@8d"], abs=1e-5)
    with open(pairs["test"], encoding="utf-8") as f:  # by hand: the vectors predict gives, cut to 8 dimensions
        rows = list(csv.DictReader(f))
    queries, documents, relevant = retrieval_set([r["anchor"] for r in rows], [r["positive"] for r in rows])
    model = load_model(best)
    a = model.embed([rows[q]["anchor"] for q in queries], truncate_dim=8, normalize=True)
    d = model.embed([rows[i]["positive"] for i in documents], truncate_dim=8, normalize=True)
    assert a.shape[1] == 8 and torch.allclose(a.norm(dim=1), torch.ones(len(a)), atol=1e-5)
    assert retrieval_metrics(a @ d.T, relevant)["ndcg@10"] == pytest.approx(cut["test/ndcg@10"], abs=1e-4)
    assert cut["test/ndcg@10"] < metrics["test/ndcg@10"]  # (8 of 64 dimensions carry less)


def test_the_sentence_transformers_export_gives_our_normalised_and_truncated_vectors(matryoshka_run, tmp_path):
    from sentence_transformers import SentenceTransformer

    from encoder import load_model
    from encoder.export import export

    _, best, _ = matryoshka_run
    texts = ["a gorgeous, witty, seductive movie", "dull and lifeless", "an hour too long"]
    ours = load_model(best)
    unit = SentenceTransformer(str(export(best, tmp_path / "unit", format="sentence-transformers", normalize=True)),
                               device="cpu")
    assert torch.allclose(unit.encode(texts, convert_to_tensor=True), ours.embed(texts, normalize=True), atol=1e-5)
    short = SentenceTransformer(str(export(best, tmp_path / "short", format="sentence-transformers",
                                           truncate_dim=8)), device="cpu")
    assert short.truncate_dim == 8
    assert torch.allclose(short.encode(texts, convert_to_tensor=True), ours.embed(texts, truncate_dim=8), atol=1e-5)
    assert torch.allclose(short.encode(texts, convert_to_tensor=True, normalize_embeddings=True),
                          ours.embed(texts, truncate_dim=8, normalize=True), atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"format": "sentence-transformers", "truncate_dim": 65}, "--truncate-dim 65 must be from 1 to the embedding's "
                                                               "64 dimensions"),
    ({"format": "sentence-transformers", "truncate_dim": 8, "normalize": True}, "sentence-transformers normalises a "
                                                                                "vector before it truncates it"),
    ({"truncate_dim": 8}, "--normalize and --truncate-dim shape what sentence-transformers' encode gives"),
])
def test_bad_export_options_are_refused_in_one_line_and_write_nothing(matryoshka_run, tmp_path, options, message):
    from encoder.export import export

    with pytest.raises(ValueError, match=message) as e:
        export(matryoshka_run[1], tmp_path / "out", **options)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_predict_writes_truncated_unit_vectors_in_input_order(matryoshka_run, tmp_path):
    import json

    import numpy as np

    from encoder import load_model
    from encoder.predict import main

    _, best, _ = matryoshka_run
    texts = ["dull and lifeless", "a gorgeous, witty, seductive movie", "an hour too long"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    expected = load_model(best).embed(texts, truncate_dim=8, normalize=True).numpy()
    for name in ("v.npy", "v.jsonl"):
        assert main([str(best), "--file", str(tmp_path / "texts.txt"), "--embed", "--truncate-dim", "8",
                     "--normalize", "--output", str(tmp_path / name)]) == 0
    assert np.allclose(np.load(tmp_path / "v.npy"), expected, atol=1e-6)
    lines = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["text"] for r in lines] == texts and np.allclose([r["embedding"] for r in lines], expected, atol=1e-6)
    with pytest.raises(SystemExit) as e:
        main([str(best), "a text", "--truncate-dim", "8"])
    assert e.value.code == 2
    with pytest.raises(ValueError, match="truncate_dim=65 must be a whole number from 1 to the embedding's 64"):
        load_model(best).embed(texts, truncate_dim=65)


def mined_by_hand(model, rows: list[dict], negatives: int, first: int, last: int, margin: float) -> list[list[str]]:
    """Each kept anchor's negatives, from the whole score matrix at once."""
    corpus = list(dict.fromkeys(r["positive"] for r in rows))
    scores = model.embed([r["anchor"] for r in rows], normalize=True) @ model.embed(corpus, normalize=True).T
    out = []
    for i, r in enumerate(rows):
        own = {corpus.index(x["positive"]) for x in rows if x["anchor"] == r["anchor"]}
        ranked = [d for d in scores[i].argsort(descending=True).tolist() if d not in own][first - 1 : last]
        chosen = [corpus[d] for d in ranked if scores[i, d] <= scores[i, corpus.index(r["positive"])] - margin]
        out.append(chosen[:negatives] if len(chosen) >= negatives else None)
    return out


def test_mining_takes_negatives_within_the_rank_range_and_below_the_margin(matryoshka_run, pairs, tmp_path,
                                                                            monkeypatch, capsys):
    import csv
    import json

    from encoder import load_model
    from encoder.training import mine

    _, best, _ = matryoshka_run
    with open(pairs["validation"], encoding="utf-8") as f:
        rows = [{"anchor": r["anchor"], "positive": r["positive"]} for r in csv.DictReader(f)]
    monkeypatch.setattr(mine, "BLOCK", 37)  # anchors and corpus in many blocks: the running top-k across them
    args = [str(best), str(pairs["validation"]), "--negatives", "2", "--range", "3", "40", "--margin", "0.003",
            "--cache-dir", str(tmp_path / "cache")]
    assert mine.main([*args[:2], str(tmp_path / "mined.jsonl"), *args[2:]]) == 0
    expected = mined_by_hand(load_model(best), rows, 2, 3, 40, 0.003)  # (this weak model's cosines lie close)
    written = [json.loads(line) for line in (tmp_path / "mined.jsonl").read_text().splitlines()]
    kept = [(r, e) for r, e in zip(rows, expected) if e is not None]
    assert 0 < len(kept) < len(rows)  # (some anchors have too few candidates below the margin: left out)
    assert [(w["anchor"], w["positive"], [w["negative_1"], w["negative_2"]]) for w in written] == \
        [(r["anchor"], r["positive"], e) for r, e in kept]
    assert f"{len(kept)} of {len(rows)} pairs" in capsys.readouterr().err
    cached = list((tmp_path / "cache" / "mined").iterdir())
    assert len(cached) == 1  # the corpus's vectors, read back by the next mining of the same corpus:
    assert mine.main([*args[:2], str(tmp_path / "again.csv"), *args[2:]]) == 0
    assert list((tmp_path / "cache" / "mined").iterdir()) == cached
    with open(tmp_path / "again.csv", encoding="utf-8") as f:
        assert [r["negative_2"] for r in csv.DictReader(f)] == [w["negative_2"] for w in written]


def test_mining_holds_one_block_of_the_corpus_at_a_time(matryoshka_run, pairs, tmp_path, monkeypatch):
    """Memory flat in the corpus size: the corpus is embedded, and read back from its cache, at most BLOCK rows at a
    time, and anchors are scored a block at a time (benchmarks/mining.py measures the resident memory)."""
    import csv

    from encoder.training import mine

    _, best, _ = matryoshka_run
    monkeypatch.setattr(mine, "BLOCK", 37)
    embedded, read = [], []
    real_embedder, real_read = mine.embedder, mine.read_vectors

    def embedder(*args, **kwargs):
        predictor = real_embedder(*args, **kwargs)
        embed = predictor.embed
        predictor.embed = lambda texts, **options: (embedded.append(len(texts)), embed(texts, **options))[1]
        return predictor

    def read_vectors(path):
        for begin, block in real_read(path):
            read.append(len(block))
            yield begin, block

    monkeypatch.setattr(mine, "embedder", embedder)
    monkeypatch.setattr(mine, "read_vectors", read_vectors)
    assert mine.main([str(best), str(pairs["validation"]), str(tmp_path / "mined.csv"), "--range", "2", "20",
                      "--cache-dir", str(tmp_path / "cache")]) == 0
    with open(pairs["validation"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    documents, anchor_blocks = len({r["positive"] for r in rows}), -(-len(rows) // 37)
    assert documents > 37 * 3 and max(embedded) <= 37 and max(read) <= 37
    assert sum(read) == documents * anchor_blocks  # every block of anchors against every block of the corpus


def test_mining_with_bm25_never_takes_a_positive_as_a_negative(rt_files, tmp_path):
    import csv
    import json

    from encoder.training.mine import main

    with open(rt_files["validation"], encoding="utf-8") as f:  # five words of a snippet -> the snippet
        texts = [r["text"] for _, r in zip(range(300), csv.DictReader(f))]
    with open(tmp_path / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("anchor", "positive"), *((" ".join(t.split()[:5]), t) for t in texts)])
    assert main(["bm25", str(tmp_path / "pairs.csv"), str(tmp_path / "bm25.jsonl"), "--range", "1", "5"]) == 0
    written = [json.loads(line) for line in (tmp_path / "bm25.jsonl").read_text().splitlines()]
    positives = {}
    for w in written:
        positives.setdefault(w["anchor"], set()).add(w["positive"])
    assert len(written) > 100 and all(w["negative_1"] not in positives[w["anchor"]] for w in written)


@pytest.mark.parametrize("extra, message", [
    (["--margin", "-0.1"], "--margin -0.1 0 or more"),
    (["--range", "9", "3"], "--range 9 3 ranks from 1 up"),
    (["--range", "1", "2", "--negatives", "3"], "--range 1 2 holds 2 ranks, fewer than --negatives 3"),
])
def test_bad_mining_options_are_refused_in_one_line(pairs, tmp_path, capsys, extra, message):
    from encoder.training.mine import main

    with pytest.raises(SystemExit) as e:
        main(["bm25", str(pairs["validation"]), str(tmp_path / "out.jsonl"), *extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1 and not (tmp_path / "out.jsonl").exists()


def test_the_onnx_and_int8_graphs_give_the_embeddings(matryoshka_run, tmp_path):
    import torch.nn.functional as F

    from encoder import load_model
    from encoder.export import export

    _, best, _ = matryoshka_run
    folder = export(best, tmp_path / "onnx", onnx=True, int8=True)
    texts = ["a gorgeous, witty, seductive movie", "dull and lifeless", "an hour too long"]
    ours = load_model(best).embed(texts, truncate_dim=8, normalize=True)
    graph = load_model(folder, backend="onnx").embed(texts, truncate_dim=8, normalize=True)
    assert torch.allclose(graph, ours, atol=1e-4)
    int8 = load_model(folder, backend="onnx", int8=True).embed(texts, truncate_dim=8, normalize=True)
    assert F.cosine_similarity(int8, ours).min() > 0.99 and not torch.equal(int8, graph)  # (int8: close, not equal)


def test_the_teacher_score_loss_is_the_kl_of_the_two_rankings_mixed_with_the_loss():
    import math

    from encoder.tasks.contrastive import TeacherScores

    anchors, positives = torch.tensor([[1.0, 0.0], [0.6, 0.8]]), torch.tensor([[2.0, 0.1], [0.0, 1.0]])
    negatives = [torch.tensor([[1.0, 1.0], [-1.0, 0.0]])]
    unit = lambda v: [x / math.hypot(*v) for x in v]  # noqa: E731
    teacher = torch.tensor([[unit([1, 1]), unit([1, 2]), unit([0, 1])], [unit([1, 0]), unit([2, 1]), unit([1, -1])]])
    scale, alpha, T = 10.0, 0.3, 2.0
    loss, _ = TeacherScores(MultipleNegativesRankingLoss(scale=scale), scale, alpha, T)(
        anchors, positives, negatives, teacher)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b)) / (math.hypot(*a) * math.hypot(*b))  # noqa: E731
    candidates = [positives[0].tolist(), positives[1].tolist(), negatives[0][0].tolist(), negatives[0][1].tolist()]
    taught = [teacher[0, 1].tolist(), teacher[1, 1].tolist(), teacher[0, 2].tolist(), teacher[1, 2].tolist()]
    kl = 0.0
    for i in range(2):  # KL(teacher || student) of each anchor's softmax over the 4 candidates, at temperature T
        s = [scale * cos(anchors[i].tolist(), c) / T for c in candidates]
        t = [scale * cos(teacher[i, 0].tolist(), c) / T for c in taught]
        p = [math.exp(x) / sum(math.exp(y) for y in t) for x in t]
        q = [math.exp(x) / sum(math.exp(y) for y in s) for x in s]
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) / 2
    plain = MultipleNegativesRankingLoss(scale=scale)(anchors, positives, negatives)[0].item()
    assert loss.item() == pytest.approx((1 - alpha) * plain + alpha * kl * T * T, rel=1e-5)


def test_a_student_learns_its_teachers_scores_from_a_cached_teacher_column(matryoshka_run, pairs, tmp_path):
    import train
    from encoder import load_model
    from encoder.training.data.datamodule import TextDataModule

    _, best, _ = matryoshka_run
    dm = TextDataModule(task="contrastive", data_files={s: str(p) for s, p in pairs.items()}, text_column="anchor",
                        text_pair_column="positive", negative_columns=["negative"], max_length=32,
                        tokenizer={"vocab_size": 500}, cache_dir=str(tmp_path / "cache"), distill={"teacher": str(best)})
    dm.setup()
    raw, row = dm.raw["train"][3], dm.datasets["train"][3]
    expected = load_model(best).embed([raw["anchor"], raw["positive"], raw["negative"]], normalize=True)
    assert torch.allclose(torch.tensor(row["teacher"]), expected, atol=1e-5)  # [texts, width]: each text's vector
    batch = next(iter(dm.train_dataloader()))
    assert batch["teacher"].shape == (len(batch["input_ids"]), 3, 64)
    metrics = train.train(compose([*data(pairs, "data.negative_columns=[negative]"), *TINY, f"distill.teacher={best}",
                                   "task.loss.mini_batch_size=8"], tmp_path / "run"))
    assert 0.0 < metrics["test/ndcg@10"] <= 1.0


def test_a_taught_contrastive_task_refuses_single_extra_texts(pairs, tmp_path, matryoshka_run):
    import train

    with pytest.raises(ConfigError, match="distill.extra_text and distill.augment add single texts; task=contrastive"):
        train.train(compose([*data(pairs), *TINY, f"distill.teacher={matryoshka_run[1]}",
                             "distill.extra_text=rotten_tomatoes_corpus"], tmp_path))
