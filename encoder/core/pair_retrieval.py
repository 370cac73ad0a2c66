"""Retrieval over held-out pairs, as a torchmetrics Metric (task=contrastive's validation and test): every anchor is
a query, every distinct positive a document of the corpus, and an anchor's own positive its relevant document; the
scores are cosine similarities. Imported only inside a task's metrics() (which only training calls): it imports
torchmetrics, which serving never loads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from encoder.core.retrieval import retrieval_metrics


class PairRetrieval(Metric):
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("anchors", default=[], dist_reduce_fx="cat")
        self.add_state("positives", default=[], dist_reduce_fx="cat")
        self.add_state("keys", default=[], dist_reduce_fx="cat")  # the same number for the same positive text

    def update(self, anchors: torch.Tensor, positives: torch.Tensor, keys: torch.Tensor) -> None:
        self.anchors.append(anchors.float())
        self.positives.append(positives.float())
        self.keys.append(keys)

    def compute(self) -> dict[str, torch.Tensor]:
        anchors, positives, keys = (dim_zero_cat(s) for s in (self.anchors, self.positives, self.keys))
        distinct, document = torch.unique(keys, return_inverse=True)  # (a text repeated is one document)
        first = torch.full((len(distinct),), len(keys), device=keys.device).scatter_reduce(
            0, document, torch.arange(len(keys), device=keys.device), reduce="amin")
        corpus = F.normalize(positives[first], dim=-1)
        scores = F.normalize(anchors, dim=-1) @ corpus.T
        values = retrieval_metrics(scores.cpu(), [{d} for d in document.tolist()])
        return {name: torch.tensor(value) for name, value in values.items()}
