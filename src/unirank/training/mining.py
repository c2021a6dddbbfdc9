"""Hard negatives from the index, and the consistency filter for pseudo-queries.

One hybrid retrieval per query serves both: the pair is kept only if its source document ranks
high for its own query (else the query is probably unanswerable or too vague), and negatives are
the passages ranked near it that are *not* its source. A negative whose dense score is close to
the positive's is likely an unlabelled positive (a false negative) and is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from unirank.models.embedder import Embedder
from unirank.search.backend import SearchBackend
from unirank.settings import SearchSettings
from unirank.training.examples import TrainingPair, by_query, query_key

Progress = Callable[[str, int, int], None]


@dataclass
class MiningConfig:
    #: Keep a pseudo pair only if its source document is within this many documents. Stricter was not
    #: better: on corpus-only CISI, top 5 gave held-out tuned kNN / hybrid nDCG@10 0.450 / 0.459 against
    #: 0.455 / 0.468 with top 10 (it drops the harder pairs, 109 of 1,800 against 73).
    consistency_top_k: int = 10
    negatives_per_pair: int = 3
    #: Skip this many top-ranked candidates: the very top is where unlabelled positives sit.
    skip_top: int = 2
    #: Candidates come from the hybrid ranking. BM25's ranking alone (lexical distractors, meant to
    #: teach kNN what BM25 gets wrong) changed 1,178 of 1,328 negatives on corpus-only CISI and gave
    #: held-out tuned kNN / hybrid nDCG@10 0.452 / 0.460 against 0.445 / 0.462: no better for hybrid.
    depth: int = 30
    #: Drop a negative whose dense score is at least this fraction of the positive's. On labelled CISI
    #: (held-out tuned kNN / hybrid nDCG@10 0.478 / 0.505 at 0.95, seed 13) neither way helped: 0.9 kept
    #: 1,801 negatives against 2,073 and gave 0.470 / 0.482; 1.0 kept 2,369 and gave 0.481 / 0.497.
    max_relative_score: float = 0.95


@dataclass
class MiningStats:
    pairs_in: int = 0
    pairs_kept: int = 0
    dropped_inconsistent: int = 0
    dropped_false_negatives: int = 0
    negatives: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def judged_documents(pairs: Sequence[TrainingPair]) -> dict[str, set[str]]:
    """Every document each query (``query_key``: its id, else its text) is paired with."""
    return by_query(pairs, lambda p: (p.doc_id,))


class HardNegativeMiner:
    def __init__(self, backend: SearchBackend, index: str, embedder: Embedder, search: SearchSettings,
                 config: MiningConfig | None = None, progress: Progress | None = None) -> None:
        self.backend = backend
        self.index = index
        self.embedder = embedder
        self.search = search
        self.config = config or MiningConfig()
        self.progress = progress or (lambda *_: None)

    def mine(self, pairs: Sequence[TrainingPair], *, check_consistency: bool,
             relevant: dict[str, set[str]] | None = None) -> tuple[list[TrainingPair], MiningStats]:
        """``relevant`` (``judged_documents``) names each query's judged-relevant documents: never negatives."""
        cfg = self.config
        stats = MiningStats(pairs_in=len(pairs))
        queries = list(dict.fromkeys(p.query for p in pairs))
        qvecs = dict(zip(queries, self.embedder.embed_documents(queries)))
        cache: dict[str, list] = {}
        out: list[TrainingPair] = []
        s = self.search
        for n, pair in enumerate(pairs, start=1):
            if pair.query not in cache:
                cache[pair.query] = self.backend.hybrid(
                    self.index, pair.query, qvecs[pair.query], cfg.depth, candidates=max(s.candidates, cfg.depth),
                    rrf_k=s.rrf_k, bm25_weight=s.bm25_weight, knn_weight=s.knn_weight)
            hits = cache[pair.query]
            doc_order = list(dict.fromkeys(h.chunk.doc_id for h in hits))
            if check_consistency:
                rank = doc_order.index(pair.doc_id) if pair.doc_id in doc_order else None
                if rank is None or rank >= cfg.consistency_top_k:
                    stats.dropped_inconsistent += 1
                    continue
            exclude = {pair.doc_id} | (relevant or {}).get(query_key(pair), set())
            positive_score = self._positive_score(pair, hits, qvecs[pair.query])
            negatives: list[str] = []
            top_docs = set(doc_order[: cfg.skip_top])
            for hit in hits:
                doc = hit.chunk.doc_id
                if doc in exclude or doc in top_docs:
                    continue
                dense = hit.scores.get("knn")
                if dense is not None and dense >= cfg.max_relative_score * positive_score:
                    stats.dropped_false_negatives += 1
                    continue
                negatives.append(hit.chunk.embedding_input())
                exclude.add(doc)
                if len(negatives) == cfg.negatives_per_pair:
                    break
            # A pair's own negatives (from --pairs or thumbs-down feedback) come first.
            negatives = list(dict.fromkeys([*pair.negatives, *negatives]))[: max(cfg.negatives_per_pair, len(pair.negatives))]
            stats.negatives += len(negatives)
            out.append(replace(pair, negatives=negatives))
            if n % 50 == 0 or n == len(pairs):
                self.progress("mining hard negatives", n, len(pairs))
        stats.pairs_kept = len(out)
        return out, stats

    def _positive_score(self, pair: TrainingPair, hits: list, qvec: np.ndarray) -> float:
        """The source chunk's dense score is already in the hits; embed the positive only if not.

        For a labelled query it is this pair's positive, not the query's best judged one, though a CISI
        query has ~40 and against a weak one every top-ranked passage looks like an unlabelled positive
        (707 of labelled CISI's 1,601 pairs keep no negative and leave the embedder's data). Measuring
        against the best judged passage, and mining deeper by the query's judged count, kept all 1,601,
        and did not help: held-out tuned kNN / hybrid nDCG@10 0.498 / 0.498 against 0.478 / 0.505 with seed 13,
        0.474 / 0.480 against 0.492 / 0.500 with seed 7 (bench/finetune_cisi.py --only labels --bf16).
        """
        scores = [h.scores["knn"] for h in hits if h.chunk.doc_id == pair.doc_id and "knn" in h.scores]
        if scores:
            return max(scores)
        return float(np.dot(qvec, self.embedder.embed_documents([pair.positive])[0]))
