"""Messages of the Python API that tell the user what to do next."""

from __future__ import annotations

import pytest

from unirank.api import Unirank
from unirank.chat.store import ConversationStore
from unirank.errors import ConversationNotFoundError, IndexNotFoundError, InvalidQueryError


@pytest.mark.parametrize("name", ["-x", "a" * 129, "naïve"])
def test_a_missing_index_whose_name_ingest_refuses_is_said_to_be_an_invalid_name(settings, name):
    """The error said to create it with `unirank ingest ... --index NAME`, which then refused the name."""
    with Unirank(settings) as client:
        with pytest.raises(IndexNotFoundError, match="use letters, digits, '-' and '_'") as missing:
            client.index_info(name)
    assert "Create it with" not in str(missing.value)
    with Unirank(settings) as client, pytest.raises(IndexNotFoundError, match=r"Create it with `unirank ingest "
                                                                             r"SOURCE --index docs`"):
        client.index_info("docs")


def test_a_session_of_an_invalid_index_name_is_refused_and_a_missing_one_says_how_to_make_one(tmp_path):
    """create_session('../x') stored the name unchecked; a missing session was said to be made over HTTP only.
    A name made before the naming rule ('docs.v2') still names an index that can be asked, so it is taken."""
    with ConversationStore(tmp_path / "chat.sqlite") as store:
        for name in ("../x", ".hidden", "a/b", "a\\b"):
            with pytest.raises(InvalidQueryError, match="Invalid index name"):
                store.create_session(name)
        assert store.sessions() == []
        assert store.create_session("docs.v2").index == "docs.v2"
        with pytest.raises(ConversationNotFoundError, match=r"POST /v1/sessions, or in Python with "
                                                            r"store\.create_session\(index\)"):
            store.session("nope")


def test_a_damaged_index_is_listed_apart_and_hides_no_other(client, tmp_path):
    """list_indexes leaves a damaged index out (so it cannot hide the others); Python callers had to reach
    into client.backend to learn it existed, as the CLI and HTTP server did."""
    from unirank.errors import IndexCorruptedError
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Refunds\n\nRefunds are paid within 14 days of a return.\n")
    for name in ("good", "broken"):
        client.ingest(tmp_path / "docs", name)
    client.close()
    current = (client.settings.indexes_dir / "broken" / "CURRENT").read_text().strip()
    (client.settings.indexes_dir / "broken" / current / "chunks.sqlite").write_bytes(b"")
    with Unirank(client.settings) as reopened:
        assert [info.name for info in reopened.list_indexes()] == ["good"]
        damaged = reopened.damaged_indexes()
        assert list(damaged) == ["broken"] and "chunks.sqlite" in damaged["broken"]
        with pytest.raises(IndexCorruptedError):
            reopened.index_info("broken")


@pytest.mark.parametrize("current", ["", "../good/v1"])
def test_an_index_whose_current_file_names_no_version_folder_is_damaged_not_missing(client, tmp_path, current):
    """An emptied CURRENT named the index folder itself: the index was said not to exist while the same
    message listed it, and `ingest` (which that message advised) failed the same way; "../good/v1" opened
    another index's store as this one."""
    from unirank.errors import IndexCorruptedError
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Refunds\n\nRefunds are paid within 14 days of a return.\n")
    for name in ("good", "broken"):
        client.ingest(tmp_path / "docs", name)
    client.close()
    (client.settings.indexes_dir / "broken" / "CURRENT").write_text(current)
    with Unirank(client.settings) as reopened:
        assert [info.name for info in reopened.list_indexes()] == ["good"]
        assert "names no version folder" in reopened.damaged_indexes()["broken"]
        with pytest.raises(IndexCorruptedError, match="'broken' is damaged"):
            reopened.search("refunds", "broken", mode="bm25", rerank=False)
        with pytest.raises(IndexCorruptedError):
            reopened.ingest(tmp_path / "docs", "broken")
        reopened.delete_index("broken")  # as every message above says; it failed as they did
        assert [info.name for info in reopened.list_indexes()] == ["good"] and not reopened.damaged_indexes()
    assert not (client.settings.indexes_dir / "broken").exists()
