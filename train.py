"""Train an encoder: compose the Hydra config, check it, build data + model + trainer, fit, test.

    python train.py                                   # the offline default: Rotten Tomatoes, model=small
    python train.py model=tiny trainer.max_epochs=3 optim.lr=1e-3 data.max_length=64
    python train.py --help                            # config groups and options
    python train.py resume=auto                       # continue the newest run of this experiment
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, read_write

from encoder import pretrained
from encoder.callbacks import Interrupted
from encoder.config import resolved, validate
from encoder.inference import load_checkpoint
from encoder.data.datamodule import DataError
from encoder.model import ConfigError

log = logging.getLogger("encoder")


def resume_from(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint to resume: `ckpt_path`, or with resume=auto the newest last.ckpt of this experiment."""
    if cfg.resume not in ("auto", None, False):
        raise ConfigError(f"resume={cfg.resume!r} is unknown; use resume=auto or ckpt_path=PATH")
    if cfg.ckpt_path:
        if not Path(cfg.ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path} does not exist; pass a .ckpt file or resume=auto")
        return str(cfg.ckpt_path)
    if cfg.resume == "auto":
        found = [p for p in run_dir.parent.glob("*/checkpoints/last.ckpt") if p.parents[1] != run_dir]
        if not found:
            raise ConfigError(f"resume=auto found no last.ckpt under {run_dir.parent}/; start without resume")
        return str(max(found, key=lambda p: p.stat().st_mtime))
    return None


def check_resumable(ckpt_path: str, datamodule) -> None:
    """The data side of a resumed run must be the one the checkpoint was trained with."""
    hp = load_checkpoint(ckpt_path)["hyper_parameters"]
    if hp["tokenizer_json"] != datamodule.tokenizer.to_str():
        raise ConfigError(f"the tokenizer differs from the one in {ckpt_path}; set tokenizer.path to that "
                          f"run's tokenizer (python -m encoder.export writes it out)")
    if hp.get("label_names") != datamodule.label_names:
        raise ConfigError(f"labels {datamodule.label_names} differ from the checkpoint's {hp.get('label_names')}; "
                          f"resume with the data (and task) that checkpoint was trained on")


@contextlib.contextmanager
def ddp_ranks_run_this_job_only():
    """Lightning starts the extra DDP ranks as `python train.py <sys.argv[1:]> hydra.run.dir=<run.dir>`.
    Inside a multirun job that would start a whole sweep per rank, in another directory: point them
    at this job instead (its overrides, its directory). Afterwards, forget the DDP environment
    Lightning set up, or the next job would wait for ranks that are never started."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hydra_cfg = HydraConfig.get()
    argv, env = sys.argv, dict(os.environ)
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
            if key in env:
                os.environ[key] = env[key]
            else:
                os.environ.pop(key, None)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def train(cfg: DictConfig) -> dict:
    """Run one training job; returns its final metrics (plus `objective` for sweepers)."""
    validate(cfg)
    run_dir = Path(cfg.paths.output_dir)
    if any((run_dir / "checkpoints").glob("*.ckpt")):
        raise ConfigError(f"{run_dir}/checkpoints already holds checkpoints; choose a new hydra.run.dir "
                          f"(to continue that run, pass ckpt_path=...)")
    ckpt_path = resume_from(cfg, run_dir)
    L.seed_everything(cfg.seed, workers=True)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    tokenizer_cfg = OmegaConf.to_container(cfg.tokenizer, resolve=True)
    init = pretrained.load(model_cfg["init_from"], cfg.paths.cache_dir) if model_cfg.get("init_from") else None
    if init is not None:  # its tokenizer, never a retrained one
        pretrained.check_matches(init, model_cfg)
        if tokenizer_cfg.get("path") and Path(tokenizer_cfg["path"]).resolve() != init.tokenizer_path.resolve():
            raise ConfigError(f"tokenizer.path={tokenizer_cfg['path']} differs from the pretrained encoder's "
                              f"{init.tokenizer_path}; drop tokenizer.path")
        tokenizer_cfg["path"] = str(init.tokenizer_path)

    # _convert_="all": our objects get plain dicts/lists (checkpoints then hold no OmegaConf types)
    datamodule = instantiate(cfg.data, _convert_="all", tokenizer=tokenizer_cfg, cache_dir=cfg.paths.cache_dir,
                             seed=cfg.seed)
    datamodule.prepare_data()  # loads, checks and tokenizes: the model needs the vocabulary and labels
    labels = {"label_names": list(datamodule.label_names)} if datamodule.label_names is not None else {}
    if datamodule.text_pair_column and not model_cfg.get("type_vocab_size"):
        model_cfg["type_vocab_size"] = 2  # sentence pairs: segment embeddings for the first and second text
    module = instantiate(
        cfg.task,
        _convert_="all",
        model=model_cfg,
        tokenizer_json=datamodule.tokenizer.to_str(),
        max_length=cfg.data.max_length,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        **labels,
    )
    if init is not None and not ckpt_path:
        pretrained.apply(init, module.model)
        log.info("encoder initialised from %s", init.folder)
    if ckpt_path:
        check_resumable(ckpt_path, datamodule)
        log.info("resuming from %s", ckpt_path)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    logger = instantiate(cfg.logger)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics[f"best_{checkpoint.monitor}"] = float(checkpoint.best_model_score)
    if cfg.test and "test" in datamodule.datasets:
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in results[0].items()})
    # The HPARAMS tab: the whole flat config next to the final metrics, once per run.
    logger.log_hyperparams(resolved(cfg), {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items()})
    logger.finalize("success")  # flush: the hparams summary is the last thing written
    metrics["objective"] = metrics.get(f"best_{cfg.objective}", metrics.get(cfg.objective, float("nan")))
    if trainer.is_global_zero:  # for sweep summaries and scripts
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        (run_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "overrides": overrides}, indent=2))

    if trainer.is_global_zero:
        print(f"run directory:   {run_dir}")
        print(f"tensorboard:     tensorboard --logdir {logger.log_dir}")
        print(f"best checkpoint: {best or '(none: checkpointing disabled)'}")
        print("metrics:         " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    return metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        with ddp_ranks_run_this_job_only():
            return train(cfg)["objective"]
    except (ConfigError, DataError, FloatingPointError) as e:
        raise SystemExit(f"error: {e}") from None
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        raise SystemExit(128 + e.signum) from None


if __name__ == "__main__":
    main()
