"""task=classification: a label per text or text pair. Cross-entropy; accuracy and macro-F1.

`task.loss.name` picks how it learns:
- `cross_entropy` (the default): the encoder and its linear head end to end.
- `setfit`: SetFit's method for a few labelled rows (Tunstall et al. 2022, "Efficient Few-Shot Learning Without
  Prompts"). The body learns from pairs of each batch's rows, as SetFit's CosineSimilarityLoss does from the pairs
  it draws: the cosine of two rows' embeddings pulled to 1 for the same label and to 0 for different labels, the
  positive and negative pairs weighed alike (SetFit's oversampling). The head is no optimizer's: as training starts
  and before each validation, a logistic regression (scikit-learn's LogisticRegression, L2 with `C`, solved with
  torch's L-BFGS) is fitted on the embeddings of every training row and becomes the linear classifier. The
  checkpoint is an ordinary classifier's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder.core.errors import ConfigError, DataError
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

    def with_loss(self, loss: dict) -> "Classification":
        return learning_with(loss, LOSSES, TASK, "cross_entropy")


def learning_with(loss: dict | None, losses: dict, task, default: str):
    """The task `losses[task.loss.name]` names, built with the loss's options; `default` names `task` itself, which
    takes none."""
    options = dict(loss or {})
    name = options.pop("name", default)
    if name not in losses:
        raise ConfigError(f"task.loss.name={name!r} is unknown; choose one of {sorted(losses)}")
    if name == default and options:
        raise ConfigError(f"task.loss: {default} takes no options; drop {sorted(options)}")
    return task if name == default else losses[name](**options)


class FittedHead:
    """SetFit's way to learn a task with a linear head (mixed in before the task: `SetFit`, and multilabel's): pairs of
    the batch's rows teach the body, a logistic regression on the embeddings of every training row is the head
    (the module docstring). The task says which rows pair as alike (`alike`) and how its head is fitted
    (`fit_linear`)."""

    fits_head = True

    def __init__(self, C: float = 1.0):
        if isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0:
            raise ConfigError(f"task.loss.C={C!r} must be a positive number: the logistic regression's inverse L2 "
                              f"strength (scikit-learn's C; SetFit: 1)")
        self.C = float(C)

    def architecture(self, model: dict) -> dict:
        if model.get("pooler"):
            raise ConfigError("task.loss.name=setfit fits the classifier on the pooled embeddings themselves; set "
                              "model.pooler=false")
        return model

    def step(self, model: nn.Module, batch: dict) -> Step:
        embedded = model.embed(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float()
        logits = model.classifier(embedded.detach())  # the fitted head's view of the batch (the metrics only)
        targets = batch["labels"]
        return Step(label_pairs_loss(embedded, self.alike(targets)), logits, targets.long(), len(logits))

    def fit_head(self, model: nn.Module, batches, label_names: list[str] | None) -> None:
        training = model.training
        model.eval()
        with torch.no_grad():
            seen = [(model.embed(b["input_ids"], b["padding_mask"], b.get("token_type_ids")).float(), b["labels"])
                    for b in batches]
        model.train(training)
        labels = torch.cat([y for _, y in seen]).cpu()
        classes = model.classifier.out_features
        rows = self.rows_per_label(labels, classes)
        if min(rows) < 2:
            few = rows.index(min(rows))
            raise DataError(f"task.loss.name=setfit learns from pairs of rows that share a label: label "
                            f"{label_names[few] if label_names else few!r} has {rows[few]} training row"
                            f"{'' if rows[few] == 1 else 's'}; give every label at least 2")
        weight, bias = self.fit_linear(torch.cat([x for x, _ in seen]).cpu(), labels, classes)
        with torch.no_grad():
            model.classifier.weight.copy_(weight)
            model.classifier.bias.copy_(bias)

    # ---- what the task says ----
    def alike(self, targets: torch.Tensor) -> torch.Tensor:
        """[batch, batch] bool: the pairs of rows whose embeddings should meet (one label)."""
        return targets[:, None] == targets[None, :]

    def rows_per_label(self, labels: torch.Tensor, classes: int) -> list[int]:
        return torch.bincount(labels, minlength=classes).tolist()

    def fit_linear(self, x: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        return logistic_regression(x, labels, classes, self.C)


class SetFit(FittedHead, Classification):
    """Classification learnt as SetFit learns (task.loss.name=setfit)."""


LOSSES = {"cross_entropy": Classification, "setfit": SetFit}  # task.loss.name -> the task learning with it


def label_pairs_loss(embedded: torch.Tensor, alike: torch.Tensor) -> torch.Tensor:
    """SetFit's CosineSimilarityLoss over every pair of the batch's rows: (cos - 1)^2 for the pairs `alike` marks
    (one label), cos^2 for the others, each kind averaged, the two weighed alike. A batch without pairs gives 0."""
    z = F.normalize(embedded, dim=-1)
    cosine = z @ z.T
    pairs = torch.ones_like(alike).triu(1)  # each pair once, no row with itself
    terms = [((cosine[kind] - target) ** 2).mean() for kind, target in ((pairs & alike, 1.0), (pairs & ~alike, 0.0))
             if kind.any()]
    return sum(terms) / len(terms) if terms else cosine.sum() * 0


def logistic_regression(x: torch.Tensor, y: torch.Tensor, classes: int, C: float = 1.0) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """scikit-learn's LogisticRegression(C=C) (L2 on the weights, not the intercept; lbfgs), fitted to
    convergence, as a linear classifier's (weight [classes, dim], bias [classes]) whose softmax gives its
    probabilities: two classes are one sigmoid (logits 0 and w.x + b), more are a multinomial softmax."""
    x, y = x.double(), y.long()
    rows = 1 if classes == 2 else classes
    w = torch.zeros(rows, x.shape[1] + 1, dtype=torch.float64, requires_grad=True)  # the last column: the intercept
    features = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    optimizer = torch.optim.LBFGS([w], lr=1, max_iter=1000, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = features @ w.T
        if rows == 1:
            data = F.binary_cross_entropy_with_logits(logits[:, 0], y.double(), reduction="sum")
        else:
            data = F.cross_entropy(logits, y, reduction="sum")
        loss = C * data + 0.5 * (w[:, :-1] ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    w = w.detach().float()
    if rows == 1:
        w = torch.cat([torch.zeros_like(w), w])
    return w[:, :-1], w[:, -1]


TASK = Classification()
