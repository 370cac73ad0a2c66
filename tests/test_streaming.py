"""data.streaming=true: a corpus read as a stream through train.py: the tokenizer from its first N texts, a run
killed mid-stream and resumed sees the same batches as one that never stopped, and the mistakes are one line."""

import csv
import hashlib

import lightning as L
import pytest
import torch

from conftest import compose
from encoder.errors import ConfigError
from encoder.tokenizer import train_tokenizer
from encoder.training.data.datamodule import TextDataModule
from test_resume import SignalAtStep  # noqa: F401  (callbacks below name it by its path)


class BatchLog(L.Callback):
    """Writes `step sha256(input_ids)` for every training batch to `path`."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        digest = hashlib.sha256(batch["input_ids"].numpy().tobytes()).hexdigest()[:16]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{trainer.global_step + 1} {digest}\n")


def batches(path) -> dict[int, str]:
    return {int(step): digest for step, digest in (line.split() for line in open(path, encoding="utf-8"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, rt_files):
    """The critic snippets as documents of a few sentences each, one per line (about 600 KB)."""
    with open(rt_files["train"], encoding="utf-8") as f:
        texts = [" ".join(r["text"].split()) for r in csv.DictReader(f)]
    path = tmp_path_factory.mktemp("stream") / "corpus.txt"
    path.write_text("".join(" ".join(texts[i : i + 4]) + "\n" for i in range(0, len(texts), 4)), encoding="utf-8")
    return path


def stream_run(corpus, out, *extra):
    import train

    overrides = ["task=mlm", "data=local_files", "data.path=text", f"data.data_files.train={corpus}",
                 "data.streaming=true", "model=tiny", "data.max_length=64", "data.batch_size=8",
                 "data.max_eval_samples=64", "tokenizer.vocab_size=1000", "tokenizer.train_samples=500",
                 "trainer=debug", "trainer.limit_train_batches=null", "trainer.limit_val_batches=null",
                 "trainer.deterministic=true", "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
                 "~callbacks.early_stopping", "test=false", "+callbacks.log._target_=test_streaming.BatchLog",
                 f"+callbacks.log.path={out}.batches", *extra]
    return train.train(compose(overrides, out))


def test_a_stream_killed_and_resumed_sees_the_batches_of_one_that_never_stopped(corpus, tmp_path):
    from encoder.training.callbacks import Interrupted

    straight = tmp_path / "straight"
    stream_run(corpus, straight, "trainer.max_steps=12")
    first = tmp_path / "first"
    with pytest.raises(Interrupted) as stop:
        stream_run(corpus, first, "trainer.max_steps=12", "+callbacks.signal._target_=test_resume.SignalAtStep",
                   "+callbacks.signal.step=5")
    resumed = tmp_path / "resumed"
    stream_run(corpus, resumed, "trainer.max_steps=12", f"ckpt_path={stop.value.path}")
    everything, before, after = (batches(f"{p}.batches") for p in (straight, first, resumed))
    assert sorted(everything) == list(range(1, 13)) and sorted(after) == list(range(6, 13))
    assert {s: everything[s] for s in before if s <= 5} == {s: before[s] for s in before if s <= 5}
    assert after == {s: everything[s] for s in range(6, 13)}  # batch for batch
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)


def test_the_tokenizer_of_a_stream_is_the_one_of_its_first_n_training_texts(corpus, tmp_path):
    dm = TextDataModule(task="mlm", path="text", data_files={"train": str(corpus)}, label_column=None,
                        streaming=True, packing=True, mlm_probability=0.15, max_length=64, max_eval_samples=50,
                        tokenizer={"vocab_size": 800, "train_samples": 300}, cache_dir=str(tmp_path / "c"))
    dm.setup()
    lines = [line.rstrip("\n") for line in open(corpus, encoding="utf-8") if line.strip()]
    assert dm.raw["validation"]["text"] == lines[:50]  # held out from the start, never trained on
    assert dm.tokenizer.to_str() == train_tokenizer(lines[50:350], vocab_size=800).to_str()
    rows = [r["input_ids"] for _, r in zip(range(20), dm.datasets["train"])]
    assert all(len(r) == 64 for r in rows)  # packed rows, made as they are read


@pytest.mark.parametrize("overrides, message", [
    (["data.streaming=true"], "data.streaming=true has no length to plan a schedule from: set trainer.max_steps"),
    (["data.streaming=true", "trainer.max_steps=10", "data.num_proc=2"], "set data.num_proc=null"),
    (["task=classification", "data.streaming=true", "trainer.max_steps=10", "data.packing=false"],
     "data.streaming=true reads a corpus into packed rows as it trains: set data.packing=true"),
])
def test_streaming_mistakes_are_one_line(overrides, message, tmp_path):
    from encoder.training.config import validate

    base = [] if overrides[0].startswith("task=") else ["task=mlm"]
    with pytest.raises(ConfigError, match=message) as error:
        validate(compose(base + overrides, tmp_path))
    assert "\n" not in str(error.value)
