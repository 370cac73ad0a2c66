"""task=embedding: the model learns to reproduce a teacher's sentence embeddings, on any text, no labels.

    python train.py task=embedding data=rotten_tomatoes_corpus distill.teacher=all-MiniLM-L6-v2

A sentence embedder (all-MiniLM-L6-v2 is one) gives a whole vector per text where a task teacher gives
two logits: a wider channel for what it knows, and one that needs no labels (Reimers & Gurevych 2020,
"Making monolingual sentence embeddings multilingual using knowledge distillation"). The student's
pooled vector goes through a linear projection to the teacher's width (its `num_labels` outputs) and
the loss is the MSE to the teacher's L2-normalised vector; validation logs that MSE and the mean cosine
similarity, which checkpoints follow.

The result is an ordinary checkpoint: `embed` gives vectors in the teacher's space, it exports as a
sentence-transformers model (the projection is its Dense module), and it starts a task next:
`python train.py model.init_from=<its .ckpt>` (the encoder is taken, the projection left).

The teacher reads each raw text once, before training, with its own tokenizer; its vectors become a
`teacher` column cached by `datasets`, keyed by its weights and the data (as for task distillation). Running
it is the training layer's work (encoder/training/data/teacher.py); this module only learns from its vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder.core.errors import ConfigError
from encoder.core.model import ModelConfig, TaskModel, init_weights
from encoder.core.predictor import Predictor
from encoder.tasks import Step, Task


class EncoderForEmbedding(TaskModel):
    """Encoder + pooling ([CLS] or mean) + a linear projection to the teacher's width (`num_labels`):
    the projected vector is the sentence embedding (`embed` and `forward` both give it)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.projection = nn.Linear(cfg.embed_dim, cfg.num_labels)
        self.apply(init_weights)

    def embed(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.projection(super().embed(input_ids, padding_mask, token_type_ids))

    def head(self, embedded: torch.Tensor) -> torch.Tensor:
        """The outputs from `embed`'s vectors: they are the outputs (the ONNX graph gives them twice)."""
        return embedded

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(input_ids, padding_mask, token_type_ids))


class EmbeddingPredictor(Predictor):
    def predict(self, texts: list[str]) -> list[dict]:
        """One dict per text: its `embedding` (a list of floats, in the teacher's space)."""
        return [{"embedding": v} for v in self.embed(texts).tolist()]


class Embedding(Task):
    name = "embedding"
    label_kind = None
    monitor = "val/cosine"
    minimised = ("loss", "mse")
    train_metric = "cosine"
    onnx = True
    model_class = EncoderForEmbedding
    predictor_class = EmbeddingPredictor
    carries = ("teacher",)
    needs_teacher = True  # configs: task=embedding without distill.teacher is refused
    learns_from = "embeddings"

    def __init__(self, teacher: str | None = None, teacher_width: int | None = None, batch_size: int = 128,
                 extra_text: str | None = None, extra_text_column: str = "text", **unused):
        self.teacher, self.teacher_width, self.batch_size = teacher, teacher_width, batch_size
        self.extra_text, self.extra_text_column = extra_text, extra_text_column

    def with_teacher(self, teacher_width: int, **distill) -> "Embedding":
        """This task learning from `distill["teacher"]`, whose vectors are `teacher_width` wide (the other
        DistillConfig fields it uses: batch_size, extra_text; configs refuse the ones it does not)."""
        return Embedding(teacher_width=teacher_width, **distill)

    # ---- the model ------------------------------------------------------------------------------
    def architecture(self, model: dict) -> dict:
        if model.get("pooler"):
            raise ConfigError("task=embedding projects the pooled vector to the teacher's width itself; set "
                              "model.pooler=false")
        if self.teacher_width is None:  # a saved model: its width is in its config
            return model
        return {**model, "num_labels": self.teacher_width}

    def step(self, model: nn.Module, batch: dict) -> Step:
        student = model(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float()
        teacher = batch["teacher"].float()
        return Step(F.mse_loss(student, teacher), student, teacher, len(student))

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics.regression import CosineSimilarity, MeanSquaredError

        return {"cosine": CosineSimilarity(reduction="mean"), "mse": MeanSquaredError()}

    def sentence_dense(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        return {"linear.weight": state["projection.weight"], "linear.bias": state["projection.bias"]}


TASK = Embedding()
