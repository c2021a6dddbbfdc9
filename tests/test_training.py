"""Fine-tuning for a few steps on tiny data with the real base model: artefacts, registry, eval,
leakage, resume, index rebuild."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from data.make_minibeir import write as write_minibeir
from env_helpers import clear_unirank_settings, without_unirank_settings
from unirank.errors import DimensionMismatchError, EmbedderMismatchError, IndexNotFoundError, LeakageError
from unirank.evaluation.datasets import load_beir
from unirank.evaluation.runner import Evaluation, qrels_digest, queries_digest, record_metrics, resolve_specs
from unirank.registry import ModelRegistry
from unirank.training.embedder_trainer import EmbedderTrainingConfig
from unirank.training.examples import query_fingerprint
from unirank.training.job import TrainJob, TrainRequest, beir_index_name, beir_set_name, ensure_beir_index
from unirank.training.reranker_trainer import RerankerTrainingConfig

TINY = dict(batch_size=8, max_steps=4)


def tiny_request(name: str, beir: Path, **extra) -> TrainRequest:
    # The tiny corpus is under centring's passage floor; lowered here so the runs centre the base too.
    return TrainRequest(**{"name": name, "beir": beir, "embedder": EmbedderTrainingConfig(**TINY, center_min_passages=1),
                           "reranker": RerankerTrainingConfig(**TINY), **extra})


@pytest.fixture(scope="module")
def minibeir(tmp_path_factory) -> Path:
    return write_minibeir(tmp_path_factory.mktemp("beir") / "minibeir")


@pytest.fixture(scope="module")
def client(module_client):
    return module_client


@pytest.fixture(scope="module")
def trained(client, minibeir):
    stages: list[str] = []
    job = TrainJob(client.settings, client.backend, client.embedder, tiny_request("tiny", minibeir),
                   stage=stages.append)
    return job.run(), stages


def test_corpus_only_training_registers_both_models(client, trained):
    result, stages = trained
    assert any("pseudo-queries" in s for s in stages)
    registry = ModelRegistry(client.settings.models_dir)
    embed, rerank = registry.get("tiny-embed"), registry.get("tiny-rerank")
    assert (embed.role, rerank.role) == ("embedder", "reranker")
    assert embed.record["dims"] == 384 and embed.record["max_seq_length"] == 256
    assert embed.record["data_hash"] == rerank.record["data_hash"]
    assert embed.record["hyperparameters"]["max_steps"] == 4
    assert "ndcg@10" in embed.record["validation"] and "ndcg@10" in rerank.record["validation"]
    blend = rerank.record["validation"]["blend"]
    # Pseudo-queries favour the reranker that trained on them: they are recorded, they do not choose.
    assert blend["blend_weight"] == 0.0 and blend["chosen_on"].startswith("none: pseudo-queries only")
    assert set(blend["validation_ndcg@10_by_weight"]) == {"0.0", "0.1", "0.2", "0.3", "0.5", "0.7", "1.0"}
    from unirank.models.reranker import CrossEncoderReranker

    assert CrossEncoderReranker(str(rerank.path), name="r").blend_weight == 0.0
    assert rerank.record["initialised_from"] == "tuned embedder"  # the base is a bi-encoder
    assert embed.record["training_queries"] == []  # pseudo-queries only: no real query was seen
    kept = embed.record["data_stats"]["pseudo_kept"]
    assert sum(kept.values()) <= sum(embed.record["data_stats"]["pseudo_generated"].values())

    from sentence_transformers import CrossEncoder, SentenceTransformer

    from unirank.training.centering import is_centering_tail

    tuned = SentenceTransformer(str(embed.path), device="cpu")
    assert tuned.encode(["api key rotation"]).shape == (1, 384)
    # Trained from the base centred on the corpus: the centring modules travel with the model.
    assert any("centring the base" in s for s in stages)
    assert embed.record["centered_on_corpus"]["passages"] == len(list(client.backend.iter_chunks(
        embed.record["corpus_index"]))[0])
    assert is_centering_tail(list(tuned)[-2:])
    # Far fewer passages than 2 a dimension: the spread is not measured, only the mean taken away.
    assert embed.record["centered_on_corpus"]["whitening"] == 0.0
    assert embed.record["hyperparameters"]["whitening_strength"] == 0.25
    ce = CrossEncoder(str(rerank.path), device="cpu")
    assert len(ce.predict([("api keys", "Rotate keys every ninety days."), ("api keys", "Vacation days.")])) == 2
    pairs = [json.loads(line) for line in (result.run_dir / "training_pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["query"] and p["positive"] for p in pairs)
    assert any(p["negatives"] for p in pairs)
    # Both registered: the checkpoints (with their optimizer state, ~1 GB a run for this base) are removed;
    # final/ stays for a re-run to register again, and the training history beside it.
    for folder in ("embedder", "reranker"):
        assert not (result.run_dir / folder / "checkpoints").exists(), folder
        assert (result.run_dir / folder / "final" / "model.safetensors").is_file()
        assert json.loads((result.run_dir / folder / "trainer_state.json").read_text())["log_history"]


def test_the_recorded_validation_is_the_kept_checkpoints_beside_the_base_models(client, trained):
    """The reranker's record said 0.5 where the trainer kept a checkpoint scoring 0.5655: it was re-scored at
    the serving length (256) after being chosen at the training length (160). And train showed no base
    figure to compare the trained one with."""
    from unirank.cli.training import validation_summary

    result, _ = trained
    registry = ModelRegistry(client.settings.models_dir)
    for role, folder in (("embedder", "embedder"), ("reranker", "reranker")):
        figures = result.metrics[role]
        best = json.loads((result.run_dir / folder / "trainer_state.json").read_text())["best_metric"]
        assert figures["selection_ndcg@10"] == pytest.approx(best, abs=1e-6), role  # the figure it was kept by
        assert (figures["selection_length"], figures["max_length"]) == (160, 256)
        assert figures["validation_queries"] > 0 and figures["validation_written_by_people"] == 0
        assert 0 <= figures["base"]["ndcg@10"] <= 1 and figures["base"]["model"]
        assert json.loads((result.run_dir / folder / "done.json").read_text())["base"] == figures["base"]
        record = registry.get(f"tiny-{'embed' if role == 'embedder' else 'rerank'}").record["validation"]
        assert record["base"] == figures["base"] and record["selection_ndcg@10"] == figures["selection_ndcg@10"]
    registry.close()
    assert {"recall@10", "mrr@10"} <= set(result.metrics["embedder"]["base"])
    said = validation_summary(result.metrics)
    embed, rerank = result.metrics["embedder"], result.metrics["reranker"]
    assert f"{embed['validation_queries']} pseudo-queries held out from training" in said
    assert f"nDCG@10 {embed['base']['ndcg@10']:.4f} -> {embed['ndcg@10']:.4f}" in said
    assert f"nDCG@10 {rerank['base']['ndcg@10']:.4f} -> {rerank['ndcg@10']:.4f}" in said
    assert f"chosen at 160 tokens, nDCG@10 {rerank['selection_ndcg@10']:.4f}" in said
    assert "`unirank eval` on real held-out queries is the figure to trust" in said


def test_queries_people_wrote_choose_the_blend_weight(client, minibeir, trained, tmp_path):
    """Labelled validation queries pick the best weight (the least reliance on ties); pseudo-queries mixed
    in are left out of the choice."""
    import shutil

    from unirank.models.reranker import CrossEncoderReranker
    from unirank.training.blend_selection import GRID, choose_blend_weight
    from unirank.training.examples import TrainingPair

    reranker_dir = tmp_path / "reranker"
    shutil.copytree(trained[0].reranker.path, reranker_dir)
    data = load_beir(minibeir).judged()
    labelled = [TrainingPair(query=data.queries[qid], positive="", origin="qrels", doc_id=doc, query_id=qid)
                for qid, docs in data.qrels.items() for doc in docs]
    pseudo = [TrainingPair(query="zzz unrelated pseudo query", positive="", origin="pseudo:crop", doc_id="d1")]
    index = ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, lambda _: None)
    blend = choose_blend_weight(reranker_dir, client.backend, index, client.embedder, client.settings.search,
                                labelled + pseudo)
    curve = {float(w): v for w, v in blend["validation_ndcg@10_by_weight"].items()}
    assert set(curve) == set(GRID)
    assert blend["validation_queries"] == len(data.qrels)  # the pseudo-query did not count
    assert blend["chosen_on"].startswith("queries people wrote")
    best = min(w for w, v in curve.items() if v == max(curve.values()))
    test = blend["sign_test"]
    assert test["candidate"] == best
    # a weight above 0 is kept only if the sign test says its gain over 0 is not chance
    assert blend["blend_weight"] == (best if best == 0.0 or test["sign_test_p"] <= test["alpha"] else 0.0)
    assert CrossEncoderReranker(str(reranker_dir), name="r").blend_weight == blend["blend_weight"]


def test_the_blend_weight_setting_overrides_the_stored_one(client, trained):
    from unirank.models.loading import load_reranker

    ref = trained[0].reranker.ref
    reranker = client.settings.reranker
    stored = load_reranker(client.settings.model_copy(update={"reranker": reranker.model_copy(update={"model": ref})}))
    assert stored.blend_weight == 0.0
    chosen = load_reranker(client.settings.model_copy(update={"reranker": reranker.model_copy(
        update={"model": ref, "blend_weight": 0.25})}))
    assert chosen.blend_weight == 0.25
    from pydantic import ValidationError

    from unirank.settings import Settings

    with pytest.raises(ValidationError, match="blend_weight"):
        Settings(reranker={"blend_weight": 1.5})


def test_rerunning_resumes_instead_of_retraining(client, minibeir, trained):
    stages: list[str] = []
    again = TrainJob(client.settings, client.backend, client.embedder, tiny_request("tiny", minibeir),
                     stage=stages.append).run()
    assert again.embedder.ref == trained[0].embedder.ref  # not registered twice
    assert again.registered_before and not trained[0].registered_before  # and said so: it said "Registered"
    assert any("embedder: already trained" in s for s in stages)
    assert any("reusing the mined pairs" in s for s in stages)


def test_eval_names_systems_and_records_metrics(client, minibeir, trained, tmp_path):
    registry = ModelRegistry(client.settings.models_dir)
    specs = resolve_specs(["base", "tiny"], registry)
    evaluation = Evaluation(client.settings, client.backend)
    evaluation._embedders["base"] = client.embedder
    index_for = lambda emb: ensure_beir_index(client.settings, client.backend, emb, minibeir, lambda _: None)  # noqa: E731
    results = evaluation.run(load_beir(minibeir).judged(), specs, index_for)
    meta = results.pop("_meta")
    data = load_beir(minibeir).judged()
    assert meta["queries"] == 12 and meta["queries_digest"] == queries_digest(data.queries)
    assert meta["qrels_digest"] == qrels_digest(data.qrels, data.queries)  # the judgments the figures used
    assert set(results) == {"bm25", "knn:base", "hybrid:base", "hybrid+rerank:base+base", "knn:tiny-embed@1",
                            "hybrid:tiny-embed@1", "hybrid+rerank:tiny-embed@1+tiny-rerank@1"}
    for scores in results.values():
        assert set(scores) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert results["knn:base"]["recall@100"] == 1.0  # 26 documents: everything is retrieved
    record_metrics(registry, {**results, "_meta": meta}, specs, "beir:minibeir")
    assert registry.get("tiny-embed@1").metrics["ndcg@10"] == results["hybrid:tiny-embed@1"]["ndcg@10"]
    assert registry.get("tiny-embed@1").metrics["eval_qrels"] == meta["qrels_digest"]
    # A reranker named alone reranks the base's hybrid results (before, nothing at all was scored).
    alone_specs = resolve_specs(["tiny-rerank@1"], registry)
    alone = evaluation.run(load_beir(minibeir).judged(), alone_specs, index_for)
    assert set(alone) - {"_meta"} == {"bm25", "knn:base", "hybrid:base", "hybrid+rerank:base+tiny-rerank@1"}
    # and its figure is recorded, which promotion asks for (named alone, it was not: "Evaluate it first")
    record_metrics(registry, alone, alone_specs, "beir:minibeir")
    recorded = registry.get("tiny-rerank@1").metrics
    assert recorded["system"] == "hybrid+rerank:base+tiny-rerank@1"
    assert recorded["ndcg@10"] == alone["hybrid+rerank:base+tiny-rerank@1"]["ndcg@10"]


def test_eval_refuses_judgments_that_cannot_measure_anything_and_counts_missing_documents(client, minibeir):
    from unirank.errors import EvaluationDataError
    from unirank.evaluation.datasets import EvalSet

    evaluation = Evaluation(client.settings, client.backend)
    evaluation._embedders["base"] = client.embedder
    index_for = lambda emb: ensure_beir_index(client.settings, client.backend, emb, minibeir, lambda _: None)  # noqa: E731
    specs = resolve_specs(["base"], ModelRegistry(client.settings.models_dir))
    data = load_beir(minibeir).judged()
    one_query = data.subset({sorted(data.queries)[0]})
    (qid, judged), = one_query.qrels.items()
    # Ids written another way (here, with a prefix): every system would score 0 against them.
    renamed = EvalSet(queries=one_query.queries, qrels={qid: {f"doc:{d}": s for d, s in judged.items()}})
    with pytest.raises(EvaluationDataError,
                       match=r"None of the \d+ judged documents is in index .* e\.g\. 'doc:.*index holds e\.g\. '[^':]+'"):
        evaluation.run(renamed, specs, index_for)

    def not_before_the_check(embedder):
        raise AssertionError("an index was made for the model before the qrels were checked")

    index = index_for(client.embedder)  # `eval --index`: the user's index, which re-embedded copies are made from
    with pytest.raises(EvaluationDataError, match=f"None of the \\d+ judged documents is in index '{index}'"):
        evaluation.run(renamed, specs, not_before_the_check, documents_in=index)
    unjudged = EvalSet(queries=one_query.queries, qrels={"other": judged}).judged()
    for holdout_only in (False, True):  # --holdout-only said every query was used in training, with no model trained
        with pytest.raises(EvaluationDataError, match="No query has a relevant judged document"):
            evaluation.run(unjudged, specs, index_for, holdout_only=holdout_only)
    partly = EvalSet(queries=one_query.queries, qrels={qid: {**judged, "not-in-the-corpus": 1}})
    for documents_in in (None, index):
        results = evaluation.run(partly, specs, index_for, documents_in=documents_in)
        assert results["_meta"]["queries"] == 1 and results["_meta"]["judged_documents_not_in_index"] == 1


def _beir_folder(folder: Path, docs: dict[str, str], queries: dict[str, str], qrels: str) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


@pytest.mark.slow  # embeds 250 small chunks (~20 s): in the slow step, to keep the default run under 15 minutes
def test_recall_at_100_counts_100_documents_when_each_spans_several_chunks(client, tmp_path):
    """Runs were cut at 200 chunks, which held 40 to 55 documents of a corpus chunked small: Recall@100 was
    measured over them (kNN over a 100-document corpus scored 0.9459, not 1.0). Here 25 documents of ten
    chunks each rank above the one judged relevant, which only a run deeper than 200 chunks reaches."""
    sentences = ["The roses in the garden bed need watering every morning in summer.",
                 "Prune the rose bushes in early spring before new shoots appear.",
                 "Garden soil for roses should be rich, loose and well drained.",
                 "Mulch around the roses keeps the garden soil moist in dry weeks.",
                 "Feed the roses with compost when the garden warms up in April.",
                 "Deadheading faded roses keeps the garden flowering all season.",
                 "Aphids on garden roses can be washed off with a jet of water.",
                 "Climbing roses in the garden need a trellis or a sturdy fence.",
                 "Water the garden roses at the base, never over their leaves.",
                 "Cover the garden roses with fleece when frost is forecast."]
    docs = {f"g{n}": " ".join(f"{s} (note {n})" for s in sentences) for n in range(25)}
    docs["tax"] = "Corporate tax returns are filed with the revenue office by the end of April."
    folder = _beir_folder(tmp_path / "beir", docs, {"q1": "how should I water and prune roses in my garden"},
                          "q1\ttax\t1\n")
    settings = client.settings.model_copy(deep=True)
    settings.chunking.size, settings.chunking.overlap = 16, 0
    evaluation = Evaluation(settings, client.backend)
    evaluation._embedders["base"] = client.embedder
    index_for = lambda emb: ensure_beir_index(settings, client.backend, emb, folder, lambda _: None)  # noqa: E731
    results = evaluation.run(load_beir(folder).judged(), resolve_specs(["base"], ModelRegistry(settings.models_dir)),
                             index_for)
    assert client.index_info(index_for(client.embedder)).chunk_count > 250  # several chunks a document
    assert results["knn:base"]["recall@100"] == 1.0  # every one of the 26 documents is in the run
    assert results["hybrid:base"]["recall@100"] == 1.0


@pytest.mark.slow  # ~15 s of searches and reranking: in the slow step, for the default run's margin under 15 minutes
def test_eval_ranks_hybrid_and_reranked_results_as_search_serves_them(client, minibeir):
    """Eval fused 200 candidates a list where search fuses search.candidates, and reranked 50 candidates
    whatever reranker.top_k said: it measured a ranking no search served."""
    from unirank.evaluation.systems import SystemRunner, documents_in_order
    from unirank.models.loading import load_reranker
    from unirank.search.searcher import Searcher

    settings = client.settings.model_copy(deep=True)
    settings.search.candidates, settings.reranker.top_k = 3, 4
    index = ensure_beir_index(settings, client.backend, client.embedder, minibeir, lambda _: None)
    queries = load_beir(minibeir).judged().queries
    reranker = load_reranker(settings, client.embedder)  # `base`: the bi-encoder, by cosine
    search = Searcher(client.backend, client.embedder, reranker, settings.search, rerank_top_k=settings.reranker.top_k)

    def served(text, top_k, rerank):
        hits = search.search(text, index, mode="hybrid", top_k=top_k, rerank=rerank).hits
        return list(dict.fromkeys(h.chunk.doc_id for h in hits))

    hits = SystemRunner(client.backend, index, settings.search).hybrid_hits(queries, client.embedder)
    for q, text in queries.items():
        shown = served(text, 10, rerank=False)  # search.top_k: what `unirank search` shows
        assert documents_in_order(hits[q])[:len(shown)] == shown, q
        assert len(documents_in_order(hits[q])) == 26  # and below it, down to Recall@100's depth
    runner = SystemRunner(client.backend, index, settings.search, rerank_top_k=settings.reranker.top_k)
    reranked = runner.rerank(queries, runner.hybrid_hits(queries, client.embedder), reranker)
    for q, text in queries.items():
        ranked = sorted(reranked[q], key=lambda doc: -reranked[q][doc])
        assert ranked[:4] == served(text, 4, rerank=True), q


def test_eval_embeds_the_queries_once_per_embedder(client, minibeir):
    """knn and hybrid of one embedder each embedded every query again."""
    from unirank.evaluation.systems import SystemRunner

    index = ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, lambda _: None)
    queries = load_beir(minibeir).judged().queries
    batches = []

    class Counting:
        def __getattr__(self, name):
            return getattr(client.embedder, name)

        def embed_documents(self, texts):
            batches.append(len(texts))
            return client.embedder.embed_documents(texts)

    runner, embedder = SystemRunner(client.backend, index, client.settings.search), Counting()
    knn = runner.knn(queries, embedder)
    runner.hybrid_hits(queries, embedder)
    assert batches == [len(queries)]
    assert runner.knn(queries, client.embedder) == knn and batches == [len(queries)]  # another embedder: its own


def test_beir_qrels_that_name_no_document_of_the_corpus_are_refused_before_it_is_indexed(client, tmp_path):
    """The judged ids were checked in the index, after the whole corpus was embedded for the first model."""
    from unirank.errors import EvaluationDataError

    folder = write_minibeir(tmp_path / "beir")
    (folder / "qrels" / "test.tsv").write_text("q1\tdoc:d1\t1\nq2\tdoc:d2\t1\n")

    def not_indexed(embedder):
        raise AssertionError("the corpus was indexed before the qrels were checked")

    evaluation = Evaluation(client.settings, client.backend)
    specs = resolve_specs(["base"], ModelRegistry(client.settings.models_dir))
    with pytest.raises(EvaluationDataError, match=r"None of the 2 judged documents is in .*corpus\.jsonl \(the qrels "
                                                  r"name e\.g\. 'doc:d1', 'doc:d2'; the corpus holds e\.g\. 'd1', 'd10'\)"):
        evaluation.run(load_beir(folder).judged(), specs, not_indexed)


def test_every_query_held_out_by_training_is_an_evaluation_data_error(client, minibeir):
    """--holdout-only with nothing left raised the base UnirankError."""
    from unirank.errors import EvaluationDataError

    data = load_beir(minibeir).judged()
    registry = ModelRegistry(client.settings.models_dir)
    seen = registry.register("seen-all-embed", "embedder", record={
        "dims": 384, "training_queries": sorted(query_fingerprint(t) for t in data.queries.values())})
    with pytest.raises(EvaluationDataError, match="Every evaluation query was used in training"):
        Evaluation(client.settings, client.backend).run(data, resolve_specs([seen.ref], registry),
                                                        lambda _: pytest.fail("nothing to index"), holdout_only=True)


def test_two_beir_folders_of_one_name_have_their_own_index_kept_in_step_with_the_corpus(client, tmp_path):
    """Named after the folder's last part only, ``a/beir`` and ``b/beir`` shared one index: the second's
    corpus was added to the first's, and eval of the first scored documents of both."""
    from types import SimpleNamespace

    from unirank.registry.evaluations import _trained_on

    first = write_minibeir(tmp_path / "a" / "beir")
    second = tmp_path / "b" / "beir"
    second.mkdir(parents=True)
    (second / "corpus.jsonl").write_text('{"_id": "x1", "text": "Gardening tools are kept in the shed."}\n')

    def doc_ids(index):
        return {c.doc_id for batch in client.backend.iter_chunks(index) for c in batch}

    ensure = lambda folder: ensure_beir_index(client.settings, client.backend, client.embedder,  # noqa: E731
                                              folder, lambda _: None)
    one = ensure(first)
    two = ensure(second)
    assert one != two and one.startswith("beir-beir-") and two.startswith("beir-beir-")
    assert doc_ids(two) == {"x1"}
    assert ensure(first) == one and doc_ids(one) == {f"d{n}" for n in range(1, 27)}  # none of b/beir's
    # The eval set's name says which folder too, and still matches the index a model trained on it names.
    assert beir_set_name(first) != beir_set_name(second)
    assert _trained_on(SimpleNamespace(record={"corpus_index": one}), f"beir:{beir_set_name(first)}")
    assert not _trained_on(SimpleNamespace(record={"corpus_index": one}), f"beir:{beir_set_name(second)}")
    # The same folder through a link is the same folder: its index, not a second copy of its documents.
    (tmp_path / "link").symlink_to(first)
    assert ensure(tmp_path / "link") == one and client.index_info(one).source_count == 1
    # A corpus edited since it was indexed is indexed again: a removed document goes.
    corpus = first / "corpus.jsonl"
    corpus.write_text("\n".join(line for line in corpus.read_text().splitlines() if '"d26"' not in line) + "\n")
    assert ensure(first) == one and "d26" not in doc_ids(one) and "d25" in doc_ids(one)


def test_a_beir_corpus_with_a_bad_line_is_refused_naming_it_not_scored_as_it_was(client, tmp_path):
    """The ingest report was not read: a bad line left the index as it was, and eval scored it (exit 0),
    or, on a first run, said the index "does not exist" and to create it with `unirank ingest`."""
    from unirank.errors import EvaluationDataError

    folder = write_minibeir(tmp_path / "beir")
    corpus = folder / "corpus.jsonl"
    good = corpus.read_text()
    corpus.write_text(good + '{"_id": "dZ", "text": "oops\n')
    ensure = lambda: ensure_beir_index(client.settings, client.backend, client.embedder,  # noqa: E731
                                       folder, lambda _: None)
    with pytest.raises(EvaluationDataError, match=r"corpus\.jsonl could not be indexed: line 27: .*fix the file"):
        ensure()
    assert not client.backend.exists(beir_index_name(folder, client.embedder))
    corpus.write_text(good)
    index = ensure()
    corpus.write_text(good.replace('{"_id": "d26"', '{"_id": "d27"') + "not json\n")
    with pytest.raises(EvaluationDataError, match=r"line 27: ") as refused:
        ensure()
    assert "--prune" not in str(refused.value)  # the ingest's advice, not this one's
    corpus.write_text(good.replace('{"_id": "d26"', '{"_id": "d27"'))  # mended: indexed again, as it is now
    assert ensure() == index
    assert "d27" in {c.doc_id for batch in client.backend.iter_chunks(index) for c in batch}


def _eval_command(monkeypatch, data_dir: Path, *args: str):
    """``unirank eval ARGS`` in this process (a monkeypatched function stays patched), its own data dir."""
    from typer.testing import CliRunner

    from unirank.cli.main import app

    clear_unirank_settings(monkeypatch)
    monkeypatch.setenv("UNIRANK_CONFIG", os.devnull)
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(data_dir))
    return CliRunner().invoke(app, ["eval", *args], env={"COLUMNS": "250"})


def test_a_chart_path_that_cannot_be_written_is_refused_before_the_evaluation(minibeir, tmp_path, monkeypatch):
    """matplotlib refused it after the whole evaluation: a traceback (exit 1), and --json's figures lost."""
    (tmp_path / "afile").write_text("")
    cases = [(tmp_path / "chart.xyz", r"a chart is written as .*\.png.*\.svg.*\(e\.g\. chart\.png\), not \.xyz"),
             (tmp_path / "afile" / "chart.png", r"the folder .*afile does not exist"),
             (tmp_path, "that is a folder")]
    if Path("/proc").is_dir():  # not a folder anyone can write a file to, root included
        cases.append((Path("/proc/chart.png"), "the chart cannot be written there"))
    for path, message in cases:
        result = _eval_command(monkeypatch, tmp_path / "data", "--beir", str(minibeir), "--plot", str(path), "--json")
        assert result.exit_code == 2 and result.stdout == "", result.output
        assert re.search(message, " ".join(result.stderr.split())), result.stderr
        assert "indexing" not in result.stderr  # refused before any work
    assert not (tmp_path / "data" / "indexes").exists() or not any((tmp_path / "data" / "indexes").iterdir())


def test_eval_beir_takes_queries_and_qrels_that_replace_the_folder_s(minibeir, tmp_path):
    """`eval --beir DIR --queries Q --qrels R` scored the folder's own queries and qrels without a word, where
    `train --beir` takes them."""
    from unirank.cli.training import _eval_set

    queries = tmp_path / "held-out.tsv"
    queries.write_text("q1\thow often must api credentials be replaced\nq2\ttoo many calls\n")
    qrels = tmp_path / "held-out-qrels.tsv"
    qrels.write_text("q1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")  # q3 is not in the queries file: not scored
    data, name = _eval_set(None, minibeir, queries, qrels, None)
    assert name == f"beir:{beir_set_name(minibeir)}" and data.corpus_path == minibeir / "corpus.jsonl"
    assert data.queries == {"q1": "how often must api credentials be replaced", "q2": "too many calls"}
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}} and data.qrels_path == qrels
    data, _ = _eval_set(None, minibeir, None, qrels, None)  # the folder's queries, judged by --qrels
    assert sorted(data.queries) == ["q1", "q2", "q3"] and data.queries["q2"] == load_beir(minibeir).queries["q2"]


def test_the_chart_is_written_where_it_says_and_a_failing_one_keeps_the_figures(minibeir, tmp_path, monkeypatch):
    import unirank.evaluation.runner

    common = ("--beir", str(minibeir), "--models", "base", "--no-record")
    result = _eval_command(monkeypatch, tmp_path / "data", *common, "--plot", str(tmp_path / "chart"))
    assert result.exit_code == 0, result.output
    chart = tmp_path / "chart.png"  # with no extension, matplotlib writes a .png: "Chart:" said `chart`
    assert chart.read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "chart").exists()
    assert f"Chart: {chart}" in result.stdout

    def no_room(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(unirank.evaluation.runner, "plot", no_room)
    result = _eval_command(monkeypatch, tmp_path / "data", *common, "--json", "--plot", str(tmp_path / "c.svg"))
    assert result.exit_code == 2, result.output
    assert "bm25" in json.loads(result.stdout)  # printed before the chart was tried
    assert re.search(r"c\.svg: the chart could not be written \(.*No space left on device\)\. The figures were "
                     r"printed\.", " ".join(result.stderr.split())), result.stderr


def test_labelled_training_is_refused_on_its_own_queries(client, minibeir, tmp_path):
    train_qrels = tmp_path / "train.tsv"
    lines = (minibeir / "qrels" / "test.tsv").read_text().splitlines()
    train_qrels.write_text("\n".join(lines[:1] + [l for l in lines[1:] if l.split("\t")[0] in {"q1", "q2", "q3", "q5", "q6", "q7"}]))
    job = TrainJob(client.settings, client.backend, client.embedder,
                   tiny_request("labelled", minibeir, qrels=train_qrels, pseudo=True), stage=lambda _: None)
    result = job.run()
    assert len(result.embedder.record["training_queries"]) == 6
    assert result.embedder.record["trained_with"] == result.reranker.ref  # the pair `--models labelled` names
    assert result.reranker.record["trained_with"] == result.embedder.ref
    registry = ModelRegistry(client.settings.models_dir)
    specs = resolve_specs(["labelled"], registry)
    evaluation = Evaluation(client.settings, client.backend)
    index_for = lambda emb: ensure_beir_index(client.settings, client.backend, emb, minibeir, lambda _: None)  # noqa: E731
    with pytest.raises(LeakageError, match="6 of them"):
        evaluation.run(load_beir(minibeir).judged(), specs, index_for)
    held_out = evaluation.run(load_beir(minibeir).judged(), specs, index_for, holdout_only=True)
    assert held_out["_meta"]["queries"] == 6


def test_the_same_question_with_other_punctuation_or_unicode_form_is_refused_as_trained_on():
    """A model trained on `where is customer data stored` was scored on `where is customer data stored?`
    (and `café` in NFD on `café` in NFC): the fingerprint kept only case and spacing apart. A record written
    before the words-only fingerprint (the old one alone) still matches what it matched."""
    import unicodedata

    from unirank.evaluation.leakage import check_no_leakage, leaked_queries
    from unirank.registry import ModelVersion
    from unirank.training.examples import query_fingerprints

    def version(name: str, trained: list[str]) -> ModelVersion:
        return ModelVersion(name, 1, "embedder", None, "", {"training_queries": trained})

    nfc = unicodedata.normalize("NFC", "café opening hours")
    now = version("now", sorted(query_fingerprints("where is customer data stored") | query_fingerprints(nfc)))
    before = version("before", [query_fingerprint("Where is customer data stored?")])
    queries = {"punct": "Where is customer data stored?", "dot": "where is customer data stored.",
               "nfd": unicodedata.normalize("NFD", "Café opening hours?"), "spaced": "where is  CUSTOMER data stored?",
               "other": "where is customer data deleted?", "marks": "???"}
    assert leaked_queries(queries, [now, before]) == {"now@1": ["dot", "nfd", "punct", "spaced"],
                                                     "before@1": ["punct", "spaced"]}
    with pytest.raises(LeakageError, match="now@1 was trained on 4 of them"):
        check_no_leakage(queries, [now])
    assert leaked_queries({"marks": "!!!"}, [version("marks", sorted(query_fingerprints("???")))]) == {}


def test_index_rebuild_switches_embedder_atomically(client, trained, minibeir):
    index = ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, lambda _: None)
    before = client.index_info(index)
    info = client.rebuild_index(index, "tiny-embed@1")
    assert info.model.name == "tiny-embed" and info.model.version == "1"
    assert info.chunk_count == before.chunk_count
    assert Path(info.details["path"]).name == "v2"
    with pytest.raises(IndexNotFoundError):  # said before any model is looked up or loaded
        client.rebuild_index("no-such-index", "no-such-model@1")
    # With no embedder.model set, the index is searched with the model that made it, as it is...
    assert str(client.searcher.embedder_for(index).signature) == "tiny-embed@1"
    followed = client.search("rotate api keys", index, mode="knn", rerank=False).hits
    assert [(h.chunk.id, round(h.score, 5)) for h in followed] == [
        (h.chunk.id, round(h.score, 5)) for h in _search_with(client, index, "tiny-embed@1", "rotate api keys")]
    # ...and a model set in the settings is used as set: the base has 384 dims too, but not these vectors.
    with pytest.raises(EmbedderMismatchError, match=r"made by tiny-embed@1, but the embedder is all-MiniLM-L6-v2@base"):
        _search_with(client, index, "base")
    # An embedder of other dimensions is refused, naming both.
    from sentence_transformers import SentenceTransformer, models

    base = SentenceTransformer(str(trained[0].embedder.path), device="cpu")
    small = SentenceTransformer(modules=[*base, models.Dense(384, 128)], device="cpu")
    small_dir = client.settings.data_dir / "small-model"
    small.save(str(small_dir))
    registry = ModelRegistry(client.settings.models_dir)
    from unirank.registry.describe import describe_model_folder

    registry.register("small", "embedder", path=small_dir, record=describe_model_folder(small_dir, "embedder"))
    with pytest.raises(DimensionMismatchError, match=r"384 dimensions.*128 dimensions"):
        _search_with(client, index, "small@1")
    # Training on it (from the model that made it, as `train --base tiny-embed@1`) mines it as search serves
    # it, with tiny-embed@1: the index as it is. It mined with the bundled base, in a re-embedded copy.
    stages: list[str] = []
    request = TrainRequest(name="again", index=index, base="tiny-embed@1", embedder=EmbedderTrainingConfig(**TINY),
                           reranker=RerankerTrainingConfig(**TINY))
    result = TrainJob(client.settings, client.backend, client.embedder, request, stage=stages.append).run()
    assert result.embedder.record["corpus_index"] == index
    assert [i.name for i in client.backend.list_indexes() if i.copy_of == index] == []
    assert f"mining {index} with tiny-embed@1, the model it is searched with" in stages
    assert not any("re-embedding" in s for s in stages)
    # The mining model is in the run's key: pairs mined with one model are not reused by another.
    tuned = client.searcher.embedder_for(index)
    run_with = lambda embedder: TrainJob(client.settings, client.backend, embedder,  # noqa: E731
                                         tiny_request("miner", minibeir)).run_dir
    assert run_with(tuned) != run_with(client.embedder)
    # The BEIR index is eval's and training's cache of the base's vectors: it is made again, not used.
    stages.clear()
    assert ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, stages.append) == index
    assert client.index_info(index).model == client.embedder.signature
    assert any("not all-MiniLM-L6-v2@base's: indexing it again" in s for s in stages)


def test_an_index_whose_model_is_not_here_is_mined_in_a_copy_re_embedded_with_the_base(client, minibeir):
    """The index's own model mines it when it loads here; one of another machine's registry does not, and the
    given embedder mines a copy of the index with its own vectors, as before."""
    from unirank.search.types import IndexedSource, ModelSignature

    source = ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, lambda _: None)
    chunks = [c for batch in client.backend.iter_chunks(source) for c in batch]
    (state,) = client.backend.source_states(source).values()
    client.backend.create_index("from-elsewhere", ModelSignature(name="elsewhere-embed", version="1", dims=384))
    client.backend.index("from-elsewhere", [IndexedSource(
        state=state, vectors=client.embedder.embed_documents([c.embedding_input() for c in chunks]), chunks=chunks)])
    client.backend.flush("from-elsewhere")
    stages: list[str] = []
    job = TrainJob(client.settings, client.backend, client.embedder,
                   tiny_request("elsewhere", None, index="from-elsewhere"), stage=stages.append)
    assert job.embedder is client.embedder
    copy = job._corpus_index()
    assert client.index_info(copy).copy_of == "from-elsewhere"
    assert client.index_info(copy).model == client.embedder.signature
    assert any("re-embedding from-elsewhere with all-MiniLM-L6-v2@base" in s for s in stages)


def _search_with(client, index, model, query="keys"):
    from unirank.api import Unirank

    settings = client.settings.model_copy(deep=True)
    settings.embedder.model = model
    with Unirank(settings) as other:
        return other.search(query, index, mode="knn", rerank=False).hits


@pytest.mark.slow  # two real trainings, one killed part-way (~40 s): in the slow step
def test_an_interrupted_training_resumes_from_its_checkpoint(tmp_path, minibeir):
    script = tmp_path / "train.py"
    script.write_text(f"""
import logging, sys
logging.basicConfig(level=logging.INFO)
from unirank.api import Unirank
from unirank.settings import Settings
from unirank.training.job import TrainJob, TrainRequest
from unirank.training.embedder_trainer import EmbedderTrainingConfig
from unirank.training.reranker_trainer import RerankerTrainingConfig
req = TrainRequest(name="resumable", beir=__import__("pathlib").Path({str(minibeir)!r}),
                   embedder=EmbedderTrainingConfig(batch_size=8, max_steps=6, eval_steps=2),
                   reranker=RerankerTrainingConfig(batch_size=8, max_steps=2))
with Unirank(Settings(data_dir={str(tmp_path / 'data')!r})) as ur:
    TrainJob(ur.settings, ur.backend, ur.embedder, req, stage=lambda m: print(m, flush=True)).run()
print("FINISHED", flush=True)
""")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "UNIRANK_CONFIG": os.devnull}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = tmp_path / "data" / "runs"
    import time

    deadline = time.monotonic() + 300
    while not list(runs.glob("*/embedder/checkpoints/checkpoint-2/trainer_state.json")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    # As if the kill had also caught the next checkpoint half-written:
    partial = next(runs.glob("*/embedder/checkpoints")) / "checkpoint-4"
    partial.mkdir(exist_ok=True)
    (partial / "model.safetensors").write_bytes(b"truncated")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FINISHED" in done.stdout and "reusing the mined pairs" in done.stdout
    assert "resuming embedder training from" in done.stdout + done.stderr
    assert "checkpoint-2" in done.stdout + done.stderr and "removing incomplete checkpoint" in done.stdout + done.stderr


def test_the_step_floor_trains_min_steps_when_an_epoch_ends_in_a_short_batch(tmp_path):
    """5 pairs at batch 4 are 2 batches an epoch; epochs scaled from 5 // 4 trained twice the floor."""
    from unirank.models.loading import resolve_model_path
    from unirank.training.embedder_trainer import train_embedder
    from unirank.training.examples import TrainingPair

    corpus = {f"d{i}": f"Passage {i} about topic number {i}." for i in range(10)}
    pairs = [TrainingPair(query=f"question on topic {n}", positive=corpus[f"d{n}"], negatives=[corpus[f"d{n + 5}"]],
                          origin="pseudo:lead", doc_id=f"d{n}") for n in range(5)]
    config = EmbedderTrainingConfig(batch_size=4, min_steps=3, max_seq_length=32, center_on_corpus=False)
    train_embedder(resolve_model_path("base")[0], pairs, pairs[:2], corpus, tmp_path, config)
    states = sorted((tmp_path / "checkpoints").glob("checkpoint-*/trainer_state.json"),
                    key=lambda p: int(p.parent.name.split("-")[1]))
    assert json.loads(states[-1].read_text())["global_step"] == 3


@pytest.mark.slow  # a real train, eval and rebuild through the CLI: in the slow step
def test_train_eval_promote_through_the_cli(tmp_path, minibeir):
    env = without_unirank_settings(os.environ)
    env.update(HF_HUB_OFFLINE="1", UNIRANK_DATA_DIR=str(tmp_path / "data"))

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    trained = json.loads(run("train", "--beir", str(minibeir), "--name", "cli", "--epochs", "0.5", "--min-steps", "0",
                             "--batch-size", "8", "--json"))
    assert (trained["embedder"], trained["reranker"]) == ("cli-embed@1", "cli-rerank@1")
    assert trained["registered_before"] is False  # registered by this command, which --json did not tell
    assert (trained["embedder_registered_before"], trained["reranker_registered_before"]) == (False, False)
    chart = tmp_path / "eval.png"
    results = json.loads(run("eval", "--beir", str(minibeir), "--models", "base,cli", "--json", "--plot", str(chart)))
    assert "hybrid+rerank:cli-embed@1+cli-rerank@1" in results and "bm25" in results
    assert chart.stat().st_size > 10_000 and chart.read_bytes()[:4] == b"\x89PNG"
    run("models", "promote", "cli-embed@1", "--alias", "prod")
    shown = json.loads(run("models", "show", "cli-embed@prod", "--json"))
    assert shown["metrics"]["eval_set"] == f"beir:{beir_set_name(minibeir)}" and len(shown["metrics"]["eval_queries"]) == 12
    assert shown["metrics"]["ndcg@10"] == results["hybrid:cli-embed@1"]["ndcg@10"]
    # Re-embedded with the promoted version, the corpus's index is searched with it, with no setting.
    (beir_index,) = [i["name"] for i in json.loads(run("index", "list", "--json")) if i["model"]["name"] == "all-MiniLM-L6-v2"]
    run("index", "rebuild", beir_index, "--model", "cli-embed@prod")
    found = json.loads(run("search", "rotation", "--index", beir_index, "--mode", "knn", "--json"))
    assert found["hits"] and found["embedder"] == "cli-embed@1"
    assert json.loads(run("index", "info", beir_index, "--json"))["model"]["name"] == "cli-embed"
    # A new index made by a chosen model with `ingest --model`, searched with it with no setting.
    run("ingest", str(minibeir / "corpus.jsonl"), "--index", "chosen", "--model", "cli-embed@prod")
    assert json.loads(run("index", "info", "chosen", "--json"))["model"]["name"] == "cli-embed"
    assert json.loads(run("search", "rotation", "--index", "chosen", "--mode", "knn", "--json"))["hits"]


def test_a_click_log_trains_and_its_queries_count_as_seen(client, minibeir, tmp_path):
    """Clicked documents are the positives, results skipped above them the first negatives, and the
    logged queries are recorded for the leakage check like labels."""
    data = load_beir(minibeir).judged()
    clicked = [f"q{n}" for n in range(1, 11)]
    log = tmp_path / "clicks.jsonl"
    log.write_text("".join(json.dumps({"query": data.queries[q], "shown": ["d20", "d21", *sorted(data.qrels[q])],
                                       "clicked": [{"id": d, "dwell_s": 40} for d in sorted(data.qrels[q])]}) + "\n"
                           for q in clicked))
    job = TrainJob(client.settings, client.backend, client.embedder,
                   tiny_request("clicked", minibeir, clicks=log, min_dwell_s=10), stage=lambda _: None)
    result = job.run()
    assert result.stats["click_pairs"] == 12 and "pseudo_kept" not in result.stats
    assert sorted(result.embedder.record["training_queries"]) == sorted(query_fingerprint(data.queries[q]) for q in clicked)
    pairs = [json.loads(line) for line in (result.run_dir / "training_pairs.jsonl").read_text().splitlines()]
    assert {p["origin"] for p in pairs} == {"clicks"}
    index = ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, lambda _: None)
    texts = {c.doc_id: c.embedding_input() for batch in client.backend.iter_chunks(index) for c in batch}
    for pair in pairs:
        assert pair["positive"] == texts[pair["doc_id"]]
        assert pair["negatives"][:2] == [texts["d20"], texts["d21"]]  # skipped above the click, then mined


@pytest.mark.parametrize("change, message", [
    (dict(name="team/handbook"), r"Invalid model name 'team/handbook-embed'"),
    (dict(name="clash"), r"'clash-embed' holds reranker models"),
    # offline (as the tests run), said by resolve_model_path; online, by require_hub_model ("the hub cannot give it")
    (dict(base="no-such-org/no-such-model"), r"'no-such-org/no-such-model' is not (a registered model.*nor a hub model "
                                             r"in this machine's cache|`base`.*the hub cannot give it)"),
    # found only when the reranker was built, after the embedder's training
    (dict(reranker=RerankerTrainingConfig(**TINY, layers=7)), r"--reranker-layers 7: the base base has 6 layers; give 1 to 6"),
])
def test_training_refuses_what_would_fail_at_registration_before_any_work(client, minibeir, change, message):
    """Before, these failed only when registering (or loading the base), after minutes of indexing, mining
    and training."""
    from unirank.errors import UnirankError
    from unirank.models.loading import resolve_model_path

    registry = ModelRegistry(client.settings.models_dir)
    if not registry.exists("clash-embed@1"):
        registry.register("clash-embed", "reranker", path=Path(resolve_model_path("base")[0]))
    registry.close()
    stages: list[str] = []
    request = tiny_request(**{"name": "refused", "beir": minibeir, **change})
    job = TrainJob(client.settings, client.backend, client.embedder, request, stage=stages.append)
    runs = client.settings.data_dir / "runs"
    before = sorted(runs.rglob("*")) if runs.exists() else []
    with pytest.raises(UnirankError, match=message):
        job.run()
    # (a base that names nothing has no run folder name to look for: no folder was made at all)
    assert stages == [] and (sorted(runs.rglob("*")) if runs.exists() else []) == before


def test_reranker_layers_of_a_base_that_keeps_them_elsewhere_are_refused_before_any_work(client, minibeir, tmp_path):
    """Only the layer count was checked up front: a DistilBERT base failed in keep_first_layers, after the
    embedder's training."""
    from transformers import DistilBertConfig

    from unirank.errors import TrainingError

    DistilBertConfig(n_layers=2, dim=32, hidden_dim=64, n_heads=2, vocab_size=100).save_pretrained(tmp_path / "distil")
    request = tiny_request("distil", minibeir, base=str(tmp_path / "distil"),
                           reranker=RerankerTrainingConfig(**TINY, layers=1))
    stages: list[str] = []
    with pytest.raises(TrainingError, match=r"is a DistilBertModel, which keeps them elsewhere: leave --reranker-layers"):
        TrainJob(client.settings, client.backend, client.embedder, request, stage=stages.append).run()
    assert stages == []


def test_a_run_folder_keeps_its_name_across_the_reranker_layers_option(tmp_path):
    """Adding --reranker-layers put ``layers: None`` in every request's fingerprint, so a run interrupted
    before the upgrade started again from nothing in a new folder. The value is the fingerprint this
    request had before the option existed (869a79e)."""
    assert TrainRequest(name="x", beir="/tmp").fingerprint() == "ba7bf82553"
    assert TrainRequest(name="x", beir="/tmp", reranker=RerankerTrainingConfig(layers=3)).fingerprint() != "ba7bf82553"


def test_the_same_training_run_twice_at_once_is_refused(client, minibeir, trained):
    """A retry while the first run still ran wrote one run folder's checkpoints from two processes."""
    from unirank.errors import TrainingRunningError

    job = TrainJob(client.settings, client.backend, client.embedder, tiny_request("tiny", minibeir))
    hold = ("import sys; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(job.run_dir.parent / f"{job.run_dir.name}.lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TrainingRunningError, match=r"Another `unirank train` is running this same training in "
                                                       rf"{re.escape(str(job.run_dir))}.*another --name"):
            job.run()
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert job.run().embedder.ref == trained[0].embedder.ref  # once it is done: its result, as any re-run


def test_a_missing_index_is_said_before_the_base_model_loads(client, minibeir):
    """The CLI hands the job a loader: a typo in --index costs no model load, and the error names the
    indexes there are, as a search's does."""
    index = ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, lambda _: None)
    loads: list[int] = []
    stages: list[str] = []
    request = tiny_request("typo", None, index=index + "x")
    job = TrainJob(client.settings, client.backend, lambda: loads.append(1) or client.embedder, request,
                   stage=stages.append)
    with pytest.raises(IndexNotFoundError, match=rf"'{index}x' does not exist\. Available indexes: .*{index}"):
        job.run()
    assert loads == [] and stages == [] and not job.run_dir.exists()


@pytest.mark.parametrize("kind, line, message", [
    ("pairs", '{"query": "how are keys rotated"}', r"bad\.jsonl:2: missing required field\(s\) positive"),
    ("clicks", '{"query": "keys", "shown": "d1"}', r"bad\.jsonl:2: \"shown\" must be a list"),
    ("qrels", "q1\td1\tvery", r"bad\.jsonl:2: expected query-id<TAB>corpus-id<TAB>integer score"),
])
def test_a_malformed_label_file_is_refused_before_any_work(client, minibeir, tmp_path, kind, line, message):
    """Label files are read after the corpus is indexed: a bad line failed only after minutes of indexing."""
    from unirank.errors import UnirankError

    good = {"pairs": '{"query": "keys", "positive": "Rotate keys."}', "clicks": '{"query": "keys", "shown": ["d1"]}',
            "qrels": "q1\td1\t1"}[kind]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{good}\n{line}\n")
    assert_refused_before_any_work(client, tiny_request("refused", minibeir, **{kind: bad}), UnirankError, message)


def assert_refused_before_any_work(client, request: TrainRequest, error: type[Exception], message: str) -> None:
    """Refused with ``error`` before any stage ran and before the run folder was made."""
    stages: list[str] = []
    job = TrainJob(client.settings, client.backend, client.embedder, request, stage=stages.append)
    with pytest.raises(error, match=message):
        job.run()
    assert stages == [] and not job.run_dir.exists()


@pytest.mark.parametrize("kind, text, message", [
    ("clicks", "", r"Click log .*empty\.jsonl holds no result pages"),
    ("clicks", '{"query": "keys", "shown": ["d1", "d2"]}\n', r"empty\.jsonl has 1 result page\(s\) and no click"),
    ("qrels", "", r"--qrels .*empty\.jsonl holds no judgement"),
    ("qrels", "q1\td1\t0\nq2\td2\t0\n", r"empty\.jsonl judges no document relevant"),
    ("qrels", "nope\td1\t1\n", r"None of the query ids of --qrels .* is in the query file .*queries\.jsonl; e\.g\. 'nope'"),
    ("qrels", "q1\tdoc:d1\t1\n", r"judges relevant no document of .*corpus\.jsonl \(e\.g\. 'doc:d1'\): its corpus-ids"),
    ("clicks", '{"query": "keys", "shown": ["x1", "x2#0"], "clicked": ["x2#0"]}\n',
     r"None of the ids in click log .*empty\.jsonl is a document or chunk of .*corpus\.jsonl \(e\.g\. 'x1'\)"),
])
def test_a_label_file_that_gives_no_pair_is_refused_before_any_work(client, minibeir, tmp_path, kind, text, message):
    """An empty click log or qrels, qrels of only 0 grades or of no query or document there is, a log
    without a click and one of another corpus's ids were refused after the model's load and the indexing,
    with a run folder."""
    from unirank.errors import TrainingError

    empty = tmp_path / "empty.jsonl"
    empty.write_text(text)
    assert_refused_before_any_work(client, tiny_request("nothing", minibeir, **{kind: empty}), TrainingError, message)


def test_qrels_for_a_beir_folder_read_its_queries_not_its_own_qrels(client, minibeir, tmp_path):
    """--qrels replaces the folder's qrels, yet reading the folder's queries parsed qrels/test.tsv too: a
    folder whose held-out test.tsv did not parse failed train with that file's error."""
    import shutil

    from unirank.errors import TrainingError

    folder = tmp_path / "beir"
    shutil.copytree(minibeir, folder)
    (folder / "qrels" / "test.tsv").write_text("not\ta qrels row\n")
    labels = tmp_path / "train.tsv"
    labels.write_text("nope\td1\t1\n")
    assert_refused_before_any_work(client, tiny_request("nothing", folder, qrels=labels), TrainingError,
                                   r"None of the query ids of --qrels .* is in the query file .*queries\.jsonl")


@pytest.mark.parametrize("embedder, message", [
    (dict(epochs=0), r"--epochs must be a number above 0"),
    (dict(min_steps=-1), r"--min-steps must be 0 or more"),
    (dict(batch_size=1), r"--batch-size must be at least 2"),
])
def test_training_settings_that_cannot_train_are_refused(minibeir, embedder, message):
    from unirank.errors import TrainingError

    with pytest.raises(TrainingError, match=message):
        TrainRequest(name="x", beir=minibeir, embedder=EmbedderTrainingConfig(**embedder)).validate()


@pytest.mark.parametrize("option", TrainRequest.INPUT_FILES)
def test_a_folder_given_for_an_input_file_is_refused_as_a_folder(minibeir, tmp_path, option):
    """It said "--pairs /tmp: no such file" of a path that exists, and the user looked for a typo."""
    from unirank.errors import TrainingError

    with pytest.raises(TrainingError, match=rf"^--{option} {re.escape(str(tmp_path))} is a folder: give the {option} "
                                            "file\\.$"):
        TrainRequest(name="x", beir=minibeir, **{option: tmp_path}).validate()
    with pytest.raises(TrainingError, match=rf"^--{option} .*nowhere\.jsonl: no such file\.$"):
        TrainRequest(name="x", beir=minibeir, **{option: tmp_path / "nowhere.jsonl"}).validate()


def test_too_little_data_is_refused_saying_what_was_made_of_it(client, tmp_path):
    from unirank.errors import TrainingError

    one = tmp_path / "one-document"
    one.mkdir()
    (one / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "Refunds", "text": "Refunds take five days. They go back to the card used."}\n')
    job = TrainJob(client.settings, client.backend, client.embedder, tiny_request("one", one))
    with pytest.raises(TrainingError, match=r"Only \d+ usable training pairs \(\d+ pseudo-queries made from 1 "
                                            r"passages, \d+ kept .*\); training needs at least 8"):
        job.run()


def test_an_index_too_small_for_hard_negatives_is_refused_before_training(client, tmp_path):
    """Mining skips each query's top 2 documents: in a 2-document index no pair kept a negative, the embedder
    "trained" 0 steps and was kept as done, and the reranker failed in a ValueError traceback."""
    from unirank.errors import TrainingError

    folder = tmp_path / "two-documents"
    folder.mkdir()
    docs = {"d1": "Refunds take five days and go back to the card used.",
            "d2": "Rotate API keys every 90 days, at once if one may have leaked."}
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs.items()))
    questions = ["how long do refunds take", "where does a refund go", "refund timing", "card refund",
                 "how often rotate keys", "leaked key", "key rotation period", "api key age"]
    rows = [{"query": f"{q} ({n})", "positive": docs["d1" if i < 4 else "d2"]}
            for n in range(2) for i, q in enumerate(questions)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stages: list[str] = []
    job = TrainJob(client.settings, client.backend, client.embedder, tiny_request("two", folder, pairs=pairs),
                   stage=stages.append)
    with pytest.raises(TrainingError, match=r"Only 0 of \d+ training pairs .* have a hard negative.*holds 2 "
                                            r"document\(s\): too few documents"):
        job.run()
    assert not (job.run_dir / "embedder").exists()  # refused before training: a re-run cannot reuse a 0-step model


@pytest.fixture(scope="module")
def trained_on_pairs(client, minibeir, tmp_path_factory):
    """A run on a TSV of (query, passage) rows, as the README shows: its request, result and row count."""
    from data.make_minibeir import DOCS

    index = ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, lambda _: None)
    passages = {c.doc_id: c.text for batch in client.backend.iter_chunks(index) for c in batch if c.ordinal == 0}
    rows = [f"{title.lower()}\t{passages[doc]}" for doc, (title, _) in DOCS.items() if doc in passages]
    rows += [f"what does the policy on {title.lower()} say\t{passages[doc]}" for doc, (title, _) in DOCS.items()
             if doc in passages]
    pairs = tmp_path_factory.mktemp("pairs") / "pairs.tsv"
    pairs.write_text("query\tpositive\n" + "\n".join(rows) + "\n", encoding="utf-8")
    request = TrainRequest(name="from-pairs", index=index, pairs=pairs, embedder=EmbedderTrainingConfig(**TINY),
                           reranker=RerankerTrainingConfig(**TINY))
    return request, TrainJob(client.settings, client.backend, client.embedder, request).run(), len(rows)


def test_a_file_of_pairs_trains_and_its_validation_measures_something(trained_on_pairs):
    """A TSV of (query, passage) rows, as the README shows, always stopped at "Only N usable training pairs":
    with no ids every row fell in one validation group. With ids, validation looked for document ""."""
    _, result, rows = trained_on_pairs
    assert result.stats["labelled_pairs"] == rows
    assert result.metrics["embedder"]["ndcg@10"] > 0.3  # the passages are findable: it was 0.0


def test_a_rerun_after_its_versions_were_deleted_registers_them_again_and_says_so(client, trained_on_pairs):
    """It registered from-pairs-embed@2 and from-pairs-rerank@2 (from final/, the checkpoints gone) and said
    "This run had registered" them, as if nothing new was registered: the run's markers alone were read."""
    request, first, _ = trained_on_pairs
    registry = ModelRegistry(client.settings.models_dir)
    for version in (first.embedder, first.reranker):
        registry.delete(version.ref)
    registry.close()
    again = TrainJob(client.settings, client.backend, client.embedder, request).run()
    assert (again.embedder.ref, again.reranker.ref) == ("from-pairs-embed@2", "from-pairs-rerank@2")
    assert not again.registered_before
    assert again.embedder.record["trained_with"] == "from-pairs-rerank@2"

    # The reranker alone deleted: the embedder is reused, and said to be, not "Registered" with the new one.
    from unirank.cli.training import registered_line

    registry = ModelRegistry(client.settings.models_dir)
    registry.delete(again.reranker.ref)
    registry.close()
    third = TrainJob(client.settings, client.backend, client.embedder, request).run()
    assert (third.embedder.ref, third.reranker.ref) == ("from-pairs-embed@2", "from-pairs-rerank@3")
    assert (third.embedder_registered_before, third.reranker_registered_before, third.registered_before) == (
        True, False, False)
    assert registered_line(third).startswith("Registered [bold]from-pairs-rerank@3[/bold]; [bold]from-pairs-embed@2"
                                             "[/bold] (registered by this run before) is reused (run folder ")
    assert registered_line(again).startswith("Registered [bold]from-pairs-embed@2[/bold] and [bold]"
                                             "from-pairs-rerank@2[/bold] (run folder ")


def test_a_rerun_after_the_index_or_the_base_changed_trains_again(client, minibeir, tmp_path):
    """The run folder was keyed by the request alone: after an ingest, or a promotion of the base's alias,
    the same command reused the old run and registered its models as if trained on the new data."""
    from conftest import register_base_copy
    from unirank.search.types import IndexedSource, SourceState

    index = ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, lambda _: None)
    register_base_copy(client.settings, "start")
    registry = ModelRegistry(client.settings.models_dir)
    registry.promote("start@1", force=True)

    def run_dir(**extra) -> Path:
        request = TrainRequest(name="keyed", index=index, base="start@prod", **extra)
        return TrainJob(client.settings, client.backend, client.embedder, request).run_dir

    first = run_dir()
    assert run_dir() == first  # the same command on the same inputs resumes
    assert TrainJob(client.settings, client.backend, client.embedder,
                    TrainRequest(name="keyed", index=index, base="start@prod")).base_ref == "start@1"
    register_base_copy(client.settings, "start")
    registry.promote("start@2", force=True)
    registry.close()
    after_promotion = run_dir()
    assert after_promotion != first
    chunk = next(iter(client.backend.iter_chunks(index)))[0]
    client.backend.index(index, [IndexedSource(
        state=SourceState(uri="mem://new", content_hash="h", size=1), vectors=client.embedder.embed_documents(["x"]),
        chunks=[dataclasses.replace(chunk, id="mem://new#0", doc_id="new", source_uri="mem://new", text="x")])])
    client.backend.flush(index)
    try:
        assert run_dir() not in (first, after_promotion)
    finally:
        client.backend.delete(index, ["mem://new"])
        client.backend.flush(index)


@pytest.mark.parametrize("change, message", [
    (dict(name="base"), r"--name base: `base` stands for the bundled model"),
    (dict(name="None"), r"--name None: `None` stands for the absence of a model"),
    (dict(feedback=Path("chat.sqlite")), r"--feedback adds the votes and clicks of chats over --index NAME"),
])
def test_requests_that_would_train_the_wrong_thing_are_refused(minibeir, change, message):
    """`--name base` registered base-embed, which `eval --models base` never reaches; `--feedback` with
    `--beir` trained on the feedback of every index's chats."""
    from unirank.errors import TrainingError

    with pytest.raises(TrainingError, match=message):
        TrainRequest(**{"name": "x", "beir": minibeir, **change}).validate()


def test_a_file_given_as_the_beir_folder_is_said_to_be_a_file(minibeir, tmp_path, monkeypatch):
    """`--beir DIR/corpus.jsonl` was said to "not exist" (eval), or to lack corpus.jsonl after the model's
    load (train)."""
    from unirank.errors import TrainingError

    corpus = minibeir / "corpus.jsonl"
    said = rf"--beir {re.escape(str(corpus))} is a file, not a BEIR folder: .*\({re.escape(str(minibeir))}, if this"
    with pytest.raises(TrainingError, match=said):
        TrainRequest(name="x", beir=corpus).validate()
    with pytest.raises(TrainingError, match=r"--beir .*nowhere: no such folder"):
        TrainRequest(name="x", beir=tmp_path / "nowhere").validate()
    result = _eval_command(monkeypatch, tmp_path / "data", "--beir", str(corpus))
    shown = " ".join(result.stderr.split())  # eval's words are load_beir's
    assert result.exit_code == 2 and f"{corpus} is a file, not a BEIR folder" in shown and str(minibeir) in shown, shown


def test_qrels_for_a_beir_folder_without_queries_ask_for_the_query_texts(tmp_path):
    """It said "Query file DIR/queries.jsonl does not exist: give the file's path", a path the user never gave,
    and not --queries."""
    from unirank.errors import TrainingError

    folder = tmp_path / "nobeir"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "Rotate keys every ninety days."}\n')
    qrels, queries = tmp_path / "q.tsv", tmp_path / "queries.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    queries.write_text("q1\thow often are keys rotated\n")
    with pytest.raises(TrainingError, match=rf"--beir {re.escape(str(folder))} has no queries\.jsonl: give the "
                                            r"query texts of --qrels with --queries FILE\."):
        TrainRequest(name="x", beir=folder, qrels=qrels).validate()
    TrainRequest(name="x", beir=folder, qrels=qrels, queries=queries).validate()  # given: taken


def test_train_says_to_promote_both_models(minibeir, tmp_path, monkeypatch):
    """The hint promoted the embedder alone: `eval --models NAME@prod` then failed, NAME-rerank@prod unset."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from unirank.cli.main import app
    from unirank.training.job import TrainResult

    def trained(job):
        version = lambda ref: SimpleNamespace(ref=ref)  # noqa: E731
        return TrainResult(run_dir=tmp_path / "run", embedder=version("hint-embed@1"),
                           reranker=version("hint-rerank@1"), stats={},
                           metrics={"embedder": {"ndcg@10": 0.5}, "reranker": {"ndcg@10": 0.6}})

    monkeypatch.setattr(TrainJob, "run", trained)
    clear_unirank_settings(monkeypatch)
    monkeypatch.setenv("UNIRANK_CONFIG", os.devnull)
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["train", "--beir", str(minibeir), "--name", "hint"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    hint = result.stdout.split("Next:")[1]
    assert "unirank models promote hint-embed@1 --alias prod" in hint
    assert "unirank models promote hint-rerank@1 --alias prod" in hint


@pytest.mark.parametrize("change, message", [
    (dict(embedder=EmbedderTrainingConfig(epochs=float("nan"))), r"--epochs must be a number above 0, got nan"),
    (dict(embedder=EmbedderTrainingConfig(epochs=float("inf"))), r"--epochs must be a number above 0, got inf"),
    (dict(reranker=RerankerTrainingConfig(epochs=float("nan"))), r"--epochs must be a number above 0, got nan"),
    (dict(seed=-1), r"--seed must be 0 to 4294967295, got -1"),
    (dict(seed=2**32), r"--seed must be 0 to 4294967295"),
    (dict(reranker=RerankerTrainingConfig(seed=-5)), r"--seed must be 0 to"),
    (dict(embedder=EmbedderTrainingConfig(learning_rate=float("nan"))), r"embedder's learning rate must be a number"),
    (dict(reranker=RerankerTrainingConfig(head_learning_rate=float("inf"))), r"head learning rate must be a number"),
    (dict(reranker=RerankerTrainingConfig(warmup_ratio=float("nan"))), r"reranker's warmup ratio must be 0 to 1"),
    (dict(min_dwell_s=float("nan")), r"--min-dwell must be 0 or more seconds, got nan"),
    (dict(min_dwell_s=float("inf")), r"--min-dwell must be 0 or more seconds, got inf"),
    (dict(reranker=RerankerTrainingConfig(layers=0)), r"--reranker-layers must be 1 or more, got 0"),
])
def test_numbers_that_cannot_train_are_refused_before_any_work(minibeir, change, message):
    """`--epochs nan` / `inf` and `--seed -1` failed with a traceback in the trainer, after mining."""
    from unirank.errors import TrainingError

    with pytest.raises(TrainingError, match=message):
        TrainRequest(**{"name": "x", "beir": minibeir, **change}).validate()


@pytest.mark.parametrize("change, message", [
    (dict(queries="queries.tsv"), r"--queries gives the query texts of --qrels: add --qrels"),
    (dict(min_dwell_s=10.0), r"--min-dwell applies to the clicks of a click log: add --clicks"),
    (dict(pseudo=False, pseudo_kinds=("crop",)), r"--pseudo-kinds chooses the pseudo-queries that --no-pseudo"),
    (dict(pseudo=False), r"--no-pseudo leaves nothing to train on without labels: add --pairs"),
    (dict(pairs="pairs.tsv", pseudo_kinds=("crop",)), r"--pseudo-kinds chooses pseudo-queries, which a run with "
                                                      r"labels .* makes only with --pseudo: add --pseudo"),
    (dict(pairs="pairs.tsv", pseudo_kinds=("lead", "llm")), r"makes only with --pseudo"),  # not: "set chat.llm_..."
    (dict(embedder=EmbedderTrainingConfig(center_on_corpus=False, whitening_strength=0.1)),
     r"--whiten sets the whitening done with centring, which --no-center"),
])
def test_an_option_without_its_companion_is_refused(client, minibeir, tmp_path, change, message):
    """`--queries` without `--qrels` and `--min-dwell` without `--clicks` were ignored (exit 0), yet changed the
    run's fingerprint; so was `--pseudo-kinds` with labels and no `--pseudo`, yet `llm` in it was refused for want
    of an endpoint the run would never ask. `--no-pseudo` without labels was refused after indexing and mining,
    as too little data ("give more documents"), its run folder left behind."""
    from unirank.errors import TrainingError

    for option in ("queries", "pairs"):
        if option in change:
            (tmp_path / change[option]).write_text("q1\tkeys\n")
            change = {**change, option: tmp_path / change[option]}
    with pytest.raises(TrainingError, match=message):
        TrainJob(client.settings, client.backend, client.embedder, TrainRequest(**{"name": "x", "beir": minibeir,
                                                                                    **change}))
    if "pairs" in change:  # with --pseudo, the labelled run makes those kinds of pseudo-queries too
        TrainRequest(**{"name": "x", "beir": minibeir, **change, "pseudo": True}).validate()


@pytest.mark.parametrize("args, said", [
    (["--epochs", "nan"], "--epochs must be a number above 0, got nan"),
    (["--epochs", "inf"], "--epochs must be a number above 0, got inf"),
    (["--seed", "-1"], "--seed must be 0 to 4294967295, got -1"),
    (["--min-dwell", "5"], "--min-dwell applies to the clicks"),
    (["--whiten", "nan"], "whitening strength of nan"),
    (["--no-pseudo"], "--no-pseudo leaves nothing to train on without labels"),
])
def test_the_cli_refuses_them_with_exit_2_and_no_run_folder(minibeir, tmp_path, monkeypatch, args, said):
    from typer.testing import CliRunner

    from unirank.cli.main import app

    monkeypatch.setattr(TrainJob, "run", lambda job: pytest.fail("the job ran"))
    clear_unirank_settings(monkeypatch)
    monkeypatch.setenv("UNIRANK_CONFIG", os.devnull)
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["train", "--beir", str(minibeir), "--name", "n", *args], env={"COLUMNS": "250"})
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.stderr.split()) and "error" in result.stderr.lower()
    assert not (tmp_path / "data" / "runs").exists()
