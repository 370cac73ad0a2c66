"""The LightningModules (one per task, configs/task/): loss and metrics around a model from
encoder/model.py; `EncoderTask` holds what all tasks share (AdamW and its schedule, exact-resume
random state, the non-finite-loss policy, throughput logging).

- `TextClassifier` (task=classification): cross-entropy, accuracy, macro-F1; texts or text pairs.
- `TextRegressor` (task=regression): MSE; MSE, Pearson, Spearman.
- `TokenClassifier` (task=token_classification): a label per word (NER, POS), loss on each word's
  first sub-token; token accuracy and, for BIO labels, entity precision/recall/F1 (seqeval's counting).
- `MaskedLM` (task=mlm): BERT's masked-language-model pretraining; the loss is computed on the masked
  tokens only; `val/acc` is the accuracy on masked tokens, `val/perplexity` exp(mean masked loss).

Modules receive plain values only (dicts, lists, strings) and build the model themselves, so
`TextClassifier.load_from_checkpoint(path)` works in any Python process without Hydra, and the
checkpoint (hyperparameters: model config, label names, tokenizer JSON) loads with
`torch.load(path, weights_only=True)`. Checkpoints also record `task`, which `encoder.load_model` uses.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time

import lightning as L
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef
from torchmetrics.text import Perplexity

from encoder.config import NONFINITE, OptimConfig, check_max_length
from encoder.entities import EntityF1, is_bio
from encoder.model import EncoderClassifier, EncoderForMaskedLM, EncoderForTokenClassification, ModelConfig
from encoder.schema import build, check_choice

log = logging.getLogger(__name__)


def model_config(model: dict, tokenizer_json: str, label_names: list[str] | None = None) -> ModelConfig:
    """The architecture from the model config plus what the data decides (vocabulary, labels)."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    derived = {"vocab_size": tokenizer.get_vocab_size(), "pad_token_id": tokenizer.token_to_id("[PAD]")}
    if label_names is not None:
        derived["num_labels"] = len(label_names)
    return ModelConfig.from_dict({**model, **derived})


def warmup_then_decay(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine or linear decay to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * decay


class EncoderTask(L.LightningModule):
    """What every task shares. Subclasses set `task`, build `self.model` and define their steps."""

    task = ""  # recorded in checkpoints and exports: encoder.load_model picks its predictor by it

    def __init__(self, model: dict, tokenizer_json: str, max_length: int, optim: dict | None,
                 on_nonfinite_loss: str, label_names: list[str] | None = None):
        super().__init__()
        self.optim = build(OptimConfig, optim, "optim")
        check_choice(on_nonfinite_loss, NONFINITE, "task.on_nonfinite_loss")
        self.on_nonfinite_loss = on_nonfinite_loss
        self.cfg = model_config(model, tokenizer_json, label_names)
        check_max_length(max_length, self.cfg)
        self._clock: tuple[float, int] | None = None  # (time, real tokens) of the previous step
        self._rng_to_restore: dict | None = None  # from a checkpoint, applied at on_train_start

    def configure_model(self) -> None:
        if self.cfg.compile:
            self.model.compile(dynamic=True)  # in place: state_dict keys (and checkpoints) stay the same

    def _finite(self, loss: torch.Tensor) -> bool:
        """False: skip this batch (task.on_nonfinite_loss=skip); raises to stop (the default)."""
        if torch.isfinite(loss):
            return True
        message = f"loss is {loss.item()} at step {self.global_step}"
        if self.on_nonfinite_loss == "skip":
            log.warning("%s: skipping this batch (task.on_nonfinite_loss=skip)", message)
            return False  # returning None from training_step: Lightning skips backward and the step
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

    # ---- exact resume: dropout's random state travels with the checkpoint ----------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["task"] = self.task
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

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
        fused = o.fused if o.fused is not None else self.device.type == "cuda"
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = o.warmup_steps if o.warmup_steps is not None else int(o.warmup_ratio * total)
        schedule = functools.partial(warmup_then_decay, warmup=max(1, warmup), total=total,
                                     schedule=o.schedule, min_ratio=o.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}


class TextClassifier(EncoderTask):
    task = "classification"

    def __init__(self, model: dict, label_names: list[str], tokenizer_json: str, max_length: int,
                 optim: dict | None = None, on_nonfinite_loss: str = "stop"):
        super().__init__(model, tokenizer_json, max_length, optim, on_nonfinite_loss, label_names)
        # logger=False: the run's full (flat, readable) config is logged by train.py instead of a
        # tokenizer JSON; everything here still goes into the checkpoint.
        self.save_hyperparameters(logger=False)
        self.model = EncoderClassifier(self.cfg)
        self.train_name, self.train_metric, metrics = self._metrics()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def _metrics(self) -> tuple[str, torch.nn.Module, MetricCollection]:
        n = self.cfg.num_labels
        return "acc", MulticlassAccuracy(n, average="micro"), MetricCollection(
            {"acc": MulticlassAccuracy(n, average="micro"), "f1": MulticlassF1Score(n, average="macro")})

    def _loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, labels)

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids, padding_mask, token_type_ids).float()

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids"))
        loss = self._loss(outputs, batch["labels"])
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step,
                 batch_size=len(outputs), sync_dist=not on_step)
        return loss, outputs

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        loss, outputs = self._step(batch, "train")
        if not self._finite(loss):
            return None
        self.train_metric(outputs, batch["labels"])
        self.log(f"train/{self.train_name}", self.train_metric, on_step=True, on_epoch=True, batch_size=len(outputs))
        self._log_throughput(batch)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, outputs = self._step(batch, "val")
        self.val_metrics(outputs, batch["labels"])
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=len(outputs))
        return outputs  # for callbacks (the confusion matrix in encoder.visualize)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, outputs = self._step(batch, "test")
        self.test_metrics(outputs, batch["labels"])
        self.log_dict(self.test_metrics, batch_size=len(outputs))


class TextRegressor(TextClassifier):
    """One number per text or text pair (task=regression): MSE loss; MSE, Pearson and Spearman
    correlation. `label_names` is the one target's name (the label column)."""

    task = "regression"

    def _metrics(self) -> tuple[str, torch.nn.Module, MetricCollection]:
        if self.cfg.num_labels != 1:
            raise ValueError(f"task=regression predicts one number; got targets {self.hparams.label_names}")
        return "mse", MeanSquaredError(), MetricCollection(
            {"mse": MeanSquaredError(), "pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()})

    def _loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs, labels.float())

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(input_ids, padding_mask, token_type_ids).squeeze(-1)


class TokenClassifier(EncoderTask):
    """A label per word. The datamodule (data.word_labels) puts each word's label on its first
    sub-token and -100 on the others, on special tokens and on padding; those never count."""

    task = "token_classification"

    def __init__(self, model: dict, label_names: list[str], tokenizer_json: str, max_length: int,
                 optim: dict | None = None, on_nonfinite_loss: str = "stop"):
        super().__init__(model, tokenizer_json, max_length, optim, on_nonfinite_loss, label_names)
        self.save_hyperparameters(logger=False)
        self.model = EncoderForTokenClassification(self.cfg)
        n = self.cfg.num_labels
        self.train_acc = MulticlassAccuracy(n, average="micro", ignore_index=-100)
        self.val_acc, self.test_acc = (MulticlassAccuracy(n, average="micro", ignore_index=-100) for _ in range(2))
        self.bio = is_bio(label_names)  # entity scores only make sense for BIO tags
        self.val_entities, self.test_entities = EntityF1(label_names), EntityF1(label_names)

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float()
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        on_step = stage == "train"
        words = int((batch["labels"] != -100).sum())
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step,
                 batch_size=words, sync_dist=not on_step)
        return loss, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        loss, logits = self._step(batch, "train")
        if not self._finite(loss):
            return None
        self.train_acc(logits.argmax(-1), batch["labels"])
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=True, batch_size=len(logits))
        self._log_throughput(batch)
        return loss

    def _evaluate(self, batch: dict, stage: str, acc: MulticlassAccuracy, spans: EntityF1) -> None:
        _, logits = self._step(batch, stage)
        predictions = logits.argmax(-1)
        acc.update(predictions, batch["labels"])
        self.log(f"{stage}/acc", acc, prog_bar=stage == "val", batch_size=len(logits))
        if self.bio:
            spans.update(predictions, batch["labels"])

    def _log_entities(self, stage: str, spans: EntityF1) -> None:
        if self.bio:
            self.log_dict({f"{stage}/{k}": v for k, v in spans.compute().items()}, prog_bar=stage == "val")
            spans.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc, self.val_entities)

    def on_validation_epoch_end(self) -> None:
        self._log_entities("val", self.val_entities)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc, self.test_entities)

    def on_test_epoch_end(self) -> None:
        self._log_entities("test", self.test_entities)


class MaskedLM(EncoderTask):
    """Masked-language-model pretraining. The collator (data.mlm_probability) chooses and masks the
    tokens and puts their originals in `labels` ([batch, seq], -100 elsewhere)."""

    task = "mlm"

    def __init__(self, model: dict, tokenizer_json: str, max_length: int, optim: dict | None = None,
                 on_nonfinite_loss: str = "stop"):
        super().__init__(model, tokenizer_json, max_length, optim, on_nonfinite_loss)
        self.save_hyperparameters(logger=False)
        self.model = EncoderForMaskedLM(self.cfg)
        vocab = self.cfg.vocab_size
        self.train_acc = MulticlassAccuracy(vocab, average="micro")
        self.val_metrics = MetricCollection({"acc": MulticlassAccuracy(vocab, average="micro"),
                                             "perplexity": Perplexity()}, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if "labels" not in batch or batch["labels"].dim() != 2:
            raise ValueError("task=mlm needs masked batches: set data.mlm_probability (e.g. 0.15)")
        selected = batch["labels"] != -100
        logits = self.model(batch["input_ids"], batch["padding_mask"], selected).float()
        targets = batch["labels"][selected]
        loss = F.cross_entropy(logits, targets)
        on_step = stage == "train"
        # weighted by masked tokens, so the epoch value is the mean over all masked tokens
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step,
                 batch_size=len(targets), sync_dist=not on_step)
        return loss, logits, targets

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        loss, logits, targets = self._step(batch, "train")
        if not self._finite(loss):
            return None
        self.train_acc(logits, targets)
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=True, batch_size=len(targets))
        self._log_throughput(batch)
        return loss

    def _evaluate(self, batch: dict, stage: str, metrics: MetricCollection) -> None:
        _, logits, targets = self._step(batch, stage)
        metrics["acc"].update(logits, targets)
        metrics["perplexity"].update(logits[None], targets[None])  # Perplexity wants [batch, seq, vocab]
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=len(targets))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)
