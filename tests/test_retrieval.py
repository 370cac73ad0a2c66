"""Retrieval metrics (encoder/core/retrieval.py): exact values on a toy set computed by hand, and the same numbers
as sentence-transformers' InformationRetrievalEvaluator on random scores."""

import math

import pytest
import torch

from encoder.core.retrieval import retrieval_metrics, top


def test_a_toy_ranking_gives_the_values_computed_by_hand():
    # 2 queries, 5 documents; query 0's relevant docs are 1 and 3, query 1's is 4
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.7, 0.0],    # ranking 0, 1, 3, 2, 4: relevant at ranks 2 and 3
                           [0.5, 0.5, 0.2, 0.1, 0.9]])   # ranking 4, 0, 1, 2, 3: relevant at rank 1
    got = retrieval_metrics(scores, [{1, 3}, {4}], {"ndcg": (3,), "mrr": (10,), "map": (100,), "recall": (1, 2)})
    ndcg0 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert got["ndcg@3"] == pytest.approx((ndcg0 + 1.0) / 2)
    assert got["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert got["map@100"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1.0) / 2)
    assert got["recall@1"] == pytest.approx((0 + 1) / 2)
    assert got["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    # a tie goes to the document listed first (as sentence-transformers sorts)
    assert top(torch.tensor([[0.5, 0.5, 0.9]]), 3).tolist() == [[2, 0, 1]]


def test_the_numbers_are_sentence_transformers_numbers():
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(40, 300, generator=g).round(decimals=1)  # rounded: many ties, which both break alike
    relevant = [set(torch.randperm(300, generator=g)[: 1 + q % 4].tolist()) for q in range(40)]
    ours = retrieval_metrics(scores, relevant)
    doc = "{:04d}".format  # (its ties go to the lower id as a string: zero-padded, that is the lower index)
    evaluator = InformationRetrievalEvaluator({str(q): "q" for q in range(40)}, {doc(d): "d" for d in range(300)},
                                              {str(q): {doc(d) for d in r} for q, r in enumerate(relevant)},
                                              mrr_at_k=[10], ndcg_at_k=[10], map_at_k=[100],
                                              precision_recall_at_k=[1, 10, 100], accuracy_at_k=[1])
    theirs = evaluator.compute_metrics([[{"corpus_id": doc(d), "score": float(s)} for d, s in enumerate(row)]
                                        for row in scores])
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg@k"][10])
    assert ours["mrr@10"] == pytest.approx(theirs["mrr@k"][10])
    assert ours["map@100"] == pytest.approx(theirs["map@k"][100])
    for k in (1, 10, 100):
        assert ours[f"recall@{k}"] == pytest.approx(theirs["recall@k"][k])


def test_a_query_without_a_relevant_document_is_refused():
    with pytest.raises(ValueError, match="query 1 has no relevant document"):
        retrieval_metrics(torch.zeros(2, 3), [{0}, set()])
