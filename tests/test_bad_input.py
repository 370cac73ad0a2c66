"""The bad-input catalogue: each bad config or data gets one clear line (or a documented, logged
handling), never a traceback from deep inside a library, never a NaN."""

import json
import logging

import pytest
import torch

from conftest import compose
from encoder.training.data.datamodule import TextDataModule
from encoder.core.errors import DataError
from encoder.core.errors import ConfigError
from test_data import SENTENCES, module, write_csv


@pytest.mark.parametrize("override,message", [
    ("model.embed_dim=abc", "model.embed_dim: Value 'abc' of type 'str' could not be converted to Integer"),
    ("model.attention.dropout=high", "model.attention.dropout: Value 'high' of type 'str' could not be converted to Float"),
    ("model.norm_first=3", "model.norm_first=3 is not a bool; use true or false"),
    ("+model.hidden=12", "unknown key model.hidden; known keys are"),
    ("model.attention.dropout=1.0", "model.attention.dropout=1.0 must be in [0, 1)"),
    ("optim.lr=-0.001", "optim.lr=-0.001 must be a positive number"),
    ("optim.schedule=cosinus", "optim.schedule='cosinus' is unknown; choose one of"),
    ("+optim.momentum=0.9", "unknown key optim.momentum"),
    ("optim.betas=[0.9]", "optim.betas=[0.9] must be two numbers in [0, 1)"),
    ("+data.txt_column=text", "unknown key data.txt_column (did you mean data.text_column?); known keys are"),
    ("data.batch_size=big", "data.batch_size: Value 'big' of type 'str' could not be converted to Integer"),
    ("optim.lrr=1e-3", "unknown key optim.lrr (did you mean optim.lr?); known keys are ['betas', 'decay_ratio', 'eps',"),
    ("model=huge", "model=huge is not a config of the model group; choose one of ['base', 'minilm_l3', 'minilm_l6', 'modern_small', 'modernbert_base', 'small', 'tiny']"),
    ("seed=abc", "seed: Value 'abc' of type 'str' could not be converted to Integer"),
    ("model.vocab_size=100", "model.vocab_size is decided by the tokenizer and the data; leave it unset"),
    ("task.name=nope", "task 'nope' is unknown; known tasks: ['classification', 'contrastive', 'embedding', 'mlm', 'multilabel', 'regression'"),
    ("data.max_length=600", "data.max_length=600 exceeds model.max_positions=512"),
    ("+trainer.max_epoch=3", "unknown key trainer.max_epoch (did you mean trainer.max_epochs?); known keys are"),
    ("trainer.max_epoch=3", "unknown key trainer.max_epoch (did you mean trainer.max_epochs?); known keys are"),
    ("trainer.max_epochs=abc", "trainer.max_epochs: Value 'abc' of type 'str' could not be converted to Integer"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 must be at least 1"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 must be at least 0"),
    ("trainer.max_epochs=-3", "trainer.max_epochs=-3: `max_epochs` must be a non-negative integer or -1"),
    ("trainer.devices=0", "trainer.devices=0: `Trainer(devices=0)` value is not a valid input"),
    ("trainer.precision=99", "trainer.precision=99: Precision 99 is invalid"),
    ("trainer.accelerator=tpu", "trainer.accelerator=tpu: Requirement 'torch_xla>=1.13' not met"),
    ("trainer.limit_train_batches=-1", "trainer.limit_train_batches=-1: You have passed invalid value -1"),
    ("optim.warmup_steps=-10", "optim.warmup_steps=-10 must be >= 0"),
    ("tokenizer.kind=sentencepiece", "tokenizer.kind='sentencepiece' is unknown"),
    ("tokenizer.vocab_size=3", "tokenizer.vocab_size=3"),
    ("task.on_nonfinite_loss=ignore", "task.on_nonfinite_loss='ignore' is unknown"),
    ("model.embed_dim=102", "model.embed_dim=102 is not divisible by model.attention.num_heads=4"),
])
def test_bad_configs_fail_in_one_line_before_data_loading(override, message, tmp_path, monkeypatch):
    import train

    def no_data(self):
        raise AssertionError("data was loaded before the config error")

    monkeypatch.setattr(TextDataModule, "prepare_data", no_data)
    with pytest.raises(ConfigError) as error:
        train.train(compose([override], tmp_path))
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("content,message", [
    (b"text,label\n\"good film\",pos\n\"bad, film\",neg,extra,fields\n" * 3, "has a malformed row"),
    (b"text,label\ncaf\xe9 cr\xe8me,pos\nbad,neg\n", "is not valid UTF-8"),
])
def test_broken_csv_files_get_one_line(tmp_path, content, message):
    dm = module(tmp_path, data_files={"train": write_bytes(tmp_path / "t.csv", content)})
    with pytest.raises(DataError, match=message) as error:
        dm.setup()
    assert "\n" not in str(error.value)


def test_labels_of_mixed_types_are_refused(tmp_path):
    rows = [{"text": t, "label": (1 if y == "pos" else "neg")} for t, y in SENTENCES]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"data.label_column='label' mixes types \(int, str\) in the train split"):
        module(tmp_path, path="json", data_files={"train": str(path)}).setup()


def test_missing_labels_are_counted_and_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": None if i == 3 else y})
                              for i, (t, y) in enumerate(SENTENCES)))
    with pytest.raises(DataError, match=r"1 rows of the (train|validation) split have no 'label'; fill or drop"):
        module(tmp_path, path="json", data_files={"train": str(path)}).setup()


def test_none_and_non_string_texts_are_read_and_logged(tmp_path, caplog):
    rows = [{"text": None, "label": "pos"}, {"text": 12345, "label": "neg"}] + \
        [{"text": t, "label": y} for t, y in SENTENCES]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with caplog.at_level(logging.WARNING):
        dm = module(tmp_path, path="json", data_files={"train": str(path)}, val_fraction=0.01)
        dm.setup()
    assert "texts of the train split are empty or missing; they are kept as empty texts" in caplog.text
    assert len(dm.datasets["train"]) + len(dm.datasets["validation"]) == len(rows)


def test_a_split_of_one_class_warns(tmp_path, caplog):
    files = {"train": write_csv(tmp_path / "t.csv", SENTENCES),
             "test": write_csv(tmp_path / "e.csv", [("fine", "pos"), ("great", "pos")])}
    with caplog.at_level(logging.WARNING):
        module(tmp_path, data_files=files).setup()
    assert "every example of the test split has the label 'pos'" in caplog.text


def test_a_dataset_smaller_than_one_batch_and_extreme_lengths_train_to_finite_loss(tmp_path):
    import lightning as L

    from encoder.training.module import EncoderModule

    rows = [("a", "pos"), ("x" * 1_000_000, "neg"), ("ok", "pos"), ("🎬" * 10, "neg"), ("", "pos")]
    files = {"train": write_csv(tmp_path / "t.csv", rows), "validation": write_csv(tmp_path / "v.csv", rows[:2])}
    dm = module(tmp_path, data_files=files, batch_size=32)
    dm.setup()
    assert len(dm.train_dataloader()) == 1  # one partial batch
    model = EncoderModule("classification", {"embed_dim": 16, "num_layers": 1, "ffn_dim": 32,
                                             "attention": {"num_heads": 2}},
                          dm.tokenizer.to_str(), dm.cfg.max_length, label_names=dm.label_names)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"]) and torch.isfinite(trainer.callback_metrics["val/loss"])


def test_dataset_loading_never_runs_a_loading_script(tmp_path):
    folder = tmp_path / "evil_dataset"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "evil_dataset.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    write_csv(folder / "train.csv", SENTENCES)
    dm = module(tmp_path, path=str(folder), data_files=None)
    with pytest.raises(DataError, match="could not load .*evil_dataset: .*found evil_dataset.py"):
        dm.setup()  # `datasets` >= 4 refuses dataset scripts, and we never ask it to trust one
    assert not marker.exists()
