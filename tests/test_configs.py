"""Every config in configs/ composes and instantiates; --help lists the groups; errors come early."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import ROOT, compose
from encoder.config import resolved, unused_dir, validate
from encoder.data import TextDataModule
from encoder.model import ConfigError, ModelConfig

GROUPS = {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in (ROOT / "configs").iterdir() if p.is_dir()}
CHOICES = [(group, name) for group, names in GROUPS.items() for name in names]


@pytest.mark.parametrize("group,name", CHOICES)
def test_every_config_composes_and_instantiates(group, name, tmp_path):
    overrides = [f"{group}={name}"] + (["tokenizer.path=/some/tokenizer.json"] if name == "pretrained" else [])
    cfg = compose(overrides, tmp_path)
    validate(cfg)
    resolved(cfg)  # every interpolation resolves
    if group == "data":
        assert isinstance(instantiate(cfg.data, _convert_="all"), TextDataModule)
    elif group == "model":
        ModelConfig.from_dict({**OmegaConf.to_container(cfg.model), "vocab_size": 100})
    elif group == "trainer":
        if cfg.trainer.accelerator == "gpu":  # gpu, fsdp: no GPU here, so check what they ask for
            assert cfg.trainer.precision == "bf16-mixed"
        else:
            assert isinstance(instantiate(cfg.trainer, logger=False, enable_checkpointing=False), L.Trainer)
    elif group == "callbacks":
        assert all(isinstance(instantiate(c), L.Callback) for c in cfg.callbacks.values())
    elif group == "logger":
        assert instantiate(cfg.logger).log_dir.startswith(str(tmp_path))


def test_help_lists_config_groups_and_options():
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for group in ("model", "data", "trainer", "optim", "tokenizer", "callbacks"):
        assert f"{group}:" in out.stdout
    for option in ("tiny", "small", "base", "rotten_tomatoes_offline", "imdb", "debug", "gpu"):
        assert option in out.stdout


def run_train(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("overrides,message", [
    (["model.embed_dim=30"], "error: model.embed_dim=30 is not divisible by model.attention.num_heads=4"),
    (["model.dropout=1.5"], "error: model.dropout=1.5 must be in [0, 1)"),
    (["optim.lr=-1"], "error: optim.lr=-1 must be a positive number"),
    (["data.max_length=1024"], "error: data.max_length=1024 exceeds model.max_positions=512"),
    (["data.text_column=review"], "error: data.text_column='review' is not a column of the train split; "
                                  "its columns are ['text', 'label']"),
])
def test_bad_input_fails_in_one_line_before_training(overrides, message, tmp_path):
    out = run_train(*overrides, "trainer=debug", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained


def test_unknown_config_name_gets_hydras_message(tmp_path):
    out = run_train("model=huge", cwd=tmp_path)
    assert out.returncode == 1
    assert "Could not find 'model/huge'" in out.stderr and "tiny" in out.stderr


def test_run_directories_are_never_reused(tmp_path):
    (tmp_path / "run").mkdir()
    assert unused_dir(str(tmp_path / "run")) == str(tmp_path / "run-1")
    (tmp_path / "run-1").mkdir()
    assert unused_dir(str(tmp_path / "run")) == str(tmp_path / "run-2")
    assert unused_dir(str(tmp_path / "new")) == str(tmp_path / "new")


def test_config_errors_name_the_key_even_inside_nested_groups(tmp_path):
    cfg = compose(["+model.attention.heads=3"], tmp_path)
    with pytest.raises(ConfigError, match="unknown key model.attention.heads"):
        validate(cfg)


def test_experiment_configs_override_the_entry_config(tmp_path):
    cfg = compose(["experiment=minilm_rotten_tomatoes"], tmp_path)
    assert cfg.name == "minilm_rotten_tomatoes"  # runs go to outputs/minilm_rotten_tomatoes/...
    assert (cfg.model.embed_dim, cfg.model.init_from, cfg.trainer.max_epochs) == (384, "all-MiniLM-L6-v2", 2)


def test_multirun_gives_each_job_its_own_directory(tmp_path, rt_files):
    from conftest import TINY

    out = run_train("-m", *TINY, "optim.lr=1e-4,3e-4", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = sorted(p.parent.parent.name for p in (tmp_path / "multirun").glob("*/*/checkpoints/last.ckpt"))
    assert jobs == ["0", "1"]
    # the sweep ends with one table of both jobs, also saved as summary.json
    assert "sweep summary (2 jobs, best first" in out.stdout
    summary = json.loads(next((tmp_path / "multirun").glob("*/summary.json")).read_text())
    assert sorted(r["job"] for r in summary) == ["0", "1"]
    assert {r["overrides"][-1] for r in summary} == {"optim.lr=0.0001", "optim.lr=0.0003"}
    assert all(0.0 <= r["metrics"]["test/acc"] <= 1.0 for r in summary)


def test_optuna_sweep_returns_the_objective_and_records_the_best_trial(tmp_path, rt_files):
    import yaml
    from conftest import TINY

    out = run_train("-m", "hparams_search=optuna", *TINY, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    sweep = next((tmp_path / "multirun").iterdir())
    trials = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert sorted(trials) == ["0", "1"]
    for trial in trials.values():  # each trial ran with its own sample from the configured search space
        sampled = dict(o.split("=", 1) for o in trial["overrides"] if o.startswith(("optim.", "data.batch")))
        assert 1e-4 <= float(sampled["optim.lr"]) <= 3e-3 and sampled["data.batch_size"] in ("16", "32", "64")
    lrs = {dict(o.split("=", 1) for o in t["overrides"] if "=" in o)["optim.lr"] for t in trials.values()}
    assert len(lrs) == 2
    # the sweeper received train.py's objective (best val/acc) and kept the best trial's parameters
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = max(trials.values(), key=lambda t: t["metrics"]["objective"])
    assert results["best_value"] == pytest.approx(best["metrics"]["best_val/acc"])
    assert str(results["best_params"]["optim.lr"]) in {o.split("=", 1)[1] for o in best["overrides"]
                                                       if o.startswith("optim.lr=")}
    assert "sweep summary (2 jobs, best first" in out.stdout
