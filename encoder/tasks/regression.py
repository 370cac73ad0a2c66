"""task=regression: one number per text or text pair. MSE loss; MSE, Pearson and Spearman correlation.
The model is the classifier's with one output; `label_names` is the one target's name."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from encoder.core.errors import DataError
from encoder.core.model import ModelConfig
from encoder.core.predictor import Predictor
from encoder.tasks import Step, Task
from encoder.tasks.classification import EncoderForSequenceClassification, SequenceClassifierExport


FLOAT32_MAX = 3.4028234663852886e38  # the model computes in float32 (or less)


class Numbers:
    """The label "map" of regression: a value becomes a float, or a one-line DataError."""

    def __init__(self, column: str):
        self.column = column

    def __getitem__(self, value) -> float:
        if value is None:
            raise DataError(f"data.label_column={self.column!r} has rows without a value; fill or drop them")
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if isinstance(value, bool) or number != number or abs(number) > FLOAT32_MAX:
            raise DataError(f"data.label_column={self.column!r} holds {value!r}, which is not a finite number a "
                            f"float32 holds (|x| < 3.4e38); regression needs such labels (fix or drop those rows)")
        return number


class RegressorPredictor(Predictor):
    def predict(self, texts: list) -> list[dict]:
        """One dict per text: its predicted `value`."""
        return [{"value": v} for v in self._run(texts, self.model).squeeze(-1).tolist()]


class Regression(SequenceClassifierExport, Task):
    name = "regression"
    problem_type = "regression"  # (--format hf: transformers' pipeline gives the raw value)
    label_kind = "number"
    monitor = "val/pearson"
    minimised = ("loss", "mse")
    train_metric = "mse"
    onnx = True
    model_class = EncoderForSequenceClassification
    predictor_class = RegressorPredictor

    def label_map(self, column: str) -> tuple[list[str], Numbers]:
        return [column], Numbers(column)  # one target, named after its column

    def step(self, model: nn.Module, batch: dict) -> Step:
        values = model(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float().squeeze(-1)
        return Step(F.mse_loss(values, batch["labels"].float()), values, batch["labels"], len(values))

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef

        if cfg.num_labels != 1:
            raise ValueError(f"task=regression predicts one number; got targets {label_names}")
        return {"mse": MeanSquaredError(), "pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()}

    def label_text(self, label, label_names: list[str] | None) -> str:
        return f"{label:.3g}"


TASK = Regression()
