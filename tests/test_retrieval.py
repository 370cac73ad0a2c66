"""Retrieval metrics (encoder/core/retrieval.py): exact values on a toy set computed by hand, and the same numbers
as sentence-transformers' InformationRetrievalEvaluator on random scores."""

import math

import pytest
import torch

from encoder.core.pair_retrieval import PairRetrieval
from encoder.core.retrieval import retrieval_metrics, retrieval_set, top


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


def test_rows_of_judged_pairs_are_a_retrieval_set_with_each_text_once():
    # rows (query, relevant document); "q1" is judged twice, "d1" is relevant to two queries
    queries, documents, relevant = retrieval_set(["q1", "q2", "q1", "q3"], ["d1", "d2", "d3", "d1"])
    assert queries == [0, 1, 3]          # the first row of each distinct query
    assert documents == [0, 1, 2]        # the first row of each distinct document
    assert relevant == [{0, 2}, {1}, {0}]


def test_held_out_pairs_are_scored_as_the_retrieval_set_they_make():
    # 3 rows: anchor A paired with documents X and Y, anchor B with X; embeddings chosen so A ranks Y, Z(=B's), X
    metric = PairRetrieval()
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])        # rows 0 and 2 are the same anchor A
    positives = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.1]])      # X (rows 0, 1: one document), Y
    metric.update(anchors, positives, torch.tensor([7, 8, 7]), torch.tensor([1, 1, 2]))
    got = {k: float(v) for k, v in metric.compute().items()}
    # A (relevant X, Y): Y first, X second -> recall@1 = 1/2, NDCG@10 = 1; B (relevant X): X first -> 1, 1
    assert got["recall@1"] == pytest.approx((0.5 + 1) / 2)
    assert got["ndcg@10"] == pytest.approx(1.0)
    assert got["mrr@10"] == pytest.approx(1.0)


def test_graded_pairs_are_scored_by_the_rank_correlation_of_cosines_with_the_scores():
    metric = PairRetrieval()
    keys = torch.arange(2)
    angles = torch.tensor([0.1, 0.5, 0.9, 1.3])  # cosines falling with the angle: cos 0.995, 0.878, 0.622, 0.267
    first = torch.stack([torch.ones(4), torch.zeros(4)], 1)
    second = torch.stack([angles.cos(), angles.sin()], 1)
    metric.update(first[:2], second[:2], keys, keys, torch.tensor([4.0, 1.0]))  # (two batches: the whole split)
    metric.update(first[2:], second[2:], keys + 2, keys + 2, torch.tensor([3.0, 0.5]))
    # cosine ranks 4, 3, 2, 1 against score ranks 4, 2, 3, 1: Spearman = 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8
    assert {k: float(v) for k, v in metric.compute().items()} == {"spearman": pytest.approx(0.8)}
