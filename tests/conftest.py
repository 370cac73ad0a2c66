"""Shared fixtures: a per-session cache (the real offline dataset is fetched into it once) and
composition of the real Hydra configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for `import train`


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """Everything cached (wheel, prepared csv, tokenizers) goes to a fresh folder for this session,
    unless ENCODER_TEST_CACHE points at one to reuse."""
    path = Path(os.environ.get("ENCODER_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["ENCODER_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def rt_files(cache_dir) -> dict:
    from encoder.data.sources import rotten_tomatoes_critics

    return rotten_tomatoes_critics(cache_dir)


def compose(overrides: list[str], output_dir: Path | None = None):
    """The config `python train.py <overrides>` would get, with Hydra's runtime info set."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    import encoder.config  # noqa: F401  (registers the `unused_dir` resolver)

    extra = [f"paths.output_dir={output_dir}"] if output_dir else []
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides + extra, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


TINY = ["model=tiny", "trainer=debug", "data.max_train_samples=256", "data.max_eval_samples=64",
        "data.batch_size=16", "tokenizer.vocab_size=1000", "trainer.limit_train_batches=8",
        "+trainer.enable_progress_bar=false", "~callbacks.progress_bar", "~callbacks.model_summary"]
