"""Reciprocal-rank fusion: combines ranked lists whose scores are not comparable (BM25 vs cosine)."""

from __future__ import annotations

from typing import Hashable, Sequence, TypeVar

from unirank.search.types import Hit

K = TypeVar("K", bound=Hashable)


def fuse_ranked_ids(
    ranked_lists: Sequence[tuple[str, Sequence[tuple[K, float]], float]], *, k: int = 60, top_k: int = 10
) -> list[tuple[K, float, dict[str, float]]]:
    """RRF over ``(stage, [(id, score), ...], weight)``; returns (id, fused score, stage scores)."""
    fused: dict[K, float] = {}
    stages: dict[K, dict[str, float]] = {}
    best_rank: dict[K, int] = {}
    for stage, items, weight in ranked_lists:
        if weight <= 0:
            continue
        for rank, (key, score) in enumerate(items, start=1):
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
            stages.setdefault(key, {})[stage] = score
            best_rank[key] = min(rank, best_rank.get(key, rank))
    # Ties go to the better rank in either list (first at 1 and absent elsewhere beats 2nd and 3rd in
    # both, at equal weights and a small k), then to the key as a number where it is one: the store's
    # row keys compared as text put "10" before "9".
    ordered = sorted(fused, key=lambda key: (-fused[key], best_rank[key], _in_order(key)))[:top_k]
    return [(key, fused[key], {**stages[key], "rrf": fused[key]}) for key in ordered]


def _in_order(key: Hashable) -> tuple[int, float, str]:
    return (0, float(key), "") if isinstance(key, (int, float)) else (1, 0.0, str(key))


def reciprocal_rank_fusion(
    ranked_lists: Sequence[tuple[str, Sequence[Hit], float]], *, k: int = 60, top_k: int = 10
) -> list[Hit]:
    """Fuse ``(stage_name, hits, weight)`` lists with score = sum(weight / (k + rank)).

    Each fused hit keeps every stage's original score in ``scores`` plus ``rrf``.
    """
    by_id = {hit.id: hit for _, hits, _ in ranked_lists for hit in hits}
    fused = fuse_ranked_ids(
        [(stage, [(h.id, h.score) for h in hits], weight) for stage, hits, weight in ranked_lists], k=k, top_k=top_k
    )
    return [Hit(chunk=by_id[key].chunk, score=score, scores=scores) for key, score, scores in fused]
