"""Score runs against qrels with ranx (a well-kept IR metrics library)."""

from __future__ import annotations

from ranx import Qrels as RanxQrels
from ranx import Run, evaluate

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
DocRun = dict[str, dict[str, float]]


def score_run(qrels: dict[str, dict[str, int]], run: DocRun, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    judged = {q: docs for q, docs in qrels.items() if q in run and any(v > 0 for v in docs.values())}
    if not judged:
        return {m: 0.0 for m in metrics}
    # A query that retrieved nothing still counts, as zero.
    filled = {q: (run.get(q) or {"__none__": 0.0}) for q in judged}
    scores = evaluate(RanxQrels(judged), Run(filled), list(metrics), make_comparable=True)
    if isinstance(scores, float):
        scores = {metrics[0]: scores}
    return {m: round(float(scores[m]), 4) for m in metrics}
