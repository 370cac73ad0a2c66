"""A few labelled rows: classification with task.loss.name=setfit (encoder/tasks/classification.py), SetFit's method.
The pair loss against hand-computed values, its head against scikit-learn's logistic regression, a tiny run whose
classes come apart, the ordinary checkpoint it leaves, the recipe experiment=small_data, and the mistakes refused."""

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import encoder
from conftest import ROOT, TINY, compose
from encoder.core.errors import ConfigError, DataError
from encoder.tasks.classification import SetFit, label_pairs_loss, logistic_regression
from encoder.tasks.multilabel import MultiLabelSetFit


def loss(rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return label_pairs_loss(rows, SetFit().alike(labels))


def test_the_pair_loss_weighs_each_pair_once_and_both_kinds_alike():
    # two rows of one label at right angles: one pair, cosine 0 where it should be 1. (Counting each row with
    # itself, a perfect pair, would give 1/3.)
    assert loss(torch.tensor([[1.0, 0.0], [0.0, 3.0]]), torch.tensor([1, 1])).item() == 1.0
    # rows 0 and 1 share a label (cosine 0.6: (0.6 - 1)^2 = 0.16); the pairs with row 2 differ (cosines 0 and 0.8:
    # squares 0 and 0.64, mean 0.32); the two kinds averaged: (0.16 + 0.32) / 2
    rows = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    assert loss(rows, torch.tensor([0, 0, 2])).item() == pytest.approx((0.16 + 0.32) / 2)
    # every row its own label: only the pairs that should be apart count (squares 0.36, 0, 0.64)
    assert loss(rows, torch.tensor([0, 1, 2])).item() == pytest.approx(1 / 3)
    # one row: no pair, nothing learnt (and no NaN)
    one = torch.ones(1, 2, requires_grad=True)
    alone = loss(one, torch.tensor([0]))
    alone.backward()
    assert alone.item() == 0.0 and torch.equal(one.grad, torch.zeros(1, 2))


def test_rows_with_several_labels_pair_up_when_they_share_one():
    # labels {a}, {a, b}, {b}, none: rows 0-1 share a, 1-2 share b; 0-2 and every pair with row 3 share nothing
    hot = torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0]])
    assert MultiLabelSetFit().alike(hot)[torch.ones(4, 4, dtype=torch.bool).triu(1)].tolist() == [
        True, False, False, True, False, False]
    assert MultiLabelSetFit().rows_per_label(hot, 2) == [2, 2]


@pytest.mark.parametrize("classes", [2, 3])
def test_the_head_is_scikit_learns_logistic_regression_on_the_same_embeddings(classes):
    from sklearn.linear_model import LogisticRegression

    generator = torch.Generator().manual_seed(classes)
    labels = torch.arange(60) % classes
    x = torch.randn(60, 8, generator=generator) + 1.5 * F.one_hot(labels, 8).float()  # overlapping classes
    weight, bias = logistic_regression(x, labels, classes, C=0.5)
    theirs = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(x.double().numpy(), labels.numpy())
    ours = (x @ weight.T + bias).softmax(-1)
    assert np.abs(ours.numpy() - theirs.predict_proba(x.numpy())).max() < 1e-4
    assert (ours.argmax(-1).numpy() == theirs.predict(x.numpy())).all()
    assert 0 < (ours.argmax(-1) != labels).float().mean() < 0.5  # (a set it cannot fit exactly: the L2 term matters)


@pytest.fixture(scope="module")
def two_kinds(tmp_path_factory, rt_files):
    """A toy set of two labels: critic snippets as written ("plain") and with each word spelt backwards
    ("backwards"): other tokens, the same lengths. 24 training rows of each, 20 of each held out."""
    with open(rt_files["train"], encoding="utf-8") as f:
        texts = [r["text"] for _, r in zip(range(400), csv.DictReader(f)) if len(r["text"].split()) >= 6][:128]
    rows = [(t, "plain") if i % 2 else (" ".join(w[::-1] for w in t.split()), "backwards") for i, t in enumerate(texts)]
    folder = tmp_path_factory.mktemp("two_kinds")
    files = {"train": folder / "train.csv", "test": folder / "test.csv"}
    for split, chosen in (("train", rows[:48]), ("test", rows[48:88])):
        with open(files[split], "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "label"), *chosen])
    return files


def setfit_run(files: dict, *extra: str) -> list[str]:
    return ["data=local_files", *(f"data.data_files.{s}={p}" for s, p in files.items()), "task.loss.name=setfit",
            "data.val_fraction=0", *TINY, "trainer.limit_train_batches=null", "trainer.limit_val_batches=null",
            "trainer.limit_test_batches=null", "data.max_eval_samples=null", *extra]


def cosine_gap(vectors: torch.Tensor, labels: list[str]) -> float:
    """Mean cosine of the pairs of one label minus that of the pairs of two."""
    z = F.normalize(vectors, dim=-1)
    cosine = z @ z.T
    same = torch.tensor([[a == b for b in labels] for a in labels])
    apart = ~torch.eye(len(labels), dtype=torch.bool)
    return (cosine[same & apart].mean() - cosine[~same].mean()).item()


def test_a_few_rows_train_a_body_whose_labels_come_apart_and_an_ordinary_classifier(two_kinds, tmp_path):
    import train
    from sklearn.linear_model import LogisticRegression

    from encoder.export import export

    with open(two_kinds["test"], encoding="utf-8") as f:
        held_out = list(csv.DictReader(f))
    with open(two_kinds["train"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts, labels = [r["text"] for r in held_out], [r["label"] for r in held_out]
    gaps = {}
    for lr in ("1e-9", "1e-2"):  # untrained (the head still fitted), then trained
        out = tmp_path / f"lr{lr}"
        metrics = train.train(compose(setfit_run(two_kinds, "trainer.max_epochs=8", f"optim.lr={lr}"), out))
        model = encoder.load_model(next((out / "checkpoints").glob("best-*.ckpt")))
        gaps[lr] = cosine_gap(model.embed(texts), labels)
    # held out, the untrained body hardly sets the kinds apart (cosine gap 0.04); trained on 48 rows, it does (1.12:
    # pairs of a kind near 1, pairs across near 0)
    assert gaps["1e-2"] > gaps["1e-9"] + 0.5
    assert metrics["test/acc"] > 0.9
    # its head is a logistic regression (C=1) on the training rows' embeddings by the body it was saved with
    reference = LogisticRegression(tol=1e-10, max_iter=10_000).fit(model.embed([r["text"] for r in rows]).numpy(),
                                                                  [r["label"] for r in rows])
    theirs = reference.predict_proba(model.embed(texts).numpy())[:, list(reference.classes_).index("plain")]
    ours = model.probabilities(texts)[:, model.label_names.index("plain")]
    assert np.abs(ours.numpy() - theirs).max() < 1e-3
    # an ordinary classifier's checkpoint: recorded as task=classification, it predicts and exports as any does
    assert torch.load(next((out / "checkpoints").glob("best-*.ckpt")), weights_only=True)["hyper_parameters"][
        "task"] == "classification"
    folder = export(next((out / "checkpoints").glob("best-*.ckpt")), tmp_path / "export")
    assert encoder.load_model(folder).predict(texts[:3]) == model.predict(texts[:3])
    # and it teaches a student like any classifier
    student = train.train(compose(["data=local_files", *(f"data.data_files.{s}={p}" for s, p in two_kinds.items()),
                                   *TINY, f"distill.teacher={folder}"], tmp_path / "student"))
    assert "test/agreement" in student


def test_rows_with_several_labels_learn_as_setfit_and_each_label_is_its_own_logistic_regression(rt_files, tmp_path):
    import train
    from sklearn.linear_model import LogisticRegression

    with open(rt_files["train"], encoding="utf-8") as f:
        texts = [r["text"] for _, r in zip(range(400), csv.DictReader(f)) if len(r["text"].split()) >= 6][:96]
    rows = []  # labels "backwards" (each word spelt backwards) and "tagged" (ends in "zq zq zq"), any of the four
    for i, text in enumerate(texts):  # combinations
        backwards, tagged = i % 2, i // 2 % 2
        text = " ".join(w[::-1] for w in text.split()) if backwards else text
        rows.append((text + " zq zq zq" if tagged else text, ",".join(["backwards"] * backwards + ["tagged"] * tagged)))
    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    for split, chosen in (("train", rows[:48]), ("test", rows[48:])):
        with open(files[split], "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "labels"), *chosen])
    metrics = train.train(compose([*setfit_run(files, "task=multilabel", "trainer.max_epochs=8", "optim.lr=1e-2",
                                               "data.label_names=[backwards,tagged]")], tmp_path / "run"))
    assert metrics["test/micro_f1"] > 0.9
    model = encoder.load_model(next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt")))
    train_x = model.embed([t for t, _ in rows[:48]]).numpy()
    held_out = [t for t, _ in rows[48:]]
    for k, label in enumerate(model.label_names):  # one-vs-rest: each label's own regression on the embeddings
        reference = LogisticRegression(tol=1e-10, max_iter=10_000).fit(train_x, [label in y for _, y in rows[:48]])
        theirs = reference.predict_proba(model.embed(held_out).numpy())[:, 1]
        assert np.abs(model.probabilities(held_out)[:, k].numpy() - theirs).max() < 1e-3


def test_a_fixed_schedule_spares_no_rows_and_writes_last_ckpt_every_n_epochs(two_kinds, tmp_path):
    import train
    from conftest import LastCheckpointSteps

    from encoder.training.data.datamodule import TextDataModule

    dm = TextDataModule(path="csv", data_files={"train": str(two_kinds["train"])}, val_fraction=0,
                        tokenizer={"vocab_size": 300}, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert dm.raw["validation"]["text"] == dm.raw["train"]["text"] and len(dm.raw["train"]) == 48  # none carved
    train.train(compose([*setfit_run(two_kinds), "trainer.max_epochs=3", "callbacks.last_checkpoint.every_n_epochs=2",
                         "+callbacks.probe._target_=conftest.LastCheckpointSteps"], tmp_path / "run"))
    # three steps an epoch (48 rows, 16 a batch), read after each step: written after epoch 2 (step 6) and at the end
    assert LastCheckpointSteps.seen == [None] * 6 + [6] * 3
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 9


def test_the_few_rows_recipe_is_the_one_measured():
    sys_path = str(ROOT / "benchmarks")
    import sys

    sys.path.insert(0, sys_path)
    try:
        from few_labels import RECIPES
    finally:
        sys.path.remove(sys_path)
    assert RECIPES["ours"] == ["experiment=small_data"]
    cfg = compose(["experiment=small_data"])
    assert cfg.task.loss.name == "setfit" and cfg.model.init_from == "all-MiniLM-L6-v2"
    assert cfg.data.val_fraction == 0 and cfg.callbacks.early_stopping is None
    assert cfg.callbacks.model_checkpoint.monitor == "step" and cfg.callbacks.model_checkpoint.mode == "max"
    assert cfg.trainer.check_val_every_n_epoch == cfg.trainer.max_epochs == 20


@pytest.mark.parametrize("extra, error, message", [
    (["+task.loss.C=0"], ConfigError, "task.loss.C=0 must be a positive number"),
    (["task.loss.name=hinge"], ConfigError, "task.loss.name='hinge' is unknown; choose one of ['cross_entropy', 'setfit']"),
    (["data.batch_size=1"], ConfigError, "data.batch_size=1 has none; use 2 or more"),
    (["model.pooler=true"], ConfigError, "set model.pooler=false"),
    (["distill.teacher=all-MiniLM-L6-v2"], ConfigError, "distil afterwards"),
    (["data.max_train_samples=3"], DataError, "label 'plain' has 1 training row; give every label at least 2"),
])
def test_mistakes_are_one_line_before_any_training(two_kinds, tmp_path, extra, error, message):
    import train

    with pytest.raises(error, match=message.replace("[", r"\[").replace("(", r"\(")) as e:
        train.train(compose([*setfit_run(two_kinds), *extra], tmp_path))
    assert "\n" not in str(e.value)
    assert not list(tmp_path.glob("checkpoints/*"))
