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
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence

from unirank.evaluation.metrics import score_run
from unirank.evaluation.systems import as_run, documents_in_order
from unirank.models.embedder import Embedder
from unirank.models.reranker import BLEND_FILE, CrossEncoderReranker
from unirank.search.backend import SearchBackend
from unirank.search.blend import blended_order
from unirank.settings import SearchSettings
from unirank.training.examples import TrainingPair

GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


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
    curve = {}
    for weight in GRID:
        ranked = {f"q{i}": documents_in_order([h for h, _ in blended_order(hits, scores, weight)])
                  for i, (_, hits, scores) in enumerate(scored)}
        curve[weight] = score_run(qrels, as_run(ranked), ("ndcg@10",))["ndcg@10"]
    if written:
        best = max(curve.values())
        weight = min(w for w, v in curve.items() if v == best)  # the least reliance on the reranker
    else:
        weight = 0.0
    result = {"blend_weight": weight, "validation_ndcg@10_by_weight": {str(k): v for k, v in curve.items()},
              "validation_queries": len(queries),
              "chosen_on": "queries people wrote" if written else "none: pseudo-queries only, so weight 0"}
    (reranker_dir / BLEND_FILE).write_text(json.dumps(result, indent=1))
    return result
