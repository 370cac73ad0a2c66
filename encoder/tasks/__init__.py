"""The tasks, one module each, and the registry that maps a task's name to it.

A task module holds everything that is specific to its task:
- its head: the `nn.Module` that puts the task's outputs on top of the encoder (`*For<Task>`);
- what each example carries (`labels`: its kind, e.g. a class, a number, a label per word, or none) and
  how a label is read (`label_values`), learnt (`target`) and batched (`collate_labels`); whether its
  texts are pre-split words (`words`) and whether the collator masks tokens for it (MLM);
- `step`: forward, loss and what its metrics compare, for one batch;
- its metrics (torchmetrics, imported only when training asks for them), the validation metric it
  optimises (`monitor`; `minimised` names those better lower) and how to read a label;
- its `Predictor` (how predictions are rendered for users) and what it can export (`onnx`).

Everything else (train.py, the LightningModule, load_model, export, the config checks, the
TensorBoard callback) asks `get(name)` and never tests a task by name. A new task is one new module
in this package, holding a `TASK = MyTask()`: the registry finds it.

Nothing here imports Lightning, torchmetrics or datasets at import time, so serving stays light.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from encoder.core.errors import ConfigError
from encoder.core.model import ModelConfig

def direction(metric: str, task: str) -> str:
    """'min' for a metric `task` says is better lower (`Task.minimised`: its loss, errors), 'max' for the others."""
    return "min" if metric.rsplit("/", 1)[-1] in get(task).minimised else "max"


@dataclass
class Step:
    """One batch through a task: the loss, what the metrics compare, and how many items the loss
    averages over (examples, words or masked tokens), so epoch means weigh every item once."""

    loss: torch.Tensor
    predictions: torch.Tensor
    targets: torch.Tensor
    count: int


class Task(ABC):
    name: str = ""
    label_kind: str | None = "class"  # what an example's label is ("class", "number", ...); None: raw text
    words: bool = False  # its texts are lists of words (pre-split), each with its own label
    # its example is several texts, each encoded on its own (data.text_column, data.text_pair_column and
    # data.negative_columns: an anchor, its positive, hard negatives), where a pair is otherwise one joined sequence
    texts_apart: bool = False
    masks_tokens: bool = False  # the collator masks tokens (data.mlm_probability > 0)
    monitor: str = "val/acc"  # what checkpoints, early stopping and sweeps follow by default
    minimised: tuple[str, ...] = ("loss",)  # its metrics that are better lower (the others are maximised)
    train_metric: str = "acc"  # logged as train/<train_metric>
    onnx: bool = False  # python -m encoder.export --onnx can write its graph
    confusion_matrix: bool = False  # TensorBoard draws one per validation epoch
    carries: tuple[str, ...] = ()  # more columns its batches carry (a teacher's outputs: training/data/teacher.py)
    needs_teacher: bool = False  # it learns from distill.teacher alone (embedding), which must be set
    teachable: bool = False  # it may learn from distill.teacher by itself (`with_teacher`; contrastive: its scores)
    # what a teacher gives it, per text (encoder/training/data/teacher.py runs the teacher): "outputs" (a task
    # teacher's logits or value: distillation), "embeddings" (a sentence embedder's vectors), None: no teacher
    learns_from: str | None = None
    model_class: type[nn.Module]
    predictor_class: type

    def architecture(self, model: dict) -> dict:
        """The configured architecture (a ModelConfig as a dict) with what this task fixes in it; saved with
        the checkpoint (embedding: the head's width is the teacher's)."""
        return model

    def with_loss(self, loss: dict) -> "Task":
        """This task with the loss `task.loss` configures ({"name": ..., and its options}); a task with one loss
        refuses any."""
        if loss:
            raise ConfigError(f"task={self.name} has one loss, set by the task: drop task.loss")
        return self

    def evaluated_at(self, truncate_dim: int | None) -> "Task":
        """This task scoring the first `truncate_dim` dimensions of each embedding (`task.truncate_dim`); a task
        that scores no embedding refuses any."""
        if truncate_dim is not None:
            raise ConfigError(f"task.truncate_dim cuts sentence embeddings; task={self.name} scores none: drop it")
        return self

    def check_data(self, data) -> None:
        """Refuse, in one ConfigError line, data settings (DataConfig) that this task's options cannot work with."""

    # its head is fitted on the training rows' embeddings before each validation (`fit_head`), not by the optimizer
    fits_head: bool = False

    def fit_head(self, model: nn.Module, batches, label_names: list[str] | None) -> None:
        """A task with `fits_head`: set `model`'s head from its embeddings of `batches` (every training row once); a
        one-line DataError for rows it cannot learn from."""
        raise NotImplementedError(f"task={self.name} trains its head with the optimizer")

    def with_teacher(self, teacher_width: int, **distill) -> "Task":
        """A task with `needs_teacher` or `teachable`: itself learning from `distill["teacher"]` (DistillConfig's
        fields), whose vectors are `teacher_width` wide (encoder/training/data/teacher.py runs the teacher and measures it)."""
        raise NotImplementedError(f"task={self.name} does not learn from a teacher by itself")

    # ---- what an example's label is: read by the data checks, learnt by the model, batched by the collator ----
    def label_values(self, label) -> list:
        """The members of the label set that one example's label holds (checked against it; None: missing)."""
        return [label]

    def label_map(self, column: str) -> tuple[list[str], object] | None:
        """For labels that are no members of a label set (regression's numbers): (the target names, a map from a
        value in the data to its target, which raises a one-line DataError for a value it cannot read). None: a
        label set, read off the data or data.label_names."""
        return None

    def target(self, label, mapping):
        """What the model learns for one example's label; `mapping`: label value -> class index (regression: a
        float of the value)."""
        return mapping[label]

    def collate_labels(self, targets: list, length: int) -> torch.Tensor:
        """A batch's targets as one tensor; `length`: the batch's padded sequence length."""
        return torch.as_tensor(targets)

    def build_model(self, cfg: ModelConfig, unpad: bool = True) -> nn.Module:
        model = self.model_class(cfg)
        model.encoder.unpad = unpad
        return model

    @abstractmethod
    def step(self, model: nn.Module, batch: dict) -> Step:
        """Forward and loss for one batch."""

    @abstractmethod
    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        """Fresh metrics by name (a metric may compute a dict of several values). Validation and
        test log all of them; training logs the one named `train_metric`."""

    def update(self, metrics: dict[str, nn.Module], step: Step) -> None:
        for metric in metrics.values():
            metric.update(step.predictions, step.targets)

    def example_input(self, cfg: ModelConfig) -> tuple:
        """A one-text batch (32 tokens) of model inputs: the model summary shows shapes and FLOPs for it."""
        length = min(32, cfg.max_positions)
        return torch.full((1, length), cfg.vocab_size - 1), torch.zeros(1, length, dtype=torch.bool)

    def label_text(self, label, label_names: list[str] | None) -> str:
        """An example's label as text (TensorBoard's projector), '-' where there is none."""
        return "-"

    # ---- what `--format hf` writes (encoder/serving/hf.py): transformers' class for this task's model -----------
    hf_class: str | None = None  # e.g. BertForSequenceClassification; None: the encoder alone (a BertModel)
    hf_pooler: bool = False  # that class classifies BERT's pooled [CLS] (model.pooling=cls model.pooler=true)

    def hf_config(self, label_names: list[str] | None) -> dict:
        """What config.json says of the head (labels, problem_type)."""
        return {}

    def hf_head(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The head's weights (ours: `state`) under `hf_class`'s names."""
        return {}

    def sentence_dense(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Weights of a sentence-transformers Dense module after pooling (`linear.weight`, `linear.bias`), if
        this task's sentence embedding has one."""
        return None


_TASKS: dict[str, Task] = {}


def names() -> list[str]:
    _discover()
    return sorted(_TASKS)


def get(name: str) -> Task:
    """The task called `name`; an unknown name is a one-line ConfigError listing the known ones."""
    _discover()
    if name not in _TASKS:
        raise ConfigError(f"task {name!r} is unknown; known tasks: {sorted(_TASKS)} (pick one with task=...)")
    return _TASKS[name]


def _discover() -> None:
    if _TASKS:
        return
    for info in pkgutil.iter_modules(__path__):
        task = getattr(importlib.import_module(f"{__name__}.{info.name}"), "TASK", None)
        if isinstance(task, Task):
            _TASKS[task.name] = task
