"""Reciprocal-rank fusion: combines ranked lists whose scores are not comparable (BM25 vs cosine)."""

from __future__ import annotations

from typing import Sequence

from unirank.search.types import Hit


def reciprocal_rank_fusion(
    ranked_lists: Sequence[tuple[str, Sequence[Hit], float]], *, k: int = 60, top_k: int = 10
) -> list[Hit]:
    """Fuse ``(stage_name, hits, weight)`` lists with score = sum(weight / (k + rank)).

    Each fused hit keeps every stage's original score in ``scores`` plus ``rrf``.
    """
    fused: dict[str, Hit] = {}
    for stage, hits, weight in ranked_lists:
        if weight <= 0:
            continue
        for rank, hit in enumerate(hits, start=1):
            entry = fused.get(hit.id)
            if entry is None:
                entry = fused[hit.id] = Hit(chunk=hit.chunk, score=0.0, scores={})
            entry.scores[stage] = hit.score
            entry.score += weight / (k + rank)
    ordered = sorted(fused.values(), key=lambda h: (-h.score, h.id))[:top_k]
    for hit in ordered:
        hit.scores["rrf"] = hit.score
    return ordered
