"""A SIGKILL in the middle of an ingest leaves a readable index; a re-run completes it exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import register_base_copy

WORDS = ("library catalogue indexing retrieval citation archive thesaurus classification "
         "abstract journal periodical reference circulation acquisition metadata").split()


def _write_corpus(folder: Path, files: int) -> None:
    folder.mkdir()
    for i in range(files):
        words = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(60))
        (folder / f"note-{i:03d}.txt").write_text(f"Note {i} about topic{i}.\n\n{words}.\n")


def _generation(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
            return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0


def test_kill_mid_ingest_then_rerun(tmp_path, settings, client):
    docs = tmp_path / "docs"
    _write_corpus(docs, 120)
    env = {**os.environ, "UNIRANK_DATA_DIR": str(settings.data_dir), "UNIRANK_INGEST__BATCH_CHUNKS": "4",
           "HF_HUB_OFFLINE": "1", "UNIRANK_CONFIG": os.devnull}
    proc = subprocess.Popen([sys.executable, "-m", "unirank.cli.main", "ingest", str(docs), "--index", "notes"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = settings.indexes_dir / "notes" / "v1" / "chunks.sqlite"
    deadline = time.monotonic() + 180
    while _generation(db) < 3:
        assert proc.poll() is None, f"ingest ended before it could be killed: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "ingest made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    # What was committed is readable as it is, with no half-written file.
    partial = client.index_info("notes")
    assert 0 < partial.source_count < 120
    states = client.backend.source_states("notes")
    assert all(s.chunk_count >= 1 for s in states.values())

    report = client.ingest(str(docs), "notes")
    assert report.failed == []
    assert len(report.ingested) == 120 - partial.source_count
    final = client.index_info("notes")
    assert final.source_count == 120

    # Same content as a clean ingest: no duplicate and no lost chunk, in every structure.
    clean = client.ingest(str(docs), "clean")
    assert final.chunk_count == clean.chunks_written
    ids = [h.chunk.id for h in client.backend.knn("notes", client.embedder.embed_query("library"), 1000)]
    assert len(ids) == len(set(ids)) == final.chunk_count
    for i in (0, 59, 119):
        hits = client.search(f"topic{i}", "notes", mode="bm25", rerank=False, top_k=5).hits
        assert [h.chunk.doc_id for h in hits].count(hits[0].chunk.doc_id) == 1
        assert hits[0].chunk.doc_id.endswith(f"note-{i:03d}.txt")


def _cli(settings, *args: str) -> subprocess.Popen:
    env = {**os.environ, "UNIRANK_DATA_DIR": str(settings.data_dir), "UNIRANK_INGEST__BATCH_CHUNKS": "4",
           "HF_HUB_OFFLINE": "1", "UNIRANK_CONFIG": os.devnull, "COLUMNS": "400"}
    return subprocess.Popen([sys.executable, "-m", "unirank.cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_generation(proc: subprocess.Popen, db: Path, generation: int) -> None:
    deadline = time.monotonic() + 180
    while _generation(db) < generation:
        assert proc.poll() is None, f"the command ended before it could be interrupted: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the command made no progress"
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_mid_ingest_flushes_and_says_what_was_committed(tmp_path, settings, client):
    """Ctrl-C exited 130 without a word and skipped the flush, so the next opener re-embedded nothing but
    rebuilt the whole vector index from the store."""
    docs = tmp_path / "docs"
    _write_corpus(docs, 120)
    proc = _cli(settings, "ingest", str(docs), "--index", "notes")
    db = settings.indexes_dir / "notes" / "v1" / "chunks.sqlite"
    _wait_for_generation(proc, db, 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    said = " ".join(err.decode().split())
    assert proc.returncode == 130, said
    committed = re.search(r"interrupted: (\d+) files? committed; re-run the same command to finish", said)
    assert committed, said
    assert "Traceback" not in said
    derived = json.loads((db.parent / "derived.json").read_text())
    assert derived["vectors"] == _generation(db)  # flushed: the vectors are as current as the store
    assert 0 < int(committed.group(1)) <= client.index_info("notes").source_count < 120


@pytest.mark.slow
def test_ctrl_c_mid_rebuild_says_the_index_was_not_switched(tmp_path, settings, client):
    docs = tmp_path / "docs"
    _write_corpus(docs, 200)
    client.ingest(str(docs), "notes")
    register_base_copy(settings, "copy")
    proc = _cli(settings, "index", "rebuild", "notes", "--model", "copy@1")
    stage = proc.stderr.readline().decode()  # the model loaded: re-embedding begins
    assert "re-embedding notes with copy@1" in stage
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    said = " ".join((stage + err.decode()).split())
    assert proc.returncode == 130, said
    assert ("interrupted: index 'notes' was not switched (it still uses all-MiniLM-L6-v2@base); re-run the same "
            "command to rebuild it.") in said
    assert client.index_info("notes").model.name == "all-MiniLM-L6-v2"


class _Model:
    """An embedder of ``name@1`` (384 dimensions, as base) whose vectors all point one way, so the stored
    vectors tell which model made them; it reads text with the base model's tokenizer."""

    def __init__(self, base, name: str, axis: int) -> None:
        import numpy as np

        from unirank.search.types import ModelSignature

        self.signature = ModelSignature(name=name, version="1", dims=384)
        self.same_vectors_as: frozenset[str] = frozenset()
        self.tokenizer, self.max_seq_length, self.dims = base.tokenizer, base.max_seq_length, 384
        self.vector = np.eye(384, dtype=np.float32)[axis]
        self.before_embedding = lambda call: None
        self.calls = 0

    def embed_documents(self, texts):
        import numpy as np

        self.calls += 1
        self.before_embedding(self.calls)
        return np.tile(self.vector, (len(texts), 1))

    def embed_query(self, text):
        return self.vector


def test_an_ingest_stops_when_a_rebuild_switches_the_index_to_another_model_of_its_size(tmp_path, base_embedder):
    """An ingest running while `index rebuild --model OTHER` switched the index wrote the old model's
    vectors into the new version (both 384 wide: a tuned version of base), and both commands exited 0.
    Here the switch comes between two batches of the ingest, from another backend (another process)."""
    import numpy as np
    import pytest

    from unirank.ingest.pipeline import Ingestor
    from unirank.errors import IndexSwitchedError
    from unirank.search.embedded.backend import EmbeddedBackend
    from unirank.search.rebuild import reembedded_sources
    from unirank.settings import ChunkingSettings, IngestSettings

    docs = tmp_path / "docs"
    _write_corpus(docs, 12)
    old, new = _Model(base_embedder, "old", 0), _Model(base_embedder, "tuned", 1)
    ingesting, rebuilding = EmbeddedBackend(tmp_path / "ix"), EmbeddedBackend(tmp_path / "ix")

    def switch_before_the_third_batch(call: int) -> None:
        if call == 3:
            rebuilding.rebuild("notes", reembedded_sources(rebuilding, "notes", new), new.signature,
                               lambda uris: reembedded_sources(rebuilding, "notes", new, sources=uris))

    old.before_embedding = switch_before_the_third_batch
    ingestor = Ingestor(ingesting, old, ChunkingSettings(), ingest=IngestSettings(batch_chunks=3))
    with pytest.raises(IndexSwitchedError, match=r"'notes' was switched to tuned@1 .* vectors of old@1.*"
                                                 r"Run the same ingest again"):
        ingestor.run(str(docs), "notes")
    assert ingesting._sessions == {}  # flushed: readers may repair again

    def stored(backend) -> np.ndarray:
        with backend._reading("notes") as handle:
            return handle.store.vectors_by_key(sorted(handle.store.keys()), 384)

    reader = EmbeddedBackend(tmp_path / "ix")
    assert reader.model("notes") == new.signature
    assert reader.info("notes").source_count == 6  # the two batches committed before the switch, re-embedded
    assert (stored(reader) == new.vector).all()  # not one of the old model's vectors

    report = Ingestor(EmbeddedBackend(tmp_path / "ix"), new, ChunkingSettings(),
                      ingest=IngestSettings(batch_chunks=3)).run(str(docs), "notes")
    assert len(report.ingested) == 6 and report.failed == []
    final = EmbeddedBackend(tmp_path / "ix")
    assert final.info("notes").source_count == 12 and (stored(final) == new.vector).all()
    assert len(final.knn("notes", new.vector, 100)) == final.info("notes").chunk_count
