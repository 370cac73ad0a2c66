"""Train an encoder: compose the Hydra config, check it, build data + model + trainer, fit, test.
(`train=false ckpt_path=...` evaluates a checkpoint instead: encoder/training/evaluation.py; resuming and the
run's files: encoder/training/runs.py.)

    python train.py                                   # the offline default: Rotten Tomatoes, model=small
    python train.py model=tiny trainer.max_epochs=3 optim.lr=1e-3 data.max_length=64
    python train.py --help                            # config groups and options
    python train.py resume=auto                       # continue the newest run of this experiment
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and any(a in ("--help", "-h") for a in sys.argv[1:]):
    # answered from the yaml files alone, before torch and Lightning are imported (seconds on a busy machine)
    from encoder.training.help import help_text

    print(help_text(str(Path(__file__).resolve().parent / "configs"), "train", sys.argv[1:]))
    sys.exit(0)

if __name__ == "__main__":
    # a mistake in the overrides: one line, before Hydra creates a run directory, and before Lightning is
    # imported when the mistake is in the config itself (a misspelled key: benchmarks/startup.py)
    from encoder.core.errors import ConfigError
    from encoder.training.console import quiet
    from encoder.training.launch import preflight

    quiet()
    try:
        sys.argv[1:] = preflight(str(Path(__file__).resolve().parent / "configs"), "train", sys.argv[1:])
    except ConfigError as e:
        sys.exit(f"error: {e}")

import dataclasses
import errno
import logging

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from encoder.core import checkpoint
from encoder.core.errors import CheckpointError, ConfigError, DataError
from encoder.training import pretrained
from encoder.training.callbacks import Interrupted
from encoder.training.config import Checked, validate
from encoder.training.console import quiet, say
from encoder.training.data import streaming
from encoder.training.data.teacher import teacher_options
from encoder.training.evaluation import evaluate, record
from encoder.training.launch import discard_failed_start, trainer_error
from encoder.training.loggers import build_loggers
from encoder.training.module import EncoderModule
from encoder.training.runs import (check_resumable, ddp_ranks_run_this_job_only, read_for_resume,
                                   remove_stale_temp_files, resume_from)

log = logging.getLogger("encoder")


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer with its callbacks and loggers; an argument Lightning refuses is one ConfigError line."""
    if cfg.train and cfg.data.get("streaming"):
        streaming.intervals(cfg)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = build_loggers(cfg.logger)
    try:
        return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    except InstantiationException as e:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        raise trainer_error(e, overrides) from None


def build_data(cfg: DictConfig, checked: Checked, resumed: checkpoint.Saved | None = None):
    """The prepared datamodule (vocabulary and labels known), and the pretrained encoder to start from.
    `resumed`: the checkpoint a run continues in its own directory, whose tokenizer it keeps (never retrained)."""
    tokenizer_cfg = OmegaConf.to_container(cfg.tokenizer, resolve=True)
    if resumed is not None:
        tokenizer_cfg["path"] = str(pretrained.cached_tokenizer(resumed.tokenizer_json, cfg.paths.cache_dir))
    m = checked.model
    init = pretrained.load(m.init_from, cfg.paths.cache_dir, m.init_layers, m.ffn_dim if m.prune_ffn else None) \
        if m.init_from and not resumed else None
    if init is not None:
        pretrained.check_matches(init, OmegaConf.to_container(cfg.model, resolve=True))
        tokenizer_cfg = pretrained.with_its_tokenizer(init, tokenizer_cfg)
    # _convert_="all": our objects get plain dicts/lists (checkpoints then hold no OmegaConf types)
    datamodule = instantiate(cfg.data, _convert_="all", task=checked.task.name, tokenizer=tokenizer_cfg,
                             cache_dir=cfg.paths.cache_dir, seed=cfg.seed,
                             distill=teacher_options(checked.distill, cfg.paths.cache_dir))
    datamodule.prepare_data()  # loads, checks and tokenizes: the model needs the vocabulary and labels
    return datamodule, init


def build_module(checked: Checked, datamodule, init, resuming: bool) -> EncoderModule:
    tokenizer_json = datamodule.tokenizer.to_str()
    arch = checkpoint.full_config(dataclasses.asdict(checked.model), tokenizer_json,
                                   datamodule.label_names, text_pairs=bool(datamodule.cfg.text_pair_column))
    m = checked.model
    module = EncoderModule.create(checked.task.name, arch, tokenizer_json, datamodule.cfg.max_length,
                                  label_names=datamodule.label_names, optim=vars(checked.optim),
                                  on_nonfinite_loss=checked.task.on_nonfinite_loss, unpad=m.unpad, compile=m.compile,
                                  distill=datamodule.distill, loss=checked.task.loss,
                                  truncate_dim=checked.task.truncate_dim)
    if init is not None and not resuming:
        pretrained.apply(init, module.model, tokenizer_json)  # (a trimmed vocabulary: its embedding rows)
        log.info("encoder initialised from %s", init.folder)
    return module


def finish(cfg: DictConfig, trainer: L.Trainer, module: EncoderModule, datamodule) -> dict:
    """Test the best checkpoint; the run's final metrics (+ `objective` for sweepers), logged and written."""
    # the best-checkpoint callback (trainer.checkpoint_callback is the first Checkpoint: last.ckpt's without it)
    checkpoint_cb = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint_cb.best_model_path if checkpoint_cb is not None else ""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if checkpoint_cb is not None and checkpoint_cb.best_model_score is not None:
        metrics[f"best_{checkpoint_cb.monitor}"] = float(checkpoint_cb.best_model_score)
    if cfg.test and "test" in datamodule.datasets:
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in results[0].items()})
    metrics = record(cfg, trainer, metrics)
    if trainer.is_global_zero:
        say(f"best checkpoint: {best or '(none: checkpointing disabled)'}")
    return metrics


def train(cfg: DictConfig) -> dict:
    """Run one training job; returns its final metrics (plus `objective` for sweepers)."""
    checked = validate(cfg)
    if not cfg.train:
        return evaluate(cfg, checked, build_trainer(cfg))
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_from(cfg, run_dir)
    continuing = ckpt_path is not None and Path(ckpt_path).resolve().parent == (run_dir / "checkpoints").resolve()
    if not continuing and any((run_dir / "checkpoints").glob("*.ckpt")):
        raise ConfigError(f"{run_dir}/checkpoints already holds checkpoints; choose a new hydra.run.dir "
                          f"(to continue that run, pass ckpt_path=...)")
    remove_stale_temp_files(run_dir / "checkpoints")
    # damaged, edited, or trained with other optimizer settings: refused here, before any data is read
    saved = read_for_resume(ckpt_path, vars(checked.optim)) if ckpt_path else None
    trainer = build_trainer(cfg)  # before the data: Lightning checks its arguments here
    L.seed_everything(cfg.seed, workers=True)
    # continuing in its own directory, the run's config was checked against its record (launch.py)
    datamodule, init = build_data(cfg, checked, saved if continuing else None)
    module = build_module(checked, datamodule, init, resuming=bool(ckpt_path))
    if ckpt_path:
        check_resumable(ckpt_path, saved, module)
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return finish(cfg, trainer, module, datamodule)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    quiet()
    try:
        with ddp_ranks_run_this_job_only():
            return train(cfg)["objective"]
    except (ConfigError, DataError, CheckpointError, FloatingPointError) as e:
        say(f"error: {e}", error=True)  # (in train.log too, unless the failed start's folder goes below)
        if HydraConfig.get().mode == RunMode.RUN:
            logging.shutdown()  # train.log closed before its folder may go
            discard_failed_start(Path(cfg.paths.output_dir), HydraConfig.get().output_subdir)
        raise SystemExit(1) from None
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            raise
        say(f"\nerror: {e.strerror} while writing the run's files; free space, or point the run (hydra.run.dir) and "
            f"the cache (ENCODER_CACHE) at another disk; what was written before is kept", error=True)
        raise SystemExit(1) from None
    except Interrupted as e:
        sweep = ""
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # (Hydra runs no later job once one raised)
            sweep = (f"; the sweep stops here: its jobs after job {HydraConfig.get().job.num} did not run (the sweep's "
                     f"command starts them all again)")
        say(f"\ninterrupted: {e}{sweep}", error=True)  # on a line of its own, not after the progress bar
        raise SystemExit(128 + e.signum) from None
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one: stop at once
        print("interrupted: stopped by SIGINT at once; the checkpoints on disk are the last ones written",
              file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":  # (--help and the config's checks come first, at the top of this file)
    main()
