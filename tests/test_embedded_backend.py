"""The embedded backend against the conformance suite, plus its crash-repair behaviour."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conformance.backend_suite import MODEL, BackendConformance, source, unit
from unirank.search.types import ModelSignature
from unirank.search.embedded.backend import EmbeddedBackend


@pytest.fixture()
def backend(tmp_path):
    b = EmbeddedBackend(tmp_path / "indexes")
    yield b
    b.close()


class TestEmbeddedConformance(BackendConformance):
    pass


def test_a_second_process_view_sees_committed_writes(tmp_path):
    writer = EmbeddedBackend(tmp_path / "ix")
    reader = EmbeddedBackend(tmp_path / "ix")
    writer.create_index("docs", MODEL)
    assert reader.info("docs").chunk_count == 0
    writer.index("docs", [source("mem://a", ["alpha beta"], [unit(1, 0)])])
    writer.flush("docs")
    assert [h.chunk.id for h in reader.knn("docs", unit(1, 0), 1)] == ["mem://a#0"]
    assert [h.chunk.id for h in reader.bm25("docs", "alpha", 1)] == ["mem://a#0"]


def test_stale_derived_indexes_are_rebuilt_from_the_store(tmp_path):
    """As after a crash between the SQLite commit and the vector-index save."""
    b = EmbeddedBackend(tmp_path / "ix")
    b.create_index("docs", MODEL)
    b.index("docs", [source("mem://a", ["alpha"], [unit(1, 0)]), source("mem://b", ["beta"], [unit(0, 1)])])
    # No flush: the vector file on disk is behind. Then we also lose the full-text stamp.
    derived = tmp_path / "ix" / "docs" / "v1" / "derived.json"
    state = json.loads(derived.read_text())
    assert state["vectors"] < state["fulltext"]
    derived.write_text(json.dumps({"fulltext": -1, "vectors": -1}))
    b.close()

    reopened = EmbeddedBackend(tmp_path / "ix")
    assert [h.chunk.id for h in reopened.knn("docs", unit(0, 1), 1)] == ["mem://b#0"]
    assert [h.chunk.id for h in reopened.bm25("docs", "alpha", 5)] == ["mem://a#0"]
    repaired = json.loads(derived.read_text())
    assert repaired["vectors"] == repaired["fulltext"] == reopened.info("docs").details["generation"]


def test_a_full_text_index_holding_deleted_chunks_is_rebuilt_on_open(tmp_path):
    """Indexes written before deletes reached tantivy kept every replaced chunk there: a better-matching
    old text took BM25's places and was then dropped, so a search could come back empty."""
    from unirank.search.embedded.fulltext import FullTextIndex
    from unirank.search.types import Chunk

    b = EmbeddedBackend(tmp_path / "ix")
    b.create_index("docs", MODEL)
    b.index("docs", [source("mem://a", ["Wombats are marsupials."], [unit(1, 0)])])
    b.flush("docs")
    b.close()
    fulltext = FullTextIndex(tmp_path / "ix" / "docs" / "v1" / "fulltext")  # what the old deletes left
    old = Chunk(id="mem://a#0", doc_id="mem://a", source_uri="mem://a", ordinal=0, title="",
                text="Wombats wombats wombats dig burrows.")
    fulltext.apply([], [(999, old, [])])
    fulltext.commit()

    reopened = EmbeddedBackend(tmp_path / "ix")
    assert [h.chunk.text for h in reopened.bm25("docs", "wombats", 1)] == ["Wombats are marsupials."]
    reopened.close()


def test_bm25_finds_a_cjk_word_inside_a_run_of_text(backend):
    """Chinese and Japanese are written without spaces: a whole run between punctuation was one token."""
    backend.create_index("docs", MODEL)
    backend.index("docs", [source("mem://ja", ["日本語のドキュメントです。バックアップは毎日行われます。東京リージョン。"],
                                  [unit(1, 0)]), source("mem://en", ["Backups run daily in Tokyo."], [unit(0, 1)])])
    for query in ["バックアップ", "東京", "毎日のバックアップ"]:
        assert [h.chunk.id for h in backend.bm25("docs", query, 5)] == ["mem://ja#0"], query
    assert [h.chunk.id for h in backend.bm25("docs", "backups", 5)] == ["mem://en#0"]


def test_a_full_text_index_from_an_older_analyzer_is_re_tokenized_on_open(tmp_path, monkeypatch):
    import tantivy

    from unirank.search.embedded import fulltext

    def before_cjk_words() -> tantivy.TextAnalyzer:  # version 1: tantivy's simple tokenizer
        return tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.lowercase()).build()

    with monkeypatch.context() as patched:
        patched.setattr(fulltext, "english_analyzer", before_cjk_words)
        old = EmbeddedBackend(tmp_path / "ix")
        old.create_index("docs", MODEL)
        old.index("docs", [source("mem://ja", ["バックアップは毎日行われます。東京リージョン。"], [unit(1, 0)])])
        old.flush("docs")
        assert old.bm25("docs", "東京", 5) == []
        old.close()
    derived = tmp_path / "ix" / "docs" / "v1" / "derived.json"
    derived.write_text(json.dumps({k: v for k, v in json.loads(derived.read_text()).items() if k != "analyzer"}))

    reopened = EmbeddedBackend(tmp_path / "ix")
    assert [h.chunk.id for h in reopened.bm25("docs", "東京", 5)] == ["mem://ja#0"]
    assert json.loads(derived.read_text())["analyzer"] == fulltext.ANALYZER_VERSION
    reopened.close()


def test_filter_terms_derived_by_an_older_version_are_derived_again_on_open(tmp_path, monkeypatch):
    """Filter terms are stored twice (the store's table for kNN, the full-text index for BM25): an index
    ingested before whole numbers were stored both ways must match ``version=2`` in both, not in one."""
    import sqlite3

    from unirank.search.embedded import backend as backend_module
    from unirank.search.embedded import store

    def before_number_forms(chunk):  # version 1: str() of each value, spaces kept
        return [f"{k}={v}" for k, v in {**chunk.metadata, "doc_id": chunk.doc_id,
                                          "source_uri": chunk.source_uri}.items()]

    with monkeypatch.context() as patched:
        patched.setattr(store, "filter_terms", before_number_forms)
        patched.setattr(backend_module, "filter_terms", before_number_forms)
        old = EmbeddedBackend(tmp_path / "ix")
        old.create_index("docs", MODEL)
        old.index("docs", [source("mem://v2", ["Release notes."], [unit(1, 0)], version=2.0)])
        old.flush("docs")
        assert old.bm25("docs", "release", 5, {"version": "2"}) == []
        old.close()
    with sqlite3.connect(tmp_path / "ix" / "docs" / "v1" / "chunks.sqlite") as db:  # as version 1 left it
        db.execute("DELETE FROM meta WHERE key = 'filter_terms'")
    db.close()

    reopened = EmbeddedBackend(tmp_path / "ix")
    assert [h.chunk.id for h in reopened.bm25("docs", "release", 5, {"version": "2"})] == ["mem://v2#0"]
    assert [h.chunk.id for h in reopened.knn("docs", unit(1, 0), 5, {"version": "2"})] == ["mem://v2#0"]
    assert [h.chunk.id for h in reopened.knn("docs", unit(1, 0), 5, {"version": "2.0"})] == ["mem://v2#0"]
    reopened.close()
    with sqlite3.connect(tmp_path / "ix" / "docs" / "v1" / "chunks.sqlite") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'filter_terms'").fetchone() == (
            store.FILTER_TERMS_VERSION,)
    db.close()


def test_filtered_knn_is_exact_on_small_filter_sets(tmp_path):
    b = EmbeddedBackend(tmp_path / "ix")
    b.create_index("docs", MODEL)
    rng = np.random.default_rng(0)
    sources = []
    for i in range(60):
        v = rng.normal(size=8).astype(np.float32)
        sources.append(source(f"mem://{i}", [f"doc {i}"], [v / np.linalg.norm(v)], parity=str(i % 2)))
    b.index("docs", sources)
    q = unit(1, 1, 1)
    hits = b.knn("docs", q, 5, {"parity": "1"})
    assert len(hits) == 5 and all(h.chunk.metadata["parity"] == "1" for h in hits)
    odd = [s for s in sources if s.chunks[0].metadata["parity"] == "1"]
    exact = sorted(odd, key=lambda s: -float(s.vectors[0] @ q))[:5]
    assert [h.chunk.source_uri for h in hits] == [s.state.uri for s in exact]


def test_invalid_index_names_are_refused(tmp_path):
    from unirank.errors import InvalidQueryError

    b = EmbeddedBackend(tmp_path / "ix")
    with pytest.raises(InvalidQueryError):
        b.create_index("../escape", MODEL)


def test_the_default_vector_index_builds_the_same_graph_every_time(tmp_path):
    """With several build threads usearch's HNSW graph depends on their timing: two builds of these
    2,000 vectors disagreed on the top 20 of ~90 of 100 queries (at a small ef_search, so the graph
    shows). Mining and evaluation need the same neighbours from the same documents."""
    from unirank.search.embedded.vectors import VectorIndex
    from unirank.search.factory import make_backend
    from unirank.settings import Settings

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((100, 384)).astype(np.float32)
    default = make_backend(Settings(data_dir=tmp_path))  # what users get
    build_threads = default.build_threads
    default.close()

    def neighbours(run: int) -> list[list[tuple[int, float]]]:
        index = VectorIndex(tmp_path / f"v{run}.usearch", 384, ef_search=16, build_threads=build_threads)
        index.apply([], list(range(len(vectors))), vectors)
        return [index.search(q, 20) for q in queries]

    first = neighbours(0)
    assert all(neighbours(run) == first for run in (1, 2))


class _Constant:
    """An embedder of another signature whose vectors are all alike: the test reads texts, not ranks."""

    signature = ModelSignature(name="other", version="2", dims=MODEL.dims)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return np.stack([unit(1, 1)] * len(texts))


@pytest.fixture()
def two_sources(backend):
    """``docs`` with mem://a and mem://b, and an embedder of another model to rebuild it with."""
    backend.create_index("docs", MODEL)
    backend.index("docs", [source("mem://a", ["alpha"], [unit(1, 0)]), source("mem://b", ["beta"], [unit(0, 1)])])
    backend.flush("docs")
    return _Constant()


def test_writes_made_while_an_index_is_rebuilt_reach_the_new_version(backend, two_sources):
    """An ingest run during `index rebuild` reported its chunks written, and they were gone after the switch;
    a source removed meanwhile came back."""
    from unirank.search.rebuild import reembedded_sources

    embedder = two_sources

    def read_while_others_write():
        batches = reembedded_sources(backend, "docs", embedder, batch_chunks=1)
        yield next(batches)  # mem://a, as it was
        backend.index("docs", [source("mem://c", ["gamma"], [unit(1, 1)])])  # a new document
        backend.index("docs", [source("mem://a", ["alpha, edited"], [unit(1, 0)])])  # one ingested again
        backend.delete("docs", ["mem://b"])  # `unirank index remove`
        backend.flush("docs")
        yield from batches

    caught: list[list[str]] = []

    def catch_up(uris):
        caught.append(sorted(uris))
        return reembedded_sources(backend, "docs", embedder, sources=uris)

    info = backend.rebuild("docs", read_while_others_write(), embedder.signature, catch_up)
    assert info.model == embedder.signature and info.source_count == 2
    assert {c.source_uri: c.text for batch in backend.iter_chunks("docs") for c in batch} == {
        "mem://a": "alpha, edited", "mem://c": "gamma"}
    assert caught == [["mem://a", "mem://c"]]  # read before the writes ended, so read again under the lock
    assert [h.chunk.id for h in backend.bm25("docs", "beta", 5)] == []  # the removed one stays removed
    assert [h.chunk.text for h in backend.bm25("docs", "edited", 5)] == ["alpha, edited"]


def test_an_index_deleted_while_it_is_rebuilt_says_so(backend, two_sources):
    """`index delete` during a rebuild ended the rebuild with "ValueError: Failed to acquire Lockfile"."""
    from unirank.errors import IndexNotFoundError
    from unirank.search.rebuild import reembedded_sources

    embedder = two_sources

    def read_then_deleted():
        batches = reembedded_sources(backend, "docs", embedder, batch_chunks=1)
        yield next(batches)
        backend.delete_index("docs")
        yield from batches

    with pytest.raises(IndexNotFoundError, match="'docs' does not exist"):
        backend.rebuild("docs", read_then_deleted(), embedder.signature,
                        lambda uris: reembedded_sources(backend, "docs", embedder, sources=uris))
    assert not backend.exists("docs") and not (backend.root / "docs").exists()


def test_reading_every_chunk_outlives_a_close_but_not_a_new_version(backend, two_sources):
    """The walk `train` and `index rebuild` make read a store that `close()` or a version switch had
    closed meanwhile: "Cannot operate on a closed database"."""
    from unirank.errors import IndexChangedError
    from unirank.search.rebuild import reembedded_sources

    pages = backend.iter_chunks("docs", batch_size=1)
    assert [c.source_uri for c in next(pages)] == ["mem://a"]
    backend.close()
    assert [c.source_uri for c in next(pages)] == ["mem://b"]
    assert next(pages, None) is None

    pages = backend.iter_chunks("docs", batch_size=1)
    next(pages)
    embedder = two_sources
    backend.rebuild("docs", reembedded_sources(backend, "docs", embedder), embedder.signature,
                    lambda uris: reembedded_sources(backend, "docs", embedder, sources=uris))
    with pytest.raises(IndexChangedError, match="'docs' was switched to a new version"):
        next(pages)  # keys of the old version would skip or repeat chunks of the new one
    assert len([c for page in backend.iter_chunks("docs", batch_size=1) for c in page]) == 2


def test_hundreds_of_identical_chunks_do_not_hide_the_others(tmp_path):
    """400 folders holding the same licence beside 20 notes: the copies filled each other's HNSW
    neighbour lists and half the notes could not be found even by their own vector."""
    rng = np.random.default_rng(1)
    dims = 384
    licence = rng.standard_normal(dims).astype(np.float32)
    notes = rng.standard_normal((20, dims)).astype(np.float32)
    notes /= np.linalg.norm(notes, axis=1, keepdims=True)
    model = ModelSignature(name="m", version="1", dims=dims)
    writer = EmbeddedBackend(tmp_path / "ix")
    writer.create_index("docs", model)
    copies = [source(f"mem://pkg{i}/LICENSE", ["the licence"], [licence / np.linalg.norm(licence)]) for i in range(400)]
    writer.index("docs", copies[:200])
    writer.index("docs", [source(f"mem://note{i}", [f"note {i}"], [notes[i]]) for i in range(20)])
    writer.index("docs", copies[200:])  # copies of a vector already in the graph, in a later batch
    writer.flush("docs")

    reader = EmbeddedBackend(tmp_path / "ix")  # what another process reads back from disk
    assert reader.info("docs").chunk_count == 420
    for i in range(20):
        assert reader.knn("docs", notes[i], 10)[0].chunk.source_uri == f"mem://note{i}"
    licence_hits = reader.knn("docs", licence, 50)
    assert len(licence_hits) == 50 and all("LICENSE" in h.chunk.source_uri for h in licence_hits)
    assert licence_hits[0].score == pytest.approx(1.0, abs=1e-4)

    # Deleting the copy that stands in the graph for the others keeps the rest findable.
    writer.delete("docs", [f"mem://pkg{i}/LICENSE" for i in range(399)])
    writer.flush("docs")
    assert [h.chunk.source_uri for h in writer.knn("docs", licence, 3)][0] == "mem://pkg399/LICENSE"
    assert writer.info("docs").chunk_count == 21
    reopened = EmbeddedBackend(tmp_path / "ix")
    assert len(reopened.knn("docs", licence, 30)) == 21


def test_two_processes_ingesting_into_one_index_at_once_keep_each_others_vectors(tmp_path):
    """Each writer kept its vectors in memory and saved them at flush: the last flush dropped the other's
    from kNN (half the documents of two parallel ingests were not found by their own vector), and a
    reader that had the index open never noticed."""
    first, second, reader = (EmbeddedBackend(tmp_path / "ix") for _ in range(3))
    first.create_index("docs", MODEL)
    reader.info("docs")  # open before the writes, as a server would be
    directions = {f"mem://{name}{i}": unit(*np.eye(8)[(i + offset) % 8] + 0.01 * i)
                  for name, offset in (("a", 0), ("b", 4)) for i in range(4)}
    for i in range(4):  # interleaved batches, each writer flushing only at its end
        first.index("docs", [source(f"mem://a{i}", [f"alpha {i}"], [directions[f"mem://a{i}"]])])
        second.index("docs", [source(f"mem://b{i}", [f"beta {i}"], [directions[f"mem://b{i}"]])])
    first.flush("docs")
    second.flush("docs")
    for backend in (reader, EmbeddedBackend(tmp_path / "ix")):
        assert backend.info("docs").chunk_count == 8
        for uri, vector in directions.items():
            assert backend.knn("docs", vector, 1)[0].chunk.doc_id == uri


def test_an_index_deleted_and_made_again_elsewhere_is_opened_again(tmp_path):
    """A client with the index open kept its handle on the deleted files: it searched deleted documents,
    and its ingests reported success while going to the deleted copy."""
    other, mine = EmbeddedBackend(tmp_path / "ix"), EmbeddedBackend(tmp_path / "ix")
    other.create_index("docs", MODEL)
    other.index("docs", [source("mem://old", ["old text"], [unit(1, 0)])])
    other.flush("docs")
    assert [h.chunk.doc_id for h in mine.bm25("docs", "text", 5)] == ["mem://old"]
    other.delete_index("docs")
    other.create_index("docs", MODEL)
    other.index("docs", [source("mem://new", ["new text"], [unit(0, 1)])])
    other.flush("docs")
    assert [h.chunk.doc_id for h in mine.bm25("docs", "text", 5)] == ["mem://new"]
    mine.index("docs", [source("mem://mine", ["my text"], [unit(1, 1)])])
    mine.flush("docs")
    assert {h.chunk.doc_id for h in EmbeddedBackend(tmp_path / "ix").bm25("docs", "text", 5)} == {
        "mem://new", "mem://mine"}


def test_closing_while_other_threads_search_neither_crashes_nor_fails_them(tmp_path):
    """close() closed the SQLite store under a search in another thread: a raw sqlite3.ProgrammingError,
    and one run in three a segfault. Run in a child process, so a crash fails this test alone."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys, threading, time
        import numpy as np
        sys.path.insert(0, {str(tmp_path.parent)!r})
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from conformance.backend_suite import MODEL, source, unit
        from unirank.search.embedded.backend import EmbeddedBackend

        backend = EmbeddedBackend({str(tmp_path / "ix")!r})
        backend.create_index("docs", MODEL)
        backend.index("docs", [source(f"mem://{{i}}", [f"word{{i}} text"] * 20, [unit(1, i % 3)] * 20)
                               for i in range(30)])
        backend.flush("docs")
        failures, stop = [], threading.Event()

        def search():
            while not stop.is_set():
                try:
                    assert backend.hybrid("docs", "text", unit(1, 1), 10)
                    assert backend.bm25("docs", "word3", 5)
                except Exception as exc:
                    failures.append(repr(exc))

        threads = [threading.Thread(target=search) for _ in range(2)]
        for t in threads:
            t.start()
        for _ in range(40):
            time.sleep(0.02)
            backend.close()
        stop.set()
        for t in threads:
            t.join()
        print("failures:", failures[:3], len(failures))
        sys.exit(1 if failures else 0)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]


def _rebuild(backend: EmbeddedBackend, embedder, sources=None):
    from unirank.search.rebuild import reembedded_sources

    return backend.rebuild("docs", sources if sources is not None else reembedded_sources(backend, "docs", embedder),
                           embedder.signature,
                           lambda uris: reembedded_sources(backend, "docs", embedder, sources=uris))


def test_a_write_checked_before_a_rebuild_switched_the_model_is_refused_under_the_lock(tmp_path):
    """Both models make 8-dimensional vectors, so the width check let an ingest that began before the
    switch write the old model's vectors into the new version, silently."""
    from unirank.errors import IndexSwitchedError

    writer, rebuilder = EmbeddedBackend(tmp_path / "ix"), EmbeddedBackend(tmp_path / "ix")
    writer.create_index("docs", MODEL)
    writer.index("docs", [source("mem://a", ["alpha"], [unit(1, 0)])], model=MODEL)
    writer.flush("docs")
    assert writer.model("docs") == MODEL  # the writer has the old version open
    other = _Constant()
    _rebuild(rebuilder, other)  # another process switches the index meanwhile
    writer.model = lambda index: MODEL  # as if the switch came just after the check outside the lock
    with pytest.raises(IndexSwitchedError, match=r"'docs' was switched to other@2 .*unit-model@1"):
        writer.index("docs", [source("mem://late", ["late"], [unit(0, 1)])], model=MODEL)
    writer.flush("docs")
    assert {uri for uri in rebuilder.source_states("docs")} == {"mem://a"}
    with rebuilder._reading("docs") as handle:  # every stored vector is the new model's
        stored = handle.store.vectors_by_key(sorted(handle.store.keys()), 8)
    np.testing.assert_allclose(stored, np.stack([unit(1, 1)]), atol=1e-6)


def _derived(root, version="v1") -> dict:
    return json.loads((root / "docs" / version / "derived.json").read_text())


def test_a_reader_does_not_repair_an_index_a_live_writer_is_filling(tmp_path, caplog):
    """Between an ingest's batches its vectors are legitimately behind the store until its flush: every
    search in another process took that for a crash and rebuilt both derived indexes."""
    writer = EmbeddedBackend(tmp_path / "ix")
    writer.create_index("docs", MODEL)
    writer.index("docs", [source("mem://a", ["alpha"], [unit(1, 0)])])
    writer.flush("docs")
    writer.index("docs", [source("mem://b", ["beta"], [unit(0, 1)])])  # mid-run: not flushed
    behind = _derived(tmp_path / "ix")
    assert behind["vectors"] < behind["fulltext"]
    with caplog.at_level("INFO", logger="unirank.search.embedded.backend"):
        reader = EmbeddedBackend(tmp_path / "ix")
        assert [h.chunk.id for h in reader.bm25("docs", "beta", 5)] == ["mem://b#0"]  # what is committed
        # the saved vectors, and the committed ones they lack scored from the store
        assert [h.chunk.id for h in reader.knn("docs", unit(1, 0), 5)] == ["mem://a#0", "mem://b#0"]
    assert "disagree" not in caplog.text and "writer mid-run" in caplog.text
    assert _derived(tmp_path / "ix") == behind  # nothing rebuilt
    writer.flush("docs")
    assert {h.chunk.id for h in reader.knn("docs", unit(0, 1), 5)} == {"mem://a#0", "mem://b#0"}
    reader.close()


def test_a_reader_repairs_an_index_whose_writer_was_killed_mid_run(tmp_path, caplog):
    """The writers' lock is an OS lock: it goes with the killed process, so the next open repairs."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conformance.backend_suite import MODEL, source, unit
        from unirank.search.embedded.backend import EmbeddedBackend

        writer = EmbeddedBackend({str(tmp_path / "ix")!r})
        writer.create_index("docs", MODEL)
        writer.index("docs", [source("mem://a", ["alpha"], [unit(1, 0)])])
        writer.flush("docs")
        writer.index("docs", [source("mem://b", ["beta"], [unit(0, 1)])])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, run.stderr[-2000:]
    assert _derived(tmp_path / "ix")["vectors"] < _derived(tmp_path / "ix")["fulltext"]
    with caplog.at_level("WARNING", logger="unirank.search.embedded.backend"):
        reader = EmbeddedBackend(tmp_path / "ix")
        assert {h.chunk.id for h in reader.knn("docs", unit(0, 1), 5)} == {"mem://a#0", "mem://b#0"}
    assert "disagree" in caplog.text
    repaired = _derived(tmp_path / "ix")
    assert repaired["vectors"] == repaired["fulltext"] == reader.info("docs").details["generation"]
    reader.close()


def test_a_second_rebuild_of_an_index_is_refused_at_once_and_leaves_the_first_alone(tmp_path):
    """Two rebuilds at once picked one new version folder; each one's clean-up deleted the other's, and
    the second died 40 s in with tantivy's raw "ValueError: Failed to acquire Lockfile"."""
    import os

    from unirank.errors import RebuildRunningError

    first, second = EmbeddedBackend(tmp_path / "ix"), EmbeddedBackend(tmp_path / "ix")
    first.create_index("docs", MODEL)
    first.index("docs", [source("mem://a", ["alpha"], [unit(1, 0)]), source("mem://b", ["beta"], [unit(0, 1)])])
    first.flush("docs")
    (tmp_path / "ix" / "docs" / "v7").mkdir()  # what a rebuild killed before its switch left
    other = _Constant()
    refused = []

    def sources_while_another_rebuild_starts():
        from unirank.search.rebuild import reembedded_sources

        batches = reembedded_sources(first, "docs", other, batch_chunks=1)
        yield next(batches)
        with pytest.raises(RebuildRunningError, match=rf"rebuild of 'docs' is already running \(pid {os.getpid()}\)"):
            _rebuild(second, other)
        refused.append(True)
        yield from batches

    info = _rebuild(first, other, sources_while_another_rebuild_starts())
    assert refused and info.model == other.signature and info.chunk_count == 2
    assert sorted(p.name for p in (tmp_path / "ix" / "docs").glob("v*")) == ["v1", "v2"]
    assert _rebuild(second, other).model == other.signature  # the lock went with the first rebuild


def test_a_rebuild_failing_in_a_library_below_says_so_in_words_and_changes_nothing(backend, two_sources):
    from unirank.errors import RebuildFailedError

    def failing():
        raise ValueError("Failed to acquire Lockfile: LockError(IoError { kind: NotFound })")
        yield  # pragma: no cover

    with pytest.raises(RebuildFailedError, match=r"Rebuilding index 'docs' with other@2 failed: ValueError: "
                                                 r"Failed to acquire Lockfile.*The index is unchanged"):
        _rebuild(backend, two_sources, failing())
    assert backend.model("docs") == MODEL and backend.info("docs").chunk_count == 2
    assert [p.name for p in (backend.root / "docs").glob("v*")] == ["v1"]


def test_a_search_opening_an_index_while_this_process_deletes_it_is_not_cut_off(tmp_path, monkeypatch):
    """The delete let go of the index's handle, then removed CURRENT and the files: a search that opened the
    index in between had them removed from under it, a raw tantivy ValueError "Failed to acquire Lockfile
    ... NotFound" from the repair (here sqlite's "unable to open database file"). CURRENT now goes under the
    lock the opening holds, so the search finds the index whole or not at all."""
    import threading
    from pathlib import Path

    from unirank.errors import IndexNotFoundError
    from unirank.search.embedded import backend as module

    b = EmbeddedBackend(tmp_path / "ix")
    b.create_index("docs", MODEL)
    b.index("docs", [source("mem://a", ["alpha"], [unit(1, 0)])])
    b.flush("docs")
    unlinking, unlink_go, opening, open_go = (threading.Event() for _ in range(4))
    real_unlink, real_store = Path.unlink, module.ChunkStore

    def paused_unlink(path: Path, *args, **kwargs) -> None:  # the delete, its handle let go, about to remove CURRENT
        if path.name == "CURRENT" and threading.current_thread().name == "delete":
            unlinking.set()
            unlink_go.wait(10)
        real_unlink(path, *args, **kwargs)

    def paused_store(path, **kwargs):  # a search that has read CURRENT and opens the version it names
        opening.set()
        open_go.wait(10)
        return real_store(path, **kwargs)

    monkeypatch.setattr(Path, "unlink", paused_unlink)
    monkeypatch.setattr(module, "ChunkStore", paused_store)
    outcome: dict[str, object] = {}

    def search() -> None:
        try:
            outcome["search"] = [h.chunk.id for h in b.bm25("docs", "alpha", 1)]
        except IndexNotFoundError:
            outcome["search"] = "not found"
        except Exception as exc:  # noqa: BLE001 - what the race raised
            outcome["search"] = exc

    deleting = threading.Thread(target=b.delete_index, args=("docs",), name="delete")
    deleting.start()
    assert unlinking.wait(10)
    searching = threading.Thread(target=search)
    searching.start()
    opening.wait(0.5)  # the search opens the index while the delete is paused, or waits for the delete
    unlink_go.set()
    deleting.join(10)
    open_go.set()
    searching.join(10)
    assert not deleting.is_alive() and not searching.is_alive()
    assert outcome["search"] == "not found", outcome
    assert not (tmp_path / "ix" / "docs").exists() and not b.exists("docs")
    b.close()


def test_an_index_another_process_deletes_while_it_is_opened_is_not_found(tmp_path, monkeypatch):
    """Its files went from under the opening; said as the missing index it now is, not as the library's error."""
    import shutil

    from unirank.errors import IndexNotFoundError
    from unirank.search.embedded import backend as module

    b = EmbeddedBackend(tmp_path / "ix")
    b.create_index("docs", MODEL)
    b.close()
    real_fulltext = module.FullTextIndex

    def deleted_first(path):  # another process's delete_index, between reading CURRENT and the full text
        shutil.rmtree(tmp_path / "ix" / "docs")
        return real_fulltext(path)

    monkeypatch.setattr(module, "FullTextIndex", deleted_first)
    with pytest.raises(IndexNotFoundError, match="'docs' does not exist"):
        b.info("docs")
    b.close()


def _two_indexes_one_damaged(root, damage) -> EmbeddedBackend:
    """``good`` and ``broken`` (a few hundred chunks each); ``damage(version_dir)`` is done to broken's."""
    writer = EmbeddedBackend(root)
    for name in ("good", "broken"):
        writer.create_index(name, MODEL)
        writer.index(name, [source(f"mem://{i}", [f"passage {i} " * 40], [unit(1, i % 2)]) for i in range(300)])
        writer.flush(name)
    writer.close()
    damage(root / "broken" / "v1")
    return EmbeddedBackend(root)


def _truncate_store(version_dir) -> None:
    store = version_dir / "chunks.sqlite"
    with open(store, "r+b") as f:
        f.truncate(store.stat().st_size // 2)


def _lose_version_folder(version_dir) -> None:
    import shutil
    shutil.rmtree(version_dir)


def _empty_store(version_dir) -> None:
    (version_dir / "chunks.sqlite").write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate_store, _lose_version_folder, _empty_store])
def test_a_damaged_index_is_said_to_be_deleted_and_hides_no_other(tmp_path, damage):
    """A truncated chunks.sqlite ("database disk image is malformed") ended `index list`, and searches of
    every other index, in a raw sqlite3 traceback; the model lookup opened (and repaired) every index."""
    from unirank.errors import IndexCorruptedError
    backend = _two_indexes_one_damaged(tmp_path / "ix", damage)
    assert backend.index_models() == {"good": MODEL}
    assert not backend._handles  # read from the stores' metadata: nothing opened, nothing repaired
    assert [info.name for info in backend.list_indexes()] == ["good"]
    assert list(backend.damaged_indexes()) == ["broken"] and backend.damaged_indexes()["broken"]
    for call in (lambda: backend.info("broken"), lambda: backend.knn("broken", unit(1, 0), 3)):
        with pytest.raises(IndexCorruptedError, match=r"'broken' is damaged .*`unirank index delete broken`"):
            call()
    assert len(backend.knn("good", unit(1, 0), 3)) == 3
    backend.delete_index("broken")
    assert not backend.exists("broken") and not (tmp_path / "ix" / "broken").exists()
    backend.close()


def _make_current_a_folder(current) -> None:
    current.unlink()
    (current / "v1").mkdir(parents=True)


@pytest.mark.parametrize("damage", [lambda current: current.write_text(""),
                                    lambda current: current.write_text("../good/v1"),
                                    lambda current: current.write_bytes(b"v\xff"),
                                    _make_current_a_folder],
                         ids=["empty", "another-index", "not-utf8", "folder"])
def test_an_index_whose_current_file_cannot_be_read_is_deleted(tmp_path, damage):
    """Its damage said to run `unirank index delete`, which failed with that same damage: the delete's write
    lock read CURRENT first, so the folder had to be removed by hand."""
    from unirank.errors import IndexCorruptedError, IndexNotFoundError
    backend = EmbeddedBackend(tmp_path / "ix")
    for name in ("good", "broken"):
        backend.create_index(name, MODEL)
        backend.index(name, [source("mem://a", ["a passage"], [unit(1, 0)])])
        backend.flush(name)
    backend.close()
    damage(tmp_path / "ix" / "broken" / "CURRENT")
    with pytest.raises(IndexCorruptedError, match="'broken' is damaged"):
        backend.info("broken")
    backend.delete_index("broken")
    assert not (tmp_path / "ix" / "broken").exists() and backend.damaged_indexes() == {}
    assert [info.name for info in backend.list_indexes()] == ["good"]  # "../good/v1" took nothing of good's
    assert len(backend.knn("good", unit(1, 0), 3)) == 1
    with pytest.raises(IndexNotFoundError, match="'broken' does not exist"):
        backend.delete_index("broken")
    assert not (tmp_path / "ix" / "broken").exists()  # no lock file's folder made for a missing index
    backend.close()


def _truncate_vectors(version_dir) -> None:
    os.truncate(version_dir / "vectors.usearch", 100)


def _truncate_vector_copies(version_dir) -> None:
    os.truncate(version_dir / "vectors.copies.npy", 10)


def _overwrite_fulltext_meta(version_dir) -> None:
    (version_dir / "fulltext" / "meta.json").write_text("xx\n")


@pytest.mark.parametrize("damage", [_truncate_vectors, _truncate_vector_copies, _overwrite_fulltext_meta])
def test_an_unreadable_derived_file_is_rebuilt_from_the_store(tmp_path, damage, caplog):
    """A truncated vector file or an overwritten full-text meta.json ended `index list` and every search (BM25
    too) in the library's traceback; both are derived from chunks.sqlite, as a missing fulltext/ is."""
    backend = _two_indexes_one_damaged(tmp_path / "ix", damage)
    with caplog.at_level("WARNING", logger="unirank.search.embedded.backend"):
        assert [info.name for info in backend.list_indexes()] == ["broken", "good"]
    assert "index broken: its " in caplog.text and "rebuilding it from the store" in caplog.text
    assert backend.damaged_indexes() == {}
    assert backend.info("broken").chunk_count == 300
    assert len(backend.knn("broken", unit(1, 0), 3)) == 3 and len(backend.bm25("broken", "passage", 3)) == 3
    backend.close()
    reopened = EmbeddedBackend(tmp_path / "ix")  # repaired on disk, not only in memory
    assert len(reopened.knn("broken", unit(1, 0), 300)) == 300 and len(reopened.bm25("broken", "passage", 3)) == 3
    reopened.close()


def test_knn_during_another_process_s_ingest_returns_what_is_committed(tmp_path):
    """Vectors are saved at an ingest's flush: a reader between its batches searched the old vector file,
    whose keys of the edited documents the store had deleted, so kNN dropped them and came back short
    (empty, when every document had been edited)."""
    writer, reader = EmbeddedBackend(tmp_path / "ix"), EmbeddedBackend(tmp_path / "ix")
    writer.create_index("docs", MODEL)
    writer.index("docs", [source("mem://a", ["alpha"], [unit(1, 0)]), source("mem://b", ["beta"], [unit(0, 1)]),
                          source("mem://c", ["gamma"], [unit(1, 1)])])
    writer.flush("docs")
    assert len(reader.knn("docs", unit(0, 1), 3)) == 3
    writer.index("docs", [source("mem://a", ["alpha, edited"], [unit(0, 1)]),
                          source("mem://c", ["gamma, edited"], [unit(1, -1)])])  # not flushed: mid-run
    hits = reader.knn("docs", unit(0, 1), 3)
    assert [h.chunk.text for h in hits][:2] in (["alpha, edited", "beta"], ["beta", "alpha, edited"])
    assert [h.chunk.text for h in hits][2] == "gamma, edited"
    assert [h.chunk.text for h in reader.knn("docs", unit(0, 1), 3, {"doc_id": "mem://a"})] == ["alpha, edited"]

    store = reader._handles["docs"].store
    diffs = []
    keys = store.keys
    store.keys = lambda: diffs.append(1) or keys()
    assert [h.chunk.text for h in reader.knn("docs", unit(1, -1), 1)] == ["gamma, edited"]
    assert diffs == []  # the lag found by the last query, at the same store generation: each query diffed all keys
    writer.index("docs", [source("mem://d", ["delta"], [unit(-1, 0)])])  # another batch: a new generation
    assert [h.chunk.text for h in reader.knn("docs", unit(-1, 0), 1)] == ["delta"] and diffs == [1]
    writer.flush("docs")
    assert [h.chunk.text for h in reader.knn("docs", unit(1, -1), 1)] == ["gamma, edited"]
    writer.close(), reader.close()


def test_a_root_under_a_file_has_no_indexes(tmp_path):
    """A data_dir naming a file: searching it ended in a NotADirectoryError traceback."""
    from unirank.errors import IndexNotFoundError

    (tmp_path / "notes.txt").write_text("not a folder")
    backend = EmbeddedBackend(tmp_path / "notes.txt" / "indexes")
    try:
        with pytest.raises(IndexNotFoundError, match="'docs' does not exist"):
            backend.info("docs")
    finally:
        backend.close()


def test_an_index_another_process_is_ingesting_into_is_not_deleted(tmp_path):
    """delete_index took only the per-batch write lock: between two batches of another process's ingest it
    deleted the index, and the ingest died at its next batch with "does not exist"."""
    import subprocess
    import sys
    import textwrap

    from unirank.errors import IndexLockedError

    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from conformance.backend_suite import MODEL, source, unit
        from unirank.search.embedded.backend import EmbeddedBackend

        backend = EmbeddedBackend({str(tmp_path / "ix")!r})
        backend.create_index("docs", MODEL)
        backend.index("docs", [source("mem://a", ["first batch"], [unit(1, 0)])])
        print("between batches", flush=True)
        sys.stdin.readline()
        backend.index("docs", [source("mem://b", ["second batch"], [unit(0, 1)])])
        backend.flush("docs")
        print("ingested", flush=True)
    """)
    ingest = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert ingest.stdout.readline() == "between batches\n", ingest.stderr.read()
        deleting = EmbeddedBackend(tmp_path / "ix")
        deleting.index("docs", [source("mem://c", ["this process's own, unflushed"], [unit(1, 1)])])
        with pytest.raises(IndexLockedError, match="'docs' is being written by an ingest .*Wait for it to finish"):
            deleting.delete_index("docs")
        assert "docs" in deleting._sessions  # its own unflushed writes are still guarded after the refusal
        out, err = ingest.communicate("go on\n", timeout=60)
    finally:
        ingest.kill()
    assert ingest.returncode == 0 and out == "ingested\n", err
    deleting.flush("docs")
    assert deleting.info("docs").chunk_count == 3
    deleting.delete_index("docs")  # the ingest is over: nothing holds it
    assert not deleting.exists("docs")


def test_this_processs_own_unflushed_writes_do_not_hold_off_its_delete(backend):
    """A run that fails before its flush deletes the index it created (ingest's _stop)."""
    backend.create_index("docs", MODEL)
    backend.index("docs", [source("mem://a", ["unflushed"], [unit(1, 0)])])  # this process's writer session
    backend.delete_index("docs")
    assert not backend.exists("docs")
