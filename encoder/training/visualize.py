"""TensorBoard that shows the model: attention maps, a confusion matrix, the embedding projector
and (optionally) weight/gradient histograms, from one Lightning callback; and the plots a user opens without
TensorBoard, as PNG files in the run's `plots/` folder: the confusion matrices and the training curves.

Every `every_n_epochs` validation epochs (not during the sanity check) it logs, to the run's
TensorBoardLogger:
- IMAGES `attention/sentence<i>/heads_mean`: each layer's head-averaged attention for a few fixed
  validation sentences, tokens on both axes; `attention/sentence<i>/layer<l>`: each head.
- IMAGES `val/confusion_matrix` (and `test/confusion_matrix` once, after training or train=false):
  counts, true label per row, predicted label per column.
- PROJECTOR `pooled`: the pooled ([CLS] or mean) vectors of the first validation examples, with
  their label and text as metadata.
- HISTOGRAMS `weights/*` and `grads/*` every `histogram_every_n_steps` optimizer steps, when
  `histograms=true` (off by default: hundreds of histograms per step slow training down).
- PNG files in `plots` (the run's plots/): `val_confusion_matrix.png` (the latest validation),
  `test_confusion_matrix.png`, and `curves.png` at the end of training: train/loss and each validation metric
  against the step, whatever the loggers.
Drawing costs about 0.45 s per figure on CPU (1 + num_layers figures per sentence): about 7 s per
validation epoch for model=small. Raise `every_n_epochs` or drop it: ~callbacks.tensorboard_visuals.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import matplotlib
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassConfusionMatrix

from encoder.core.collate import Collator

matplotlib.use("Agg")  # render to pixels, never open a window
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the backend)

log = logging.getLogger(__name__)


def attention_figure(maps: torch.Tensor, tokens: list[str], title: str) -> plt.Figure:
    """One heatmap per (map [seq, seq], name) panel: queries down, keys across. Each panel is
    scaled to its own maximum, so the pattern shows even when attention is spread thin."""
    n, size = len(maps), max(2.5, 0.22 * len(tokens))
    cols = min(n, 4)
    rows = -(-n // cols)
    labels = 0.07 * max(map(len, tokens), default=1) + 0.3  # inches the longest token label needs, at 7 pt
    # constrained layout places each panel's tick labels inside the figure (tight_layout clipped them)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (size + labels), rows * (size + labels) + 0.6),
                             squeeze=False, layout="constrained")
    for ax, (panel, name) in zip(axes.flat, maps):
        panel = panel.float().cpu()
        ax.imshow(panel.numpy(), cmap="viridis", vmin=0.0, vmax=float(panel.max()))
        ax.set_title(f"{name} (max {float(panel.max()):.2f})", fontsize=9)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


def confusion_figure(matrix: torch.Tensor, label_names: list[str], title: str) -> plt.Figure:
    n = len(label_names)
    labels = 0.09 * max(map(len, label_names)) + 0.5  # inches the longest label needs
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 0.7 * n + labels), max(3.5, 1.0 + 0.6 * n + labels)),
                           layout="constrained")
    counts = matrix.cpu().numpy()
    ax.imshow(counts, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center",
                    color="white" if counts[i, j] > counts.max() / 2 else "black", fontsize=9)
    ax.set_xticks(range(n), label_names, rotation=45, ha="right")
    ax.set_yticks(range(n), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return fig


def curves_figure(history: dict[str, list[tuple[int, float]]], title: str) -> plt.Figure:
    """One panel per metric (a loss's train and validation values share one), each against the step."""
    names = sorted({name.split("/", 1)[1] for name in history})
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False, layout="constrained")
    for ax, name in zip(axes.flat, names):
        for stage in ("train", "val"):
            points = history.get(f"{stage}/{name}")
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if stage == "val" else None, markersize=3,
                        label="validation" if stage == "val" else "training")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


class TensorBoardVisuals(L.Callback):
    def __init__(self, num_sentences: int = 3, max_tokens: int = 24, projector_samples: int = 256,
                 every_n_epochs: int = 1, histograms: bool = False, histogram_every_n_steps: int = 100,
                 enabled: bool = True, plots: str | None = None):
        self.enabled = enabled  # false: draws nothing (trainer=debug, where seconds matter)
        self.num_sentences, self.max_tokens, self.every_n_epochs = num_sentences, max_tokens, every_n_epochs
        self.projector_samples = projector_samples
        self.histograms, self.histogram_every_n_steps = histograms, histogram_every_n_steps
        self.plots = Path(plots) if plots else None  # PNG files: the confusion matrices and the curves
        self.confusion: MulticlassConfusionMatrix | None = None
        self.history: dict[str, list[tuple[int, float]]] = {}  # metric -> (step, value), for curves.png
        self._warned = False

    def _show(self, trainer: L.Trainer, figure: plt.Figure, tag: str, step: int) -> None:
        """`figure` as a PNG in the plots folder (rank 0) and as IMAGES `tag` in TensorBoard, if the run has it."""
        if self.plots is not None:
            self.plots.mkdir(parents=True, exist_ok=True)
            figure.savefig(self.plots / f"{tag.replace('/', '_')}.png", dpi=100)
        writer = self._writer(trainer)
        if writer is not None:
            writer.add_figure(tag, figure, step)
        plt.close(figure)

    @staticmethod
    def _writer(trainer: L.Trainer):
        """The SummaryWriter of the run's TensorBoardLogger (None without one)."""
        return next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.enabled and not self._warned and not any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers):
            self._warned = True  # setup runs for fit and again for test: one warning is enough
            log.warning("TensorBoardVisuals needs a TensorBoardLogger; it logs nothing in this run")

    def _due(self, trainer: L.Trainer) -> bool:
        return (self.enabled and not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0
                and (self._writer(trainer) is not None or self.plots is not None))

    # ---- confusion matrix: accumulated over the whole validation set (synced across ranks) ---
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        label_names = pl_module.hparams.get("label_names")
        due = self._due(trainer) and label_names and pl_module.task.confusion_matrix
        self.confusion = MulticlassConfusionMatrix(len(label_names)).to(pl_module.device) if due else None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.confusion is not None and isinstance(outputs, torch.Tensor):
            self.confusion.update(outputs.argmax(-1), batch["labels"])

    # ---- and over the test split, once (test/confusion_matrix) ---------------------------------
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        label_names = pl_module.hparams.get("label_names")
        due = self.enabled and (self._writer(trainer) is not None or self.plots is not None) and label_names \
            and pl_module.task.confusion_matrix
        self.confusion = MulticlassConfusionMatrix(len(label_names)).to(pl_module.device) if due else None

    on_test_batch_end = on_validation_batch_end

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = self.confusion.compute() if self.confusion is not None else None  # all ranks: it syncs
        if matrix is not None and trainer.is_global_zero:
            figure = confusion_figure(matrix, pl_module.hparams.label_names, f"test, step {trainer.global_step}")
            self._show(trainer, figure, "test/confusion_matrix", trainer.global_step)

    # ---- the curves: what the loggers get, kept for curves.png --------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        if self.enabled and loss is not None and trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self.history.setdefault("train/loss", []).append((trainer.global_step, float(loss)))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and not trainer.sanity_checking and trainer.state.fn == "fit":
            for name, value in trainer.callback_metrics.items():
                if name.startswith("val/") and "/" not in name[4:] and value.numel() == 1:
                    self.history.setdefault(name, []).append((trainer.global_step, float(value)))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.plots is not None and self.history and trainer.is_global_zero:
            self.plots.mkdir(parents=True, exist_ok=True)
            figure = curves_figure(self.history, f"{pl_module.task.name}, {trainer.global_step} steps")
            figure.savefig(self.plots / "curves.png", dpi=100)
            plt.close(figure)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._due(trainer):
            return
        step = trainer.global_step
        matrix = self.confusion.compute() if self.confusion is not None else None  # all ranks: it syncs
        if not trainer.is_global_zero:
            return
        if matrix is not None:
            figure = confusion_figure(matrix, pl_module.hparams.label_names, f"validation, step {step}")
            self._show(trainer, figure, "val/confusion_matrix", step)
        writer = self._writer(trainer)
        datamodule = getattr(trainer, "datamodule", None)
        if writer is None:
            return  # the maps and the projector are TensorBoard's
        if datamodule is None or "validation" not in getattr(datamodule, "datasets", {}):
            return  # the sentences and texts below come from our TextDataModule
        self._log_attention(writer, pl_module, datamodule, step)
        self._log_projector(writer, pl_module, datamodule, step)

    def _batch(self, pl_module, datamodule, rows: list[dict]) -> dict:
        # a plain collator: the datamodule's masks tokens under task=mlm, and the maps and vectors
        # should show what the model makes of the real text
        collator = Collator(pad_token_id=datamodule.collator.pad_token_id)
        keys = [k for k in ("input_ids", "token_type_ids") if k in rows[0]]
        batch = collator([{k: r[k] for k in keys} for r in rows])
        return {k: v.to(pl_module.device) for k, v in batch.items()}

    def _log_attention(self, writer, pl_module, datamodule, step: int) -> None:
        """The same few short validation sentences every epoch, so the maps can be compared."""
        ds = datamodule.datasets["validation"]
        rows = [r for r in ds.select(range(min(len(ds), 200))) if 4 <= r["length"] <= self.max_tokens]
        rows = rows[: self.num_sentences]
        if not rows:
            return
        batch = self._batch(pl_module, datamodule, rows)
        maps = pl_module.model.encoder.attention_maps(batch["input_ids"], batch["padding_mask"],
                                                      batch.get("token_type_ids"))
        for i, row in enumerate(rows):
            n = row["length"]
            tokens = [datamodule.tokenizer.id_to_token(t) for t in row["input_ids"]]
            per_layer = [(layer[i].mean(0)[:n, :n], f"layer {l}") for l, layer in enumerate(maps)]
            text = datamodule.tokenizer.decode(row["input_ids"])
            writer.add_figure(f"attention/sentence{i}/heads_mean",
                              attention_figure(per_layer, tokens, f"head-averaged attention: {text[:80]}"), step)
            for l, layer in enumerate(maps):
                heads = [(layer[i, h, :n, :n], f"head {h}") for h in range(layer.shape[1])]
                writer.add_figure(f"attention/sentence{i}/layer{l}",
                                  attention_figure(heads, tokens, f"layer {l}: {text[:80]}"), step)

    def _log_projector(self, writer, pl_module, datamodule, step: int) -> None:
        ds = datamodule.datasets["validation"]
        rows = list(ds.select(range(min(len(ds), self.projector_samples))))
        if not rows or self.projector_samples <= 0:
            return
        vectors = []
        for start in range(0, len(rows), 64):
            batch = self._batch(pl_module, datamodule, rows[start : start + 64])
            with torch.no_grad():
                vectors.append(pl_module.model.embed(batch["input_ids"], batch["padding_mask"],
                                                     batch.get("token_type_ids")).float().cpu())
        names = pl_module.hparams.get("label_names")
        texts = datamodule.tokenizer.decode_batch([r["input_ids"] for r in rows])
        # tabs and newlines would break TensorBoard's metadata.tsv
        metadata = [[pl_module.task.label_text(r.get("labels"), names), " ".join(t.split())[:120] or "(empty)"]
                    for r, t in zip(rows, texts)]
        writer.add_embedding(torch.cat(vectors), metadata=metadata, metadata_header=["label", "text"],
                             tag="pooled", global_step=step)

    # ---- histograms: weights and their gradients, right before the optimizer uses them ------
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        writer = self._writer(trainer)
        step = trainer.global_step
        if not (self.enabled and self.histograms) or writer is None or not trainer.is_global_zero \
                or step % self.histogram_every_n_steps:
            return
        for name, p in pl_module.model.named_parameters():
            writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), step)
            if p.grad is not None:
                writer.add_histogram(f"grads/{name}", p.grad.detach().float().cpu(), step)
