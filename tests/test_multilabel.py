"""task=multilabel: several labels per text, end to end through train.py on local files shaped like the Hub's
multi-label sets (a list of names per text in json, comma-separated names in csv, ClassLabel ids in parquet),
then predict, export (ours, ONNX) and the one-line refusals."""

import csv
import json
import random
import subprocess
import sys

import pytest
import torch

import encoder
from conftest import TINY, compose
from encoder.core.errors import ConfigError, DataError, LabelSetError
from encoder.tasks.multilabel import MultiLabelPredictor
from encoder.training.data.datamodule import TextDataModule

# Comments in the style of GoEmotions: each emotion has its own words; a comment carries 0, 1 or 2 of them.
CUES = {"joy": ["so happy", "this made my day", "love it", "wonderful news"],
        "anger": ["this is infuriating", "so angry", "absolutely furious", "how dare they"],
        "surprise": ["wow did not expect", "no way", "what a twist", "cannot believe it"]}
FILLER = ["the game last night", "my landlord", "the new update", "that episode", "my cat", "the traffic today",
          "this thread", "the ending"]


def comments(n: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = sorted(rng.sample(sorted(CUES), rng.choice([0, 1, 1, 2])))
        parts = [rng.choice(FILLER)] + [rng.choice(CUES[label]) for label in labels]
        rng.shuffle(parts)
        rows.append((" , ".join(parts), labels))
    return rows


def write_json(path, rows):
    path.write_text("".join(json.dumps({"text": t, "labels": ls}) + "\n" for t, ls in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on 600 comments (json lists of names), with its run directory and test metrics."""
    import train

    tmp = tmp_path_factory.mktemp("multilabel")
    files = {s: write_json(tmp / f"{s}.jsonl", comments(n, seed)) for s, n, seed in
             (("train", 600, 0), ("validation", 120, 1), ("test", 120, 2))}
    out = tmp / "run"
    overrides = ["task=multilabel", "data=local_files", "data.path=json", *TINY, "trainer.max_epochs=6",
                 "trainer.limit_train_batches=null", "data.max_train_samples=null", "data.max_eval_samples=null",
                 "optim.lr=3e-3", "tokenizer.vocab_size=300", "tokenizer.min_frequency=1",
                 *(f"data.data_files.{s}={p}" for s, p in files.items())]
    metrics = train.train(compose(overrides, out))
    return out, metrics, files


def test_it_learns_several_labels_per_text_and_logs_each_labels_f1(trained):
    out, metrics, _ = trained
    # a constant guess of the most frequent label scores micro-F1 of about 0.4 on this data
    assert metrics["test/micro_f1"] > 0.9 and metrics["test/macro_f1"] > 0.9
    assert metrics["test/exact_match"] > 0.75
    for label in CUES:
        assert metrics[f"test/f1/{label}"] > 0.8
    assert metrics["objective"] == metrics["best_val/micro_f1"]
    best = next((out / "checkpoints").glob("best-epoch*-micro_f1-*.ckpt"))
    hp = torch.load(best, weights_only=True)["hyper_parameters"]
    assert hp["task"] == "multilabel" and hp["label_names"] == ["anger", "joy", "surprise"]


def test_predict_gives_the_labels_past_the_threshold_and_every_probability(trained):
    out, _, _ = trained
    best = next((out / "checkpoints").glob("best-*.ckpt"))
    predictor = encoder.load_model(best)
    assert isinstance(predictor, MultiLabelPredictor)
    both, none = predictor.predict(["so angry , my landlord , what a twist", "my cat"])
    assert set(both["labels"]) == {"anger", "surprise"} and none["labels"] == []
    assert set(both["probs"]) == {"anger", "joy", "surprise"}
    assert both["probs"]["anger"] > 0.5 and both["probs"]["joy"] < 0.5
    predictor.threshold = 0.0  # every label passes; the most probable first
    everything = predictor.predict(["so angry , my landlord"])[0]["labels"]
    assert everything[0] == "anger" and len(everything) == 3
    done = subprocess.run([sys.executable, "-m", "encoder.predict", str(best), "wonderful news , the ending"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["labels"] == ["joy"]
    done = subprocess.run([sys.executable, "-m", "encoder.predict", str(best), "wonderful news , the ending",
                           "--threshold", "0"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["labels"][0] == "joy" and len(json.loads(done.stdout)["labels"]) == 3
    for bad in ("1.5", "-0.1"):
        refused = subprocess.run([sys.executable, "-m", "encoder.predict", str(best), "x", "--threshold", bad],
                                 capture_output=True, text=True)
        assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0
        assert "must be a probability in [0, 1]" in refused.stderr


def test_the_onnx_export_gives_the_same_probabilities(trained, tmp_path):
    out, _, _ = trained
    best = next((out / "checkpoints").glob("best-*.ckpt"))
    subprocess.run([sys.executable, "-m", "encoder.export", str(best), str(tmp_path / "export"), "--onnx"],
                   check=True, capture_output=True)
    texts = ["so angry , my landlord , what a twist", "my cat", "love it"]
    ours = encoder.load_model(tmp_path / "export").probabilities(texts)
    onnx = encoder.load_model(tmp_path / "export", backend="onnx").probabilities(texts)
    assert torch.allclose(ours, onnx, atol=1e-5)
    assert torch.allclose(ours, encoder.load_model(best).probabilities(texts), atol=1e-6)


def _setup(tmp_path, train_file, **data):
    dm = TextDataModule(task="multilabel", data_files={"train": str(train_file)}, label_column="labels",
                        tokenizer={"vocab_size": 200, "min_frequency": 1}, cache_dir=str(tmp_path / "cache"), **data)
    dm.setup()
    return dm


def test_csv_cells_of_comma_separated_names_are_label_lists(tmp_path):
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "labels"), *((t, ",".join(ls)) for t, ls in comments(60, 3))])
    dm = _setup(tmp_path, path)
    assert dm.label_names == ["anger", "joy", "surprise"]
    text, labels = dm.raw["train"][0]["text"], dm.raw["train"][0]["labels"]
    hot = dm.datasets["train"][0]["labels"]
    assert hot == [float(name in labels.split(",")) for name in dm.label_names], text
    batch = dm.collator([dm.datasets["train"][i] for i in range(4)])
    assert batch["labels"].shape == (4, 3) and set(batch["labels"].flatten().tolist()) <= {0.0, 1.0}


def test_json_label_names_are_read_as_csv_cells_are_spaces_and_all(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"text": f"text {i}", "labels": [" joy", "anger "] if i % 2 else ["joy"]} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    dm = _setup(tmp_path, path, path="json")
    assert dm.label_names == ["anger", "joy"]  # not " joy" and "anger " as labels of their own
    assert dm.datasets["train"][1]["labels"] == [1.0, 1.0]


def test_classlabel_ids_take_the_names_of_the_label_set(tmp_path):
    """What go_emotions on the Hub holds: a list of ClassLabel ids per text."""
    from datasets import ClassLabel, Dataset, Features, List, Value

    names = ["anger", "joy", "surprise", "neutral"]
    rows = comments(40, 4)
    ds = Dataset.from_dict({"text": [t for t, _ in rows], "labels": [[names.index(l) for l in ls] for _, ls in rows]},
                           features=Features({"text": Value("string"), "labels": List(ClassLabel(names=names))}))
    ds.to_parquet(tmp_path / "train.parquet")
    dm = _setup(tmp_path, tmp_path / "train.parquet", path="parquet")
    assert dm.label_names == names  # the ClassLabel's order, "neutral" included though no text has it
    first = dm.datasets["train"][0]["labels"]
    assert first == [float(i in ds[0]["labels"]) for i in range(4)]


@pytest.mark.parametrize("value, error, message", [
    ("", DataError, "no text of the train split has a label in 'labels'"),
    (7, DataError, "needs a list of labels per text"),
    (["joy", "boredom"], LabelSetError, "outside the label set"),
])
def test_bad_labels_are_refused_in_one_line(tmp_path, value, error, message):
    rows = [{"text": t, "labels": ls} for t, ls in comments(20, 5)] + [{"text": "odd one", "labels": value}]
    if not isinstance(value, list):  # a whole column of them: empty cells (the labels are elsewhere), numbers
        rows = [{"text": t, "labels": value} for t, _ in comments(20, 5)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(error, match=message) as caught:
        _setup(tmp_path, path, path="json", label_names=["anger", "joy", "surprise"])
    assert "\n" not in str(caught.value)


def test_a_list_of_labels_for_a_single_label_task_names_multilabel(tmp_path):
    path = write_json(tmp_path / "train.jsonl", comments(20, 6))
    dm = TextDataModule(task="classification", data_files={"train": str(path)}, label_column="labels", path="json",
                        tokenizer={"vocab_size": 200, "min_frequency": 1}, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="not one label per text; task=classification needs one .*task=multilabel"):
        dm.setup()


def test_the_go_emotions_config_composes_for_the_hub(tmp_path):
    from encoder.training.config import validate

    cfg = compose(["task=multilabel", "data=go_emotions"], tmp_path)
    validate(cfg)
    assert (cfg.data.path, cfg.data.name, cfg.data.text_column, cfg.data.label_column) == \
        ("google-research-datasets/go_emotions", "simplified", "text", "labels")
    assert cfg.objective == "val/micro_f1" and cfg.callbacks.model_checkpoint.mode == "max"


def test_distilling_it_is_refused_in_one_line(tmp_path):
    from encoder.training.config import validate

    with pytest.raises(ConfigError, match="task=multilabel cannot be distilled yet"):
        validate(compose(["task=multilabel", "distill.teacher=some.ckpt"], tmp_path))
