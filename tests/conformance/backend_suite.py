"""The contract every SearchBackend must meet. A backend's test module subclasses
:class:`BackendConformance` and provides a ``backend`` fixture (as Haystack's document stores do)."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest

from unirank.errors import DimensionMismatchError, IndexNotFoundError, IndexSwitchedError, InvalidQueryError
from unirank.search.types import Chunk, IndexedSource, ModelSignature, SourceState

DIMS = 8
MODEL = ModelSignature(name="unit-model", version="1", dims=DIMS)


def unit(*components: float) -> np.ndarray:
    v = np.zeros(DIMS, dtype=np.float32)
    v[: len(components)] = components
    return v / np.linalg.norm(v)


def source(uri: str, texts: list[str], vectors: list[np.ndarray], **metadata) -> IndexedSource:
    chunks = [
        Chunk(id=f"{uri}#{i}", doc_id=uri, source_uri=uri, ordinal=i, text=t, title=f"Title of {uri}",
              heading_path=("Guide", f"Part {i}"), page=i + 1, metadata=dict(metadata))
        for i, t in enumerate(texts)
    ]
    state = SourceState(uri=uri, content_hash=uuid.uuid4().hex, size=len("".join(texts)), modified="m",
                        recipe=f"parser=2;size={len(texts)}")
    return IndexedSource(state=state, chunks=chunks, vectors=np.stack(vectors))


class BackendConformance:
    @pytest.fixture()
    def index_name(self) -> str:
        return f"conf-{uuid.uuid4().hex[:8]}"

    @pytest.fixture()
    def filled(self, backend, index_name):
        backend.create_index(index_name, MODEL)
        backend.index(index_name, [
            source("mem://a", ["Rotate API keys every ninety days.", "Rate limits return HTTP 429."],
                   [unit(1, 0), unit(0.9, 0.1)], team="platform"),
            source("mem://b", ["Backups are snapshotted every six hours."], [unit(0, 1)], team="storage"),
            source("mem://c", ["The incident commander coordinates the response."], [unit(0, 0, 1)],
                   team="sre", public=True),
        ])
        backend.flush(index_name)
        return index_name

    def test_create_info_list_delete(self, backend, index_name):
        assert not backend.exists(index_name)
        info = backend.create_index(index_name, MODEL)
        assert info.name == index_name and info.model == MODEL and info.chunk_count == 0
        assert backend.exists(index_name)
        assert backend.model(index_name) == MODEL
        assert index_name in [i.name for i in backend.list_indexes()]
        assert index_name not in backend.damaged_indexes()
        backend.delete_index(index_name)
        assert not backend.exists(index_name)
        with pytest.raises(IndexNotFoundError, match=index_name):
            backend.info(index_name)

    def test_index_models_names_each_index_s_model(self, backend, filled):
        assert backend.index_models()[filled] == MODEL

    def test_filter_keys_are_the_metadata_keys_and_the_two_fields(self, backend, filled):
        assert backend.filter_keys(filled) == {"team", "public", "doc_id", "source_uri"}

    def test_a_copy_names_the_index_it_re_embeds(self, backend, filled):
        assert backend.info(filled).copy_of is None
        copy = f"{filled}--other-1"
        info = backend.create_index(copy, MODEL, copy_of=filled)
        assert info.copy_of == filled and backend.info(copy).to_dict()["copy_of"] == filled
        assert {i.name: i.copy_of for i in backend.list_indexes()}[copy] == filled
        backend.delete_index(copy)

    def test_counts_and_source_states(self, backend, filled):
        info = backend.info(filled)
        assert (info.chunk_count, info.source_count) == (4, 3)
        states = backend.source_states(filled)
        assert set(states) == {"mem://a", "mem://b", "mem://c"}
        assert states["mem://a"].chunk_count == 2
        assert states["mem://a"].recipe == "parser=2;size=2"  # how it was cut: ingest compares it

    def test_a_touched_source_gets_its_new_marker_and_keeps_its_chunks(self, backend, filled):
        before = backend.source_states(filled)["mem://a"]
        touched = dataclasses.replace(before, size=before.size + 1, modified="touched")
        stale = dataclasses.replace(backend.source_states(filled)["mem://b"], content_hash="changed since",
                                    modified="stale")  # its content changed: only a re-ingest may mark it
        backend.update_states(filled, [touched, stale])
        backend.flush(filled)
        after = backend.source_states(filled)
        assert (after["mem://a"].size, after["mem://a"].modified) == (before.size + 1, "touched")
        assert after["mem://b"].modified != "stale"
        assert backend.info(filled).chunk_count == 4
        assert [h.chunk.id for h in backend.bm25(filled, "rotate API keys", 1)] == ["mem://a#0"]

    def test_bm25_finds_the_words(self, backend, filled):
        hits = backend.bm25(filled, "how often are backups snapshotted", 3)
        assert hits[0].chunk.source_uri == "mem://b"
        assert hits[0].scores["bm25"] == hits[0].score > 0

    def test_bm25_stems_and_ignores_query_syntax(self, backend, filled):
        hits = backend.bm25(filled, 'rotating "keys": (AND) OR?', 3)
        assert hits and hits[0].chunk.id == "mem://a#0"

    def test_knn_ranks_by_cosine(self, backend, filled):
        hits = backend.knn(filled, unit(0, 1), 2)
        assert hits[0].chunk.source_uri == "mem://b"
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].score >= hits[1].score

    def test_hybrid_fuses_both_lists(self, backend, filled):
        # Words point at the incident chunk, the vector at the backups chunk: both must appear.
        hits = backend.hybrid(filled, "incident commander", unit(0, 1), 4)
        uris = [h.chunk.source_uri for h in hits]
        assert "mem://c" in uris[:2] and "mem://b" in uris[:2]
        both = next(h for h in hits if h.chunk.source_uri == "mem://c")
        assert "rrf" in both.scores and "bm25" in both.scores

    def test_filters_apply_to_every_mode(self, backend, filled):
        filters = {"team": "platform"}
        assert {h.chunk.source_uri for h in backend.bm25(filled, "every", 10, filters)} == {"mem://a"}
        assert {h.chunk.source_uri for h in backend.knn(filled, unit(0, 1), 10, filters)} == {"mem://a"}
        fused = backend.hybrid(filled, "backups", unit(0, 1), 10, filters)
        assert {h.chunk.source_uri for h in fused} == {"mem://a"}
        assert backend.knn(filled, unit(1, 0), 10, {"public": "true"})[0].chunk.source_uri == "mem://c"
        assert backend.bm25(filled, "backups", 10, {"team": "nobody"}) == []

    def test_a_list_of_values_matches_a_filter_on_any_of_them(self, backend, filled):
        backend.index(filled, [source("mem://d", ["Tagged runbook for backups."], [unit(0, 1)],
                                      tags=["security", "backups"])])
        backend.flush(filled)
        for tag in ("security", "backups"):
            assert [h.chunk.source_uri for h in backend.bm25(filled, "backups", 10, {"tags": tag})] == ["mem://d"]
            assert [h.chunk.source_uri for h in backend.knn(filled, unit(0, 1), 10, {"tags": tag})] == ["mem://d"]
        assert backend.bm25(filled, "backups", 10, {"tags": "security,backups"}) == []
        # mem://b has the same vector: filtered, so the order of a tie is not what is tested
        tagged = backend.knn(filled, unit(0, 1), 1, {"tags": "security"})[0]
        assert tagged.chunk.metadata == {"tags": ["security", "backups"]}

    def test_a_whole_number_matches_either_way_it_is_written_and_spaces_around_metadata_do_not_count(
            self, backend, filled):
        """A filter is trimmed before the lookup, so metadata stored with spaces around it never matched;
        ``version: 2.0`` in front matter did not match ``--filter version=2``; "Zürich" typed (ü) did not
        match "Zürich" saved decomposed (u and a combining diaeresis)."""
        backend.index(filled, [source("mem://v2", ["Release notes for the second version."], [unit(0, 1)],
                                      version=2.0, build=7, rating=4.5, code="2.10", **{" status ": " draft "},
                                      city="Zu\u0308rich", **{"cafe\u0301": "open"})])  # decomposed, as macOS writes
        backend.flush(filled)
        for filters in ({"version": "2"}, {"version": "2.0"}, {"version": 2}, {"build": "7"}, {"build": "7.0"},
                        {"rating": "4.5"}, {"code": "2.10"}, {"status": "draft"}, {"city": "Z\u00fcrich"},
                        {"city": "Zu\u0308rich"}, {"caf\u00e9": "open"}):
            assert [h.chunk.source_uri for h in backend.bm25(filled, "release", 10, filters)] == ["mem://v2"], filters
            assert [h.chunk.source_uri for h in backend.knn(filled, unit(0, 1), 10, filters)] == ["mem://v2"], filters
        for filters in ({"code": "2.1"}, {"version": "2.00"}, {"rating": "4"}):
            assert backend.bm25(filled, "release", 10, filters) == [], filters
        assert "status" in backend.filter_keys(filled)
        from unirank.search.backend import unknown_filter_keys
        assert unknown_filter_keys({"cafe\u0301": "closed"}, backend.filter_keys(filled)) == []  # a known key

    def test_hits_round_trip_chunk_fields(self, backend, filled):
        chunk = backend.knn(filled, unit(0, 0, 1), 1)[0].chunk
        assert chunk.id == "mem://c#0" and chunk.doc_id == "mem://c"
        assert chunk.title == "Title of mem://c"
        assert chunk.heading_path == ("Guide", "Part 0") and chunk.page == 1
        assert chunk.metadata == {"team": "sre", "public": True}

    def test_reindexing_a_source_replaces_its_chunks(self, backend, filled):
        backend.index(filled, [source("mem://a", ["Keys now rotate monthly."], [unit(1, 0)], team="platform")])
        backend.flush(filled)
        assert backend.info(filled).chunk_count == 3
        assert backend.bm25(filled, "ninety", 5) == []
        assert [h.chunk.text for h in backend.knn(filled, unit(1, 0), 1)] == ["Keys now rotate monthly."]
        # The old chunk, a better BM25 match, must be gone, not only hidden: it would take the one place.
        assert [h.chunk.text for h in backend.bm25(filled, "rotate API keys", 1)] == ["Keys now rotate monthly."]

    def test_delete_sources(self, backend, filled):
        removed = backend.delete(filled, ["mem://a"])
        backend.flush(filled)
        assert removed == 2
        assert backend.info(filled).chunk_count == 2
        assert all(h.chunk.source_uri != "mem://a" for h in backend.knn(filled, unit(1, 0), 10))
        assert [h.chunk.source_uri for h in backend.bm25(filled, "rotate keys rate limits backups", 1)] == ["mem://b"]
        assert "mem://a" not in backend.source_states(filled)

    @pytest.mark.parametrize("name", ["", " ", "a b", "x@1", "../up", "a/b", ".hidden", "-flag", "é"])
    def test_names_every_backend_cannot_take_are_refused(self, backend, name):
        with pytest.raises(InvalidQueryError, match="Invalid index name"):
            backend.create_index(name, MODEL)
        assert name not in [i.name for i in backend.list_indexes()]

    @pytest.mark.parametrize("name", ["a\x00b", "x" * 300])
    def test_names_no_index_can_have_are_refused_on_every_call(self, backend, name):
        """A NUL byte or a name longer than a file name can be was an OS error (a 500 over HTTP), not a
        clear refusal, on each call that looked an index up."""
        for call in (backend.exists, backend.info, backend.model, backend.delete_index):
            with pytest.raises(InvalidQueryError, match="Invalid index name"):
                call(name)
        with pytest.raises(InvalidQueryError, match="Invalid index name"):
            backend.create_index(name, MODEL)

    def test_iter_chunks_yields_each_source_whole_and_in_order(self, backend, filled):
        backend.index(filled, [source("mem://a", ["New first.", "New second.", "New third."],
                                      [unit(1, 0), unit(0, 1), unit(0, 0, 1)])])  # rewritten after b and c
        backend.flush(filled)
        order = [(c.source_uri, c.ordinal) for batch in backend.iter_chunks(filled, batch_size=2) for c in batch]
        uris = [uri for uri, _ in order]
        runs = [uri for i, uri in enumerate(uris) if i == 0 or uris[i - 1] != uri]
        assert sorted(runs) == ["mem://a", "mem://b", "mem://c"]  # each source in one run
        assert [o for uri, o in order if uri == "mem://a"] == [0, 1, 2]

    def test_documents_present_names_only_indexed_documents(self, backend, filled):
        asked = ["mem://a", "mem://c", "mem://zzz", "mem://"]
        assert backend.documents_present(filled, asked) == {"mem://a", "mem://c"}
        assert backend.documents_present(filled, []) == set()
        backend.delete(filled, ["mem://a"])
        backend.flush(filled)
        assert backend.documents_present(filled, ["mem://a", "mem://b"]) == {"mem://b"}
        many = [f"mem://missing-{i}" for i in range(2000)] + ["mem://b"]
        assert backend.documents_present(filled, many) == {"mem://b"}

    def test_wrong_dimensions_are_refused_before_writing(self, backend, filled):
        bad = source("mem://d", ["x"], [np.ones(DIMS + 4, dtype=np.float32)])
        with pytest.raises(DimensionMismatchError, match=r"8 dimensions.*12"):
            backend.index(filled, [bad])
        with pytest.raises(DimensionMismatchError):
            backend.knn(filled, np.ones(DIMS + 4, dtype=np.float32), 3)
        assert backend.info(filled).chunk_count == 4

    def test_a_write_for_another_model_of_the_same_size_is_refused_before_writing(self, backend, filled):
        """An ingest checks its model once, at its start; an `index rebuild` may switch the index to a tuned
        model of the same size meanwhile. Its next write names the model it was checked against, and is
        refused whole: the old model's vectors never land beside the new one's."""
        tuned = dataclasses.replace(MODEL, version="2")
        late = [source("mem://d", ["Late text."], [unit(1, 0)]), source("mem://a", ["Rewritten."], [unit(1, 0)])]
        with pytest.raises(IndexSwitchedError, match=rf"{filled}.*switched to unit-model@1.*unit-model@2") as caught:
            backend.index(filled, late, model=tuned)
        assert (caught.value.written_for, caught.value.now) == (tuned, MODEL)
        backend.flush(filled)
        assert backend.info(filled).chunk_count == 4
        assert backend.bm25(filled, "late rewritten", 5) == []
        backend.index(filled, late[:1], model=MODEL)  # the index's own model: written
        backend.flush(filled)
        assert [h.chunk.id for h in backend.bm25(filled, "late", 5)] == ["mem://d#0"]
