"""Resume as a user does it: the command an interrupted run prints, run as printed, takes the run's own
config; what a resume cannot honour is refused in one line before any data is read; failed starts leave
nothing behind."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT, TINY

# a run that is interrupted (SIGTERM at step 3) by a callback of test_resume.py, with non-default settings
# that a resume must take from the run, not from the defaults
FIRST = TINY + ["trainer.limit_train_batches=null", "trainer.max_epochs=2", "data.max_length=64",
                "optim.lr=1e-3", "~callbacks.early_stopping", "test=false"]
SIGNAL = ["+callbacks.signal._target_=test_resume.SignalAtStep", "+callbacks.signal.step=3"]


def train_py(cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, rt_files):
    cwd = tmp_path_factory.mktemp("user")
    done = train_py(cwd, *FIRST, *SIGNAL)
    assert done.returncode == 143, done.stderr[-2000:]
    printed = done.stderr.strip().splitlines()[-1].split("resume with: ")[1].split("  (or")[0]
    run = next((cwd / "outputs" / "rotten_tomatoes_offline").iterdir())
    return cwd, run, printed


def records(run):
    return sorted(p.name for p in (run / ".hydra").glob("resume-*"))


@pytest.mark.parametrize("override, key, was", [
    ("optim.lr=1e-2", "optim.lr", "0.001"),
    ("data.batch_size=8", "data.batch_size", "16"),
    ("seed=4", "seed", "42"),
    ("model=small", "model.", None),
    ("tokenizer.vocab_size=500", "tokenizer.vocab_size", "1000"),
])
def test_a_resume_refuses_in_one_line_what_it_cannot_honour(interrupted, override, key, was):
    cwd, run, printed = interrupted
    before = records(run)
    done = train_py(cwd, *printed.split()[2:], override)
    assert done.returncode == 1
    message = done.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert f"continues a run trained with {key}" in message and "a resume cannot honour" in message
    if was:
        assert f"{key}={was} " in message
    assert "data:" not in done.stdout + done.stderr  # refused before any data was read
    assert records(run) == before  # and no record of a start that never happened


def test_the_printed_resume_command_works_as_printed(interrupted):
    cwd, run, printed = interrupted
    assert printed.startswith("python train.py ckpt_path=")
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step == 3
    done = train_py(cwd, *printed.split()[2:], "trainer.max_epochs=3")
    assert done.returncode == 0, done.stderr[-3000:]
    # the schedule change is said in one line; the run's own settings were taken, not the defaults
    assert "note: resuming with trainer.max_epochs=3 (the run had 2)" in done.stdout
    (record,) = records(run)
    config = yaml.safe_load((run / ".hydra" / record / "config.yaml").read_text())
    assert config["optim"]["lr"] == 1e-3 and config["data"]["max_length"] == 64 and config["model"]["embed_dim"] == 64
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3 * 16


def test_failed_starts_leave_no_run_directory(tmp_path, rt_files):
    done = train_py(tmp_path, *TINY, "data=local_files", f"data.data_files.train={tmp_path / 'missing.csv'}")
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("error: data.data_files")
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*"))


def test_an_interrupted_sweep_says_it_stopped_and_its_job_resumes_as_printed(tmp_path, rt_files):
    done = train_py(tmp_path, "-m", *FIRST, *SIGNAL, "seed=1,2")
    assert done.returncode == 143, done.stderr[-2000:]
    message = done.stderr.strip().splitlines()[-1]
    assert message.endswith("; the sweep stops here: its jobs after job 0 did not run (the sweep's command starts "
                            "them all again)")
    job = next((tmp_path / "multirun").iterdir()) / "0"
    assert not (job.parent / "1").exists()  # never started
    printed = message.split("resume with: ")[1].split(";")[0]
    assert printed == f"python train.py ckpt_path={job / 'checkpoints' / 'last.ckpt'}"
    resumed = train_py(tmp_path, *printed.split()[2:])  # the job's own config, in its own directory
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (job / "metrics.json").is_file() and yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
