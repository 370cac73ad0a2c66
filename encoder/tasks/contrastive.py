"""task=contrastive: a sentence embedder learnt from pairs, as sentence-transformers trains one.

    python train.py task=contrastive data=local_files data.data_files.train=pairs.csv data.text_column=question \
        data.text_pair_column=answer

Each example is an anchor (data.text_column), its positive (data.text_pair_column) and zero or more hard negatives
(data.negative_columns), each encoded on its own (`texts_apart`): a bi-encoder, where a text pair of
task=classification is joined into one sequence. The model is the encoder and its pooling; the pooled vector is the
embedding (`embed`, `predict`, the sentence-transformers export and the ONNX graph all give it).

The loss is chosen by `task.loss.name` (sentence-transformers' names where they exist):
- `mnrl`, MultipleNegativesRankingLoss (in-batch negatives, InfoNCE; Henderson et al. 2017, van den Oord et al.
  2018): each anchor against every positive of the batch and every explicit negative, cross-entropy over `scale` x
  their cosine similarity, its own positive the right answer; `symmetric`: also each positive against every anchor.
A repeated text in a batch would be a false negative: the sampler keeps batches free of them.

Validation embeds every validation anchor and positive and ranks all distinct positives for each distinct anchor
(its relevant documents: every positive it is paired with, so one row per judged pair is a relevance file): NDCG@10
(what checkpoints follow), MRR@10, MAP@100, recall@1/10/100 (encoder/core/retrieval.py), beside the in-batch `acc`
(the anchor's own positive scored first in its batch). Pairs that carry a graded `score` column (an STS set) are
scored by `spearman` instead: the rank correlation of each pair's cosine with its score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from encoder.core.errors import ConfigError
from encoder.core.model import ModelConfig, TaskModel, init_weights
from encoder.tasks import Step, Task
from encoder.tasks.embedding import EmbeddingPredictor


class EncoderForSentenceEmbedding(TaskModel):
    """Encoder + pooling ([CLS] or mean): the pooled vector is the sentence embedding, with no head on top."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.apply(init_weights)

    def head(self, embedded: torch.Tensor) -> torch.Tensor:
        """The outputs from `embed`'s vectors: they are the outputs (the ONNX graph gives them twice)."""
        return embedded

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.embed(input_ids, padding_mask, token_type_ids)


class MultipleNegativesRankingLoss:
    """In-batch negatives: scale * cos(anchor, candidate) over every positive of the batch and every explicit
    negative, cross-entropy with the anchor's own positive as the answer (sentence-transformers'
    MultipleNegativesRankingLoss; with `symmetric`, its MultipleNegativesSymmetricRankingLoss)."""

    def __init__(self, scale: float = 20.0, symmetric: bool = False):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ConfigError(f"task.loss.scale={scale!r} must be a positive number (sentence-transformers: 20)")
        if not isinstance(symmetric, bool):
            raise ConfigError(f"task.loss.symmetric={symmetric!r} must be true or false")
        self.scale, self.symmetric = float(scale), symmetric

    def __call__(self, anchors: torch.Tensor, positives: torch.Tensor,
                 negatives: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss, the scores [anchors, candidates]); candidate j < len(anchors) is anchor j's positive."""
        anchors = F.normalize(anchors, dim=-1)
        candidates = F.normalize(torch.cat([positives, *negatives]), dim=-1)
        scores = self.scale * anchors @ candidates.T
        targets = torch.arange(len(anchors), device=scores.device)
        loss = F.cross_entropy(scores, targets)
        if self.symmetric:  # each positive picks its own anchor among the batch's anchors
            loss = (loss + F.cross_entropy(scores[:, : len(anchors)].T, targets)) / 2
        return loss, scores


LOSSES = {"mnrl": MultipleNegativesRankingLoss}


@dataclass
class ContrastiveStep(Step):
    anchors: torch.Tensor | None = None  # the batch's embeddings, for the retrieval metrics
    positives: torch.Tensor | None = None
    anchor_keys: torch.Tensor | None = None  # the same number for the same text: a query or document counts once
    positive_keys: torch.Tensor | None = None
    scores: torch.Tensor | None = None  # graded similarity of each pair (an STS set), when the data has a score


class Contrastive(Task):
    name = "contrastive"
    label_kind = None  # pairs, no labels
    texts_apart = True
    monitor = "val/ndcg@10"
    train_metric = "acc"
    onnx = True
    model_class = EncoderForSentenceEmbedding
    predictor_class = EmbeddingPredictor
    carries = ("score",)  # graded pairs (STS): evaluated by Spearman

    def __init__(self, loss: dict | None = None):
        options = dict(loss or {})
        name = options.pop("name", "mnrl")
        if name not in LOSSES:
            raise ConfigError(f"task.loss.name={name!r} is unknown; choose one of {sorted(LOSSES)}")
        self.loss = LOSSES[name](**options)

    def with_loss(self, loss: dict) -> "Contrastive":
        return Contrastive(loss)

    def architecture(self, model: dict) -> dict:
        if model.get("pooler"):
            raise ConfigError("task=contrastive embeds the pooled vector itself; set model.pooler=false")
        return model

    def step(self, model: nn.Module, batch: dict) -> ContrastiveStep:
        anchors = model(batch["input_ids"], batch["padding_mask"]).float()
        positives = model(batch["input_ids_1"], batch["padding_mask_1"]).float()
        texts = sum(key.startswith("input_ids_") for key in batch)  # the positive and the hard negatives
        negatives = [model(batch[f"input_ids_{i}"], batch[f"padding_mask_{i}"]).float() for i in range(2, texts + 1)]
        loss, scores = self.loss(anchors, positives, negatives)
        right = (scores.argmax(-1) == torch.arange(len(anchors), device=scores.device)).float()
        return ContrastiveStep(loss, right, torch.ones_like(right), len(anchors), anchors.detach(),
                               positives.detach(), text_keys(batch["input_ids"], batch["padding_mask"]),
                               text_keys(batch["input_ids_1"], batch["padding_mask_1"]), batch.get("score"))

    def metrics(self, cfg: ModelConfig, label_names: list[str] | None) -> dict[str, nn.Module]:
        from torchmetrics import MeanMetric

        from encoder.core.pair_retrieval import PairRetrieval  # (it imports torchmetrics, which serving never loads)

        return {"acc": MeanMetric(), "retrieval": PairRetrieval()}

    def update(self, metrics: dict[str, nn.Module], step: ContrastiveStep) -> None:
        metrics["acc"].update(step.predictions, step.targets)
        if "retrieval" in metrics:
            metrics["retrieval"].update(step.anchors, step.positives, step.anchor_keys, step.positive_keys,
                                        step.scores)


def text_keys(input_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    """[batch] int64: the same number for the same token ids (a polynomial hash of each row's real tokens)."""
    ids = input_ids.masked_fill(padding_mask, 0).long()
    powers = torch.full((ids.shape[1],), 1_000_003, dtype=torch.long, device=ids.device).cumprod(0)  # (wraps)
    return (ids * powers).sum(1) + (~padding_mask).sum(1)


TASK = Contrastive()
