"""A SIGKILL in the middle of an ingest leaves a readable index; a re-run completes it exactly."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

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
