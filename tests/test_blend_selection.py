"""The blend weight rule: the best weight on validation, kept only when it beats weight 0 by a sign test."""

from __future__ import annotations

import pytest

from unirank.evaluation.metrics import per_query_scores, score_run
from unirank.training.blend_selection import significant_weight


def curve(gains: list[float], best_weight: float = 0.5) -> dict[float, dict[str, float]]:
    """Weight 0 scores 0.5 on every query; ``best_weight`` adds each query's gain; 0.2 sits half-way."""
    base = {f"q{i}": 0.5 for i in range(len(gains))}
    return {0.0: base,
            0.2: {q: 0.5 + g / 2 for q, g in zip(base, gains)},
            best_weight: {q: 0.5 + g for q, g in zip(base, gains)}}


def test_three_queries_cannot_choose_a_weight_even_when_all_gain():
    weight, test = significant_weight(curve([0.2, 0.1, 0.3]))
    assert weight == 0.0
    assert test["candidate"] == 0.5 and (test["wins"], test["losses"]) == (3, 0)
    assert test["sign_test_p"] == pytest.approx(0.125)


def test_five_queries_that_all_gain_choose_the_best_weight():
    weight, test = significant_weight(curve([0.1] * 5))
    assert weight == 0.5 and test["sign_test_p"] == pytest.approx(1 / 32, abs=1e-4)


@pytest.mark.parametrize(("wins", "chosen"), [(9, 0.5), (8, 0.0)])
def test_nine_of_ten_wins_are_significant_and_eight_are_not(wins, chosen):
    gains = [0.2] * wins + [-0.05] * (10 - wins)
    assert significant_weight(curve(gains))[0] == chosen


def test_unchanged_queries_do_not_count_for_or_against():
    weight, test = significant_weight(curve([0.1] * 5 + [0.0] * 20))
    assert weight == 0.5 and (test["wins"], test["losses"]) == (5, 0)


def test_a_weight_that_scores_no_better_than_zero_is_not_tested():
    assert significant_weight(curve([0.1, -0.1, 0.0])) == (0.0, {"candidate": 0.0})


def test_ties_on_the_mean_go_to_the_least_reliance_on_the_reranker():
    per_query = curve([0.1] * 6)
    per_query[0.7] = dict(per_query[0.5])
    assert significant_weight(per_query)[0] == 0.5


@pytest.mark.slow  # scores a run per query twice (~14 s): in the slow step, for the default run's margin
def test_per_query_scores_average_to_the_run_score():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 1}, "unjudged": {"d9": 0}}
    run = {"a": {"d1": 2.0, "d2": 1.0}, "b": {"d1": 2.0, "d2": 1.0}, "c": {}, "unjudged": {"d9": 1.0}}
    scores = per_query_scores(qrels, run)
    assert set(scores) == {"a", "b", "c"}  # an empty run counts as zero; a query with no relevant doc does not count
    assert scores["a"] == 1.0 and scores["c"] == 0.0 and 0.0 < scores["b"] < 1.0
    assert sum(scores.values()) / 3 == pytest.approx(score_run(qrels, run, ("ndcg@10",))["ndcg@10"], abs=1e-4)
