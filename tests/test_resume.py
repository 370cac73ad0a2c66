"""Exact resume (mid-epoch and at an epoch boundary), interruption by real signals, non-finite losses."""

import os
import re
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, TINY, compose

# deterministic CPU training, 16 batches per epoch, a loss logged every step
EXACT = TINY + ["trainer.deterministic=true", "trainer.limit_train_batches=null", "trainer.log_every_n_steps=1",
                "~callbacks.early_stopping", "test=false"]


class SignalAtStep(L.Callback):
    """Sends this process a real signal while step number `step` runs (the test's stand-in for Ctrl-C)."""

    def __init__(self, step: int, signum: int = signal.SIGTERM):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), self.signum)


def run(out, *overrides):
    import train

    return train.train(compose(EXACT + list(overrides), out))


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def losses(run_dir):
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    return {e.step: e.value for e in events.Scalars("train/loss")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, rt_files):
    out = tmp_path_factory.mktemp("straight")
    run(out, "trainer.max_epochs=2")
    return out


def assert_same_training(straight, resumed, from_step):
    a, b = weights(straight / "checkpoints" / "last.ckpt"), weights(resumed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    straight_losses, resumed_losses = losses(straight), losses(resumed)
    overlap = [s for s in resumed_losses if s > from_step]
    assert len(overlap) >= 10
    assert [resumed_losses[s] for s in overlap] == pytest.approx([straight_losses[s] for s in overlap], abs=1e-6)


def test_resume_mid_epoch_matches_straight_training(straight, tmp_path, recwarn):
    from encoder.training.callbacks import Interrupted

    first = tmp_path / "first"
    with pytest.raises(Interrupted) as stop:
        run(first, "trainer.max_epochs=2", "+callbacks.signal._target_=test_resume.SignalAtStep",
            "+callbacks.signal.step=5")
    assert stop.value.step == 5 and stop.value.path == first / "checkpoints" / "last.ckpt"
    assert torch.load(stop.value.path, weights_only=True)["global_step"] == 5
    resumed = tmp_path / "resumed"
    recwarn.clear()
    run(resumed, "trainer.max_epochs=2", f"ckpt_path={stop.value.path}")
    assert_same_training(straight, resumed, from_step=5)
    # our loader is resumable and says so: Lightning has nothing to warn about
    assert not [w for w in recwarn if "not resumable" in str(w.message)], [str(w.message) for w in recwarn]


def test_resume_at_epoch_boundary_matches_straight_training(straight, tmp_path):
    # Stop after exactly one epoch (16 steps), mid-schedule: the same config, interrupted at step 16.
    from encoder.training.callbacks import Interrupted

    first = tmp_path / "first"
    with pytest.raises(Interrupted):
        run(first, "trainer.max_epochs=2", "+callbacks.signal._target_=test_resume.SignalAtStep",
            "+callbacks.signal.step=16")
    resumed = tmp_path / "resumed"
    run(resumed, "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    assert_same_training(straight, resumed, from_step=16)


def test_resume_auto_picks_the_newest_last_checkpoint_of_the_experiment(straight, tmp_path):
    from encoder.training import runs

    from encoder.core.errors import ConfigError

    experiment = tmp_path / "exp"
    old, new, finished = (experiment / name / "checkpoints" for name in ("a", "b", "c"))
    for folder in (old, new, finished):
        folder.mkdir(parents=True)
        (folder / "last.ckpt").write_bytes((straight / "checkpoints" / "last.ckpt").read_bytes())
    os.utime(old / "last.ckpt", (1, 1))
    (finished.parent / "metrics.json").write_text("{}")  # the newest, but it finished: not resumed
    cfg = compose(EXACT + ["resume=auto"], experiment / "d")
    assert runs.resume_from(cfg, experiment / "d") == str(new / "last.ckpt")
    with pytest.raises(ConfigError, match="resume=auto found no unfinished run"):
        runs.resume_from(compose(EXACT + ["resume=auto"], tmp_path / "empty" / "c"), tmp_path / "empty" / "c")


@pytest.mark.parametrize("override,difference", [
    ("tokenizer.vocab_size=500", "tokenizer='1000 tokens', this run has tokenizer='500 tokens'"),
    ("data.max_length=64", "data.max_length=96, this run has data.max_length=64"),
    ("model.embed_dim=32", "model.embed_dim=64, this run has model.embed_dim=32"),
    ("model.attention.num_heads=4", "model.attention.num_heads=2, this run has model.attention.num_heads=4"),
    ("data.label_names=[fresh,rotten]", "labels=['rotten', 'fresh'], this run has labels=['fresh', 'rotten']"),
])
def test_resume_with_another_model_or_data_names_the_first_difference(straight, tmp_path, override, difference):
    from encoder.core.errors import ConfigError

    last = straight / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=re.escape(f"{last} was trained with {difference}")) as error:
        run(tmp_path / "other", override, f"ckpt_path={last}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_real_signal_to_train_py_saves_a_resumable_checkpoint(signum, code, tmp_path, rt_files):
    out = tmp_path / "run"
    args = [sys.executable, str(ROOT / "train.py"), *EXACT, "trainer.max_epochs=1000", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "tensorboard").glob("events.*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # some steps into training
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    message = stderr.strip().splitlines()[-1]
    assert message.startswith(f"interrupted: stopped by {signal.Signals(signum).name} after step ")
    assert "resume with: python train.py ckpt_path=" in message
    assert "interrupted: stopped by" in (out / "train.log").read_text()  # the log keeps how the run ended
    step = int(message.split("after step ")[1].split(";")[0])
    last = out / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == step > 0
    # resuming continues from that step: nothing completed is lost
    resumed = subprocess.run([sys.executable, str(ROOT / "train.py"), *EXACT, f"trainer.max_steps={step + 3}",
                              "trainer.max_epochs=1000", f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'r'}"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert min(losses(tmp_path / "r")) == step  # the first logged step after resuming


class PoisonAt(L.Callback):
    """Makes one batch's loss non-finite (an inf classifier bias for that step only)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            self.saved = module.model.classifier.bias.detach().clone()
            module.model.classifier.bias.data.fill_(float("inf"))

    def on_train_batch_end(self, trainer, module, *args):
        if hasattr(self, "saved"):
            module.model.classifier.bias.data.copy_(self.saved)
            del self.saved


def test_nonfinite_loss_stops_naming_the_step_and_keeps_earlier_checkpoints(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 20; stopped, earlier checkpoints are intact"):
        run(out, "trainer.max_epochs=2", "+callbacks.poison._target_=test_resume.PoisonAt",
            "+callbacks.poison.step=20")
    last = out / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 16  # the epoch-0 checkpoint, untouched
    assert all(torch.isfinite(v).all() for v in weights(last).values() if v.is_floating_point())


def test_nonfinite_loss_can_be_skipped(tmp_path, caplog):
    out = tmp_path / "run"
    run(out, "trainer.max_epochs=2", "task.on_nonfinite_loss=skip", "+callbacks.poison._target_=test_resume.PoisonAt",
        "+callbacks.poison.step=20")
    assert "loss is nan at step 20: skipping this batch" in caplog.text
    final = weights(out / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())


def test_checkpoint_writes_are_atomic(tmp_path):
    from encoder.training.callbacks import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(Exception):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3), "bad": lambda: None}, path)  # fails mid-write
    assert torch.load(path, weights_only=True)["step"] == 1  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # and no temporary file is left


@pytest.mark.parametrize("override, message", [
    ("optim.lr=1e-2", r"was trained with optim.lr=0.0005; a resume cannot honour optim.lr=0.01"),
    ("seed=4", r"trained with seed=42; a resume cannot honour seed=4"),
    ("data.batch_size=8", r"trained with data.batch_size=16; a resume cannot honour data.batch_size=8"),
])
def test_a_checkpoint_outside_its_run_refuses_what_a_resume_cannot_honour(straight, tmp_path, override, message):
    # (inside its run directory, train.py refuses these before reading any data: tests/test_resume_as_printed.py)
    from encoder.core.errors import CheckpointError, ConfigError

    copy = tmp_path / "elsewhere.ckpt"
    copy.write_bytes((straight / "checkpoints" / "last.ckpt").read_bytes())
    with pytest.raises((CheckpointError, ConfigError), match=message) as error:
        run(tmp_path / "other", override, "trainer.max_epochs=3", f"ckpt_path={copy}")
    assert "\n" not in str(error.value)
