"""`unirank index rebuild` as users run it: one rebuild of an index at a time, and a word when the
configured embedder.model no longer matches the index it rebuilt."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conformance.backend_suite import source
from conftest import register_base_copy
from env_helpers import without_unirank_settings
from unirank.search.embedded.backend import REBUILD_LOCK, EmbeddedBackend
from unirank.search.rebuild import configured_model_refused
from unirank.search.types import ModelSignature

BASE = ModelSignature(name="all-MiniLM-L6-v2", version="base", dims=384)


@pytest.fixture()
def docs_index(settings):
    """``docs``, made by base, with two short passages (their vectors are re-made by the rebuild)."""
    backend = EmbeddedBackend(settings.indexes_dir)
    backend.create_index("docs", BASE)
    vectors = np.eye(384, dtype=np.float32)
    backend.index("docs", [source("mem://a", ["Backups run nightly."], [vectors[0]]),
                           source("mem://b", ["Keys rotate monthly."], [vectors[1]])])
    backend.flush("docs")
    backend.close()
    return settings


def _unirank(settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = without_unirank_settings(os.environ)
    clean.update(HF_HUB_OFFLINE="1", UNIRANK_CONFIG=os.devnull, UNIRANK_DATA_DIR=str(settings.data_dir),
                 COLUMNS="200", **env)
    return subprocess.run([sys.executable, "-m", "unirank.cli.main", *args], env=clean, capture_output=True,
                          text=True, timeout=300)


def test_a_rebuild_while_another_runs_is_refused_naming_it(docs_index):
    """The second of two rebuilds died ~40 s in with a raw tantivy traceback, after the two had deleted
    each other's work."""
    from unirank.models.loading import resolve_model_path  # base's folder: another model than base's name

    lock = os.open(docs_index.indexes_dir / "docs" / REBUILD_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running rebuild holds it
        os.pwrite(lock, b"4242", 0)
        run = _unirank(docs_index, "index", "rebuild", "docs", "--model", str(resolve_model_path("base")[0]))
    finally:
        os.close(lock)
    assert run.returncode == 2, run.stderr
    assert "A rebuild of 'docs' is already running (pid 4242); wait for it" in " ".join(run.stderr.split())
    assert "Traceback" not in run.stderr
    assert "re-embedding" not in run.stdout + run.stderr  # said only once this rebuild has begun
    assert sorted(p.name for p in (docs_index.indexes_dir / "docs").glob("v*")) == ["v1"]


def test_a_rebuild_says_when_the_configured_model_will_be_refused_by_the_index(docs_index):
    """With embedder.model = base set, a rebuild with another model succeeded without a word, and every
    search of the index was then refused."""
    copy = register_base_copy(docs_index, "copy")
    run = _unirank(docs_index, "index", "rebuild", "docs", "--model", str(copy), UNIRANK_EMBEDDER__MODEL="base")
    assert run.returncode == 0, run.stderr
    said = " ".join(run.stderr.split())
    assert "note: embedder.model is set to base, but 'docs' now holds vectors of copy@1" in said
    assert "Set embedder.model to copy@1 (in unirank.toml, or UNIRANK_EMBEDDER__MODEL=copy@1), or unset it" in said


def test_a_rebuild_with_the_model_the_index_already_uses_does_nothing_and_says_so(docs_index, client,
                                                                                   monkeypatch):
    """It re-embedded every chunk into a new version (minutes for a real index), dropped the kept previous
    one, and said the index 'now uses' the model it had used all along."""
    from typer.testing import CliRunner

    from unirank.cli.main import app

    before = client.index_info("docs")
    assert client.rebuild_index("docs", "base") == before
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(docs_index.data_dir))
    run = CliRunner().invoke(app, ["index", "rebuild", "docs", "--model", "base"], env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    assert "Index 'docs' already uses all-MiniLM-L6-v2@base: nothing to re-embed." in run.output
    assert "re-embedding" not in run.output and "now uses" not in run.output
    assert sorted(p.name for p in (docs_index.indexes_dir / "docs").glob("v*")) == ["v1"]


def test_which_configured_models_the_rebuilt_index_refuses(settings):
    copy = register_base_copy(settings, "copy")

    def refused(configured: str | None, rebuilt_with: str, index_model: ModelSignature) -> bool:
        settings.embedder.model = configured
        return configured_model_refused(settings, rebuilt_with, index_model)

    assert not refused(None, "copy@1", copy)  # unset: the index's own model is followed
    assert not refused("copy@1", "copy@1", copy)
    assert not refused("copy", "copy@1", copy)  # a bare registered name: its latest version
    assert not refused("base", "base", BASE)
    assert refused("base", "copy@1", copy)
    assert refused("copy@1", "base", BASE)
    assert refused("nope@3", "copy@1", copy)  # a setting that does not load is refused all the same
    folder = settings.data_dir / "my-model"
    folder.mkdir(parents=True)
    assert not refused(str(folder), str(folder / "." / ""), ModelSignature("my-model", "local-1a2b3c4d", 384))
    assert refused(str(folder), "copy@1", copy)


@pytest.mark.parametrize("model", ["", "  ", None])
def test_a_rebuild_with_an_empty_model_is_refused_not_made_with_base(docs_index, client, model):
    """An empty or missing model was read as unset, and the index was silently re-embedded with base."""
    from unirank.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"\(--model\) is empty or not text"):
        client.rebuild_index("docs", model)
    assert sorted(p.name for p in (docs_index.indexes_dir / "docs").glob("v*")) == ["v1"]


def test_an_index_whose_model_was_deleted_is_read_with_a_version_making_its_vectors_else_said_to_rebuild(
        settings, client):
    """Deleting a version broke every index it made, even with an optimized copy of it left (copies make
    its vectors), and the error's advice, embedder.model = "copy@1" or leaving it unset, failed with
    "copy has no version 1 (it was deleted ...)"."""
    from unirank.errors import ModelNotFoundError
    from unirank.models.loading import load_embedder
    from unirank.models.loading import resolve_model_path
    from unirank.registry import ModelRegistry

    source_sig = register_base_copy(settings, "copy")  # copy@1, and two optimized copies of it
    registry = ModelRegistry(settings.models_dir)
    base_files = resolve_model_path("base")[0]
    for _ in range(2):
        registry.register("copy", "embedder", path=base_files, record={"dims": 384, "optimized_from": "copy@1"})
    backend = EmbeddedBackend(settings.indexes_dir)
    vectors = np.eye(384, dtype=np.float32)
    for index, made_by in (("docs", source_sig), ("opt", ModelSignature(name="copy", version="2", dims=384))):
        backend.create_index(index, made_by)
        backend.index(index, [source("mem://a", ["Backups run nightly."], [vectors[0]])])
        backend.flush(index)
    backend.close()

    def read_with(index: str) -> str | None:
        return client.search("backups", index, mode="knn", rerank=False).embedder

    try:
        registry.delete("copy@2")  # a copy: the version it was made from reads its index
        assert read_with("opt") == "copy@1"
        registry.delete("copy@1")  # the source: its surviving copy reads its index
        assert read_with("docs") == "copy@3"
        settings.embedder.model = "copy@1"  # as the index's mismatch error advises
        with pytest.raises(ModelNotFoundError, match=r"no version 1 \(it was deleted at .*\); it has 3\. copy@3 "
                                                     r"makes the vectors it made"):
            load_embedder(settings)
        settings.embedder.model = None
        registry.delete("copy@3")
        client._index_embedders.clear()
        with pytest.raises(ModelNotFoundError, match=r"An index embedded with copy@1 cannot be searched or extended: "
                                                     r"copy@1 was deleted at .*No registered version makes its vectors"
                                                     r".*`unirank index rebuild INDEX --model MODEL`"):
            read_with("docs")
    finally:
        registry.close()


def test_an_interrupt_right_after_the_switch_keeps_the_version_now_live(docs_index, monkeypatch):
    """A Ctrl-C arriving as the rebuild left its write lock, after CURRENT had moved to the new version,
    was cleaned up as a failed rebuild: the live version was deleted and every search failed."""
    import filelock
    current = docs_index.indexes_dir / "docs" / "CURRENT"
    release = filelock.FileLock.release

    def interrupted_release(self, *args, **kwargs):
        release(self, *args, **kwargs)
        if self.lock_file.endswith(os.path.join("docs", ".write.lock")) and current.read_text() != "v1":
            monkeypatch.setattr(filelock.FileLock, "release", release)
            raise KeyboardInterrupt

    monkeypatch.setattr(filelock.FileLock, "release", interrupted_release)
    backend = EmbeddedBackend(docs_index.indexes_dir)
    vectors = np.eye(384, dtype=np.float32)
    rebuilt = [[source("mem://a", ["Backups run nightly."], [vectors[2]]),
                source("mem://b", ["Keys rotate monthly."], [vectors[3]])]]
    with pytest.raises(KeyboardInterrupt):
        backend.rebuild("docs", rebuilt, BASE, catch_up=lambda uris: [])
    assert current.read_text() == "v2" and (current.parent / "v2" / "chunks.sqlite").exists()
    backend.close()
    reader = EmbeddedBackend(docs_index.indexes_dir)
    assert [hit.chunk.doc_id for hit in reader.knn("docs", vectors[3], 1)] == ["mem://b"]
    reader.close()


def test_a_rebuilt_index_keeps_the_time_it_was_created(docs_index):
    """`index info`, `index list` and /v1/indexes gave the time of the last rebuild as the index's creation."""
    import sqlite3

    made = "2024-01-02T03:04:05+00:00"  # as an index made long before the rebuild
    with sqlite3.connect(docs_index.indexes_dir / "docs" / "v1" / "chunks.sqlite") as db:
        db.execute("UPDATE meta SET value = ? WHERE key IN ('created_at', 'updated_at')", (made,))
    backend = EmbeddedBackend(docs_index.indexes_dir)
    vectors = np.eye(384, dtype=np.float32)
    rebuilt = backend.rebuild("docs", [[source("mem://a", ["Backups run nightly."], [vectors[2]]),
                                        source("mem://b", ["Keys rotate monthly."], [vectors[3]])]],
                              BASE, catch_up=lambda uris: [])
    assert Path(rebuilt.details["path"]).name == "v2"
    assert rebuilt.created_at == made and rebuilt.updated_at > made
    backend.close()


def test_a_progress_or_source_that_is_not_one_is_refused_before_any_work(docs_index, client, monkeypatch):
    """rebuild_index(progress=5) raised a TypeError once the model had loaded, and sources_under(index, None)
    a raw AttributeError."""
    from unirank.errors import InvalidQueryError, SourceError

    loaded = []
    monkeypatch.setattr("unirank.api.load_embedder", lambda settings: loaded.append(settings))
    with pytest.raises(InvalidQueryError, match=r"progress must be a function called as progress\(message\), "
                                                r"or None; got 5"):
        client.rebuild_index("docs", "base", progress=5)  # type: ignore[arg-type]
    assert not loaded
    for given in (None, 3, ""):
        with pytest.raises(SourceError, match="The source must be a folder, a file or an s3:// / oss:// URI"):
            client.sources_under("docs", given)  # type: ignore[arg-type]
    assert client.sources_under("docs", Path("/nowhere")) == []


def test_a_rebuild_with_a_model_of_a_smaller_window_is_refused_before_any_embedding(settings, client, tmp_path):
    """Chunks cut for base's 256-token window were re-embedded by a 64-token model as stored: their
    vectors made from their first 64 tokens, and the rebuild said only that it had succeeded. Eval's
    re-embedded copies of an index (``reembedded_index``) were made the same way."""
    import json
    import shutil

    from unirank.errors import ChunksTooLongError
    from unirank.models.loading import resolve_model_path
    from unirank.search.rebuild import reembedded_index

    narrow = tmp_path / "narrow"
    shutil.copytree(resolve_model_path("base")[0], narrow)
    config = narrow / "sentence_bert_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "max_seq_length": 64}))
    backend = EmbeddedBackend(settings.indexes_dir)
    backend.create_index("docs", BASE)
    long_text = " ".join(f"Backups of volume {n} are copied to the second region every night." for n in range(12))
    backend.index("docs", [source("mem://short", ["Keys rotate monthly."], [np.eye(384, dtype=np.float32)[0]]),
                           source("mem://long", [long_text], [np.eye(384, dtype=np.float32)[1]])])
    backend.flush("docs")
    backend.close()

    with pytest.raises(ChunksTooLongError, match=r"1 of 2 chunks of index 'docs' are longer than the 64-token "
                                                 r"window of narrow@local-\w+ \(the longest is \d+ tokens\)"):
        client.rebuild_index("docs", str(narrow))
    assert sorted(p.name for p in (settings.indexes_dir / "docs").glob("v*")) == ["v1"]
    assert client.index_info("docs").model == BASE

    from unirank.models.loading import load_embedder
    narrow_settings = settings.model_copy(deep=True)
    narrow_settings.embedder.model = str(narrow)
    with pytest.raises(ChunksTooLongError):
        reembedded_index(client.backend, "docs", load_embedder(narrow_settings))
    assert [i.name for i in client.list_indexes()] == ["docs"]
    base_folder = resolve_model_path("base")[0]  # base's window, as another model: rebuilt, not left alone
    assert client.rebuild_index("docs", base_folder).model.version.startswith("local-")  # nothing refused


OTHER = ModelSignature(name="other", version="1", dims=384)


def _index_of_other_model(backend, name: str, *texts: str) -> None:
    """``name`` made by a model other than base: base's copy of it is ``reembedded_index``'s to make."""
    backend.create_index(name, OTHER)
    vectors = np.eye(384, dtype=np.float32)
    backend.index(name, [source(f"mem://{n}", [text], [vectors[n]]) for n, text in enumerate(texts)])
    backend.flush(name)


def _texts(backend, index: str) -> list[str]:
    return sorted(c.text for batch in backend.iter_chunks(index) for c in batch)


def test_a_long_index_names_copy_is_another_index_not_the_index_itself(settings, base_embedder):
    """A copy's name was cut to 120 characters: a 120-character index was its own copy's name, and eval
    deleted it (then failed, saying it did not exist)."""
    from unirank.search.backend import derived_index_name, require_valid_index_name
    from unirank.search.rebuild import reembedded_index

    backend = EmbeddedBackend(settings.indexes_dir)
    long = "h" * 120
    _index_of_other_model(backend, long, "Backups run nightly.")
    copy = reembedded_index(backend, long, base_embedder)
    assert copy != long and len(copy) == 120
    require_valid_index_name(copy)
    assert backend.info(copy).copy_of == long
    assert _texts(backend, long) == _texts(backend, copy) == ["Backups run nightly."]
    assert reembedded_index(backend, long, base_embedder) == copy  # found again, not made anew
    # Cut short, two models' copies of one long index (or one model's of two) shared a name.
    assert derived_index_name(long, "small-embed-1") != derived_index_name(long, "small-embed-2")
    assert derived_index_name(long, "m-1") != derived_index_name(long + "x", "m-1")
    assert derived_index_name("docs", "small-embed-1") == "docs--small-embed-1"  # short names as before
    backend.close()


def test_an_index_of_the_users_under_a_copys_name_is_refused_not_replaced(settings, base_embedder):
    """The user's own ``hb3--MODEL-VERSION`` (19 chunks) was deleted without a word and replaced by a copy
    of hb3."""
    from unirank.errors import UnirankError
    from unirank.search.rebuild import reembedded_index, reembedded_sources

    backend = EmbeddedBackend(settings.indexes_dir)
    _index_of_other_model(backend, "hb3", "Backups run nightly.")
    _index_of_other_model(backend, "hb3--all-MiniLM-L6-v2-base", "Keys rotate monthly.", "Disks are mirrored.")
    with pytest.raises(UnirankError, match=r"Index 'hb3--all-MiniLM-L6-v2-base' exists and is not a copy of "
                                           r"'hb3', so it is not replaced by one"):
        reembedded_index(backend, "hb3", base_embedder)
    assert _texts(backend, "hb3--all-MiniLM-L6-v2-base") == ["Disks are mirrored.", "Keys rotate monthly."]
    assert backend.model("hb3--all-MiniLM-L6-v2-base") == OTHER
    # A copy an earlier unirank made (no copy_of then) is used while it holds its index's sources as they are.
    backend.delete_index("hb3--all-MiniLM-L6-v2-base")
    backend.create_index("hb3--all-MiniLM-L6-v2-base", base_embedder.signature)
    for batch in reembedded_sources(backend, "hb3", base_embedder):
        backend.index("hb3--all-MiniLM-L6-v2-base", batch)
    stages: list[str] = []
    assert reembedded_index(backend, "hb3", base_embedder, stage=stages.append) == "hb3--all-MiniLM-L6-v2-base"
    assert stages == [] and backend.info("hb3--all-MiniLM-L6-v2-base").copy_of is None
    backend.close()


def test_a_copy_is_made_again_when_its_index_changed_even_within_the_same_second(settings, base_embedder):
    """A copy was reused while its index's chunk count was the same and its updated_at (to the second) no
    later than the copy's: an edit in the same second left eval scoring the old text."""
    from dataclasses import replace

    from unirank.search.rebuild import reembedded_index

    backend = EmbeddedBackend(settings.indexes_dir)
    _index_of_other_model(backend, "docs", "Backups run nightly.", "Keys rotate monthly.")
    time.sleep(1.01 - time.time() % 1)  # the copy and the edit below fall in one second
    copy = reembedded_index(backend, "docs", base_embedder)
    vectors = np.eye(384, dtype=np.float32)
    backend.index("docs", [source("mem://0", ["Backups run weekly."], [vectors[0]])])  # one chunk still
    stages: list[str] = []
    assert reembedded_index(backend, "docs", base_embedder, stage=stages.append) == copy
    assert stages == [f"re-embedding docs with {base_embedder.signature} into {copy}"]
    assert _texts(backend, copy) == _texts(backend, "docs") == ["Backups run weekly.", "Keys rotate monthly."]
    touched = [replace(state, modified="later") for state in backend.source_states("docs").values()]
    backend.update_states("docs", touched)  # a touched file: the same content, no new chunk
    reembedded_index(backend, "docs", base_embedder, stage=stages.append)
    assert len(stages) == 1  # reused
    backend.close()


def test_a_copy_of_an_index_changed_while_it_was_made_is_made_again(settings, base_embedder):
    """The copy took the time of its last write: an edit of its index while it was being made was older
    than that, and the copy holding the old text was reused."""
    from unirank.search.rebuild import reembedded_index

    backend = EmbeddedBackend(settings.indexes_dir)
    _index_of_other_model(backend, "docs", "Backups run nightly.")

    class EditedMeanwhile:
        """Base, with the index's one source ingested again as its chunks are being embedded."""

        def __getattr__(self, name):
            return getattr(base_embedder, name)

        def embed_documents(self, texts):
            backend.index("docs", [source("mem://0", ["Backups run weekly."], [np.eye(384, dtype=np.float32)[0]])])
            return base_embedder.embed_documents(texts)

    copy = reembedded_index(backend, "docs", EditedMeanwhile())
    assert _texts(backend, copy) == ["Backups run nightly."]  # read before the edit
    assert reembedded_index(backend, "docs", base_embedder) == copy
    assert _texts(backend, copy) == ["Backups run weekly."]
    backend.close()
