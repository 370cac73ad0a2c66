"""Task-specific knowledge distillation: a small model learns a task from a trained teacher's outputs as
well as from the gold labels (Hinton et al. 2015; DistilBERT; TinyBERT's task stage; Tang et al. 2019).

It is a way to train a task, not a task of its own: `Distilled` wraps classification or regression, and the
student's checkpoints are ordinary checkpoints of that task (load_model, predict, export and ONNX work
unchanged). This module is the tasks' half: the rules, the loss and the metrics. Running the teacher (its
outputs as a `teacher` column, cached; extra text; augmented variants) is the training layer's half:
encoder/training/data/teacher.py, whose `build_task(name, distill)` builds a `Distilled`.

- The teacher is a checkpoint or export of the same task and labels, with its own tokenizer. Its outputs
  (classification: logits, regression: its value) arrive in each batch as `teacher`.
- Loss: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy on the gold labels
  (classification, temperature T), or alpha * MSE to the teacher's value + (1 - alpha) * MSE to the
  gold value (regression). Examples without a gold label (extra text) count in the teacher term only.
- `extra_text`: unlabelled text (an offline source or files) that only the teacher labels, appended to
  the training split. Any text that is also in the validation or test split is removed first.
- Validation also logs `agreement` with the teacher (classification: same label; regression: Pearson).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from encoder.core.errors import ConfigError
from encoder.core.model import ModelConfig
from encoder.tasks import Step, Task

UNLABELLED = {"class": -100, "number": float("nan")}  # the gold label of an extra text


def check_teaching(task: Task, distill: dict) -> None:
    """The rules of teaching `task` with `distill` (DistillConfig's fields): one ConfigError line each."""
    if task.needs_teacher and not distill.get("teacher"):
        raise ConfigError(f"task={task.name} learns from a teacher and is scored against it: set distill.teacher (e.g. "
                          f"all-MiniLM-L6-v2, a sentence-transformers folder, or a .ckpt / export of ours)")
    if task.needs_teacher and distill.get("augment"):
        raise ConfigError(f"distill.augment varies labelled training texts for a task's teacher; task={task.name} "
                          f"learns from any text: add more with distill.extra_text and set distill.augment=0")
    if distill.get("teacher") and task.fits_head:
        raise ConfigError("distill.teacher: task.loss.name=setfit learns from label pairs and fits its head; distil "
                          "afterwards (its checkpoint as distill.teacher of a student), or drop distill.teacher")
    if distill.get("teacher") and task.teachable and (distill.get("extra_text") or distill.get("augment")):
        raise ConfigError(f"distill.extra_text and distill.augment add single texts; task={task.name} learns from its "
                          f"examples' texts together: drop them")
    if distill.get("teacher") and task.label_kind not in UNLABELLED and not (task.needs_teacher or task.teachable):
        raise ConfigError(f"distill.teacher: task={task.name} cannot be distilled yet (only classification and "
                          f"regression: their teachers give one output per text); drop distill.teacher")


@dataclass
class DistilledStep(Step):
    teacher: torch.Tensor | None = None


class Distilled:
    """`base` (classification or regression) taught by a teacher. It is the base task in every respect but the
    loss, the metrics, the label of an extra text and the teacher's column its batches carry: every other
    attribute and hook is the base task's, looked up on it when asked (`__getattr__`), so a hook added to `Task`
    reaches distilled tasks without anyone listing it here, and what is saved and served is the base task's."""

    learns_from = "outputs"  # the teacher's logits (classification) or value (regression) of each text

    def __init__(self, base: Task, teacher: str, temperature: float = 2.0, alpha: float = 0.5,
                 extra_text: str | None = None, extra_text_column: str = "text", batch_size: int = 128,
                 augment: int = 0, augment_seed: int = 0):
        self.base = base
        self.teacher, self.temperature, self.alpha = teacher, temperature, alpha
        self.extra_text, self.extra_text_column, self.batch_size = extra_text, extra_text_column, batch_size
        self.augment, self.augment_seed = augment, augment_seed

    def __getattr__(self, name: str):
        if name == "base" or name.startswith("__"):  # (not set yet while unpickling; dunders are Python's own)
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def carries(self) -> tuple[str, ...]:
        """What the base task's batches carry, and the teacher's outputs."""
        return (*self.base.carries, "teacher")

    def target(self, label, mapping):
        """An extra text has no gold label: UNLABELLED[kind], which the loss and metrics skip."""
        return UNLABELLED[self.label_kind] if label is None else self.base.target(label, mapping)

    # ---- training -----------------------------------------------------------------------------
    def step(self, model: nn.Module, batch: dict) -> DistilledStep:
        base = self.base.step(model, batch)
        student, teacher, gold = base.predictions, batch["teacher"].float(), batch["labels"]
        if self.label_kind == "class":
            T = self.temperature
            soft = F.kl_div(F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1), log_target=True,
                            reduction="batchmean") * T * T
            labelled = gold != UNLABELLED["class"]
            hard = F.cross_entropy(student[labelled], gold[labelled]) if labelled.any() else student.sum() * 0
        else:
            soft = F.mse_loss(student, teacher.squeeze(-1))
            labelled = ~torch.isnan(gold)
            hard = F.mse_loss(student[labelled], gold[labelled].float()) if labelled.any() else student.sum() * 0
        loss = self.alpha * soft + (1 - self.alpha) * hard
        return DistilledStep(loss, student[labelled], gold[labelled], len(student), teacher[labelled])

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics.classification import MulticlassAccuracy
        from torchmetrics.regression import PearsonCorrCoef

        agreement = MulticlassAccuracy(cfg.num_labels, average="micro") if self.label_kind == "class" else PearsonCorrCoef()
        return {**self.base.metrics(cfg, label_names), "agreement": agreement}

    def update(self, metrics: dict[str, nn.Module], step: DistilledStep) -> None:
        self.base.update({k: m for k, m in metrics.items() if k != "agreement"}, step)
        if "agreement" in metrics and len(step.teacher):
            teacher = step.teacher.argmax(-1) if self.label_kind == "class" else step.teacher.squeeze(-1)
            metrics["agreement"].update(step.predictions, teacher)
