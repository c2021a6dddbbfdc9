"""Order reranked candidates: the reranker's score blended with the first-stage rank.

``weight`` 1.0 is the reranker alone; 0.0 keeps the first-stage order. A trained reranker carries
the weight that was best on its validation queries, so reranking cannot undo what retrieval got
right when the reranker is weak.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def blended_order(candidates: Sequence[T], rerank_scores: Sequence[float], weight: float) -> list[tuple[T, float]]:
    """``candidates`` in first-stage order; returns (candidate, blended score), best first."""
    n = len(candidates)
    if n == 0:
        return []
    first = 1.0 - np.arange(n) / max(1, n - 1)  # rank 1 -> 1.0, last -> 0.0
    ce = np.asarray(rerank_scores, dtype=np.float64)
    spread = ce.max() - ce.min()
    ce = (ce - ce.min()) / spread if spread > 0 else np.zeros(n)
    blended = weight * ce + (1.0 - weight) * first
    order = np.argsort(-blended, kind="stable")
    return [(candidates[i], float(blended[i])) for i in order]
