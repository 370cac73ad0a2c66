"""Held-out pairs scored as a torchmetrics Metric (task=contrastive's validation and test). Pairs are a retrieval
set: every distinct anchor is a query, every distinct positive a document of the corpus, and the positives an anchor
is paired with its relevant documents (`retrieval_set`), ranked by cosine similarity. Pairs that carry a graded
score (an STS set) are scored instead by the Spearman rank correlation of each pair's cosine with its score, what
sentence-transformers' EmbeddingSimilarityEvaluator reports as spearman_cosine. Imported only inside a task's
metrics() (which only training calls): it imports torchmetrics, which serving never loads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional import spearman_corrcoef
from torchmetrics.utilities import dim_zero_cat

from encoder.core.retrieval import retrieval_metrics, retrieval_set


class PairRetrieval(Metric):
    full_state_update = False

    def __init__(self, prefixes: list[int] = (), **kwargs):
        """`prefixes`: widths at which NDCG@10 is also reported (`ndcg@10@64d`), the vectors cut to their first
        that many dimensions (a Matryoshka embedding's narrower embeddings)."""
        super().__init__(**kwargs)
        self.prefixes = list(prefixes)
        self.add_state("anchors", default=[], dist_reduce_fx="cat")
        self.add_state("positives", default=[], dist_reduce_fx="cat")
        # the same number for the same text (a hash of its token ids): a text repeated is one query or document
        self.add_state("anchor_keys", default=[], dist_reduce_fx="cat")
        self.add_state("positive_keys", default=[], dist_reduce_fx="cat")
        self.add_state("scores", default=[], dist_reduce_fx="cat")  # graded pairs only

    def update(self, anchors: torch.Tensor, positives: torch.Tensor, anchor_keys: torch.Tensor,
               positive_keys: torch.Tensor, scores: torch.Tensor | None = None) -> None:
        self.anchors.append(anchors.float())
        self.positives.append(positives.float())
        self.anchor_keys.append(anchor_keys)
        self.positive_keys.append(positive_keys)
        if scores is not None:
            self.scores.append(scores.float())

    def compute(self) -> dict[str, torch.Tensor]:
        """NDCG@10, MRR@10, MAP@100, recall@1/10/100 (and NDCG@10 at each prefix); for graded pairs, spearman."""
        anchors, positives = dim_zero_cat(self.anchors), dim_zero_cat(self.positives)
        if len(self.scores):  # (a list here, a tensor once DDP ranks have synced their states: maybe empty)
            if len(dim_zero_cat(self.scores)) != len(anchors):
                raise ValueError("some held-out pairs carry a score and some do not; grade every pair or none")
            paired = F.cosine_similarity(anchors, positives, dim=-1)
            return {"spearman": spearman_corrcoef(paired, dim_zero_cat(self.scores))}
        keys = dim_zero_cat(self.anchor_keys).tolist(), dim_zero_cat(self.positive_keys).tolist()
        queries, documents, relevant = retrieval_set(*keys)
        values = retrieval_metrics(cosines(anchors[queries], positives[documents]), relevant)
        for width in self.prefixes:
            cut = cosines(anchors[queries, :width], positives[documents, :width])
            values[f"ndcg@10@{width}d"] = retrieval_metrics(cut, relevant)["ndcg@10"]
        return {name: torch.tensor(value) for name, value in values.items()}


def cosines(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """[queries, documents] cosine similarity, on the CPU."""
    return (F.normalize(queries, dim=-1) @ F.normalize(documents, dim=-1).T).cpu()
