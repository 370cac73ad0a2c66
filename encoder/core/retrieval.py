"""Retrieval metrics, computed exactly from a [queries, documents] score matrix and each query's relevant documents:
NDCG@k, MRR@k, MAP@k and recall@k as sentence-transformers' InformationRetrievalEvaluator defines them (binary
relevance; a tie in score goes to the document listed first), so a model scored here and there gets one number.

- recall@k: the share of a query's relevant documents in its top k;
- MRR@k: 1 / the rank of its first relevant document within the top k (0 if none);
- NDCG@k: sum over the top k of 1 / log2(rank + 1) for each relevant document, over the same sum for the
  best possible order (min(k, relevant) relevant documents first);
- MAP@k: the mean, over the relevant documents in the top k, of the precision at their rank, divided by
  min(k, relevant).
Each is averaged over the queries.

Held-out pairs are a retrieval set (`retrieval_set`): each distinct first text a query, each distinct second text
a document, and a query's relevant documents every document it is paired with, so one row per (query, relevant
document), as a relevance-judgements file lists them, gives the same set.
"""

from __future__ import annotations

import math

import torch

CUTOFFS = {"ndcg": (10,), "mrr": (10,), "map": (100,), "recall": (1, 10, 100)}


def retrieval_set(queries: list, documents: list) -> tuple[list[int], list[int], list[set[int]]]:
    """From rows of (query, relevant document) keys (a text, or any number that stands for it): the row of each
    distinct query and of each distinct document (the first that holds it), and each distinct query's relevant
    documents, as indices into the distinct documents."""
    query_index: dict = {}
    document_index: dict = {}
    query_rows, document_rows, relevant = [], [], []
    for row, (query, document) in enumerate(zip(queries, documents, strict=True)):
        if document not in document_index:
            document_index[document] = len(document_rows)
            document_rows.append(row)
        if query not in query_index:
            query_index[query] = len(query_rows)
            query_rows.append(row)
            relevant.append(set())
        relevant[query_index[query]].add(document_index[document])
    return query_rows, document_rows, relevant


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """[queries, min(k, documents)]: each query's documents by score, best first; equal scores in document order."""
    k = min(k, scores.shape[1])
    order = torch.argsort(-scores, dim=1, stable=True)  # (stable: a tie keeps the lower document index first)
    return order[:, :k]


def retrieval_metrics(scores: torch.Tensor, relevant: list[set[int]], cutoffs: dict = CUTOFFS) -> dict[str, float]:
    """{"ndcg@10": ..., "mrr@10": ..., "map@100": ..., "recall@1": ...} averaged over the queries; `relevant[q]`: the
    indices of query q's relevant documents (a query without any is an error: it has nothing to find)."""
    if len(relevant) != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} queries scored but {len(relevant)} sets of relevant documents given")
    empty = next((q for q, docs in enumerate(relevant) if not docs), None)
    if empty is not None:
        raise ValueError(f"query {empty} has no relevant document; every query needs at least one")
    deepest = max(k for ks in cutoffs.values() for k in ks)
    ranked = top(scores.float(), deepest).tolist()
    totals = {f"{name}@{k}": 0.0 for name, ks in cutoffs.items() for k in ks}
    for docs, hits in zip(ranked, relevant):
        found = [doc in hits for doc in docs]
        for name, ks in cutoffs.items():
            for k in ks:
                totals[f"{name}@{k}"] += _metric(name, found[:k], len(hits), k)
    return {name: total / len(relevant) for name, total in totals.items()}


def _metric(name: str, found: list[bool], relevant: int, k: int) -> float:
    """One query's metric from `found` (whether each of its top-k documents is relevant, best first)."""
    if name == "recall":
        return sum(found) / relevant
    if name == "mrr":
        return next((1.0 / (rank + 1) for rank, hit in enumerate(found) if hit), 0.0)
    if name == "ndcg":
        dcg = sum(1.0 / math.log2(rank + 2) for rank, hit in enumerate(found) if hit)
        return dcg / sum(1.0 / math.log2(rank + 2) for rank in range(min(k, relevant)))
    if name == "map":
        hits, precisions = 0, 0.0
        for rank, hit in enumerate(found):
            if hit:
                hits += 1
                precisions += hits / (rank + 1)
        return precisions / min(k, relevant)
    raise ValueError(f"unknown retrieval metric {name!r}; known: ndcg, mrr, map, recall")
