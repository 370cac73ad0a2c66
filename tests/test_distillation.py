"""Distillation (encoder/tasks/distillation.py; its teacher: encoder/training/data/teacher.py): a tiny teacher
checkpoint teaches a tiny student with its own tokenizer, through train.py; the teacher's outputs are cached; wrong teachers and evaluation texts
in the extra text are kept out."""

import csv
import math

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import encoder
from conftest import TINY, compose
from encoder.core.checkpoint import stamp
from encoder.core.errors import ConfigError, DataError
from encoder.tasks import Step, get
from encoder.training.data import teacher as teaching
from encoder.training.data.augment import augment
from encoder.training.data.datamodule import TextDataModule

# the teacher has a tokenizer of its own (another vocabulary size)
TEACHER = [*TINY, "trainer.max_epochs=3", "tokenizer.vocab_size=600", "optim.lr=2e-3"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, rt_files):
    import train

    out = tmp_path_factory.mktemp("teacher")
    train.train(compose(TEACHER, out))
    return next((out / "checkpoints").glob("best-*.ckpt"))


def test_a_student_with_its_own_tokenizer_learns_from_the_teacher(teacher, tmp_path):
    import train

    out = tmp_path / "student"
    metrics = train.train(compose([*TINY, "trainer.max_epochs=3", "optim.lr=2e-3", f"distill.teacher={teacher}",
                                   "distill.alpha=0.9", "trainer.limit_train_batches=16"], out))
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5  # the student's loss falls
    agreement = [e.value for e in events.Scalars("val/agreement")]
    assert len(agreement) == 3 and agreement[-1] > 0.75  # well above chance (0.5 for two balanced labels)
    assert "test/agreement" in metrics and "test/acc" in metrics
    # an ordinary checkpoint of its task, with the student's own tokenizer
    best = next((out / "checkpoints").glob("best-*.ckpt"))
    student = encoder.load_model(best)
    assert student.task_name == "classification"
    assert student.tokenizer.get_vocab_size() != encoder.load_model(teacher).tokenizer.get_vocab_size()
    assert student.predict(["a gorgeous, witty, seductive movie"])[0]["label"] in ("rotten", "fresh")


def datamodule(tmp_path, teacher, **distill) -> TextDataModule:
    return TextDataModule(source="rotten_tomatoes_critics", label_names=["rotten", "fresh"], max_length=64,
                          max_train_samples=200, max_eval_samples=50, tokenizer={"vocab_size": 500},
                          cache_dir=str(tmp_path / "cache"), distill={"teacher": str(teacher), **distill})


def test_teacher_outputs_are_cached_and_recomputed_when_the_teacher_changes(teacher, tmp_path, rt_files):
    copy = tmp_path / "teacher.ckpt"
    copy.write_bytes(teacher.read_bytes())
    before = teaching.teacher_batches_run
    first = datamodule(tmp_path, copy)
    first.setup()
    assert teaching.teacher_batches_run > before  # the teacher ran
    outputs = first.datasets["train"]["teacher"]
    assert len(outputs) == 200 and len(outputs[0]) == 2
    before = teaching.teacher_batches_run
    again = datamodule(tmp_path, copy)
    again.setup()
    assert teaching.teacher_batches_run == before  # a second run reuses the cached outputs
    assert again.datasets["train"]["teacher"] == outputs
    ckpt = torch.load(copy, weights_only=True)
    ckpt["state_dict"]["model.classifier.bias"] += 1.0  # the same file, other weights (e.g. retrained)
    stamp(ckpt)
    torch.save(ckpt, copy)
    changed = datamodule(tmp_path, copy)
    changed.setup()
    assert teaching.teacher_batches_run > before  # recomputed
    assert changed.datasets["train"]["teacher"] != outputs


def test_a_teacher_with_other_labels_is_refused_in_one_line(teacher, tmp_path):
    import train

    # the same labels in another order would swap the teacher's classes silently
    cfg = compose([*TINY, "data.label_names=[fresh,rotten]", f"distill.teacher={teacher}"], tmp_path)
    with pytest.raises(DataError, match=r"was trained for task=classification with labels \['rotten', 'fresh'\]; "
                                        r"this run is task=classification with labels \['fresh', 'rotten'\]") as e:
        train.train(cfg)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="task=mlm cannot be distilled yet"):
        train.train(compose(["task=mlm", "data=rotten_tomatoes_corpus", *TINY, f"distill.teacher={teacher}"],
                            tmp_path / "mlm"))
    with pytest.raises(ConfigError, match="distill.extra_text needs distill.teacher"):
        train.train(compose([*TINY, "distill.extra_text=rotten_tomatoes_corpus"], tmp_path / "extra"))


def test_no_evaluation_text_reaches_training_through_extra_text(teacher, tmp_path, rt_files):
    held_out = []
    for split in ("validation", "test"):
        with open(rt_files[split], encoding="utf-8") as f:
            held_out += [row["text"] for _, row in zip(range(20), csv.DictReader(f))]
    new = [f"an entirely new sentence about film number {i}" for i in range(30)]
    extra = tmp_path / "extra.csv"
    with open(extra, "w", newline="", encoding="utf-8") as f:
        # evaluation texts as they are, and variants that read the same: spacing, case, spaces before punctuation
        variants = [f"  {held_out[0]}  ", held_out[1].upper(), "  ".join(held_out[2].split()),
                    held_out[3].replace(",", " ,").replace(".", " .")]
        csv.writer(f).writerows([("text",), *[(t,) for t in held_out + new], ("",), *[(v,) for v in variants]])
    dm = TextDataModule(source="rotten_tomatoes_critics", label_names=["rotten", "fresh"], max_length=64,
                        tokenizer={"vocab_size": 500}, cache_dir=str(tmp_path / "cache"),
                        max_train_samples=200, distill={"teacher": str(teacher), "extra_text": str(extra)})
    dm.setup()
    train = dm.datasets["train"]
    unlabelled = [i for i, y in enumerate(train["labels"]) if y == -100]
    assert len(train) == 200 + 30 and len(unlabelled) == 30  # only the new texts joined, without gold labels
    texts = {dm.tokenizer.decode(train[i]["input_ids"]) for i in unlabelled}
    assert texts == {dm.tokenizer.decode(dm.tokenizer.encode(t).ids) for t in new}
    assert all(len(train[i]["teacher"]) == 2 for i in unlabelled)  # the teacher labelled them


def test_a_regression_teacher_teaches_a_regression_student_end_to_end(cache_dir, tmp_path):
    """Float scores (vader's human ratings): the student reads them as numbers, as its base task does."""
    import train
    from encoder.training.data.sources import vader_sentiment

    vader_sentiment(cache_dir)
    regression = ["task=regression", "data=vader_sentiment", *TINY, "trainer.max_epochs=2"]
    train.train(compose(regression, tmp_path / "teacher"))
    teacher = next((tmp_path / "teacher" / "checkpoints").glob("best-*.ckpt"))
    metrics = train.train(compose([*regression, f"distill.teacher={teacher}", "tokenizer.vocab_size=800"],
                                  tmp_path / "student"))
    assert metrics["test/agreement"] > 0.5  # Pearson with the teacher's values: it learnt them
    assert math.isfinite(metrics["test/pearson"])
    student = encoder.load_model(next((tmp_path / "student" / "checkpoints").glob("best-*.ckpt")))
    assert student.task_name == "regression" and student.label_names == ["score"]
    assert isinstance(student.predict(["so good"])[0]["value"], float)


def test_a_distilled_task_is_its_base_task_in_everything_but_the_loss(monkeypatch):
    from encoder.tasks import Task
    from encoder.tasks.classification import Classification
    from encoder.tasks.distillation import Distilled

    own = {"step", "metrics", "update", "target", "learns_from", "carries"}  # what teaching changes
    for name in ("classification", "regression"):
        base, task = get(name), teaching.build_task(name, {"teacher": "t.ckpt"})
        hooks = {a for a in dir(Task) if not a.startswith("_")} - own
        assert hooks >= {"label_map", "label_values", "collate_labels", "build_model", "architecture", "monitor"}
        assert {h: getattr(task, h) for h in hooks} == {h: getattr(base, h) for h in hooks}
    # a hook added to Task tomorrow reaches distilled tasks with nobody listing it
    monkeypatch.setattr(Task, "new_hook", lambda self: f"{self.name}'s own", raising=False)
    assert task.new_hook() == "regression's own"
    assert task.label_map("score")[0] == ["score"]  # regression reads numbers, not class names
    # what the base's batches carry, they still carry; the teacher's outputs join them
    carrying = type("Carrying", (Classification,), {"carries": ("weights",)})()
    assert Distilled(carrying, teacher="t.ckpt").carries == ("weights", "teacher")


def test_the_loss_mixes_the_teacher_term_and_the_gold_labels():
    # classification: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE on labelled rows only
    task = teaching.build_task("classification", {"teacher": "t.ckpt", "temperature": 2.0, "alpha": 0.25})
    student = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-1.0, 3.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-2.0, 2.0]])
    labels = torch.tensor([0, -100, 1])  # the middle example has no gold label (extra text)

    class Fixed(torch.nn.Module):
        cfg = None

        def forward(self, *args):
            return student

    step = task.step(Fixed(), {"input_ids": None, "padding_mask": None, "labels": labels, "teacher": teacher})
    kl = (F.softmax(teacher / 2, -1) * (F.log_softmax(teacher / 2, -1) - F.log_softmax(student / 2, -1))).sum(-1)
    expected = 0.25 * 4 * kl.mean() + 0.75 * F.cross_entropy(student[[0, 2]], labels[[0, 2]])
    assert math.isclose(step.loss.item(), expected.item(), rel_tol=1e-6)
    assert step.targets.tolist() == [0, 1] and step.count == 3
    # regression: alpha * MSE to the teacher + (1 - alpha) * MSE to the gold value (NaN: none)
    task = teaching.build_task("regression", {"teacher": "t.ckpt", "alpha": 0.5})
    values = torch.tensor([[1.0], [2.0], [3.0]])
    Fixed.forward = lambda self, *args: values
    gold = torch.tensor([1.5, float("nan"), 2.0])
    step = task.step(Fixed(), {"input_ids": None, "padding_mask": None, "labels": gold,
                               "teacher": torch.tensor([[0.0], [2.0], [4.0]])})
    expected = 0.5 * ((1 + 0 + 1) / 3) + 0.5 * ((0.25 + 1.0) / 2)
    assert math.isclose(step.loss.item(), expected, rel_tol=1e-6)
    assert isinstance(step, Step)


def test_augmented_texts_are_seeded_varied_and_follow_the_rules():
    texts = ["a gorgeous , witty , seductive movie", "dull and lifeless", "a joy to watch from start to end"]
    first, again, other = (augment(texts, 20, seed) for seed in (0, 0, 1))
    assert first == again and first != other and len(first) == 60
    words = {w for t in texts for w in t.split()}
    assert all(set(v.split()) <= words | {"[MASK]"} for v in first)  # masked, swapped or cut; nothing invented
    assert any("[MASK]" in v for v in first) and any(len(v.split()) < 3 for v in first)  # masks and n-grams
    assert len(set(first)) > 30


def test_augmented_variants_are_labelled_by_the_teacher_and_cached(teacher, tmp_path, rt_files):
    before = teaching.teacher_batches_run
    dm = datamodule(tmp_path, teacher, augment=4)
    dm.setup()
    train = dm.datasets["train"]
    variants = [i for i, y in enumerate(train["labels"]) if y == -100]
    assert 200 * 3 < len(variants) <= 200 * 4  # 4 per text, less the empty ones
    assert all(len(train[i]["teacher"]) == 2 for i in variants)  # the teacher's logits, no gold label
    assert teaching.teacher_batches_run > before
    seen = teaching.teacher_batches_run
    again = datamodule(tmp_path, teacher, augment=4)
    again.setup()
    assert teaching.teacher_batches_run == seen  # the variants and their labels come from the cache
    assert again.datasets["train"]["input_ids"] == train["input_ids"]


def test_no_augmented_variant_reads_as_an_evaluation_text(teacher, tmp_path):
    # "dull" is a test text; the training text "dull movie" yields it as a 1-gram (and "DULL" reads the same)
    from datasets import Dataset

    from encoder.training.config import DataConfig

    raw = {"train": Dataset.from_dict({"text": ["dull movie"] * 10 + ["a joy to watch"] * 10}),
           "test": Dataset.from_dict({"text": ["DULL"]})}
    tokenizer = encoder.load_model(teacher).tokenizer
    kept = teaching._variants(raw, DataConfig(), 30, 0, tmp_path, tokenizer)["text"]
    everything = augment(raw["train"]["text"], 30, 0)
    assert "dull" in everything  # the rules do produce it
    assert kept and all(v.strip().lower() != "dull" for v in kept)
    assert len(kept) == len([v for v in everything if v.strip() and v.lower() != "dull"])


@pytest.mark.parametrize("overrides, message", [
    (["distill.augment=4"], "distill.augment needs distill.teacher"),
    (["distill.teacher=t.ckpt", "distill.augment=-1"], "distill.augment=-1 must be a whole number of variants"),
    (["distill.teacher=t.ckpt", "distill.augment=2", "data.text_pair_column=other"], "distill.augment varies single texts"),
])
def test_bad_augment_values_are_refused_in_one_line(overrides, message, tmp_path):
    from encoder.training.config import validate

    with pytest.raises(ConfigError, match=message) as error:
        validate(compose([*TINY, *overrides], tmp_path))
    assert "\n" not in str(error.value)
