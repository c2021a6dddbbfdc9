"""Evaluate systems (bm25, knn, hybrid, hybrid+rerank) for a list of models on held-out queries."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from unirank.errors import EvaluationDataError, UnirankError
from unirank.evaluation.datasets import EvalSet, corpus_ids
from unirank.evaluation.leakage import leaked_queries, raise_for_leaks
from unirank.evaluation.metrics import score_run
from unirank.evaluation.systems import SystemRunner
from unirank.models.embedder import Embedder
from unirank.models.loading import BASE_ALIAS, load_embedder, load_reranker
from unirank.models.reranker import Reranker
from unirank.registry import ModelRegistry, ModelVersion
from unirank.search.backend import SearchBackend
from unirank.settings import Settings

Stage = Callable[[str], None]


@dataclass
class ModelSpec:
    """One entry of ``--models``: an embedder, a reranker, or a trained pair."""

    label: str
    embedder: str | None = None  # "base" or a registry ref
    reranker: str | None = None
    versions: list[ModelVersion] = field(default_factory=list)


def resolve_specs(names: list[str], registry: ModelRegistry) -> list[ModelSpec]:
    specs = []
    for raw in names:
        name = raw.strip()
        if name == BASE_ALIAS:
            specs.append(ModelSpec(label="base", embedder="base", reranker="base"))
            continue
        stem, _, selector = name.partition("@")
        pair = [f"{stem}-embed", f"{stem}-rerank"]
        if all(registry.exists(p) for p in pair):
            # The embedder NAME@SELECTOR names, and the reranker trained with it: the two names' version
            # numbers drift apart (one registered by hand), so tiny-rerank@3 may be tiny-embed@4's partner.
            e = registry.get(f"{pair[0]}@{selector}" if selector else pair[0])
            r = trained_partner(registry, e, pair[1])
            if r is None:
                raise UnirankError(
                    f"{name!r} names {e.ref}, but no version of {pair[1]} was trained with it (in the same "
                    f"training run), so there is no pair to evaluate. Name the two models yourself, e.g. "
                    f"--models {e.ref},{pair[1]}@VERSION (the reranker then reranks {e.ref}'s results).")
            specs.append(ModelSpec(label=f"{stem}@{e.version}", embedder=e.ref, reranker=r.ref, versions=[e, r]))
            continue
        version = registry.get(name)
        if version.role == "embedder":
            specs.append(ModelSpec(label=version.ref, embedder=version.ref, versions=[version]))
        else:
            specs.append(ModelSpec(label=version.ref, reranker=version.ref, versions=[version]))
    return specs


#: What `unirank train` records alike in both models of a run: the run's folder and its training data;
#: then its timings, which tell apart two runs in one folder (a run again with --fresh).
_RUN_FIELDS = (("run_dir", "data_hash", "timings"), ("run_dir", "data_hash"))


def trained_partner(registry: ModelRegistry, embedder: ModelVersion, reranker_name: str) -> ModelVersion | None:
    """The version of ``reranker_name`` trained in the same run as ``embedder``, or None.

    The run records each model's partner (``trained_with``); for versions trained before it did, the run's
    folder, data and timings tell. Versions registered from a copy (an export, ``lineage``) were not made by
    the run. Where one run folder made several pairs, the k-th embedder it registered goes with the k-th
    reranker."""
    if "lineage" in embedder.record:
        return None
    partner = embedder.record.get("trained_with")  # written by `unirank train` since session 40
    if partner and registry.exists(partner):
        named = registry.get(partner)
        return named if named.name == reranker_name and "lineage" not in named.record else None
    if not embedder.record.get("run_dir"):
        return None
    versions = [v for v in registry.list() if "lineage" not in v.record]
    for fields in _RUN_FIELDS:
        def key(v: ModelVersion) -> str:
            return json.dumps([v.record.get(f) for f in fields], sort_keys=True)

        wanted = key(embedder)
        embedders = [v for v in versions if v.name == embedder.name and key(v) == wanted]
        rerankers = [v for v in versions if v.name == reranker_name and v.role == "reranker" and key(v) == wanted]
        if rerankers and len(embedders) == len(rerankers):
            return rerankers[[v.ref for v in embedders].index(embedder.ref)]
    return None


class Evaluation:
    def __init__(self, settings: Settings, backend: SearchBackend, stage: Stage | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.stage = stage or (lambda _: None)
        self._embedders: dict[str, Embedder] = {}

    def embedder(self, ref: str) -> Embedder:
        if ref not in self._embedders:
            s = self.settings.model_copy(deep=True)
            s.embedder.model = ref
            self._embedders[ref] = load_embedder(s)
        return self._embedders[ref]

    def reranker(self, ref: str) -> Reranker:
        s = self.settings.model_copy(deep=True)
        s.reranker.model = ref
        base = self._embedders.get("base") if ref == BASE_ALIAS else None
        return load_reranker(s, base)

    def run(self, data: EvalSet, specs: list[ModelSpec], index_for: Callable[[Embedder], str],
            holdout_only: bool = False, documents_in: str | None = None) -> dict[str, dict[str, float]]:
        """``documents_in``: an index holding the documents every ``index_for`` index will hold (the one a
        re-embedded copy is made from), where the qrels are checked before any model loads or re-embeds;
        else they are checked in the first model's index."""
        versions = [v for spec in specs for v in spec.versions]
        queries = data.queries
        registry = ModelRegistry(self.settings.models_dir)  # bases of older records are followed in it
        try:
            leaks = leaked_queries(queries, versions, registry)
        finally:
            registry.close()
        unread = self._count_judged_queries_missing(data)
        if not queries:  # before --holdout-only, which would blame training for it
            raise EvaluationDataError(
                "No query has a relevant judged document, so there is nothing to score: check that the qrels "
                "name the queries by the ids in the queries file (and that their scores are above 0).")
        if holdout_only:
            leaked = {q for ids in leaks.values() for q in ids}
            data = data.subset(set(queries) - leaked)
            queries = data.queries
            if not queries:
                raise EvaluationDataError("Every evaluation query was used in training: nothing is held out. "
                                          "Evaluate on queries the models were not trained on.")
        if leaks and not holdout_only:  # with holdout_only they were dropped above
            raise_for_leaks(leaks)
        results: dict[str, dict[str, float]] = {}
        meta: dict[str, Any] = {"queries": len(queries), "queries_digest": queries_digest(queries),
                                "qrels_digest": qrels_digest(data.qrels, queries)}
        meta.update(unread)
        if documents_in is not None:
            meta.update(self._check_judged_documents(data, documents_in))
        elif data.corpus_path is not None:  # a BEIR corpus, checked before it is indexed for the first model
            self._check_judged_in_corpus(data, data.corpus_path)
        embedders = list(dict.fromkeys(s.embedder for s in specs if s.embedder))
        rerank_pairs = [(s.embedder, s.reranker) for s in specs if s.embedder and s.reranker]
        lone_rerankers = [s.reranker for s in specs if s.reranker and not s.embedder]
        if not embedders:  # rerankers alone rerank the base's hybrid results (before, nothing was scored)
            embedders = [BASE_ALIAS]
        rerank_pairs += [(e, r) for r in lone_rerankers for e in embedders]
        bm25_done = False
        for ref in embedders:
            embedder = self.embedder(ref)
            index = index_for(embedder)
            runner = SystemRunner(self.backend, index, self.settings.search, rerank_top_k=self.settings.reranker.top_k,
                                  progress=lambda what, n, total: self.stage(f"{what} {n}/{total}") if n % 10 == 0 else None)
            if not bm25_done:
                if documents_in is None:
                    meta.update(self._check_judged_documents(data, index))
                self.stage("bm25")
                results["bm25"] = score_run(data.qrels, runner.bm25(queries))
                bm25_done = True
            self.stage(f"knn and hybrid with {ref}")
            results[f"knn:{ref}"] = score_run(data.qrels, runner.knn(queries, embedder))
            hits = runner.hybrid_hits(queries, embedder)
            results[f"hybrid:{ref}"] = score_run(data.qrels, runner.hybrid(hits))
            for e_ref, r_ref in rerank_pairs:
                if e_ref == ref:
                    self.stage(f"hybrid+rerank with {ref} + {r_ref}")
                    results[f"hybrid+rerank:{e_ref}+{r_ref}"] = score_run(
                        data.qrels, runner.rerank(queries, hits, self.reranker(r_ref)))
        results["_meta"] = meta
        return results

    def _count_judged_queries_missing(self, data: EvalSet) -> dict[str, Any]:
        """Judged queries the queries file lacks have no text to search: said, as they are left out of
        every figure (a table of 1 query measured on 3 judged said nothing)."""
        missing = data.judged_not_in_queries
        if not missing:
            return {}
        total = len(missing) + len(data.queries)  # those of the queries file that the qrels judge
        examples = ", ".join(repr(q) for q in missing[:3])
        self.stage(f"warning: {len(missing)} of {total} judged queries are not in "
                   f"{data.queries_path or 'the queries file'} (e.g. {examples}); they are left out of every figure")
        return {"judged_queries_not_in_queries": len(missing)}

    @staticmethod
    def _check_judged_in_corpus(data: EvalSet, corpus: Path) -> None:
        """Qrels that name none of a BEIR corpus's documents, said before minutes of indexing it (the
        index's check came after the whole corpus was embedded). Some missing are counted by that check."""
        judged = _judged_documents(data)
        ids = corpus_ids(corpus)
        if judged and not judged & ids:
            examples = ", ".join(repr(d) for d in sorted(judged)[:3])
            known = ", ".join(repr(d) for d in sorted(ids)[:2])
            raise EvaluationDataError(
                f"None of the {len(judged)} judged documents is in {corpus} (the qrels name e.g. {examples}; the "
                f"corpus holds e.g. {known}). Qrels name documents by the corpus's _id.")

    def _check_judged_documents(self, data: EvalSet, index: str) -> dict[str, Any]:
        """Judged documents the index lacks can only count as misses: all of them is a mistake (ids written
        another way, another corpus), some of them is worth saying, as it lowers every system's score."""
        judged = _judged_documents(data)
        missing = sorted(judged - self.backend.documents_present(index, judged))
        if not missing:
            return {}
        examples = ", ".join(repr(d) for d in missing[:3])
        if len(missing) == len(judged):
            first_chunks = next(self.backend.iter_chunks(index, batch_size=20), [])
            known = ", ".join(repr(d) for d in list(dict.fromkeys(c.doc_id for c in first_chunks))[:2])
            raise EvaluationDataError(
                f"None of the {len(judged)} judged documents is in index {index!r} (the qrels name e.g. {examples}; "
                f"the index holds e.g. {known}). Qrels name documents by the doc_id that "
                "`unirank search --json` shows.")
        self.stage(f"warning: {len(missing)} of {len(judged)} judged documents are not in index {index!r} "
                   f"(e.g. {examples}); they count as misses for every system")
        return {"judged_documents_not_in_index": len(missing)}


def _judged_documents(data: EvalSet) -> set[str]:
    return {doc for rels in data.qrels.values() for doc, score in rels.items() if score > 0}


def queries_digest(queries: dict[str, str]) -> str:
    """Which queries (ids and texts) a figure was measured on: promotion compares figures only when it matches."""
    return hashlib.sha256(json.dumps(sorted(queries.items())).encode()).hexdigest()[:12]


def qrels_digest(qrels: dict[str, dict[str, int]], queries: dict[str, str]) -> str:
    """Which judgments (those of the scored queries) a figure was measured with: the same queries judged
    otherwise give other figures, which promotion does not compare."""
    judged = {q: sorted(qrels.get(q, {}).items()) for q in sorted(queries)}
    return hashlib.sha256(json.dumps(judged).encode()).hexdigest()[:12]


def record_metrics(registry: ModelRegistry, results: dict, specs: list[ModelSpec], eval_name: str,
                   eval_options: str | None = None) -> None:
    """Store each model's held-out figures in its registry record (what promotion compares).

    Each eval set, set of queries (``--holdout-only`` drops some), judgments and system keeps its own
    figures, under ``evaluations``; ``metrics`` is the latest. ``eval_options`` (``--beir DIR``) say how to
    measure on the set again, for promotion's advice."""
    where: dict[str, Any] = {"eval_set": eval_name}
    meta = results.get("_meta") or {}
    for digest, stored_as in (("queries_digest", "eval_queries"), ("qrels_digest", "eval_qrels")):
        if meta.get(digest):
            where[stored_as] = meta[digest]
    if eval_options:
        where["eval_options"] = eval_options

    for spec in specs:
        if spec.embedder and spec.embedder != BASE_ALIAS:
            hybrid = results.get(f"hybrid:{spec.embedder}")
            if hybrid:
                registry.record_evaluation(spec.embedder, {**hybrid, **where, "system": f"hybrid:{spec.embedder}"})
        if spec.reranker and spec.reranker != BASE_ALIAS:
            # Named alone, a reranker reranked each embedder's results: a figure for each system.
            systems = ([f"hybrid+rerank:{spec.embedder}+{spec.reranker}"] if spec.embedder else
                       [k for k in results if k.startswith("hybrid+rerank:") and k.endswith(f"+{spec.reranker}")])
            for system in systems:
                if system in results:
                    registry.record_evaluation(spec.reranker, {**results[system], **where, "system": system})


def plot(results: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in results if not s.startswith("_")]
    metrics = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(systems)), 5))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        xs = [j + i * width for j in range(len(systems))]
        bars = ax.bar(xs, [results[s][metric] for s in systems], width, label=metric)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(systems))])
    ax.set_xticklabels(systems, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.15)  # headroom for the labels of bars at 1.0, which would run into the title
    ax.set_yticks([i / 5 for i in range(6)])
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # beside the bars, never over one
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
