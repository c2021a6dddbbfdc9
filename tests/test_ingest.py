"""Ingestion end to end with the real base model: formats, failures, incremental runs, pruning."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from unirank.errors import DimensionMismatchError, EmbedderMismatchError, SourceError
from unirank.search.types import ModelSignature

from conftest import register_base_copy

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "examples" / "sample-docs"
sys.path.insert(0, str(ROOT / "examples"))


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """The shipped samples, the generated PDF/DOCX, and three bad files."""
    import make_office_docs

    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.pdf", "*.docx"))
    make_office_docs.make_docx(folder / "travel-policy.docx")
    make_office_docs.make_pdf(folder / "security-whitepaper.pdf")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 4)
    (folder / "firmware.txt").write_bytes(b"\x7fELF\x00\x01\x02" + bytes(range(256)) * 8)
    (folder / "setup.exe").write_bytes(b"MZ\x90\x00")
    return folder


def test_a_folder_of_mixed_formats(client, corpus):
    report = client.ingest(str(corpus), "docs")
    ingested = {Path(u).name for u in report.ingested}
    assert ingested == {"api-keys.md", "backups.md", "incident-response.html", "onboarding.txt",
                        "pricing.html", "faq.jsonl", "travel-policy.docx", "security-whitepaper.pdf"}
    failed = {Path(u).name: reason for u, reason in report.failed}
    assert set(failed) == {"broken.pdf", "firmware.txt"}
    assert "binary" in failed["firmware.txt"]
    assert {Path(u).name for u, _ in report.skipped} == {"setup.exe"}
    assert report.files_seen == 11
    info = client.index_info("docs")
    assert info.source_count == 8 and info.chunk_count == report.chunks_written > 8

    hit = client.search("how long does the old key keep working after rotation", "docs", top_k=3).hits[0]
    assert hit.chunk.title == "API keys and token rotation"
    assert hit.chunk.heading_path[-1] == "Rotating a key"
    assert hit.chunk.metadata.get("team") == "platform"

    pdf_hit = client.search("bastion host certificates", "docs", mode="bm25", top_k=1, rerank=False).hits[0]
    assert pdf_hit.chunk.source_uri.endswith("security-whitepaper.pdf") and pdf_hit.chunk.page == 2

    faq = client.search("single sign-on", "docs", top_k=5, filters={"category": "account"}).hits
    assert faq and {h.chunk.doc_id for h in faq} <= {"faq-3", "faq-4"}


def test_reingesting_unchanged_files_does_nothing(client, corpus):
    first = client.ingest(str(corpus), "docs")
    generation = client.index_info("docs").details["generation"]
    again = client.ingest(str(corpus), "docs")
    assert again.ingested == [] and again.chunks_written == 0
    assert {r for _, r in again.skipped} == {"unchanged", "unsupported file type '.exe'"}
    assert client.index_info("docs").chunk_count == first.chunks_written
    assert client.index_info("docs").details["generation"] == generation


def test_changed_chunk_settings_apply_to_unchanged_files_when_ingesting_again(client, corpus):
    """Before, unchanged files were skipped whatever the settings: a new chunking.size reached only new
    and edited files, silently."""
    first = client.ingest(str(corpus), "docs")
    client.settings.chunking.size, client.settings.chunking.overlap = 64, 16
    smaller = client.ingest(str(corpus), "docs")
    assert sorted(smaller.reread) == sorted(smaller.ingested) == sorted(first.ingested)
    assert smaller.chunks_removed == 0 and client.index_info("docs").chunk_count == smaller.chunks_written
    assert smaller.chunks_written > first.chunks_written
    assert max(len(client.embedder.tokenizer.tokenize(c.embedding_input()))
               for batch in client.backend.iter_chunks("docs") for c in batch) <= 64
    again = client.ingest(str(corpus), "docs")
    assert again.ingested == again.reread == [] and again.chunks_written == 0


def test_an_index_from_before_recipes_opens_and_is_read_again_once(client, corpus):
    """Its sources have no recorded recipe: they are re-read once, with today's parsers and settings."""
    import sqlite3

    first = client.ingest(str(corpus), "docs")
    path = Path(client.index_info("docs").details["path"]) / "chunks.sqlite"
    client.backend.close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE sources DROP COLUMN recipe")
    from unirank.api import Unirank

    with Unirank(client.settings) as ur:
        ur.__dict__["embedder"] = client.embedder
        assert ur.index_info("docs").source_count == len(first.ingested)
        upgraded = ur.ingest(str(corpus), "docs")
        assert sorted(upgraded.reread) == sorted(first.ingested)
        assert ur.ingest(str(corpus), "docs").reread == []
        assert ur.index_info("docs").chunk_count == first.chunks_written


def test_files_read_by_an_earlier_parser_version_are_read_again_once(client, corpus, monkeypatch):
    """A parse or chunking fix (PARSER_VERSION raised) re-reads unchanged files once, not never: their old
    chunks (a megabyte of spaces in one, before PARSER_VERSION 7) were kept for good."""
    import unirank.ingest.pipeline as pipeline

    first = client.ingest(str(corpus), "docs")
    monkeypatch.setattr(pipeline, "PARSER_VERSION", pipeline.PARSER_VERSION + 1)
    assert sorted(client.ingest(str(corpus), "docs").reread) == sorted(first.ingested)
    assert client.ingest(str(corpus), "docs").reread == []


def test_a_changed_file_replaces_its_chunks_and_prune_removes_deleted_ones(client, corpus):
    client.ingest(str(corpus), "docs")
    before = client.index_info("docs").chunk_count
    (corpus / "onboarding.txt").write_text("Onboarding now starts with a security quiz about phishing.")
    (corpus / "backups.md").unlink()

    report = client.ingest(str(corpus), "docs", prune=True)
    assert [Path(u).name for u in report.ingested] == ["onboarding.txt"]
    assert [Path(u).name for u in report.pruned] == ["backups.md"]
    hits = client.search("phishing quiz", "docs", mode="bm25", rerank=False).hits
    assert hits[0].chunk.source_uri.endswith("onboarding.txt")
    assert client.search("laptop disk encryption", "docs", mode="bm25", rerank=False,
                         filters={"source_uri": hits[0].chunk.source_uri}).hits == []
    assert client.search("snapshots retention", "docs", mode="bm25", rerank=False,
                         filters={"doc_id": (corpus / "backups.md").resolve().as_uri()}).hits == []
    assert client.index_info("docs").chunk_count < before


def test_a_single_file_source(client, corpus):
    report = client.ingest(str(corpus / "api-keys.md"), "one")
    assert len(report.ingested) == 1 and client.index_info("one").source_count == 1


def test_a_bad_source_or_index_name_is_said_before_the_model_loads(client, corpus, tmp_path):
    """The embedder loaded first: a typo took the model's five seconds to be told."""
    from unirank.errors import InvalidQueryError
    from unirank.ingest.pipeline import Ingestor

    loads: list[int] = []

    def loader():
        loads.append(1)
        return client.embedder

    ingestor = Ingestor(client.backend, loader, client.settings.chunking)
    with pytest.raises(SourceError, match="does not exist"):
        ingestor.run(str(tmp_path / "nowhere"), "docs")
    with pytest.raises(InvalidQueryError, match="Invalid index name 'bad name'"):
        ingestor.run(str(corpus), "bad name")
    assert loads == [] and not client.backend.exists("bad name")
    assert ingestor.run(str(corpus / "api-keys.md"), "docs").ingested and loads == [1]


def test_a_missing_source_fails_before_creating_the_index(client, tmp_path):
    missing = tmp_path / "no such [draft] #2"
    with pytest.raises(SourceError, match=f"^{re.escape(str(missing))} does not exist"):  # the path, not a URI
        client.ingest(str(missing), "docs")
    assert not client.backend.exists("docs")


def test_an_index_of_other_dimensions_is_refused_before_any_write(client, corpus):
    client.backend.create_index("small", ModelSignature(name="tiny-model", version="3", dims=8))
    with pytest.raises(DimensionMismatchError) as err:
        client.ingest(str(corpus), "small")
    message = str(err.value)
    assert "tiny-model@3 (8 dimensions)" in message and "384 dimensions" in message
    assert client.index_info("small").chunk_count == 0
    assert client.backend.source_states("small") == {}
    with pytest.raises(DimensionMismatchError) as err:
        client.search("keys", "small", mode="knn", rerank=False)
    # The ways out, as for a model of the same size (it said only "ingest into a new index").
    assert 'embedder.model = "tiny-model@3"' in str(err.value)
    assert "unirank index rebuild small --model MODEL" in str(err.value)


def test_an_index_of_another_model_with_the_same_dimensions_is_refused_before_any_write(client, corpus):
    """384 dimensions both, but another model's vectors: kNN over them would rank noise."""
    client.backend.create_index("tuned", ModelSignature(name="handbook-embed", version="2", dims=384))
    with pytest.raises(EmbedderMismatchError, match=r"made by handbook-embed@2, but the embedder is "
                                                     r'all-MiniLM-L6-v2@base.*"handbook-embed@2".*index rebuild tuned'):
        client.ingest(str(corpus), "tuned")
    assert client.index_info("tuned").chunk_count == 0
    assert client.backend.source_states("tuned") == {}
    for mode in ("knn", "hybrid"):
        with pytest.raises(EmbedderMismatchError):
            client.search("keys", "tuned", mode=mode, rerank=False)
    assert client.search("keys", "tuned", mode="bm25", rerank=False).hits == []  # BM25 needs no embedder
    # An index made by a model folder records only the folder's name: the advice is its path, not a ref.
    client.backend.create_index("folder", ModelSignature(name="handbook-model", version="local", dims=384))
    with pytest.raises(EmbedderMismatchError) as err:
        client.search("keys", "folder", mode="knn", rerank=False)
    assert "to the path of the model folder 'handbook-model'" in str(err.value)
    assert "handbook-model@local\"" not in str(err.value) and "unset" not in str(err.value)


def test_two_model_folders_of_one_name_are_told_apart_by_their_files(tmp_path):
    """An index made by /a/basemodel (``basemodel@local``) was extended and searched with /b/basemodel, other
    weights of the same size: both were ``basemodel@local``."""
    from types import SimpleNamespace

    from unirank.models.embedder import makes_vectors_of
    from unirank.models.loading import resolve_model_path

    base = Path(resolve_model_path("base")[0])
    a = shutil.copytree(base, tmp_path / "a" / "basemodel", ignore=shutil.ignore_patterns("onnx", "openvino"))
    b = shutil.copytree(a, tmp_path / "b" / "basemodel")
    made_by = resolve_model_path(str(a))[2]
    assert made_by.startswith("local-") and resolve_model_path(str(b))[2] == made_by  # the same files
    with open(b / "model.safetensors", "r+b") as weights:  # as fine-tuning does, to every weight
        weights.seek(-4096, 2)
        weights.write(b"\x01" * 4096)
    other = resolve_model_path(str(b))[2]
    assert other.startswith("local-") and other != made_by

    def embedder(version: str) -> SimpleNamespace:
        return SimpleNamespace(signature=ModelSignature("basemodel", version, 384), same_vectors_as=frozenset())

    assert not makes_vectors_of(embedder(other), ModelSignature("basemodel", made_by, 384))
    assert makes_vectors_of(embedder(made_by), ModelSignature("basemodel", made_by, 384))
    # An index made before names the folder alone: read with a folder of that name, as it was.
    assert makes_vectors_of(embedder(other), ModelSignature("basemodel", "local", 384))


def test_a_re_embedded_copy_is_marked_and_never_taken_as_the_default_index(client, corpus):
    """`eval --index handbook --models copy@1` makes handbook--copy-1; after it, `unirank ask` over the one
    index of documents said "Name the index to answer from (there are: handbook, handbook--copy-1)"."""
    from unirank.chat import ChatService
    from unirank.search.rebuild import reembedded_index

    assert client.ingest(str(corpus / "api-keys.md"), "handbook").ingested
    made_by = register_base_copy(client.settings, "copy")
    copy = reembedded_index(client.backend, "handbook", client.embedder_for(made_by))
    assert copy == "handbook--copy-1" and client.index_info(copy).copy_of == "handbook"
    assert client.index_info("handbook").copy_of is None
    assert ChatService(client).default_index() == "handbook"
    register_base_copy(client.settings, "copy")
    client.rebuild_index(copy, "copy@2")  # a new version of the copy is still the copy
    assert client.index_info(copy).copy_of == "handbook" and client.index_info(copy).model.version == "2"


def test_an_index_made_by_a_registered_model_is_read_and_extended_with_it_unless_another_is_set(client, corpus):
    """An index remembers its model: with no embedder.model, ingest and search use it (as an index rebuilt
    with a tuned model would be); a model named in the settings is used as named, and a mismatch refused."""
    from unirank.api import Unirank

    made_by = register_base_copy(client.settings, "copy")
    client.backend.create_index("tuned", made_by)
    assert client.ingest(str(corpus / "api-keys.md"), "tuned").ingested
    assert client.index_info("tuned").model == made_by and client.index_info("tuned").chunk_count > 0
    assert str(client.searcher.embedder_for("tuned").signature) == "copy@1"
    followed = client.search("rotate keys", "tuned", mode="knn", rerank=False)
    assert followed.hits and followed.embedder == "copy@1"  # said with the results, as `search` prints it
    # Re-embedded with another version, the index is read with that one, and the first is let go.
    register_base_copy(client.settings, "copy")
    client.rebuild_index("tuned", "copy@2")
    assert str(client.searcher.embedder_for("tuned").signature) == "copy@2"
    assert list(client._index_embedders) == ["copy@2"]
    made_by = client.index_info("tuned").model
    pinned_settings = client.settings.model_copy(deep=True)
    pinned_settings.embedder.model = "base"
    with Unirank(pinned_settings) as pinned:
        pinned.__dict__["embedder"] = client.embedder
        with pytest.raises(EmbedderMismatchError, match=f"made by {made_by}"):
            pinned.ingest(str(corpus), "tuned")
        with pytest.raises(EmbedderMismatchError):
            pinned.search("rotate keys", "tuned", mode="hybrid", rerank=False)
    assert len(client.backend.source_states("tuned")) == 1  # nothing written by the refused ingest


def test_a_typo_in_a_registered_models_name_is_said_not_sent_to_the_hub(settings):
    """'handbok-embed' was taken for a hub id: offline an error about the hub, online a minute of retries."""
    from unirank.errors import ModelNotFoundError
    from unirank.models.loading import load_embedder

    register_base_copy(settings, "handbook-embed")
    settings.embedder.model = "handbok-embed"
    with pytest.raises(ModelNotFoundError, match=r"'handbok-embed' is not a registered model \(did you mean "
                                                 r"handbook-embed\?\)"):
        load_embedder(settings)


def test_a_search_made_while_a_rebuild_switches_models_uses_one_model(client, corpus):
    """A search read the index's model, embedded the query with it, and only then read the vectors: when
    `index rebuild` switched versions in between, the old model's query vector was scored against the new
    model's vectors (or, for other dims, the search failed)."""
    made_by = register_base_copy(client.settings, "copy")
    client.backend.create_index("swapped", made_by)
    assert client.ingest(str(corpus / "api-keys.md"), "swapped").ingested
    register_base_copy(client.settings, "copy")
    knn, switched = client.backend.knn, []

    def knn_after_a_switch(index, vector, top_k, filters=None):
        if not switched:  # the rebuild lands between the embedding of the query and the vector search
            switched.append(client.rebuild_index("swapped", "copy@2").model)
        return knn(index, vector, top_k, filters)

    client.backend.knn = knn_after_a_switch
    try:
        results = client.search("rotate keys", "swapped", mode="knn", rerank=False)
    finally:
        del client.backend.knn
    assert [str(m) for m in switched] == ["copy@2"]
    assert results.embedder == "copy@2" and results.hits  # searched again with the model the vectors are from


def test_a_path_object_is_a_source_and_a_non_source_is_refused_in_words(client, corpus):
    """ingest(Path(...)) raised AttributeError: 'PosixPath' object has no attribute 'partition'."""
    import unirank
    from unirank.errors import SourceError

    assert client.ingest(corpus / "api-keys.md", "paths").ingested
    with pytest.raises(SourceError, match="The source must be a folder, a file or an s3:// / oss:// URI, got None"):
        client.ingest(None, "paths")  # type: ignore[arg-type]
    with pytest.raises(unirank.InvalidQueryError, match="The index must be named by its name \\(text\\), got int"):
        client.ingest(corpus / "api-keys.md", 5)  # type: ignore[arg-type]  # a TypeError
    with pytest.raises(unirank.ConfigurationError, match="settings must be a unirank.settings.Settings, got dict"):
        unirank.Unirank({"data_dir": str(client.settings.data_dir)})  # type: ignore[arg-type]  # an AttributeError
    # The errors the API raises are importable from the package, and listed by dir().
    assert {"IndexChangedError", "IndexCorruptedError", "IndexLockedError", "ModelNotFoundError",
            "ChatService"} <= set(dir(unirank))
    assert unirank.IndexLockedError.__module__ == "unirank.errors"


def test_a_registered_name_wins_over_a_folder_of_documents_named_like_it(settings, tmp_path, monkeypatch):
    """`--model edge` from a folder holding ./edge (documents) loaded the documents folder as a model and
    failed on its missing config.json, without a word about the registered edge@1."""
    from huggingface_hub import constants

    from unirank.errors import ModelLoadError, ModelNotFoundError
    from unirank.models.loading import load_embedder, resolve_model_path

    register_base_copy(settings, "edge")
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "notes.md").write_text("# Notes\nnot a model\n")
    monkeypatch.chdir(tmp_path)
    settings.embedder.model = "edge"
    assert str(load_embedder(settings).signature) == "edge@1"
    with pytest.raises(ModelLoadError, match=r"'./edge' is a folder .* but not a model folder: it has no config.json"):
        resolve_model_path("./edge", settings.models_dir)
    # A name found nowhere, with the hub switched off: said so, not "check your internet connection".
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    settings.embedder.model = "nonexist"
    with pytest.raises(ModelNotFoundError, match=r"'nonexist' is not a registered model .* HF_HUB_OFFLINE=1 keeps "
                                                 r"the hub from being asked"):
        load_embedder(settings)


def test_chunks_fill_the_models_window_and_a_larger_size_is_clamped_with_a_warning(client, corpus):
    report = client.ingest(str(corpus / "api-keys.md"), "docs")
    assert report.warnings == []  # the default size is the model's window
    client.settings.chunking.size = 512
    report = client.ingest(str(corpus / "api-keys.md"), "clamped")
    assert any("512" in w and "254" in w for w in report.warnings)


# File names as people write them: a file:// URI percent-encodes them, and the path read back must be the
# name on disk (before, every name with a space failed with "No such file or directory").
AWKWARD_NAMES = ("Travel policy 2024.md", "q?and#hash.md", "literal%20percent.md", "naïve résumé.txt")


def test_file_names_with_spaces_percent_signs_and_url_characters(client, tmp_path):
    folder = tmp_path / "awkward docs"
    folder.mkdir()
    for n, name in enumerate(AWKWARD_NAMES):
        (folder / name).write_text(f"Document number {n} about llamas{n}.\n", encoding="utf-8")
    report = client.ingest(str(folder), "awkward")
    assert report.failed == [] and len(report.ingested) == len(AWKWARD_NAMES), report.failed
    for n, name in enumerate(AWKWARD_NAMES):
        hit = client.search(f"llamas{n}", "awkward", mode="bm25", rerank=False, top_k=1).hits[0]
        assert hit.chunk.source_uri == (folder / name).as_uri() and hit.chunk.title == Path(name).stem
        by_path = client.search(f"llamas{n}", "awkward", mode="bm25", rerank=False,
                                filters={"source_uri": str(folder / name)}).hits  # a path, as a user types it
        assert [h.chunk.source_uri for h in by_path] == [(folder / name).as_uri()]
    assert client.ingest(str(folder), "awkward").skipped == [(u, "unchanged") for u in sorted(report.ingested)]


def test_ingest_reads_files_that_are_not_utf8_in_the_legacy_encoding_setting(client, tmp_path):
    text = "A kulcsok cseréje fontos feladat. Az őrző szerver naponta ellenőrzi a tűzfalat."
    (tmp_path / "hu.txt").write_bytes(text.encode("cp1250"))
    client.settings.ingest.legacy_encoding = "cp1250"
    client.ingest(str(tmp_path / "hu.txt"), "hu")
    assert client.search("őrző szerver", "hu", mode="bm25", rerank=False).hits[0].chunk.text == text


def test_hidden_folders_and_office_lock_files_are_passed_over(client, tmp_path):
    root = tmp_path / ".config" / "docs"  # a hidden folder above the source is the user's choice
    (root / ".git").mkdir(parents=True)
    (root / "team" / ".obsidian").mkdir(parents=True)
    (root / "team" / "onboarding.md").write_text("# Onboarding\n\nBadges are collected at reception.\n")
    (root / ".git" / "description.md").write_text("# Repo\n\nUnnamed repository.\n")
    (root / "team" / ".obsidian" / "notes.md").write_text("# Workspace\n\nEditor state.\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "team" / "~$boarding.docx").write_bytes(b"\x0bAlice Admin")  # Word's lock file beside an open document
    report = client.ingest(str(root), "notes")
    assert report.files_seen == 1 and report.failed == [] and report.skipped == []
    assert report.ingested == [(root / "team" / "onboarding.md").as_uri()]
    hidden = root / ".git" / "description.md"
    assert client.ingest(str(hidden), "named").ingested == [hidden.as_uri()]  # a file named on its own is read


def test_prune_keeps_hidden_files_ingested_by_naming_them_until_they_are_gone(client, tmp_path):
    """The listing passes hidden files over by design, so their absence from it proves nothing: --prune
    removed a hidden folder's or file's documents, ingested on purpose by naming them, though still there."""
    docs = tmp_path / "hid"
    (docs / ".drafts").mkdir(parents=True)
    draft, note, main = docs / ".drafts" / "plan.md", docs / ".note.txt", docs / "main.md"
    draft.write_text("# Draft\n\nDraft plan for zebra migration.\n")
    note.write_text("A note about quokkas.\n")
    main.write_text("Main text.\n")
    assert client.ingest(str(docs / ".drafts"), "hid").ingested == [draft.as_uri()]
    assert client.ingest(str(note), "hid").ingested == [note.as_uri()]
    report = client.ingest(str(docs), "hid", prune=True)
    assert report.ingested == [main.as_uri()] and report.pruned == []
    assert client.search("zebra", "hid", mode="bm25", rerank=False).hits[0].chunk.source_uri == draft.as_uri()

    draft.unlink()
    note.unlink()
    assert sorted(client.ingest(str(docs), "hid", prune=True).pruned) == sorted([draft.as_uri(), note.as_uri()])
    assert client.index_info("hid").source_count == 1


def test_prune_keeps_hidden_objects_ingested_by_naming_them_until_they_are_gone(client, s3_endpoint):
    import boto3

    from unirank.settings import StorageSettings

    keys = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}
    client.settings.storage = StorageSettings(endpoint_url=s3_endpoint, **keys)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="hidden-kept")
    s3.put_object(Bucket="hidden-kept", Key="notes/.drafts/plan.md", Body=b"# Draft\n\nDraft plan for zebras.\n")
    s3.put_object(Bucket="hidden-kept", Key="notes/main.md", Body=b"Main text.\n")
    try:
        draft = "s3://hidden-kept/notes/.drafts/plan.md"
        assert client.ingest("s3://hidden-kept/notes/.drafts", "hid").ingested == [draft]
        report = client.ingest("s3://hidden-kept/notes", "hid", prune=True)
        assert report.ingested == ["s3://hidden-kept/notes/main.md"] and report.pruned == []
        s3.delete_object(Bucket="hidden-kept", Key="notes/.drafts/plan.md")
        assert client.ingest("s3://hidden-kept/notes", "hid", prune=True).pruned == [draft]
    finally:
        for obj in s3.list_objects_v2(Bucket="hidden-kept").get("Contents", []):
            s3.delete_object(Bucket="hidden-kept", Key=obj["Key"])
        s3.delete_bucket(Bucket="hidden-kept")



def test_linked_folders_and_files_are_followed_and_prune_keeps_what_they_point_at(client, tmp_path):
    """A folder moved away and linked back was skipped in silence (fsspec lists a link as "other"), and
    --prune then removed its documents."""
    docs, elsewhere = tmp_path / "docs", tmp_path / "elsewhere"
    (docs / "policies").mkdir(parents=True)
    elsewhere.mkdir()
    (docs / "policies" / "p1.txt").write_text("Expenses over 500 euros need a manager's approval.\n")
    (docs / "readme.txt").write_text("This folder holds the company policies.\n")
    (elsewhere / "notes.txt").write_text("Wombats dig burrows.\n")
    first = client.ingest(str(docs), "lk")
    assert len(first.ingested) == 2

    (docs / "policies").rename(elsewhere / "policies")
    (docs / "policies").symlink_to(elsewhere / "policies", target_is_directory=True)
    (docs / "notes.txt").symlink_to(elsewhere / "notes.txt")
    (docs / "policies" / "loop").symlink_to(docs, target_is_directory=True)  # walked once, not for ever
    (docs / "gone.txt").symlink_to(elsewhere / "gone.txt")  # broken: said, not skipped
    report = client.ingest(str(docs), "lk", prune=True)
    assert report.pruned == []
    assert report.ingested == [(docs / "notes.txt").as_uri()]  # the link's path, under the source
    assert ((docs / "policies" / "p1.txt").as_uri(), "unchanged") in report.skipped
    assert [u for u, _ in report.failed] == [(docs / "gone.txt").as_uri()]
    assert report.failed[0][1] == (f"cannot read: a broken symbolic link: it points to {elsewhere / 'gone.txt'}, "
                                   "which does not exist"), report.failed  # was "[Errno 2] No such file or directory"
    assert client.index_info("lk").source_count == 3


def test_a_source_of_no_documents_creates_no_index_and_never_prunes_all(client, tmp_path):
    """An empty folder made an empty index and said nothing; and --prune's "holds no documents" refusal
    counted any file, so one CSV beside the deleted documents let it remove them all."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match=rf"^No documents found in {re.escape(str(empty))}\. unirank reads "
                                          r".*\.md.*index 'e1' was not created"):
        client.ingest(str(empty), "e1")
    assert not client.backend.exists("e1")

    folder = tmp_path / "pr"
    folder.mkdir()
    (folder / "a.txt").write_text("Wombats dig burrows.\n")
    assert client.ingest(str(folder), "pr").ingested
    (folder / "a.txt").unlink()
    (folder / "x.csv").write_text("a,b\n")
    with pytest.raises(SourceError, match=r"--prune would remove all 1 ingested from it"):
        client.ingest(str(folder), "pr", prune=True)
    with pytest.raises(SourceError, match=r"only files of other types: \.csv"):
        client.ingest(str(folder), "pr")
    assert client.index_info("pr").source_count == 1


def test_an_endpoint_that_dies_partway_keeps_what_was_committed_and_a_new_index_is_not_left_empty(
        settings, tmp_path):
    """An embedding server that died after 40 of 120 files: the run exited 2 with "Cannot reach" and no
    report; and a first ingest that failed left an empty index locked to the failing model."""
    from unirank.api import Unirank
    from unirank.models.loading import describe_remote
    from unirank.models.remote import Endpoint
    from unirank.registry import ModelRegistry
    from unirank.errors import RemoteModelError

    from serving_helpers import ModelServer

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(120):
        (docs / f"note-{i:03d}.txt").write_text(f"Note {i} about topic{i}: wombats, burrows and tunnels.\n")
    server = ModelServer(tmp_path / "server", ["base"]).wait_ready()
    try:
        settings.remote.retries, settings.remote.timeout_s, settings.remote.verify_interval_s = 0, 5, 600
        settings.ingest.batch_chunks = 4
        registry = ModelRegistry(settings.models_dir)
        record = describe_remote(Endpoint(url=server.url, api="tei", role="embedder", remote_model="base"), settings)
        registry.register("edge", "embedder", record=record)
        registry.close()
        settings.embedder.model = "edge@1"
        with Unirank(settings) as ur:
            def die_after_40(done: int, total: int, uri: str) -> None:
                if done == 40:
                    server.stop()

            report = ur.ingest(str(docs), "partial", progress=die_after_40)
            assert report.stopped and "Cannot reach" in report.stopped and not report.ok
            assert 30 <= len(report.ingested) <= 40 and report.to_dict()["stopped"] == report.stopped
            assert ur.index_info("partial").source_count == len(report.ingested)
            assert ur.search("topic3", "partial", mode="bm25", rerank=False).hits

            with pytest.raises(RemoteModelError, match="Cannot reach"):
                ur.ingest(str(docs), "fresh")
            assert not ur.backend.exists("fresh")
    finally:
        server.stop()


def test_an_error_in_the_callers_progress_callback_is_raised_not_reported_as_a_stop(client, tmp_path):
    """A bug in the caller's callback became report.stopped, logged at DEBUG only: a caller who did not
    check report.ok took a partial ingest for a whole one."""
    docs = tmp_path / "cb"
    docs.mkdir()
    for i in range(6):
        (docs / f"n{i}.txt").write_text(f"Note {i} about wombats.\n")
    client.settings.ingest.batch_chunks = 2

    def buggy(done: int, total: int, uri: str) -> None:
        if done == 4:
            raise RuntimeError("callback bug")

    with pytest.raises(RuntimeError, match="callback bug"):
        client.ingest(str(docs), "cb", progress=buggy)
    committed = client.index_info("cb").source_count
    assert 2 <= committed < 6  # what was committed before stays, and the same call again finishes the rest
    assert len(client.ingest(str(docs), "cb").ingested) == 6 - committed


def test_a_progress_callback_failing_before_a_new_index_is_made_raises_and_leaves_no_folder(client, tmp_path):
    """The flush after the callback's error ran on an index no batch had made: the caller got a false
    IndexNotFoundError, and the write lock taken for it left a stray data/indexes/NAME/.write.lock."""
    from unirank.errors import IndexNotFoundError

    docs = tmp_path / "first"
    docs.mkdir()
    (docs / "a.txt").write_text("Wombats dig burrows.\n")

    def buggy(done: int, total: int, uri: str) -> None:
        raise RuntimeError("callback bug")

    with pytest.raises(RuntimeError, match="callback bug"):
        client.ingest(str(docs), "fresh", progress=buggy)
    assert not client.backend.exists("fresh")
    assert not (client.settings.indexes_dir / "fresh").exists()
    with pytest.raises(IndexNotFoundError):  # any write on a missing index: said, and no folder made for it
        client.remove_sources("nope", ["file:///x.md"])
    assert not (client.settings.indexes_dir / "nope").exists()


@pytest.mark.parametrize("options, said", [({"prune": "false"}, "prune must be True or False"),
                                           ({"prune": 1}, "prune must be True or False"),
                                           ({"progress": "bar"}, "progress must be a function")])
def test_a_prune_that_is_not_a_bool_or_a_progress_that_is_not_callable_is_refused_before_any_write(
        client, corpus, options, said):
    """prune="false" is truthy: it pruned every document gone from the source."""
    from unirank.errors import InvalidQueryError

    client.ingest(str(corpus / "api-keys.md"), "docs")
    with pytest.raises(InvalidQueryError, match=said):
        client.ingest(str(corpus / "backups.md"), "docs", **options)
    assert client.index_info("docs").source_count == 1


def test_a_file_that_turns_unreadable_keeps_its_previous_version_and_the_report_says_so(client, tmp_path):
    """It said "failed: binary content" while its old chunks stayed in the index with no word."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "wombats.txt").write_text("Wombats dig burrows.\n")
    (folder / "koalas.txt").write_text("Koalas sleep most of the day.\n")
    (folder / "new.txt").write_bytes(bytes(range(256)) * 8)
    first = client.ingest(str(folder), "notes")
    assert [r for _, r in first.failed] == ["binary content, not text"]  # never indexed: nothing to keep

    (folder / "wombats.txt").write_bytes(bytes(range(256)) * 8)
    (folder / "koalas.txt").write_text("")
    report = client.ingest(str(folder), "notes")
    kept = "(the previous version stays indexed; fix the file, or remove it and use --prune)"
    failed = {Path(u).name: r for u, r in report.failed}
    assert failed["wombats.txt"].startswith("binary content") and failed["wombats.txt"].endswith(kept)
    assert failed["koalas.txt"] == f"empty file {kept}"
    assert failed["new.txt"] == "binary content, not text"
    assert client.search("wombats burrows", "notes", mode="bm25", rerank=False).hits


def test_ingest_help_does_not_promise_a_folder_model_is_remembered():
    """It said later searches use the --model "with no setting", which a model folder's path is not."""
    from typer.testing import CliRunner

    from unirank.cli.main import app

    result = CliRunner().invoke(app, ["ingest", "--help"], env={"COLUMNS": "300"})
    text = " ".join(result.output.replace("│", " ").split())
    assert "use it with no setting when it is base or a registered model" in text
    assert "A model folder's path is not remembered: search with embedder.model set to it." in text


def test_a_touched_but_unchanged_file_is_read_once_then_skipped_by_its_new_marker(client, tmp_path):
    """Its new mtime was never stored, so every later run read and hashed it again."""
    import os

    note = tmp_path / "notes" / "wombats.txt"
    note.parent.mkdir()
    note.write_text("Wombats dig burrows.\n")
    client.ingest(str(note.parent), "notes")
    generation = client.index_info("notes").details["generation"]
    os.utime(note, (1_700_000_000, 1_700_000_000))  # touched: same bytes, another mtime
    report = client.ingest(str(note.parent), "notes")
    assert report.skipped == [(note.as_uri(), "unchanged")] and report.ingested == []
    state = client.backend.source_states("notes")[note.as_uri()]
    assert state.modified == str(note.stat().st_mtime) and state.size == note.stat().st_size
    assert client.index_info("notes").details["generation"] == generation  # no chunk moved


@pytest.mark.parametrize("batch_chunks", [1, 64], ids=["apart", "one-batch"])
def test_a_record_moved_between_jsonl_files_lands_in_the_same_run(client, tmp_path, batch_chunks):
    """r1 moved from z.jsonl into a.jsonl: a.jsonl, written first, collided with z's old copy of r1
    and failed ('already in the index from another source'), and r1 was missing until the next run."""
    import json

    client.settings.ingest.batch_chunks = batch_chunks
    docs = tmp_path / "records"
    docs.mkdir()

    def write(name: str, ids: list[str]) -> None:
        (docs / name).write_text("".join(json.dumps({"_id": i, "text": f"Record {i} about wombat burrows."}) + "\n"
                                         for i in ids))

    write("z.jsonl", ["r1", "r2"])
    write("a.jsonl", ["r3"])
    client.ingest(str(docs), "records")
    write("z.jsonl", ["r2"])
    write("a.jsonl", ["r1", "r3"])
    report = client.ingest(str(docs), "records")
    assert report.failed == [] and sorted(Path(u).name for u in report.ingested) == ["a.jsonl", "z.jsonl"]
    hits = client.search("record r1", "records", mode="bm25", rerank=False, top_k=10).hits
    assert {(h.chunk.doc_id, Path(h.chunk.source_uri).name) for h in hits} == {
        ("r1", "a.jsonl"), ("r2", "z.jsonl"), ("r3", "a.jsonl")}

    write("b.jsonl", ["r2"])  # a real duplicate still fails, naming the file that holds the id
    report = client.ingest(str(docs), "records")
    assert [(Path(u).name, re.search(r"from (\S+);", why).group(1).rsplit("/", 1)[-1])
            for u, why in report.failed] == [("b.jsonl", "z.jsonl")]


def test_a_jsonl_file_that_still_collides_says_its_previous_version_stays_and_when_prune_mends_it(client, tmp_path):
    """Its line said only the collision, repeating its own URI: not that its previous version stays
    indexed, as every other failure of a file indexed before says, nor that --prune, which removes the
    deleted file holding the id, mends it."""
    import json

    from unirank.ingest.pipeline import PREVIOUS_KEPT

    docs = tmp_path / "records"
    docs.mkdir()

    def write(name: str, ids: list[str]) -> None:
        (docs / name).write_text("".join(json.dumps({"_id": i, "text": f"Record {i} about wombat burrows."}) + "\n"
                                         for i in ids))

    write("a.jsonl", ["r1"])
    write("m.jsonl", ["r2"])
    client.ingest(str(docs), "records")
    write("a.jsonl", ["r1", "r2"])
    (docs / "m.jsonl").unlink()
    report = client.ingest(str(docs), "records")
    a, m = (docs / "a.jsonl").as_uri(), (docs / "m.jsonl").as_uri()
    assert report.failed == [(a, f"chunk 'r2#0' is already in the index from {m}; document ids must be unique "
                                 f"within an index. {docs / 'm.jsonl'}, which holds one of them, is gone from "
                                 f"{docs}: ingest again with --prune to remove it{PREVIOUS_KEPT}")]
    assert {h.chunk.doc_id for h in client.search("record", "records", mode="bm25", rerank=False).hits} == {"r1", "r2"}

    write("b.jsonl", ["r1"])  # a new file, and the file holding its id is still there: no such notes
    report = client.ingest(str(docs), "records", prune=True)
    assert sorted(report.ingested) == [a] and report.pruned == [m]
    assert report.failed == [((docs / "b.jsonl").as_uri(), f"chunk 'r1#0' is already in the index from {a}; "
                                                           "document ids must be unique within an index.")]


def test_a_jsonl_file_renamed_and_pruned_keeps_its_records_in_the_same_run(client, tmp_path):
    """faq.jsonl renamed a-faq.jsonl, then ingest --prune: a-faq.jsonl was retried against the old name's
    copy of its ids before the prune removed it, so it failed and its records were gone until a next run."""
    import json

    docs = tmp_path / "records"
    docs.mkdir()
    (docs / "faq.jsonl").write_text("".join(json.dumps({"_id": f"faq-{i}", "text": f"Answer {i} on wombat burrows."})
                                            + "\n" for i in (1, 2)))
    client.ingest(str(docs), "records")
    (docs / "faq.jsonl").rename(docs / "a-faq.jsonl")
    report = client.ingest(str(docs), "records", prune=True)
    assert report.failed == [] and report.ok
    assert [Path(u).name for u in report.ingested] == ["a-faq.jsonl"]
    assert [Path(u).name for u in report.pruned] == ["faq.jsonl"]
    hits = client.search("answer wombat", "records", mode="bm25", rerank=False, top_k=10).hits
    assert {(h.chunk.doc_id, Path(h.chunk.source_uri).name) for h in hits} == {
        ("faq-1", "a-faq.jsonl"), ("faq-2", "a-faq.jsonl")}


@pytest.mark.parametrize(("made_by", "error"), [
    (ModelSignature(name="handbook-embed", version="2", dims=384), EmbedderMismatchError),
    (ModelSignature(name="tiny-model", version="3", dims=8), DimensionMismatchError),
], ids=["same-dims", "other-dims"])
def test_a_new_index_created_meanwhile_by_another_model_is_refused_as_such(client, settings, corpus, made_by,
                                                                            error):
    """Two first ingests into one new index: the second to create it was told an `index rebuild` switched
    it (IndexSwitchedError), which none did. Another client creates it between this run's check and its
    first write."""
    from unirank.api import Unirank

    other = Unirank(settings)

    def create_meanwhile(done: int, total: int, uri: str) -> None:
        if done == 1:
            other.backend.create_index("race", made_by)

    try:
        with pytest.raises(error, match=rf"^Another run created index 'race' with {made_by} after this one"):
            client.ingest(str(corpus), "race", progress=create_meanwhile)
        assert other.index_info("race").model == made_by and other.index_info("race").chunk_count == 0
    finally:
        other.close()


def test_a_text_the_embedding_endpoint_refuses_fails_its_file_not_the_run(settings, tmp_path):
    """A 413 for one text of a batch (here: the server now reads 64 tokens, the registration said 256)
    ended the whole ingest, exit 2, with nothing written and no file named."""
    from unirank.api import Unirank
    from unirank.models.loading import describe_remote
    from unirank.models.remote import Endpoint
    from unirank.registry import ModelRegistry

    from serving_helpers import ModelServer

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"short-{i}.txt").write_text(f"Wombat note {i}: burrows.\n")
    (docs / "long.md").write_text("# Tunnels\n\n" + " ".join(f"Tunnel {i} runs under the hill." for i in range(40)))
    server = ModelServer(tmp_path / "server", ["base"], env={"UNIRANK_SERVING__MAX_INPUT_TOKENS": "64"}).wait_ready()
    try:
        settings.remote.retries, settings.remote.verify_interval_s = 0, 600
        record = describe_remote(Endpoint(url=server.url, api="openai", role="embedder", remote_model="base"),
                                 settings)
        registry = ModelRegistry(settings.models_dir)
        registry.register("edge", "embedder", record={**record, "max_seq_length": 256})  # as registered before
        registry.close()
        settings.embedder.model = "edge@1"
        with Unirank(settings) as ur:
            report = ur.ingest(str(docs), "refused")
            assert sorted(report.ingested) == sorted((docs / f"short-{i}.txt").as_uri() for i in range(3))
            [(uri, reason)] = report.failed
            assert uri == (docs / "long.md").as_uri() and not report.ok and report.stopped is None
            assert reason.startswith("the embedding endpoint refused it:") and "HTTP 413" in reason, reason
            # One text's length, said once: no ".." and no advice to send fewer texts per request.
            assert "the limit is 64" in reason and ".." not in reason and "batch_inputs" not in reason, reason
            assert ur.index_info("refused").source_count == 3
    finally:
        server.stop()


def test_a_file_uri_with_two_slashes_is_refused_not_read_as_the_current_folder(client, tmp_path, monkeypatch):
    """`file://name` reads "name" as the URI's host and its path as "": ingest ingested the whole current
    folder, and `index remove IDX file://gone` removed every source under it."""
    from unirank.ingest.uris import uri_path

    (tmp_path / "here.txt").write_text("Wombats dig burrows.\n")
    monkeypatch.chdir(tmp_path)
    for uri in ("file://no-such-folder", "file://", "file://host/etc"):
        with pytest.raises(SourceError, match=r"is not a local path: .*file:///home/me/docs"):
            client.ingest(uri, "cwd")
    assert not client.backend.exists("cwd")

    assert client.ingest(str(tmp_path), "cwd").ingested
    with pytest.raises(SourceError, match="is not a local path"):
        client.sources_under("cwd", "file://gone")
    assert client.sources_under("cwd", (tmp_path / "here.txt").as_uri()) == [(tmp_path / "here.txt").as_uri()]
    for empty in ("", "  "):  # an unset "$DIR": `index remove cwd "" --yes` removed every source under "."
        with pytest.raises(SourceError, match="The source must be a folder"):
            client.sources_under("cwd", empty)
    assert uri_path(f"file://localhost{tmp_path}/a%20b.txt") == f"{tmp_path}/a b.txt"


def test_a_file_name_that_is_not_utf8_is_read_and_its_uri_round_trips(client, tmp_path):
    """as_uri percent-encodes a name's bytes (%FF%FE), but reading the URI back replaced the bytes that are
    not UTF-8 with U+FFFD: such a file could never be ingested ("No such file or directory")."""
    import os

    from unirank.ingest.uris import file_name, local_path, uri_path

    folder = tmp_path / "legacy"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"bad\xff\xfename.txt")
    with open(raw, "wb") as f:
        f.write(b"Capybaras are the largest rodents.\n")
    path = os.fsdecode(raw)
    uri = Path(path).as_uri()
    assert local_path(uri) == path and Path(local_path(uri)).as_uri() == uri
    assert uri_path(uri) == f"{folder}/bad\ufffd\ufffdname.txt" and file_name(uri) == "bad\ufffd\ufffdname.txt"

    report = client.ingest(str(folder), "legacy")
    assert report.failed == [] and report.ingested == [uri], report.failed
    hit = client.search("capybaras", "legacy", mode="bm25", rerank=False).hits[0]
    assert hit.chunk.source_uri == uri and hit.chunk.title == "bad\ufffd\ufffdname"  # printable, as shown
    assert client.ingest(str(folder), "legacy").skipped == [(uri, "unchanged")]
    assert client.ingest(path, "legacy").skipped == [(uri, "unchanged")]  # the file named on its own


def _linked_share(tmp_path: Path) -> tuple[Path, Path]:
    """docs/ (local.txt) with docs/share linked to share/ (one.txt, two.txt), as a mounted share is."""
    docs, share = tmp_path / "docs", tmp_path / "share"
    docs.mkdir()
    share.mkdir()
    (docs / "local.txt").write_text("Local notes about wombats.\n")
    (share / "one.txt").write_text("One: koalas sleep most of the day.\n")
    (share / "two.txt").write_text("Two: capybaras are rodents.\n")
    (docs / "share").symlink_to(share, target_is_directory=True)
    return docs, share


def test_a_linked_folder_named_as_the_source_is_the_one_ingested_under_its_parent(client, tmp_path, monkeypatch):
    """The root was resolved through its links but the files under it were not: after `ingest docs`,
    `index remove IDX docs/share` found nothing (the root read as /mnt/share, the files stored as
    docs/share/...), and `ingest docs/share` indexed the share's files a second time."""
    docs, share = _linked_share(tmp_path)
    linked = [(docs / "share" / n).as_uri() for n in ("one.txt", "two.txt")]
    assert len(client.ingest(str(docs), "lk").ingested) == 3

    again = client.ingest(str(docs / "share"), "lk")
    assert again.ingested == [] and again.skipped == [(u, "unchanged") for u in linked]
    assert client.index_info("lk").source_count == 3
    assert client.sources_under("lk", str(docs / "share")) == linked
    monkeypatch.chdir(tmp_path)
    assert client.sources_under("lk", "docs/share") == client.sources_under("lk", "docs/share/") == linked
    assert client.sources_under("lk", "docs/share/one.txt") == linked[:1]
    by_path = client.search("koalas", "lk", mode="bm25", rerank=False, filters={"source_uri": "docs/share/one.txt"})
    assert [hit.chunk.source_uri for hit in by_path.hits] == linked[:1]  # the path as ingested, link kept

    # An index made when roots were resolved holds the share's own paths: still found, and a re-run by the
    # linked path finds its files unchanged under them (not a second copy of each).
    direct = client.ingest(str(share), "old").ingested
    assert client.sources_under("old", "docs/share") == direct
    rerun = client.ingest("docs/share", "old", prune=True)
    assert rerun.ingested == rerun.pruned == [] and rerun.skipped == [(u, "unchanged") for u in direct]
    (share / "two.txt").write_text("Two: capybaras are the largest rodents.\n")
    assert client.ingest("docs/share", "old").ingested == direct[1:]
    assert client.index_info("old").source_count == 2


@pytest.mark.parametrize("first", ["link", "real"])
def test_a_folder_ingested_by_a_link_and_by_its_real_path_is_indexed_once(client, tmp_path, first):
    """Ingested by the link first, then by the real path, every file was indexed a second time (search
    returned each passage twice); the other way round, the second run found them unchanged."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "a.md").write_text("# Alpha\n\nAlpha text about apples.\n")
    (tmp_path / "real" / "sub" / "b.txt").write_text("Beta text.\n")
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    second = "real" if first == "link" else "link"
    once = client.ingest(str(tmp_path / first), "s2").chunks_written
    again = client.ingest(str(tmp_path / second), "s2", prune=True)
    assert again.ingested == again.pruned == [] and len(again.skipped) == 2
    info = client.index_info("s2")
    assert (info.source_count, info.chunk_count) == (2, once)
    (tmp_path / "real" / "a.md").write_text("# Alpha\n\nAlpha text about ripe apples.\n")
    assert client.ingest(str(tmp_path / second), "s2").ingested == [(tmp_path / first / "a.md").as_uri()]
    assert client.index_info("s2").source_count == 2


def test_a_link_into_a_hidden_folder_is_ingested_under_its_own_path(client, tmp_path):
    """git-annex keeps each document in .git/annex/objects and links it: the hidden copy marked the file
    read, so the link was dropped as a second path to it, and the hidden copy was then passed over.
    Neither was left: --prune removed the document, and a folder of such links held 'no documents'."""
    docs = tmp_path / "an"
    (docs / ".store").mkdir(parents=True)
    (docs / "policy.md").write_text("Policy on data retention.\n")
    (docs / "notes.txt").write_text("Plain notes.\n")
    assert len(client.ingest(str(docs), "an").ingested) == 2
    (docs / "policy.md").rename(docs / ".store" / "policy.md")
    (docs / "policy.md").symlink_to(Path(".store") / "policy.md")
    report = client.ingest(str(docs), "an", prune=True)
    assert report.pruned == [] and report.ok
    assert sorted(u for u, _ in report.skipped) == [(docs / "notes.txt").as_uri(), (docs / "policy.md").as_uri()]
    assert client.index_info("an").source_count == 2

    annexed = tmp_path / "annexed"
    (annexed / ".git" / "annex" / "objects").mkdir(parents=True)
    (annexed / ".git" / "annex" / "objects" / "x.md").write_text("# Report\n\nQuarterly figures.\n")
    (annexed / "report.md").symlink_to(annexed / ".git" / "annex" / "objects" / "x.md")
    assert client.ingest(str(annexed), "annexed").ingested == [(annexed / "report.md").as_uri()]


def test_a_broken_link_to_a_folder_fails_and_prune_keeps_what_was_ingested_through_it(client, tmp_path):
    """An unmounted share leaves its link broken: the link (no extension) was skipped as "unsupported file
    type '(none)'", the run exited 0, and --prune removed every document ingested through it."""
    docs, share = _linked_share(tmp_path)
    (docs / "old.txt").write_text("An old note about otters.\n")
    assert len(client.ingest(str(docs), "lk").ingested) == 4

    share.rename(tmp_path / "share.unmounted")
    (docs / "old.txt").unlink()
    (docs / "README").symlink_to(tmp_path / "moved-readme")  # broken, no extension: fails, not skipped
    report = client.ingest(str(docs), "lk", prune=True)
    assert report.pruned == [(docs / "old.txt").as_uri()] and not report.ok
    assert report.failed == [
        ((docs / "README").as_uri(), f"cannot read: a broken symbolic link: it points to {tmp_path / 'moved-readme'}, "
                                     "which does not exist"),
        ((docs / "share").as_uri(), f"cannot read: a broken symbolic link: it points to {share}, which does not "
                                    "exist (2 documents ingested from under it stay indexed; mend the link, or "
                                    "remove it and use --prune)")]
    assert [u for u, _ in report.skipped] == [(docs / "local.txt").as_uri()]
    assert client.index_info("lk").source_count == 3

    (docs / "local.txt").unlink()
    (docs / "README").unlink()
    with pytest.raises(SourceError, match=rf"holds no documents \({re.escape(str(docs / 'share'))} is a broken "
                                          r"symbolic link: .*, so --prune would remove all 3"):
        client.ingest(str(docs), "lk", prune=True)
    with pytest.raises(SourceError, match=rf"^No documents found in .* \({re.escape(str(docs / 'share'))} is a "
                                          r"broken symbolic link: it points to"):
        client.ingest(str(docs), "lk")
    with pytest.raises(SourceError, match=rf"^{re.escape(str(docs / 'share'))} is a broken symbolic link"):
        client.ingest(str(docs / "share"), "lk", prune=True)
    (docs / "share").unlink()  # gone on purpose: pruned
    (docs / "new.txt").write_text("A new note.\n")
    assert len(client.ingest(str(docs), "lk", prune=True).pruned) == 3


def test_the_report_names_each_pruned_source_and_json_lists_them(client, tmp_path, monkeypatch):
    """The report said "22 pruned" and --json counted them: which documents went was never said."""
    import json

    from typer.testing import CliRunner

    from unirank.cli import main as cli

    folder = tmp_path / "notes"
    folder.mkdir()
    for n in range(24):
        (folder / f"n{n:02}.txt").write_text(f"Note {n} about wombat{n}.\n")
    client.ingest(str(folder), "pr")
    for n in range(1, 23):
        (folder / f"n{n:02}.txt").unlink()
    monkeypatch.setattr(cli, "client", lambda **_: client)
    monkeypatch.setattr(cli.console, "width", 400)  # a path on one line

    shown = CliRunner().invoke(cli.app, ["ingest", str(folder), "-i", "pr", "--prune"])
    assert shown.exit_code == 0, shown.output
    assert "2 skipped, 0 failed, 22 pruned;" in shown.output
    named = [line for line in shown.output.splitlines() if line.startswith("  pruned ")]
    assert named == [f"  pruned {folder / f'n{n:02}.txt'}" for n in range(1, 21)]
    assert shown.output.endswith("  … and 2 more pruned (--json lists them all)\n")

    (folder / "n23.txt").unlink()
    data = json.loads(CliRunner().invoke(cli.app, ["ingest", str(folder), "-i", "pr", "--prune", "--json"]).output)
    assert data["pruned"] == 1 and data["pruned_sources"] == [(folder / "n23.txt").as_uri()]
    assert data["ingested"] == 0 and data["skipped"] == 1  # the counts stay counts


def test_lone_surrogates_are_read_as_replacement_characters_and_the_files_around_them_are_ingested(
        client, tmp_path):
    """A JSON or YAML \\ud800 escape made a text the tokenizer refused with a TypeError: the run stopped
    with a traceback at that file, every time, so the files after it were never ingested."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a-wombats.txt").write_text("Wombats dig burrows.\n")
    (docs / "m-records.jsonl").write_text('{"_id": "r\\udc00", "title": "Odd \\ud800", "text": "bad \\ud800 text",'
                                          ' "tag\\udfff": "x\\ud800"}\n')
    (docs / "m-front.md").write_text('---\ntitle: "Platypus \\ud800 notes"\n---\nPlatypuses lay eggs.\n')
    (docs / "z-koalas.txt").write_text("Koalas sleep most of the day.\n")
    report = client.ingest(str(docs), "odd")
    assert report.failed == [] and len(report.ingested) == 4
    [record] = client.search("bad text", "odd", mode="bm25", rerank=False, top_k=1).hits
    chunk = record.chunk
    assert (chunk.doc_id, chunk.title, chunk.text) == ("r\ufffd", "Odd \ufffd", "bad \ufffd text")
    assert chunk.metadata["tag\ufffd"] == "x\ufffd"
    [front] = client.search("platypuses eggs", "odd", mode="bm25", rerank=False, top_k=1).hits
    assert front.chunk.title == "Platypus \ufffd notes"


def test_an_unexpected_error_reading_one_file_fails_that_file_and_the_run_goes_on(client, tmp_path, monkeypatch):
    """Only ParseError was caught: any other error from a parser or the tokenizer (the TypeError a lone
    surrogate made) stopped the run with a traceback, at the same file on every re-run."""
    from unirank.ingest.chunking import Chunker

    chunk = Chunker.chunk

    def tokenizer_bug(self, doc, uri):
        if "middle" in uri:
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return chunk(self, doc, uri)

    monkeypatch.setattr(Chunker, "chunk", tokenizer_bug)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in [("a-first", "Wombats dig burrows."), ("m-middle", "Odd text."), ("z-last", "Koalas sleep.")]:
        (docs / f"{name}.txt").write_text(text)
    report = client.ingest(str(docs), "odd")
    assert sorted(Path(u).name for u in report.ingested) == ["a-first.txt", "z-last.txt"]
    [(uri, reason)] = report.failed
    assert Path(uri).name == "m-middle.txt" and reason.startswith("cannot parse: TypeError: TextEncodeInput")
    assert report.stopped is None and not report.ok


def test_a_file_folder_or_link_gone_while_the_folder_is_listed_is_passed_over(client, tmp_path, monkeypatch):
    """A temp file a sync client or download made and removed while the folder was listed failed the whole
    run as "does not exist. Check the path": its os.stat came after the folder's listing named it."""
    import os

    docs = tmp_path / "docs"
    (docs / "tmp-folder").mkdir(parents=True)
    (docs / "a.txt").write_text("Wombats dig burrows.\n")
    (docs / "part.tmp.txt").write_text("Half a download.\n")
    (docs / "tmp-folder" / "b.txt").write_text("A temporary note.\n")
    (docs / "tmp-link.txt").symlink_to(docs / "a.txt")
    (docs / "z.txt").write_text("Koalas sleep most of the day.\n")
    stat, scandir = os.stat, os.scandir
    doomed = {str(docs / "part.tmp.txt"), str(docs / "tmp-link.txt")}

    def removed_first(path, *args, **kwargs):  # each goes between the folder's listing and its own look
        if str(path) in doomed:
            doomed.remove(str(path))
            os.unlink(path)
        return stat(path, *args, **kwargs)

    def folder_removed_first(path="."):
        if str(path) == str(docs / "tmp-folder"):
            shutil.rmtree(path)
        return scandir(path)

    monkeypatch.setattr(os, "stat", removed_first)
    monkeypatch.setattr(os, "scandir", folder_removed_first)
    report = client.ingest(str(docs), "race")
    assert not doomed and not (docs / "tmp-folder").exists()
    assert report.ingested == [(docs / "a.txt").as_uri(), (docs / "z.txt").as_uri()]
    assert report.failed == [] and report.files_seen == 2


def _locked_by_its_mode(folder: Path, monkeypatch) -> None:
    folder.chmod(0o000)


def _locked_by_a_denied_listing(folder: Path, monkeypatch) -> None:
    """As chmod 000 looks to a user who is not root (root may list any folder)."""
    import errno
    import os

    scandir = os.scandir

    def denied(path="."):
        if str(path) == str(folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)


def test_a_symbolic_link_loop_is_said_to_be_one(client, tmp_path):
    """Links that point at each other (or at themselves) were said to point to a file "which does not
    exist", though it did: the user went looking for a missing file."""
    docs = tmp_path / "sl"
    docs.mkdir()
    (docs / "a.txt").write_text("Wombats dig burrows.\n")
    (docs / "loop1.md").symlink_to("loop2.md")
    (docs / "loop2.md").symlink_to("loop1.md")
    (docs / "self.txt").symlink_to("self.txt")
    report = client.ingest(str(docs), "sl")
    assert report.ingested == [(docs / "a.txt").as_uri()]
    assert report.failed == [((docs / "loop1.md").as_uri(), "cannot read: a symbolic link loop: loop1.md -> loop2.md "
                                                            "-> loop1.md"),
                             ((docs / "loop2.md").as_uri(), "cannot read: a symbolic link loop: loop2.md -> loop1.md "
                                                            "-> loop2.md"),
                             ((docs / "self.txt").as_uri(), "cannot read: a symbolic link loop: self.txt -> self.txt")]


def _unenterable_by_its_mode(folder: Path, monkeypatch) -> None:
    folder.chmod(0o644)


def _unenterable_by_a_denied_stat(folder: Path, monkeypatch) -> None:
    """As chmod 644 looks to a user who is not root: the folder lists its names, but nothing in it can be
    looked at or opened (root may enter any folder)."""
    import errno
    import os

    stat = os.stat

    def denied(path, *args, **kwargs):
        if str(path).startswith(f"{folder}/"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", denied)


_UNLISTABLE = "a folder that cannot be listed"
_UNENTERABLE = "a folder that can be listed but not entered (no execute permission)"


@pytest.mark.parametrize(("lock", "why"), [
    (_locked_by_its_mode, _UNLISTABLE), (_locked_by_a_denied_listing, _UNLISTABLE),
    (_unenterable_by_its_mode, _UNENTERABLE), (_unenterable_by_a_denied_stat, _UNENTERABLE)])
def test_a_subfolder_that_cannot_be_listed_or_entered_fails_and_the_rest_is_ingested(
        client, tmp_path, monkeypatch, lock, why):
    """A subfolder the user may not list (lost+found, System Volume Information), or may list but not enter
    (read without execute permission), stopped the whole run with "Cannot list <source>: Permission
    denied" (exit 2): nothing else was ingested. It fails alone now, as an unreadable file does, and
    --prune keeps what was ingested under it."""
    import os

    if lock in (_locked_by_its_mode, _unenterable_by_its_mode) and os.geteuid() == 0:
        pytest.skip("root lists and enters a folder whatever its mode")
    docs, locked = tmp_path / "docs", tmp_path / "docs" / "locked"
    (locked / "inner").mkdir(parents=True)
    (docs / "ok.txt").write_text("Wombats dig burrows.\n")
    (locked / "s.txt").write_text("Secret plans about zebras.\n")
    (locked / "inner" / "t.txt").write_text("More secret plans.\n")
    assert len(client.ingest(str(docs), "perm").ingested) == 3

    (docs / "new.txt").write_text("Koalas sleep most of the day.\n")
    lock(locked, monkeypatch)
    try:
        report = client.ingest(str(docs), "perm", prune=True)
        said = r": its folder can be listed but not entered \(no execute permission\)$" if why == _UNENTERABLE else ""
        with pytest.raises(SourceError, match=rf"^Cannot list .*locked: \[Errno 13\] Permission denied.*{said}"):
            client.ingest(str(locked), "perm")  # the source itself: still the run's failure
    finally:
        locked.chmod(0o755)
    assert report.ingested == [(docs / "new.txt").as_uri()] and report.pruned == []
    assert report.skipped == [((docs / "ok.txt").as_uri(), "unchanged")]
    assert report.failed == [(locked.as_uri(), f"cannot read: {why}: Permission denied (2 documents ingested "
                                               "from under it stay indexed; make it readable and enterable (r and "
                                               "x), or remove it and use --prune)")]
    assert not report.ok and report.stopped is None  # `unirank ingest` exits 1
    assert client.index_info("perm").source_count == 4


def _links_into_it_denied(folder: Path, monkeypatch) -> None:
    """As a link into a locked folder looks to a user who is not root: the link itself can be looked at, but
    following it into the folder is denied (root may enter any folder)."""
    import errno
    import os

    stat = os.stat

    def denied(path, *args, follow_symlinks=True, **kwargs):
        reached = os.path.realpath(path) if follow_symlinks else os.path.abspath(path)
        if reached.startswith(f"{folder}/"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return stat(path, *args, follow_symlinks=follow_symlinks, **kwargs)

    monkeypatch.setattr(os, "stat", denied)


@pytest.mark.parametrize("lock", [_locked_by_its_mode, _unenterable_by_its_mode, _links_into_it_denied])
def test_a_link_into_a_folder_that_cannot_be_entered_fails_for_its_permissions(client, tmp_path, monkeypatch, lock):
    """A link to a file or folder inside a folder the user may not enter (mode 000, or read without execute)
    failed as "a broken symbolic link: it points to ..., which does not exist": the user went looking for a
    missing file that was there."""
    import os

    if lock in (_locked_by_its_mode, _unenterable_by_its_mode) and os.geteuid() == 0:
        pytest.skip("root enters a folder whatever its mode")
    docs, vault = tmp_path / "docs", tmp_path / "vault"
    docs.mkdir()
    (vault / "inner").mkdir(parents=True)
    (docs / "ok.txt").write_text("Wombats dig burrows.\n")
    (vault / "s.txt").write_text("Secret plans about zebras.\n")
    (vault / "inner" / "t.txt").write_text("More secret plans.\n")
    (docs / "secret.txt").symlink_to(vault / "s.txt")
    (docs / "inner").symlink_to(vault / "inner", target_is_directory=True)
    assert len(client.ingest(str(docs), "vault").ingested) == 3

    (docs / "new.txt").write_text("Koalas sleep most of the day.\n")
    lock(vault, monkeypatch)
    try:
        report = client.ingest(str(docs), "vault", prune=True)
    finally:
        vault.chmod(0o755)
    unreachable = "cannot read: a symbolic link whose target cannot be reached: it points to {}, inside a folder " \
                  "that cannot be entered (no execute permission): Permission denied"
    assert report.failed == [
        ((docs / "inner").as_uri(), unreachable.format(vault / "inner") + " (1 document ingested from under it "
                                                                          "stay indexed; make the folders on its "
                                                                          "way enterable (x), or remove it and use "
                                                                          "--prune)"),
        ((docs / "secret.txt").as_uri(), unreachable.format(vault / "s.txt") + " (the previous version stays "
                                                                               "indexed; fix the file, or remove it "
                                                                               "and use --prune)")]
    assert report.ingested == [(docs / "new.txt").as_uri()] and report.pruned == []
    assert not report.ok and report.stopped is None  # `unirank ingest` exits 1
    assert client.index_info("vault").source_count == 4
