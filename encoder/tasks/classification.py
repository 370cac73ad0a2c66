"""task=classification: a label per text or text pair. Cross-entropy; accuracy and macro-F1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder.core.model import ModelConfig, TaskModel, init_weights
from encoder.core.predictor import Predictor
from encoder.tasks import Step, Task


class EncoderForSequenceClassification(TaskModel):
    """Encoder + pooling ([CLS] or mean) + an optional BERT pooler + a linear classifier
    (`num_labels` outputs; one for regression)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.pooler = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.Tanh()) if cfg.pooler else None
        self.dropout = nn.Dropout(cfg.classifier_dropout)
        self.classifier = nn.Linear(cfg.embed_dim, cfg.num_labels)
        self.apply(init_weights)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits from the pooled vectors."""
        if self.pooler is not None:
            pooled = self.pooler(pooled)
        return self.classifier(self.dropout(pooled))

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(input_ids, padding_mask, token_type_ids))


def labels_config(label_names: list[str] | None) -> dict:
    """config.json's labels for a transformers classifier."""
    if label_names is None:
        return {}
    return {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)},
            "num_labels": len(label_names)}


def sequence_classifier_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BERT's pooler and our classifier under BertForSequenceClassification's names."""
    return {"bert.pooler.dense.weight": state["pooler.0.weight"], "bert.pooler.dense.bias": state["pooler.0.bias"],
            "classifier.weight": state["classifier.weight"], "classifier.bias": state["classifier.bias"]}


class SequenceClassifierExport:
    """What `--format hf` writes for a task whose model is EncoderForSequenceClassification: transformers'
    BertForSequenceClassification with its `problem_type` (classification, regression, multi-label)."""

    hf_class, hf_pooler = "BertForSequenceClassification", True
    problem_type = "single_label_classification"

    def hf_config(self, label_names: list[str] | None) -> dict:
        return {**labels_config(label_names), "problem_type": self.problem_type}

    def hf_head(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return sequence_classifier_head(state)


class ClassifierPredictor(Predictor):
    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), num_labels] class probabilities."""
        return self._run(texts, self.model).softmax(-1)

    def predict(self, texts: list[str]) -> list[dict]:
        """One dict per text: `label`, its `score` (probability) and `probs` for every label."""
        results = []
        for p in self.probabilities(texts).tolist():
            best = max(range(len(p)), key=p.__getitem__)
            results.append({"label": self.label_names[best], "score": p[best],
                            "probs": dict(zip(self.label_names, p))})
        return results


class Classification(SequenceClassifierExport, Task):
    name = "classification"
    label_kind = "class"
    monitor = "val/acc"
    train_metric = "acc"
    onnx = True
    confusion_matrix = True
    model_class = EncoderForSequenceClassification
    predictor_class = ClassifierPredictor

    def step(self, model: nn.Module, batch: dict) -> Step:
        logits = model(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float()
        return Step(F.cross_entropy(logits, batch["labels"]), logits, batch["labels"], len(logits))

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        n = cfg.num_labels
        return {"acc": MulticlassAccuracy(n, average="micro"), "f1": MulticlassF1Score(n, average="macro")}

    def label_text(self, label, label_names: list[str] | None) -> str:
        return label_names[label]


TASK = Classification()
