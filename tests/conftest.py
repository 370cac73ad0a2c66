"""Shared fixtures: a per-session cache (the real offline dataset is fetched into it once) and
composition of the real Hydra configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for `import train`

if os.environ.get("PYTEST_XDIST_WORKER"):  # pyproject runs the suite on every core (-n auto): a thread per worker
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"  # the subprocesses a test starts (train.py, DDP ranks, CLIs), too
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """Everything cached (wheel, prepared csv, tokenizers) goes to a fresh folder for this session,
    unless ENCODER_TEST_CACHE points at one to reuse."""
    path = Path(os.environ.get("ENCODER_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["ENCODER_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def rt_files(cache_dir) -> dict:
    from encoder.training.data.sources import rotten_tomatoes_critics

    return rotten_tomatoes_critics(cache_dir)


def compose(overrides: list[str], output_dir: Path | None = None):
    """The config `python train.py <overrides>` would get, with Hydra's runtime info set."""
    from hydra.core.hydra_config import HydraConfig

    from encoder.training.launch import compose as compose_config

    extra = [f"paths.output_dir={output_dir}"] if output_dir else []
    cfg = compose_config(str(ROOT / "configs"), "train", overrides + extra)
    HydraConfig.instance().set_config(cfg)
    return cfg


class WeightsAtStart(L.Callback):
    """A callback (`+callbacks.start._target_=conftest.WeightsAtStart`) that keeps the weights of the
    model a run actually trains, as its training starts (step 0)."""

    seen: dict = {}

    def on_train_start(self, trainer, module):
        WeightsAtStart.seen = {k: v.detach().clone() for k, v in module.model.state_dict().items()}


TINY = ["model=tiny", "trainer=debug", "data.max_train_samples=256", "data.max_eval_samples=64",
        "data.batch_size=16", "tokenizer.vocab_size=1000", "trainer.limit_train_batches=8",
        "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.model_summary"]


class LastCheckpointSteps(L.Callback):
    """A callback (`+callbacks.probe._target_=conftest.LastCheckpointSteps`) that reads, after each training
    step, the global step stored in the run's checkpoints/last.ckpt (None while there is none)."""

    seen: list = []

    def on_train_start(self, trainer, module):
        LastCheckpointSteps.seen = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        import torch

        path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        LastCheckpointSteps.seen.append(torch.load(path, weights_only=True)["global_step"] if path.is_file() else None)


class LastBatch(L.Callback):
    """A callback (`+callbacks.probe._target_=conftest.LastBatch`) that keeps the last training batch, as the
    model received it."""

    seen: dict = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        LastBatch.seen = {k: v.detach().clone() for k, v in batch.items()}
