"""Eval's figures against hand computations of their formulas: a change of gain (ranx's ndcg_burges), of
how a zero or negative judgment counts, or of a library default would move them, where checks that a
figure lies between 0 and 1 would pass."""

from __future__ import annotations

import math

import pytest

from unirank.evaluation.metrics import per_query_scores, score_run


def _ranked(*docs: str) -> dict[str, float]:
    """A run's documents, best first."""
    return {doc: float(len(docs) - i) for i, doc in enumerate(docs)}


def _dcg(gains: list[float]) -> float:
    """Discounted cumulative gain of gains in rank order: gain / log2(rank + 1)."""
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def test_ndcg_gains_are_the_grades_themselves_with_negative_ones_counted_as_zero():
    """As trec_eval computes it: linear gain, not 2^grade - 1, and a judgment below 0 gains nothing."""
    qrels = {"q": {"a": 2, "b": 1, "c": 0, "d": -1}}
    scores = score_run(qrels, {"q": _ranked("d", "c", "b", "a")})
    linear = _dcg([0, 0, 1, 2]) / _dcg([2, 1])
    exponential = _dcg([0, 0, 2**1 - 1, 2**2 - 1]) / _dcg([2**2 - 1, 2**1 - 1])
    assert scores["ndcg@10"] == pytest.approx(linear, abs=1e-4)
    assert abs(linear - exponential) > 0.01  # the two gains tell apart on this run
    assert scores["mrr@10"] == pytest.approx(1 / 3, abs=1e-4)  # b, graded 1, is the first relevant, at rank 3
    assert scores["recall@10"] == scores["recall@100"] == 1.0  # a and b, the two relevant, are both retrieved


def test_mrr_passes_over_a_document_judged_zero():
    """A document judged 0 is judged not relevant: the first relevant one is at rank 2."""
    scores = score_run({"q": {"x": 0, "y": 1}}, {"q": _ranked("x", "y")})
    assert scores["mrr@10"] == pytest.approx(1 / 2, abs=1e-4)
    assert scores["ndcg@10"] == pytest.approx(_dcg([0, 1]) / _dcg([1]), abs=1e-4)


def test_recall_is_the_share_of_the_relevant_documents_retrieved():
    qrels = {"q": {"d0": 1, "d1": 1, "d2": 1}}
    scores = score_run(qrels, {"q": _ranked("x", "d0", "d1")})
    assert scores["recall@10"] == pytest.approx(2 / 3, abs=1e-4)
    assert scores["mrr@10"] == pytest.approx(1 / 2, abs=1e-4)


def test_a_set_s_figure_is_the_mean_of_its_queries_a_query_that_retrieved_nothing_counting_as_zero():
    qrels = {"graded": {"a": 2, "b": 1}, "late": {"y": 1}, "empty": {"z": 1}, "unjudged": {"w": 0}}
    run = {"graded": _ranked("b", "a"), "late": _ranked("x", "y"), "empty": {}, "unjudged": _ranked("w")}
    per_query = {"graded": _dcg([1, 2]) / _dcg([2, 1]), "late": _dcg([0, 1]) / _dcg([1]), "empty": 0.0}
    assert per_query_scores(qrels, run) == pytest.approx(per_query, abs=1e-6)  # no relevant document: not scored
    assert score_run(qrels, run)["ndcg@10"] == pytest.approx(sum(per_query.values()) / 3, abs=1e-4)
