"""The LightningModule: one for every task. The task (encoder/tasks/) brings the head, the loss and
the metrics; this module brings what all tasks share: the training/validation/test steps and their
logging, AdamW and its schedule, throughput, the non-finite-loss policy and exact-resume random state.

It receives plain values only (dicts, lists, strings) and builds the model itself, so
`EncoderModule.load_from_checkpoint(path)` works in any Python process without Hydra, and the
checkpoint (its format: encoder/core/checkpoint.py) loads with `torch.load(path, weights_only=True)`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import random
import time

import lightning as L
import torch
from lightning.pytorch.utilities import move_data_to_device
from torch import nn

from encoder import tasks
from encoder.core.checkpoint import full_config, stamp
from encoder.core.model import ModelConfig
from encoder.training.data.teacher import build_task
from encoder.training.config import OptimConfig, TaskConfig

log = logging.getLogger(__name__)


def warmup_then_decay(step: int, warmup: int, total: int, schedule: str, min_ratio: float,
                      decay_ratio: float = 0.1) -> float:
    """LR multiplier: linear warmup to 1, then cosine or linear decay to `min_ratio` at `total`; or, for "wsd"
    (warmup-stable-decay, as MiniCPM and ModernBERT train), 1 until the last `decay_ratio` of the steps, then a
    linear decay to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":
        decay_start = max(warmup, total - round(decay_ratio * total))
        progress = min(1.0, max(0, step - decay_start) / max(1, total - decay_start))
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * decay


class EncoderModule(L.LightningModule):
    def __init__(self, task: str, model: dict, tokenizer_json: str, max_length: int,
                 label_names: list[str] | None = None, optim: dict | None = None, on_nonfinite_loss: str = "stop",
                 unpad: bool = True, compile: bool = False, distill: dict | None = None, loss: dict | None = None,
                 truncate_dim: int | None = None):
        """`model`: the architecture (a `ModelConfig` as a dict; fields the data decides are derived
        from `tokenizer_json` and `label_names`). `unpad` and `compile` say how this run computes it;
        `distill` (DistillConfig's fields) makes a teacher's outputs part of the loss; `loss` (task.loss) picks the
        task's loss and its options, where a task has several; `truncate_dim` (task.truncate_dim) how many dimensions
        of each embedding its metrics score."""
        super().__init__()
        TaskConfig(task, on_nonfinite_loss, dict(loss or {}), truncate_dim)  # its checks, for callers without Hydra
        self.task = build_task(task, distill, loss, truncate_dim)
        model = self.task.architecture(model)  # (before saving: the checkpoint keeps what the task fixed)
        # logger=False: train.py logs the run's whole (flat, readable) config instead of a tokenizer
        # JSON; everything here still goes into the checkpoint.
        self.save_hyperparameters(logger=False)
        self.optim = OptimConfig(**(optim or {}))
        self.cfg: ModelConfig = full_config(model, tokenizer_json, label_names)
        self.model = self.task.build_model(self.cfg, unpad=unpad)
        self.example_input_array = self.task.example_input(self.cfg)  # the model summary's shapes and FLOPs
        self.train_metric = self.task.metrics(self.cfg, label_names)[self.task.train_metric]
        self.val_metrics = nn.ModuleDict(self.task.metrics(self.cfg, label_names))
        self.test_metrics = nn.ModuleDict(self.task.metrics(self.cfg, label_names))
        self._clock: tuple[float, int] | None = None  # (time, real tokens) of the previous step
        self._rng_to_restore: dict | None = None  # from a checkpoint, applied at on_train_start

    @classmethod
    def create(cls, task: str, cfg: ModelConfig, tokenizer_json: str, max_length: int, **kwargs) -> "EncoderModule":
        """From a full architecture (what train.py and tests hold)."""
        return cls(task, dataclasses.asdict(cfg), tokenizer_json, max_length, **kwargs)

    def configure_model(self) -> None:
        if self.hparams.compile:
            self.model.compile(dynamic=True)  # in place: state_dict keys (and checkpoints) stay the same

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.model(*args, **kwargs)

    # ---- the steps: one definition for every task -------------------------------------------
    def _step(self, batch: dict, stage: str) -> tasks.Step:
        step = self.task.step(self.model, batch)
        train = stage == "train"
        self.log(f"{stage}/loss", step.loss, prog_bar=True, on_step=train, on_epoch=not train,
                 batch_size=step.count, sync_dist=not train)
        return step

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        step = self._step(batch, "train")
        if not self._finite(step.loss):
            return None  # Lightning skips backward and the optimizer step
        if len(step.targets):  # a distillation batch of extra text only has no gold label to score
            self.train_metric(step.predictions, step.targets)
            self.log(f"train/{self.task.train_metric}", self.train_metric, on_step=True, on_epoch=True,
                     batch_size=step.count)
        self._log_throughput(batch)
        return step.loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step = self._step(batch, "val")
        self.task.update(self.val_metrics, step)
        return step.predictions  # for callbacks (the confusion matrix in encoder.training.visualize)

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step = self._step(batch, "test")
        self.task.update(self.test_metrics, step)
        return step.predictions  # for callbacks (the confusion matrix)

    # A task whose head is fitted, not trained (classification's setfit loss), fits it on every training row as
    # training starts (it refuses rows it cannot learn from there, before any step) and before each validation of a
    # fit, so validation, the checkpoints it chooses and the test all use the head of the body they hold.
    def on_fit_start(self) -> None:
        self._fit_head()

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self._fit_head()

    def _fit_head(self) -> None:
        if self.task.fits_head:
            self.task.fit_head(self.model, (move_data_to_device(batch, self.device)
                                            for batch in self.trainer.datamodule.head_dataloader()),
                               self.hparams.label_names)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def _log_metrics(self, stage: str, metrics: nn.ModuleDict) -> None:
        """Each metric over the whole epoch (synced across processes by torchmetrics), then reset."""
        values = {}
        for name, metric in metrics.items():
            value = metric.compute()
            values.update(value if isinstance(value, dict) else {name: value})
            metric.reset()
        for nested in (False, True):  # per-label values ("f1/joy") go to the loggers, not the progress bar
            self.log_dict({f"{stage}/{k}": v.float() for k, v in values.items() if ("/" in k) == nested},
                          prog_bar=stage == "val" and not nested, sync_dist=True)

    # ---- what the steps share ----------------------------------------------------------------
    def _finite(self, loss: torch.Tensor) -> bool:
        """False: skip this batch (task.on_nonfinite_loss=skip); raises to stop (the default)."""
        if torch.isfinite(loss):
            return True
        message = f"loss is {loss.item()} at step {self.global_step}"
        if self.hparams.on_nonfinite_loss == "skip":
            log.warning("%s: skipping this batch (task.on_nonfinite_loss=skip)", message)
            return False
        raise FloatingPointError(f"{message}; stopped, earlier checkpoints are intact. Lower optim.lr, "
                                 f"or set task.on_nonfinite_loss=skip to skip such batches")

    def _log_throughput(self, batch: dict) -> None:
        size = len(batch["input_ids"])
        real = int((~batch["padding_mask"]).sum())
        self.log("perf/padding_efficiency", real / batch["padding_mask"].numel(), batch_size=size)
        # Real tokens per second over the whole previous step (data, forward, backward, optimizer).
        now = time.perf_counter()
        if self._clock is not None:
            self.log("perf/tokens_per_s", self._clock[1] / (now - self._clock[0]), batch_size=size)
        self._clock = (now, real)

    def on_train_epoch_start(self) -> None:
        self._clock = None  # validation ran in between: do not count it

    def on_train_batch_end(self, *args) -> None:
        # trainer.max_steps ends training mid-epoch, where Lightning would not validate; asking it to
        # stop makes it validate first, so checkpoints, early stopping and the test still have val/ metrics.
        if 0 < self.trainer.max_steps <= self.global_step:
            self.trainer.should_stop = True

    # ---- exact resume: dropout's random state travels with the checkpoint ----------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        stamp(checkpoint)  # digests of the weights and of everything else, which every reader checks

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("rng")

    def on_train_start(self) -> None:
        # Restored here, right before the first resumed step, so nothing in between draws from it.
        rng, self._rng_to_restore = self._rng_to_restore, None
        if rng:
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def configure_optimizers(self):
        o = self.optim
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            # No weight decay on biases (incl. MHA's in_proj_bias, bias_k, bias_v) or norm weights.
            (no_decay if p.ndim < 2 or "bias" in name.rsplit(".", 1)[-1] else decay).append(p)
        groups = [{"params": decay, "weight_decay": o.weight_decay, "name": "decay"},
                  {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
        fused = o.fused if o.fused is not None else self.device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = o.warmup_steps if o.warmup_steps is not None else int(o.warmup_ratio * total)
        schedule = functools.partial(warmup_then_decay, warmup=max(1, warmup), total=total,
                                     schedule=o.schedule, min_ratio=o.min_lr_ratio, decay_ratio=o.decay_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}
