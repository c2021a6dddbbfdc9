"""Choose how much the trained reranker's score should count against the hybrid rank.

Measured on the validation queries (never trained on) with the same hybrid retrieval that serves
searches: a reranker that does not generalise gets a weight near 0 instead of hurting search.

Only queries people wrote (labels, pairs, feedback) choose it. Pseudo-queries come from the same
generator the reranker trained on and favour it: on CISI two corpus-only rerankers were given
0.3 by pseudo-query validation (nDCG@10 0.93 -> 0.97), and at 0.3 they lowered real queries' nDCG@10
from 0.452 to 0.431, while 0.1 was within 0.002 of 0. One trained on lead queries as long as CISI's
(median 51 words) was no better: 0.309 alone, and hybrid 0.4634 -> 0.4668 at 0.05, 0.4618 at 0.1.
With no such query the weight is 0: the curve on pseudo-queries is kept for information and
``reranker.blend_weight`` overrides the choice.

A weight above 0 must also beat 0 on more validation queries than chance would give (a one-sided sign
test on per-query nDCG@10, p <= 0.05), so a few queries cannot pick it: on a simulated CISI click log,
3 validation queries chose 0.5 and held-out hybrid + rerank fell from 0.468 to 0.406. Three queries can
never pass (p >= 0.125); it takes five that all gain, or 9 of 10. On the 38 held-out queries of the
labelled CISI run, the best weight (0.05, +0.005 nDCG@10) won 3 and lost 1 (p = 0.31): too small a gain
to be sure of, and 0 costs little.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Mapping, Sequence

from scipy.stats import binomtest

from unirank.evaluation.metrics import per_query_scores
from unirank.evaluation.systems import as_run, documents_in_order
from unirank.models.embedder import Embedder
from unirank.models.reranker import BLEND_FILE, CrossEncoderReranker
from unirank.search.backend import SearchBackend
from unirank.search.blend import blended_order
from unirank.settings import SearchSettings
from unirank.training.examples import TrainingPair

GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
#: The one-sided sign test's level a weight above 0 must reach against weight 0.
SIGNIFICANCE = 0.05


def mean_score(per_query: Mapping[str, float]) -> float:
    return round(sum(per_query.values()) / len(per_query), 4) if per_query else 0.0


def significant_weight(per_query: Mapping[float, Mapping[str, float]],
                       alpha: float = SIGNIFICANCE) -> tuple[float, dict]:
    """The weight with the best mean score (the least reliance on the reranker among ties), kept only if
    it beats weight 0 on significantly more queries than it loses (ties left out); else 0."""
    means = {w: mean_score(s) for w, s in per_query.items()}
    top = max(means.values())
    best = min(w for w, m in means.items() if m == top)
    if best == 0.0:
        return 0.0, {"candidate": 0.0}
    base, candidate = per_query[0.0], per_query[best]
    wins = sum(candidate[q] > base[q] + 1e-9 for q in base)
    losses = sum(candidate[q] < base[q] - 1e-9 for q in base)
    p_value = float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins + losses else 1.0
    test = {"candidate": best, "wins": wins, "losses": losses, "sign_test_p": round(p_value, 4), "alpha": alpha}
    return (best if p_value <= alpha else 0.0), test


def choose_blend_weight(
    reranker_dir: Path,
    backend: SearchBackend,
    index: str,
    embedder: Embedder,
    search: SearchSettings,
    validation: Sequence[TrainingPair],
    *,
    max_queries: int = 60,
    depth: int = 30,
    seed: int = 13,
) -> dict:
    written = [pair for pair in validation if pair.written_by_people]
    relevant: dict[str, set[str]] = {}
    for pair in written or validation:
        relevant.setdefault(pair.query, set()).add(pair.doc_id)
    queries = sorted(relevant)
    queries = random.Random(seed).sample(queries, min(max_queries, len(queries)))
    reranker = CrossEncoderReranker(str(reranker_dir), name="candidate")
    vectors = embedder.embed_documents(queries)
    scored = []
    for query, vector in zip(queries, vectors, strict=True):
        hits = backend.hybrid(index, query, vector, depth, candidates=max(search.candidates, depth),
                              rrf_k=search.rrf_k, bm25_weight=search.bm25_weight, knn_weight=search.knn_weight)
        scored.append((query, hits, reranker.score(query, [h.chunk.embedding_input() for h in hits])))
    qrels = {f"q{i}": {doc: 1 for doc in relevant[q]} for i, q in enumerate(queries)}
    per_query = {}
    for weight in GRID:
        ranked = {f"q{i}": documents_in_order([h for h, _ in blended_order(hits, scores, weight)])
                  for i, (_, hits, scores) in enumerate(scored)}
        per_query[weight] = per_query_scores(qrels, as_run(ranked))
    curve = {str(w): mean_score(s) for w, s in per_query.items()}
    weight, test = significant_weight(per_query)
    if not written:
        weight, chosen_on = 0.0, "none: pseudo-queries only, so weight 0"
    elif weight == test["candidate"]:
        chosen_on = "queries people wrote"
    else:
        chosen_on = (f"queries people wrote; {test['candidate']} scored best but beat 0 on only {test['wins']} "
                     f"of {test['wins'] + test['losses']} changed queries (sign test p = {test['sign_test_p']}), so 0")
    result = {"blend_weight": weight, "validation_ndcg@10_by_weight": curve, "validation_queries": len(queries),
              "sign_test": test, "chosen_on": chosen_on}
    (reranker_dir / BLEND_FILE).write_text(json.dumps(result, indent=1))
    return result
