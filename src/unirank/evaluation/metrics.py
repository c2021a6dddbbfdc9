"""Score runs against qrels with ranx (a well-kept IR metrics library)."""

from __future__ import annotations

from ranx import Qrels as RanxQrels
from ranx import Run, evaluate

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
DocRun = dict[str, dict[str, float]]


def _judged_run(qrels: dict[str, dict[str, int]], run: DocRun) -> tuple[dict, dict]:
    """The queries with a relevant document that the run was asked; one that retrieved nothing counts, as zero."""
    judged = {q: docs for q, docs in qrels.items() if q in run and any(v > 0 for v in docs.values())}
    return judged, {q: (run.get(q) or {"__none__": 0.0}) for q in judged}


def score_run(qrels: dict[str, dict[str, int]], run: DocRun, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    judged, filled = _judged_run(qrels, run)
    if not judged:
        return {m: 0.0 for m in metrics}
    scores = evaluate(RanxQrels(judged), Run(filled), list(metrics), make_comparable=True)
    if isinstance(scores, float):
        scores = {metrics[0]: scores}
    return {m: round(float(scores[m]), 4) for m in metrics}


def per_query_scores(qrels: dict[str, dict[str, int]], run: DocRun, metric: str = "ndcg@10") -> dict[str, float]:
    """Each judged query's score, for paired comparisons of two runs on the same queries."""
    judged, filled = _judged_run(qrels, run)
    if not judged:
        return {}
    ranx_run = Run(filled)
    evaluate(RanxQrels(judged), ranx_run, [metric], make_comparable=True, save_results_in_run=True)
    return {q: float(v) for q, v in ranx_run.scores[metric].items()}
