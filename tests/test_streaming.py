"""data.streaming=true: a corpus read as a stream through train.py: the tokenizer from its first N texts, a run
killed mid-stream and resumed sees the same batches as one that never stopped (across passes, shuffled), every
training text read once a pass whatever the ranks and workers, a real 2-process DDP run whose ranks' shares
differ in length, and the mistakes are one line."""

import csv
import hashlib
import os
import subprocess
import sys

import lightning as L
import pytest
import torch

from conftest import ROOT, compose
from encoder.core.errors import ConfigError
from encoder.core.tokenizer import train_tokenizer
from encoder.training.config import DataConfig
from encoder.training.data import streaming
from encoder.training.data.datamodule import TextDataModule
from test_resume import SignalAtStep  # noqa: F401  (callbacks below name it by its path)


class BatchLog(L.Callback):
    """Writes `step sha256(input_ids)` for every training batch to `path` (`path.rank1` for DDP rank 1)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        digest = hashlib.sha256(batch["input_ids"].numpy().tobytes()).hexdigest()[:16]
        with open(self.path + (f".rank{trainer.global_rank}" if trainer.global_rank else ""), "a", encoding="utf-8") as f:
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

    # 30 documents: a pass is 8 batches, so the 16 steps read two passes, each in its own shuffled order
    short = ["trainer.max_steps=16", "data.max_train_samples=30", "data.shuffle_buffer=20"]
    straight = tmp_path / "straight"
    stream_run(corpus, straight, *short)
    first = tmp_path / "first"
    with pytest.raises(Interrupted) as stop:
        stream_run(corpus, first, *short, "+callbacks.signal._target_=test_resume.SignalAtStep",
                   "+callbacks.signal.step=5")
    resumed = tmp_path / "resumed"
    stream_run(corpus, resumed, *short, f"ckpt_path={stop.value.path}")
    everything, before, after = (batches(f"{p}.batches") for p in (straight, first, resumed))
    assert sorted(everything) == list(range(1, 17)) and sorted(after) == list(range(6, 17))
    assert everything[1] != everything[9]  # the second pass is not the first again
    assert {s: everything[s] for s in before if s <= 5} == {s: before[s] for s in before if s <= 5}
    assert after == {s: everything[s] for s in range(6, 17)}  # batch for batch, across the pass boundary
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)


def test_a_resume_that_would_read_other_batches_is_refused_in_one_line(corpus, tmp_path):
    from encoder.training.callbacks import Interrupted
    from encoder.training.launch import check_honoured

    copy = tmp_path / "corpus.txt"
    copy.write_bytes(corpus.read_bytes())
    short = ["trainer.max_steps=8", "data.max_train_samples=30"]
    with pytest.raises(Interrupted) as stop:
        stream_run(copy, tmp_path / "first", *short, "+callbacks.signal._target_=test_resume.SignalAtStep",
                   "+callbacks.signal.step=3")
    # the loader's workers share a stream's files out: other workers, other batches
    with pytest.raises(ConfigError, match=r"^the checkpoint was trained with data.num_workers=0; a resume cannot "
                                          r"honour data.num_workers=1 \(the interrupted epoch's data order"):
        stream_run(copy, tmp_path / "workers", *short, "data.num_workers=1", f"ckpt_path={stop.value.path}")
    stream = ["task=mlm", "data.streaming=true", "trainer.max_steps=8"]  # (preflight refuses it too, for a run's own)
    with pytest.raises(ConfigError, match=r"a resume cannot honour data.num_workers=1"):
        check_honoured(compose(stream, tmp_path / "a"), compose([*stream, "data.num_workers=1"], tmp_path / "b"),
                       "last.ckpt", tmp_path)
    # an edited corpus (a document appended) would give other batches too
    with open(copy, "a", encoding="utf-8") as f:
        f.write("a document appended after the checkpoint\n")
    with pytest.raises(ConfigError, match=r"^the stream's files changed since the checkpoint was written"):
        stream_run(copy, tmp_path / "edited", *short, f"ckpt_path={stop.value.path}")


@pytest.mark.parametrize("content, given, message", [
    (b"caf\xe9 au lait\nfine\n", "bad.txt", r"bad.txt is not valid UTF-8 \(byte 3\); re-encode it as UTF-8"),
    (b"", "empty.txt", r"data.data_files.train=.*empty.txt: the file is empty"),
    (b"x\n", "nothing*.txt", r"data.data_files.train=.*nothing\*.txt matches no file"),
])
def test_a_stream_of_unreadable_files_is_refused_before_training(content, given, message, tmp_path):
    from encoder.core.errors import DataError

    if "*" not in given:
        (tmp_path / given).write_bytes(content)

    with pytest.raises(DataError, match=message) as error:
        stream_run(tmp_path / given, tmp_path / "run", "trainer.max_steps=4")
    assert "\n" not in str(error.value)


def test_a_long_stream_validates_and_keeps_a_checkpoint_as_it_goes(corpus, tmp_path, monkeypatch):
    # one endless epoch has no epoch end until max_steps: without a step interval a run killed before then would
    # have validated never and saved nothing. Unless set, both happen every streaming.EVERY_STEPS steps.
    from conftest import LastCheckpointSteps

    monkeypatch.setattr(streaming, "EVERY_STEPS", 10)
    run = ["trainer.max_steps=25", "logger=csv", "+callbacks.probe._target_=conftest.LastCheckpointSteps"]
    stream_run(corpus, tmp_path / "default", *run)
    with open(next((tmp_path / "default" / "csv").rglob("metrics.csv")), encoding="utf-8") as f:
        validated = sorted({int(r["step"]) for r in csv.DictReader(f) if r.get("val/loss")})
    assert validated == [9, 19, 24]  # (Lightning logs validation at the step before the next: 10, 20, then the end)
    # (the probe reads last.ckpt after each step, before the checkpoint callback of that step writes it)
    assert LastCheckpointSteps.seen == [None] * 10 + [10] * 10 + [20] * 5
    # what the user sets wins
    stream_run(corpus, tmp_path / "set", *run, "+trainer.val_check_interval=12", "trainer.check_val_every_n_epoch=null",
               "callbacks.last_checkpoint.every_n_train_steps=5")
    with open(next((tmp_path / "set" / "csv").rglob("metrics.csv")), encoding="utf-8") as f:
        validated = sorted({int(r["step"]) for r in csv.DictReader(f) if r.get("val/loss")})
    assert validated == [11, 23, 24] and LastCheckpointSteps.seen[:11] == [None] * 5 + [5] * 5 + [10]


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


@pytest.fixture(scope="module")
def shards(tmp_path_factory, corpus):
    """The corpus as four files of unequal sizes (one document per line, each unique)."""
    lines = [f"doc{i} {line}" for i, line in enumerate(open(corpus, encoding="utf-8").read().splitlines())]
    folder = tmp_path_factory.mktemp("shards")
    for k, (start, stop) in enumerate([(0, 60), (60, 100), (100, 230), (230, 250)]):
        (folder / f"part{k}.txt").write_text("".join(f"{x}\n" for x in lines[start:stop]), encoding="utf-8")
    return folder, lines[:250]


def one_pass(rank: int, world: int, workers: int, folder, seed: int = 0) -> tuple[list[str], list[str]]:
    """The texts a rank's training loader reads in its first pass and the start of its second (the first text
    read twice begins the second: within a pass each text is read once)."""
    cfg = DataConfig(path="text", data_files={"train": str(folder / "part*.txt")}, label_column=None,
                     streaming=True, packing=True, max_eval_samples=10, shuffle_buffer=50)
    _, train, _ = streaming.open_stream(cfg, folder)
    texts = streaming.rows(train, lambda b: {"doc": b["text"]}, "text", seed, cfg.shuffle_buffer)
    loader = streaming.StreamLoader(texts, rank, world, batch_size=4, num_workers=workers, processed=lambda: 0,
                                    collate_fn=lambda rows: [r["doc"] for r in rows])
    seen = []
    for batch in loader:
        if set(batch) & set(seen):
            return seen, batch
        seen += batch
    raise AssertionError("the stream ended")


@pytest.mark.parametrize("world, workers", [(1, 0), (1, 2), (2, 0), (2, 2)])
def test_every_training_text_is_read_once_a_pass_whatever_the_ranks_and_workers(shards, world, workers):
    folder, lines = shards
    passes = [one_pass(rank, world, workers, folder) for rank in range(world)]
    read = [text for first, _ in passes for text in first]
    assert sorted(read) == sorted(lines[10:])  # every training text once; the 10 held out for validation never
    assert read != lines[10:]  # shuffled
    for first, second in passes:
        assert second != first[: len(second)]  # each pass in another order
    assert one_pass(0, world, workers, folder)[0] == passes[0][0]  # the same seed, the same order
    assert one_pass(0, world, workers, folder, seed=1)[0] != passes[0][0]


def test_a_ddp_stream_whose_ranks_read_shares_of_different_lengths_trains_to_max_steps(shards, tmp_path):
    # Two files for two ranks: rank 1's share is a third of rank 0's. A loader that ended with its share left
    # the other rank waiting in a collective forever (the run hung); the stream now runs pass after pass.
    folder, _ = shards
    small = tmp_path / "data"
    small.mkdir()
    for name in ("part0.txt", "part3.txt"):  # 60 and 20 documents
        (small / name).write_text((folder / name).read_text(encoding="utf-8"), encoding="utf-8")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    overrides = ["task=mlm", "data=local_files", "data.path=text", f"data.data_files.train={small}/*.txt",
                 "data.streaming=true", "model=tiny", "data.max_length=64", "data.batch_size=8",
                 "data.max_eval_samples=4", "tokenizer.vocab_size=1000", "trainer=ddp", "trainer.accelerator=cpu",
                 "trainer.devices=2", "trainer.max_steps=30", "trainer.limit_val_batches=1", "test=false",
                 "~callbacks.progress_bar", "+callbacks.log._target_=test_streaming.BatchLog",
                 f"+callbacks.log.path={tmp_path}/batches"]
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 30
    ranks = [batches(tmp_path / "batches"), batches(tmp_path / "batches.rank1")]
    assert sorted(ranks[0]) == sorted(ranks[1]) == list(range(1, 31))  # both ranks trained every step
    assert not set(ranks[0].values()) & set(ranks[1].values())  # on their own shares
    assert len(set(ranks[1].values())) > 15  # rank 1's share (about 8 batches a pass) was read in 4 orders


@pytest.mark.parametrize("overrides, message", [
    (["data.streaming=true"], "data.streaming=true has no length to plan a schedule from: set trainer.max_steps"),
    (["data.streaming=true", "trainer.max_steps=10", "data.num_proc=2"], "set data.num_proc=null"),
    (["task=classification", "data.streaming=true", "trainer.max_steps=10", "data.packing=false"],
     "data.streaming=true reads a corpus into packed rows as it trains: set data.packing=true"),
    (["data.shuffle_buffer=100"], "data.shuffle_buffer shuffles a stream; without data.streaming=true"),
    (["data.streaming=true", "trainer.max_steps=10", "data.shuffle_buffer=-1"],
     "data.shuffle_buffer=-1 must be 0"),
])
def test_streaming_mistakes_are_one_line(overrides, message, tmp_path):
    from encoder.training.config import validate

    base = [] if overrides[0].startswith("task=") else ["task=mlm"]
    with pytest.raises(ConfigError, match=message) as error:
        validate(compose(base + overrides, tmp_path))
    assert "\n" not in str(error.value)
