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
`teacher` column cached by `datasets`, keyed by its weights and the data (as for task distillation).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from encoder import checkpoint
from encoder.errors import ConfigError
from encoder.hf import load_bert
from encoder.model import ModelConfig, TaskModel, init_weights
from encoder.predictor import Predictor, load_model
from encoder.tasks import Step, Task
from encoder.tasks.distillation import _extra_texts, _weights_digest
from encoder.tokenizer import as_text, fingerprint

log = logging.getLogger(__name__)


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
    labels = None
    monitor = "val/cosine"
    minimised = ("loss", "mse")
    train_metric = "cosine"
    onnx = True
    model_class = EncoderForEmbedding
    predictor_class = EmbeddingPredictor
    carries = ("teacher",)
    needs_teacher = True  # configs: task=embedding without distill.teacher is refused

    def __init__(self, teacher: str | None = None, batch_size: int = 128, extra_text: str | None = None,
                 extra_text_column: str = "text", **unused):
        self.teacher, self.batch_size = teacher, batch_size
        self.extra_text, self.extra_text_column = extra_text, extra_text_column

    def with_teacher(self, **distill) -> "Embedding":
        """This task learning from `distill["teacher"]` (the other DistillConfig fields it uses: batch_size,
        extra_text; configs refuse the ones it does not)."""
        return Embedding(**distill)

    # ---- the model ------------------------------------------------------------------------------
    def architecture(self, model: dict) -> dict:
        if model.get("pooler"):
            raise ConfigError("task=embedding projects the pooled vector to the teacher's width itself; set "
                              "model.pooler=false")
        if self.teacher is None:  # a saved model: its width is in its config
            return model
        return {**model, "num_labels": self._teacher().embed(["width"]).shape[-1]}

    def step(self, model: nn.Module, batch: dict) -> Step:
        student = model(batch["input_ids"], batch["padding_mask"], batch.get("token_type_ids")).float()
        teacher = batch["teacher"].float()
        return Step(F.mse_loss(student, teacher), student, teacher, len(student))

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics.regression import CosineSimilarity, MeanSquaredError

        return {"cosine": CosineSimilarity(reduction="mean"), "mse": MeanSquaredError()}

    def sentence_dense(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        return {"linear.weight": state["projection.weight"], "linear.bias": state["projection.bias"]}

    # ---- data: the teacher's vectors, computed once and cached ------------------------------------
    def prepare(self, raw: dict, data, label_names: list[str] | None, cache_dir: Path) -> dict:
        predictor = self._teacher()
        digest = _teacher_digest(Path(self.teacher))
        if self.extra_text:
            from datasets import concatenate_datasets  # (training only: tasks are core)

            extra = _extra_texts(self.extra_text, self.extra_text_column, data, raw, cache_dir, predictor.tokenizer)
            raw = {**raw, "train": concatenate_datasets([raw["train"].select_columns([data.text_column]), extra])}
            log.info("task=embedding: %d extra texts join %d training texts", len(extra), len(raw["train"]) - len(extra))

        def run_teacher(batch: dict) -> dict:
            vectors = predictor.embed([as_text(t) for t in batch[data.text_column]])
            return {"teacher": F.normalize(vectors, dim=-1).tolist()}

        out = {split: ds.select_columns([data.text_column]).map(
            run_teacher, batched=True, batch_size=1024, desc=f"teacher embeddings ({split})",
            new_fingerprint=fingerprint(ds._fingerprint, data.text_column, digest, "embedding-v1"))
            for split, ds in raw.items()}
        log.info("task=embedding: teacher %s (%d-wide vectors, weights %s)", self.teacher,
                 len(out["train"][0]["teacher"]), digest)
        return out

    @functools.cache
    def _teacher(self) -> Predictor:
        return embedder(self.teacher, self.batch_size)


def embedder(teacher: str, batch_size: int = 128) -> Predictor:
    """A teacher's `embed`: a checkpoint or export of ours (its own pooled vectors), or a BERT-style or
    sentence-transformers folder (its last layer pooled as its 1_Pooling config says; mean pooling, as
    all-MiniLM-L6-v2, when it says nothing). A known name arrives here as its folder (train.py resolves it)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = Path(teacher)
    if not path.exists():
        raise ConfigError(f"distill.teacher={teacher} is neither a file, a folder nor a known name such as "
                          f"all-MiniLM-L6-v2")
    if path.is_file() or checkpoint.is_export(path):
        return load_model(path, device=device, batch_size=batch_size)
    arch, state, tokenizer_json = load_bert(path)
    pooling = "mean"
    pooling_config = path / "1_Pooling" / "config.json"
    if pooling_config.is_file():
        pooling = "cls" if json.loads(pooling_config.read_text()).get("pooling_mode_cls_token") else "mean"
    tokenizer = Tokenizer.from_str(tokenizer_json)
    cfg = ModelConfig.from_dict({**arch, "vocab_size": tokenizer.get_vocab_size(), "pooling": pooling,
                                 "pad_token_id": tokenizer.token_to_id("[PAD]") or 0})
    model = TaskModel(cfg)
    model.load_state_dict({k: v for k, v in state.items() if k.startswith("encoder.")}, strict=False)
    return Predictor(model, tokenizer, min(cfg.max_positions, 512), batch_size).to(device)


def _teacher_digest(path: Path) -> str:
    if path.is_file() or checkpoint.is_export(path):
        return _weights_digest(path)
    return checkpoint.sha256(path / "model.safetensors")[:16]


TASK = Embedding()
