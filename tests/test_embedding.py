"""task=embedding (encoder/tasks/embedding.py): a student learns a sentence embedder's vectors on unlabelled
text; the result embeds in the teacher's space, exports as sentence-transformers and starts a task."""

import csv

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import encoder
from conftest import TINY, WeightsAtStart, compose
from encoder.core.errors import ConfigError
from encoder.export import export

TEXTS = ["a gorgeous, witty, seductive movie", "the plot is a mess", "", "an hour too long and not funny once"]
CORPUS = ["data=rotten_tomatoes_corpus", "data.max_train_samples=2048", "data.max_eval_samples=64"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, rt_files):
    """A sentence-transformers folder (a BERT folder + mean pooling) of another shape and vocabulary."""
    import train

    out = tmp_path_factory.mktemp("teacher")
    train.train(compose([*TINY, "model.embed_dim=48", "model.attention.num_heads=4", "tokenizer.vocab_size=700",
                         "trainer.max_epochs=1"], out))
    folder = tmp_path_factory.mktemp("st") / "teacher"
    export(next((out / "checkpoints").glob("last*.ckpt")), folder, format="sentence-transformers")
    return folder


@pytest.fixture(scope="module")
def student(tmp_path_factory, teacher):
    import train

    out = tmp_path_factory.mktemp("student")
    train.train(compose([*TINY, "task=embedding", *CORPUS, f"distill.teacher={teacher}", "trainer.max_epochs=3",
                         "optim.lr=3e-3", "trainer.limit_train_batches=null"], out))
    return out


def test_the_student_comes_closer_to_the_teachers_vectors(student):
    events = EventAccumulator(str(student / "tensorboard")).Reload()
    mse = [e.value for e in events.Scalars("val/mse")]
    cosine = [e.value for e in events.Scalars("val/cosine")]
    assert len(mse) == 3 and mse[0] > mse[1] > mse[2] and mse[2] < 0.9 * mse[0] and cosine[2] > cosine[0]


def test_it_embeds_in_the_teachers_space_and_exports_as_sentence_transformers(student, teacher, tmp_path, rt_files):
    from sentence_transformers import SentenceTransformer

    best = next((student / "checkpoints").glob("best-*.ckpt"))
    model = encoder.load_model(best)
    assert model.task_name == "embedding"
    ours = model.embed(TEXTS)
    theirs = SentenceTransformer(str(teacher), device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert ours.shape == theirs.shape == (4, 48)  # the teacher's width, not the student's 64
    assert model.predict(TEXTS[:1])[0]["embedding"] == pytest.approx(ours[0].tolist(), abs=1e-6)
    # each text's vector follows the teacher's for that text, not merely the direction all of them share:
    # centred, it is closer to its own text's teacher vector than to another text's
    texts = [r["text"] for r in csv.DictReader(open(rt_files["test"], encoding="utf-8"))][:200]
    mine = model.embed(texts)
    target = F.normalize(SentenceTransformer(str(teacher), device="cpu").encode(texts, convert_to_tensor=True), dim=-1)
    mine, target = mine - mine.mean(0), target - target.mean(0)
    matched = F.cosine_similarity(mine, target).mean()
    shuffled = F.cosine_similarity(mine, target.roll(1, 0)).mean()
    # (0.72 and 0.00 here; from the first 512 corpus texts in file order, a few films' reviews: 0.22)
    assert matched > 0.4 and matched > shuffled + 0.3
    export(best, tmp_path / "st", format="sentence-transformers")
    exported = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(exported, ours, atol=1e-5)  # the projection is its Dense module
    export(best, tmp_path / "onnx", onnx=True)  # and onnxruntime gives the same vectors
    assert torch.allclose(encoder.load_model(tmp_path / "onnx", backend="onnx").embed(TEXTS), ours, atol=1e-5)


def test_its_checkpoint_starts_a_task_through_init_from(student, tmp_path):
    import train

    best = next((student / "checkpoints").glob("best-*.ckpt"))
    metrics = train.train(compose([*TINY, f"model.init_from={best}", "+callbacks.start._target_=conftest.WeightsAtStart"],
                                  tmp_path / "task"))
    trained = torch.load(best, weights_only=True)["state_dict"]
    encoder_weights = {k[len("model."):]: v for k, v in trained.items() if k.startswith("model.encoder.")}
    assert encoder_weights and all(torch.equal(WeightsAtStart.seen[k], v) for k, v in encoder_weights.items())
    assert "classifier.weight" in WeightsAtStart.seen and "projection.weight" not in WeightsAtStart.seen
    assert 0.0 < metrics["test/acc"] <= 1.0


def test_an_embedding_checkpoint_is_evaluated_against_a_teacher(student, teacher, tmp_path):
    import train

    best = next((student / "checkpoints").glob("best-*.ckpt"))
    given = ["train=false", f"ckpt_path={best}", "task=embedding", "data.max_eval_samples=64"]
    metrics = train.train(compose([*given, f"distill.teacher={teacher}"], tmp_path / "eval"))
    last_validation = EventAccumulator(str(student / "tensorboard")).Reload().Scalars("val/cosine")[-1].value
    assert metrics["test/cosine"] > 0.5 and abs(metrics["test/cosine"] - last_validation) < 0.1
    with pytest.raises(ConfigError, match="task=embedding learns from a teacher and is scored against it"):
        train.train(compose(given, tmp_path / "alone"))


def test_extra_text_from_a_text_file_joins_the_training_texts(teacher, tmp_path):
    from encoder.training.data.datamodule import TextDataModule

    extra = tmp_path / "extra.txt"
    extra.write_text("".join(f"an unseen sentence about film number {i}\n" for i in range(40)), encoding="utf-8")
    dm = TextDataModule(task="embedding", source="rotten_tomatoes_corpus", label_column=None, max_length=32,
                        max_train_samples=100, max_eval_samples=20, tokenizer={"vocab_size": 300},
                        cache_dir=str(tmp_path / "cache"), distill={"teacher": str(teacher), "extra_text": str(extra)})
    dm.setup()
    assert len(dm.datasets["train"]) == 100 + 40 and len(dm.datasets["train"][0]["teacher"]) == 48


@pytest.mark.parametrize("overrides, message", [
    ([], "task=embedding learns from a teacher and is scored against it: set distill.teacher"),
    (["distill.teacher=x", "distill.augment=2"], "distill.augment varies labelled training texts"),
    (["distill.teacher=nowhere/"], "distill.teacher=nowhere/ is neither a file, a folder nor a known name"),
    (["model.pooler=true", "distill.teacher={teacher}"], "task=embedding projects the pooled vector to the teacher.s width itself"),
])
def test_bad_values_are_refused_in_one_line(overrides, message, teacher, tmp_path):
    import train

    overrides = [o.format(teacher=teacher) for o in overrides]
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")) as e:
        train.train(compose([*TINY, "task=embedding", *CORPUS, *overrides], tmp_path))
    assert "\n" not in str(e.value)
