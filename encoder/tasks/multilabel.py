"""task=multilabel: any number of labels per text (topics, emotions, kinds of toxicity, intents that combine).

The data gives each text a list of label names (or of ClassLabel ids, as the Hub's go_emotions does); in a
csv file, where a cell holds one string, the names are separated by commas ("joy,surprise"). An empty list (or
cell) is a text with none of the labels. The head is the classifier of task=classification with one logit per label,
each trained as its own yes/no question (binary cross-entropy, as transformers' problem_type
"multi_label_classification"). Metrics: micro-F1 (what checkpoints follow), macro-F1, exact match (every label
of a text right) and each label's F1 (`val/f1/<label>`, in the loggers). A prediction is every label whose
probability reaches `threshold` (0.5), with every label's probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder.core.errors import DataError
from encoder.core.model import ModelConfig
from encoder.core.predictor import Predictor
from encoder.tasks import Step, Task
from encoder.tasks.classification import (EncoderForSequenceClassification, FittedHead, SequenceClassifierExport,
                                          learning_with, logistic_regression)


class MultiLabelPredictor(Predictor):
    threshold = 0.5  # a label is predicted when its probability reaches this

    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), num_labels]: each label's probability, on its own (they need not sum to 1)."""
        return self._run(texts, self.model).sigmoid()

    def predict(self, texts: list[str]) -> list[dict]:
        """One dict per text: `labels` (those whose probability reaches `threshold`, most probable first) and
        `probs` for every label."""
        results = []
        for p in self.probabilities(texts).tolist():
            chosen = sorted((i for i, v in enumerate(p) if v >= self.threshold), key=lambda i: -p[i])
            results.append({"labels": [self.label_names[i] for i in chosen], "probs": dict(zip(self.label_names, p))})
        return results


class MultiLabel(SequenceClassifierExport, Task):
    name = "multilabel"
    problem_type = "multi_label_classification"  # (--format hf: transformers' pipeline applies a sigmoid per label)
    label_kind = "classes"  # several members of the label set per text
    monitor = "val/micro_f1"
    train_metric = "micro_f1"
    onnx = True
    model_class = EncoderForSequenceClassification
    predictor_class = MultiLabelPredictor

    def label_values(self, label) -> list:
        if label is None:
            return []  # an empty csv cell: a text with none of the labels, like an empty list
        if isinstance(label, str):  # a csv cell: "joy,surprise"
            return [name.strip() for name in label.split(",") if name.strip()]
        if not isinstance(label, (list, tuple)):
            raise DataError(f"task=multilabel needs a list of labels per text in data.label_column (or a string of "
                            f"names separated by commas); got {label!r:.40}")
        return [name.strip() if isinstance(name, str) else name for name in label]  # (" joy" is "joy", as in csv)

    def target(self, label, mapping) -> list[float]:
        """Multi-hot: 1.0 for each label the text has, 0.0 for the others."""
        hot = [0.0] * (max(mapping.values()) + 1)
        for value in self.label_values(label):
            hot[mapping[value]] = 1.0
        return hot

    def step(self, model: nn.Module, batch: dict) -> Step:
        logits = model(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float()
        targets = batch["labels"].float()
        return Step(F.binary_cross_entropy_with_logits(logits, targets), logits, targets.long(), len(logits))

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics.classification import MultilabelExactMatch, MultilabelF1Score
        from torchmetrics.wrappers import ClasswiseWrapper

        n = cfg.num_labels  # (logits go through a sigmoid and a 0.5 threshold inside torchmetrics)
        return {"micro_f1": MultilabelF1Score(n, average="micro"), "macro_f1": MultilabelF1Score(n, average="macro"),
                "exact_match": MultilabelExactMatch(n),
                "per_label": ClasswiseWrapper(MultilabelF1Score(n, average="none"), labels=label_names, prefix="f1/")}

    def label_text(self, label, label_names: list[str] | None) -> str:
        return ",".join(name for name, hot in zip(label_names, label) if hot) or "(none)"

    def with_loss(self, loss: dict) -> "MultiLabel":
        return learning_with(loss, LOSSES, TASK, "binary_cross_entropy")


class MultiLabelSetFit(FittedHead, MultiLabel):
    """Several labels per text learnt as SetFit learns them (task.loss.name=setfit): two rows are alike when they share
    a label (SetFit's multi-label pairs: a positive pair through each label a row has), and the head is one logistic
    regression per label, each a yes/no question (SetFit's one-vs-rest head)."""

    def alike(self, targets: torch.Tensor) -> torch.Tensor:
        hot = targets.float()
        return hot @ hot.T > 0

    def rows_per_label(self, labels: torch.Tensor, classes: int) -> list[int]:
        return labels.long().sum(0).tolist()

    def fit_linear(self, x: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        fits = [logistic_regression(x, labels[:, k], 2, self.C) for k in range(classes)]  # rows (0, w): take w
        return torch.stack([w[1] for w, _ in fits]), torch.stack([b[1] for _, b in fits])


LOSSES = {"binary_cross_entropy": MultiLabel, "setfit": MultiLabelSetFit}  # task.loss.name -> the task learning with it

TASK = MultiLabel()
