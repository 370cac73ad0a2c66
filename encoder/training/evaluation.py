"""The end of a run: its final metrics to every logger, metrics.json and the console (`record`, for training
and evaluation alike), and `train=false`: the test metrics of any checkpoint or export on a dataset's test
split (`evaluate`), with each text's prediction (`write_predictions`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from encoder import tasks
from encoder.core import checkpoint
from encoder.core.errors import ConfigError, LabelSetError
from encoder.serving import load_model
from encoder.training import pretrained
from encoder.training.config import Checked
from encoder.training.resolvers import resolved
from encoder.training.console import say
from encoder.training.data.datamodule import TextDataModule
from encoder.training.data.teacher import teacher_options
from encoder.training.loggers import where
from encoder.training.module import EncoderModule


def record(cfg: DictConfig, trainer: L.Trainer, metrics: dict) -> dict:
    """The run's final metrics, plus `objective` for sweepers: to every logger, metrics.json and the console."""
    for logger in trainer.loggers:  # the whole flat config; TensorBoard's HPARAMS tab puts the final metrics next to it
        final = {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items()}
        logger.log_hyperparams(resolved(cfg), *([final] if isinstance(logger, TensorBoardLogger) else []))
        logger.finalize("success")  # flush: the hparams summary is the last thing written
        if isinstance(logger, WandbLogger):  # end the W&B run: the next job of a sweep starts its own
            logger.experiment.finish()
    metrics["objective"] = metrics.get(f"best_{cfg.objective}", metrics.get(cfg.objective, float("nan")))
    if trainer.is_global_zero:  # for sweep summaries and scripts
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        finite = {k: v if math.isfinite(v) else None for k, v in metrics.items()}  # JSON has no NaN: null
        written = {"metrics": finite, "overrides": overrides, "direction": tasks.direction(cfg.objective, cfg.task.name)}
        (Path(cfg.paths.output_dir) / "metrics.json").write_text(json.dumps(written, indent=2))
        say(f"run directory:   {cfg.paths.output_dir}")
        for logger in trainer.loggers:
            say(f"{type(logger).__name__.removesuffix('Logger').lower() + ':':17s}{where(logger)}")
        shown = {k: v for k, v in metrics.items() if k != "objective" or math.isfinite(v)}  # (none: an evaluation)
        say("metrics:         " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))
    return metrics


def evaluate(cfg: DictConfig, checked: Checked, trainer: L.Trainer) -> dict:
    """train=false: the task's test metrics of `ckpt_path` (a .ckpt or an export folder) on this data's test
    split, without training. The checkpoint brings its tokenizer, labels and max_length; data labels outside
    its label set are refused. With distill.teacher the teacher's outputs are scored too (`agreement`), and a
    task scored against a teacher (task=embedding) is evaluated against it. A BERT-style or sentence-transformers
    folder (or a known name, all-MiniLM-L6-v2) is evaluated as an embedder of a task whose model is the encoder
    alone (task=contrastive): a baseline scored by the same code."""
    if not cfg.ckpt_path:
        raise ConfigError("train=false evaluates a checkpoint: pass ckpt_path=...")
    path = cfg.ckpt_path
    if pretrained.is_encoder_folder(path):
        saved = pretrained.as_saved(path, cfg.task.name, cfg.data.max_length, cfg.paths.cache_dir)
    else:
        saved = checkpoint.read(path)
    if saved.task != cfg.task.name:  # (the task's config sets what its data needs: masking, packing, ...)
        raise ConfigError(f"{cfg.ckpt_path} is a task={saved.task} model; evaluate it with task={saved.task} (this "
                          f"run has task={cfg.task.name})")
    data = {**OmegaConf.to_container(cfg.data, resolve=True), "max_length": saved.max_length,
            "label_names": saved.label_names,
            "splits": {"train": None, "validation": None, "test": cfg.data.splits.get("test") or "test"}}
    data.pop("_target_")
    tokenizer = {"path": str(pretrained.cached_tokenizer(saved.tokenizer_json, cfg.paths.cache_dir))}
    distill = teacher_options(checked.distill, cfg.paths.cache_dir)
    datamodule = TextDataModule(task=saved.task, tokenizer=tokenizer, cache_dir=cfg.paths.cache_dir, seed=cfg.seed,
                                distill=distill, **data)
    try:
        datamodule.prepare_data()
    except LabelSetError as e:
        raise ConfigError(f"the {e.split} split has labels {', '.join(e.outside)} that {cfg.ckpt_path} was not "
                          f"trained on (its labels: {e.names}); evaluate it on data with those labels") from None
    # a .ckpt or an export folder: the model as `checkpoint.read` checked it
    module = EncoderModule.create(saved.task, saved.config, saved.tokenizer_json, saved.max_length,
                                  label_names=saved.label_names, distill=distill, loss=checked.task.loss,
                                  truncate_dim=checked.task.truncate_dim)
    module.model.load_state_dict(saved.state)
    results = trainer.test(module, datamodule=datamodule)[0]
    metrics = {k: float(v) for k, v in results.items()}
    if cfg.predictions:
        say(f"predictions:     {write_predictions(cfg, datamodule)}")
    return record(cfg, trainer, metrics)


def write_predictions(cfg: DictConfig, datamodule) -> Path:
    """<run dir>/predictions.jsonl: each test text, its gold label and the prediction (as predict gives it)."""
    raw = datamodule.raw["test"]
    texts = raw[datamodule.cfg.text_column]
    if datamodule.cfg.text_pair_column:
        texts = list(zip(texts, raw[datamodule.cfg.text_pair_column]))
    rows = load_model(cfg.ckpt_path).predict([t if t is not None else "" for t in texts])
    gold = raw[datamodule.cfg.label_column] if datamodule.cfg.label_column in raw.column_names else [None] * len(rows)
    path = Path(cfg.paths.output_dir) / "predictions.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for text, label, row in zip(texts, gold, rows):
            f.write(json.dumps({"text": text, "gold": label, **row}, ensure_ascii=False) + "\n")
    return path
