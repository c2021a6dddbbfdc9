"""The ``unirank`` command line, run as users run it (a real subprocess)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from env_helpers import without_unirank_settings
from unirank.search.embedded.backend import EmbeddedBackend

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "sample-docs"


@pytest.fixture()
def run(tmp_path):
    env = without_unirank_settings(os.environ)
    env.update(HF_HUB_OFFLINE="1", UNIRANK_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")

    def _run(*args: str, ok: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", *args], cwd=tmp_path,
                              env={**env, **(extra_env or {})}, capture_output=True, text=True, timeout=300)
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    return _run


def test_ingest_search_and_index_commands(run, tmp_path):
    report = json.loads(run("ingest", str(SAMPLES), "--index", "handbook", "--json").stdout)
    assert report["ingested"] >= 6 and report["failed"] == 0

    out = json.loads(run("search", "what does SEV1 mean", "--index", "handbook", "--top-k", "2", "--json").stdout)
    assert out["mode"] == "hybrid" and out["reranked"] is False and len(out["hits"]) == 2
    assert out["hits"][0]["title"] == "Incident response runbook"
    out = json.loads(run("search", "what does SEV1 mean", "--index", "handbook", "--top-k", "2", "--rerank",
                         "--json").stdout)
    assert out["reranked"] is True and all("rerank" in h["scores"] for h in out["hits"])
    assert out["hits"][0]["title"] == "Incident response runbook"

    out = json.loads(run("search", "password", "--index", "handbook", "--mode", "bm25", "--no-rerank",
                         "--filter", "category=account", "--json").stdout)
    assert out["hits"] and {h["doc_id"] for h in out["hits"]} <= {"faq-3", "faq-4"}

    # A key no passage has is refused, as /v1/search refuses it (in a table it was a "No results" line;
    # with --json a silent empty list).
    for extra in ([], ["--json"]):
        refused = run("search", "password", "--index", "handbook", "--mode", "bm25", "-f", "categroy=account",
                      *extra, ok=False)
        assert refused.returncode == 2 and refused.stdout == ""
        assert "No passage has the key 'categroy' (did you mean 'category'?); the keys there are: " in " ".join(
            refused.stderr.split())
    wrong_value = run("search", "password", "--index", "handbook", "--mode", "bm25", "-f", "category=acount").stdout
    assert "No results" in wrong_value and "No passage has the key" not in wrong_value  # the key exists
    table = run("search", "restore a database", "--index", "handbook", "--top-k", "1").stdout
    assert "Backup and restore policy" in table
    # A pasted log is a query: its 98,000 characters were the table's title (and the "No results for" line).
    pasted = "backup " * 14_000
    shown = run("search", pasted, "--index", "handbook", "--mode", "bm25", "--no-rerank", "--top-k", "2").stdout
    assert len(shown) < 5000 and "Backup and restore policy" in shown, shown
    assert "(98,000 characters; --json shows all)" in " ".join(shown.split()), shown

    listed = json.loads(run("index", "list", "--json").stdout)
    assert [i["name"] for i in listed] == ["handbook"] and listed[0]["model"]["dims"] == 384
    info = json.loads(run("index", "info", "handbook", "--json").stdout)
    assert info["chunk_count"] >= 6
    assert "model: all-MiniLM-L6-v2@base (384 dimensions)" in run("index", "info", "handbook").stdout
    narrow = run("index", "list", extra_env={"COLUMNS": "80"}).stdout
    assert "all-MiniLM-L6-v2@base" in narrow and "…" not in narrow, narrow
    assert "updated" not in narrow and "updated (UTC)" in run("index", "list").stdout  # left out when narrow
    assert info["copy_of"] is None and "copy_of" not in run("index", "info", "handbook").stdout
    # A copy eval made says which index it re-embeds.
    backend = EmbeddedBackend(tmp_path / "data" / "indexes")
    backend.create_index("handbook--other-1", backend.model("handbook"), copy_of="handbook")
    backend.close()
    assert "copy of" in run("index", "list").stdout
    assert "copy_of: handbook" in run("index", "info", "handbook--other-1").stdout
    run("index", "delete", "handbook--other-1", "--yes")

    for model, says in (("", "--model is empty"), ("never-registered@1", "never-registered@1")):
        refused = run("ingest", str(SAMPLES), "--index", "other", "--model", model, ok=False)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
    assert [i["name"] for i in json.loads(run("index", "list", "--json").stdout)] == ["handbook"]

    run("index", "delete", "handbook", "--yes")
    assert json.loads(run("index", "list", "--json").stdout) == []


@pytest.mark.slow  # five CLI ingests (~18 s): in the slow step, for the default run's margin
def test_a_renamed_folder_is_removed_by_its_old_path_and_an_empty_one_never_prunes_all(run, tmp_path):
    """Before: `ingest EMPTY --prune` emptied the index silently (an unmounted share looks empty), and a
    renamed folder's old documents could not be removed, since `ingest OLD --prune` needs OLD to exist."""
    old, new = tmp_path / "handbook", tmp_path / "handbook-2026"
    old.mkdir()
    (old / "wombats.txt").write_text("Wombats dig burrows.\n")
    (old / "koalas.txt").write_text("Koalas sleep most of the day.\n")
    run("ingest", str(old), "--index", "zoo")
    old.rename(new)
    run("ingest", str(new), "--index", "zoo")
    assert json.loads(run("index", "info", "zoo", "--json").stdout)["source_count"] == 4  # twice over

    removed = run("index", "remove", "zoo", str(old), "--yes").stdout
    assert "Removed 2 sources (2 chunks) from index 'zoo'." in removed
    hits = json.loads(run("search", "wombats", "--index", "zoo", "--mode", "bm25", "--json").stdout)["hits"]
    assert [h["source_uri"] for h in hits] == [(new / "wombats.txt").as_uri()]
    again = run("index", "remove", "zoo", str(old), "--yes", ok=False)
    assert again.returncode == 2 and "holds no documents from" in again.stderr

    for f in new.iterdir():
        f.unlink()
    refused = run("ingest", str(new), "--index", "zoo", "--prune", ok=False)
    assert refused.returncode == 2 and "--prune would remove all 2 ingested from it" in " ".join(refused.stderr.split())
    assert json.loads(run("index", "info", "zoo", "--json").stdout)["source_count"] == 2


@pytest.mark.slow  # a CLI subprocess per step (~15 s): kept out of the default run for time
def test_brackets_in_documents_and_paths_are_printed_as_written(run, tmp_path):
    """Rich reads "[bold]" or "[the guide]" as markup; text from documents and paths must not be."""
    docs = tmp_path / "docs [draft]"
    docs.mkdir()
    (docs / "[bold]notes.txt").write_text("Read [the guide] before you file [bold]expenses[/bold].\n", encoding="utf-8")
    (docs / "[broken].pdf").write_bytes(b"not a pdf")
    failed = run("ingest", str(docs), "--index", "notes", ok=False)
    assert failed.returncode == 1  # a file failed: scripts notice, and the others are in the index
    report = failed.stdout
    assert f"notes ← {docs}: 2 files seen, 1 ingested" in report
    again = run("ingest", str(docs / "[bold]notes.txt"), "--index", "notes").stdout  # unchanged
    assert f"notes ← {docs / '[bold]notes.txt'}: 1 file seen, 0 ingested, 1 skipped, 0 failed; 0 chunks" in again
    assert f"failed {docs / '[broken].pdf'}: not a readable PDF" in report  # a path, as the user wrote it
    table = run("search", "the guide [bold]", "--index", "notes", "--mode", "bm25").stdout
    assert "'the guide [bold]'" in table
    assert "Read [the guide] before you file [bold]expenses[/bold]." in " ".join(table.replace("│", " ").split())
    assert "[bold]notes.txt" in table
    missing = run("ingest", str(docs / "[red]gone"), "--index", "notes", ok=False)
    assert missing.returncode == 2 and f"{docs.resolve() / '[red]gone'} does not exist" in missing.stderr

    from unirank.models.loading import resolve_model_path  # a model folder named with brackets: the table's title
    model = tmp_path / "emb[bold]"
    model.symlink_to(resolve_model_path("base")[0], target_is_directory=True)
    run("ingest", str(docs / "[bold]notes.txt"), "--index", "br", "--model", str(model))
    titled = run("search", "the guide", "--index", "br", extra_env={"UNIRANK_EMBEDDER__MODEL": str(model)}).stdout
    assert "(hybrid with emb[bold]@local-" in titled


def test_version_is_the_installed_packages(run):
    from importlib.metadata import version

    assert run("--version").stdout == f"unirank {version('unirank')}\n"


def test_every_option_and_argument_says_what_it_does_in_help():
    """`--help` is the CLI's reference: a parameter listed without a word leaves the user to guess."""
    import typer.main

    from unirank.cli.main import app

    unexplained = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        unexplained.extend(f"unirank {' '.join(path)} {p.opts[0]}" for p in command.params if not p.help)

    walk(typer.main.get_command(app), [])
    assert unexplained == []


def test_help_shows_flags_as_flags():
    """typer 0.29 lists every flag as taking a value (`--json <bool>`, `--help <bool>`): pinned below it."""
    from typer.testing import CliRunner

    from unirank.cli.main import app

    shown = CliRunner().invoke(app, ["index", "info", "--help"], env={"COLUMNS": "100"}).output
    assert "--json" in shown and "<bool>" not in shown, shown


def test_help_keeps_square_brackets_that_rich_would_read_as_markup():
    """`unirank train --help` showed `JSONL {query, shown: , clicked: }`: rich took `[id, ...]` for a style tag;
    `unirank eval --help` lost `[@ALIAS]` the same way. Every help text is checked as rich renders it."""
    import typer.main
    from rich.markup import render
    from typer.testing import CliRunner

    from unirank.cli.main import app

    eaten = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        for where, text in [("", command.help), *((p.opts[0], p.help) for p in command.params)]:
            if text and render(text).plain != text.replace("\\[", "["):
                eaten.append(f"unirank {' '.join(path)} {where}: {text!r}")

    walk(typer.main.get_command(app), [])
    assert eaten == []
    shown = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
    assert "JSONL {query, shown: [id, ...], clicked: [id | {id, dwell_s}, ...]} per result page" in shown, shown
    shown = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "300"}).output
    assert "a trained NAME[@ALIAS], or registry refs" in shown, shown


def test_errors_are_clear_and_exit_2(run):
    run("ingest", str(SAMPLES / "backups.md"), "--index", "h")
    proc = run("search", "x", "--index", "h", "--top-k", "51", "--rerank", ok=False)
    assert proc.returncode == 2 and "at most 50" in proc.stderr
    proc = run("search", "x", "--index", "missing", ok=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run("search", "x", "--index", "h", "--filter", "novalue", ok=False)
    assert proc.returncode == 2 and "key=value" in proc.stderr
    proc = run("search", "x", "--index", "h", "-f", "category=a", "-f", "category=b", ok=False)
    assert proc.returncode == 2 and "--filter category is given twice" in proc.stderr
    # A byte that is not UTF-8 (read as a lone surrogate) reached tantivy: a traceback and exit 1.
    proc = run("search", "x", "--index", "h", "--mode", "bm25", "-f", "category=b\udcffackups", ok=False)
    assert proc.returncode == 2 and "'category' holds a lone surrogate" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The app server refuses what would fail every request, instead of starting anyway.
    proc = run("serve", "api", "--index", "nope", ok=False)
    assert proc.returncode == 2 and "Index 'nope' does not exist" in proc.stderr and "Uvicorn" not in proc.stderr
    # A misnamed index was a warning, a bad model a traceback after the "running" banner (exit 3), and
    # --index "" the default index.
    for args, env, said in [(["--index", "bad/name"], {}, "Invalid index name 'bad/name'"),
                            (["--index", ""], {}, "--index is empty"),
                            (["--index", "h"], {"UNIRANK_EMBEDDER__MODEL": "nope"}, "'nope' is not a registered model")]:
        proc = run("serve", "api", *args, ok=False, extra_env=env)
        assert proc.returncode == 2 and said in " ".join(proc.stderr.split()), proc.stderr
        assert "app server on" not in proc.stderr and "Traceback" not in proc.stderr and "warning" not in proc.stderr
    proc = run("serve", "api", "--port", "99999", ok=False)
    assert proc.returncode == 2 and "--port" in proc.stderr
    with socket.socket() as taken:  # a port something listens on is refused before any model loads
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for command in (["serve", "api"], ["serve", "models"]):
            proc = run(*command, "--port", port, ok=False)
            assert proc.returncode == 2 and f"Cannot listen on 127.0.0.1:{port}" in proc.stderr, proc.stderr
            assert "Uvicorn" not in proc.stderr and "Started server" not in proc.stderr
            assert "Stop what listens there" in proc.stderr
    # An address that is not this machine's: the advice was to stop what listens on the port.
    proc = run("serve", "models", "--host", "10.255.255.1", "--port", port, ok=False)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Cannot listen on 10.255.255.1:" in message, message
    assert "it is not an address of this machine" in message and "another --port" not in message


@pytest.mark.slow  # starts the app server three times (~20 s): in the slow step, for the default run's margin
def test_the_app_server_says_at_start_when_requests_must_name_their_index(run, tmp_path):
    """With two indexes and no --index it started silently, and every request without an index got a 400."""
    run("ingest", str(SAMPLES / "backups.md"), "--index", "one")
    run("ingest", str(SAMPLES / "api-keys.md"), "--index", "two")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = without_unirank_settings(os.environ)
    env.update(HF_HUB_OFFLINE="1", UNIRANK_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "unirank.cli.main", "serve", "api", "--port", port], cwd=tmp_path,
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        said = []
        for line in proc.stderr:  # type: ignore[union-attr]
            said.append(line)
            if "app server on" in line:
                break
        text = " ".join("".join(said).split())
        assert "warning: Name the index to answer from (there are: one, two)" in text, text
        assert "each request must name its index" in text and "by default" not in text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_config_show_merges_toml_and_environment(run, tmp_path):
    (tmp_path / "unirank.toml").write_text('[search]\nrrf_k = 30\ntop_k = 7\n[chunking]\nsize = 200\n')
    out = json.loads(run("config", "show", "--json", extra_env={"UNIRANK_SEARCH__TOP_K": "12"}).stdout)
    assert out["search"]["rrf_k"] == 30      # from the file
    assert out["search"]["top_k"] == 12      # the environment wins
    assert out["chunking"]["size"] == 200
    assert "rrf_k = 30" in run("config", "show").stdout
    (tmp_path / "unirank.toml").write_text("[chat]\nmin_score = 0.4\n")
    before = json.loads(run("config", "show", "--json").stdout)
    shown = run("config", "show").stdout
    assert "# size (unset)" in shown.split("[chunking]")[1].split("[")[0]  # unset, named in its own section
    # Unset, embedder.model lets each index be read with its own model; a copy of the output keeps it unset.
    assert before["embedder"]["model"] is None and "# model (unset)" in shown.split("[embedder]")[1].split("[")[0]
    (tmp_path / "unirank.toml").write_text(shown)  # what it prints is a unirank.toml that loads as the same
    assert json.loads(run("config", "show", "--json").stdout) == before and before["chat"]["min_score"] == 0.4
    secrets = {"UNIRANK_SERVING__API_KEYS": '["k-live-abc"]', "UNIRANK_STORAGE__SECRET_ACCESS_KEY": "s3-secret"}
    for flags in ((), ("--json",)):
        shown = run("config", "show", *flags, extra_env=secrets).stdout
        assert "k-live-abc" not in shown and "s3-secret" not in shown and "***" in shown


def test_config_show_prints_a_relative_model_from_a_variable_as_the_path_it_is_read_from(run, tmp_path):
    """A ./NAME model from a variable is read from the cwd, one in a file from the file's folder: printed as
    written, the output loaded from another folder named another model folder."""
    models = {"UNIRANK_EMBEDDER__MODEL": "./m", "UNIRANK_RERANKER__MODEL": "../r",
              "UNIRANK_SERVING__MODELS": '["./s", "base"]'}
    before = json.loads(run("config", "show", "--json", extra_env=models).stdout)
    assert before["embedder"]["model"] == str(tmp_path / "m")
    assert before["reranker"]["model"] == str(tmp_path / ".." / "r")
    assert before["serving"]["models"] == [str(tmp_path / "s"), "base"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "unirank.toml").write_text(run("config", "show", extra_env=models).stdout)
    loaded = run("config", "show", "--json", extra_env={"UNIRANK_CONFIG": str(tmp_path / "other" / "unirank.toml")})
    assert json.loads(loaded.stdout) == before


def test_invalid_settings_are_reported(run, tmp_path):
    (tmp_path / "unirank.toml").write_text('[reranker]\ntop_k = 80\n')
    proc = run("config", "show", ok=False)
    assert proc.returncode == 2 and "at most 50" in proc.stderr
    # A misspelt key is refused, not left silently at its default; the message suggests the real one.
    (tmp_path / "unirank.toml").write_text('[embedder]\nmodle = "team-embed@prod"\n[serch]\ntop_k = 3\n')
    proc = run("models", "list", ok=False, extra_env={"UNIRANK_CHAT__ANSWERR": "openai"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for line in ("unknown setting embedder.modle (did you mean embedder.model?)",
                 "unknown setting serch (did you mean search?)",
                 "unknown setting chat.answerr (did you mean chat.answerer?)"):
        assert line in " ".join(proc.stderr.split()), proc.stderr
    (tmp_path / "unirank.toml").unlink()
    proc = run("config", "show", ok=False, extra_env={"UNIRANK_INGEST__LEGACY_ENCODING": "cp-1252x"})
    assert proc.returncode == 2 and "ingest.legacy_encoding 'cp-1252x' is not an encoding Python knows" in \
        " ".join(proc.stderr.split()), proc.stderr
    proc = run("config", "show", ok=False, extra_env={"UNIRANK_SERVING__API_KEYS": "key-1,key-2"})
    assert proc.returncode == 2 and "UNIRANK_SERVING__API_KEYS could not be read" in proc.stderr
    assert "takes JSON" in " ".join(proc.stderr.split())


def test_config_show_prints_the_data_dir_it_will_use_as_an_absolute_path(run, tmp_path):
    """With an empty ./unirank.toml (and no UNIRANK_CONFIG or UNIRANK_DATA_DIR) it printed `data_dir =
    ".unirank"`, where a config file that names the folder printed the path resolved against the file's."""
    (tmp_path / "unirank.toml").write_text("")
    env = without_unirank_settings(os.environ)
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "config", "show", "--json"], cwd=tmp_path,
                          env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    shown = Path(json.loads(proc.stdout)["data_dir"])
    assert shown.is_absolute() and shown.resolve() == (tmp_path / ".unirank").resolve(), shown
    config = tmp_path / "conf" / "unirank.toml"
    config.parent.mkdir()
    config.write_text('data_dir = ".unirank"\n[chat]\ndb_path = "chats.sqlite"\n')
    data = json.loads(run("config", "show", "--json", extra_env={"UNIRANK_CONFIG": str(config),
                                                                  "UNIRANK_DATA_DIR": "rel-data"}).stdout)
    assert Path(data["data_dir"]).resolve() == (tmp_path / "rel-data").resolve()  # a variable: from the cwd
    assert Path(data["chat"]["db_path"]).resolve() == (config.parent / "chats.sqlite").resolve()


def test_ingest_help_paragraphs_wrap_cleanly(run):
    """Line breaks inside the docstring's paragraph came through Typer's rich help: "…partway (what was" and
    "committed" ended short lines of their own."""
    for columns in ("100", "200"):
        proc = run("ingest", "--help", extra_env={"COLUMNS": columns})
        lines = [line.strip() for line in proc.stdout.splitlines()]
        start = next(i for i, line in enumerate(lines) if line.startswith("Exits 0"))
        paragraph = lines[start:lines.index("", start)]
        width = int(columns)
        assert all(len(line) > width - 30 for line in paragraph[:-1]), paragraph  # only the last line is short
        assert " ".join(paragraph).endswith("a model or endpoint that failed before the first commit).")


@pytest.mark.slow  # a CLI ingest and rebuild (~20 s): in the slow step, for the default run's margin
def test_a_rebuild_with_a_model_folder_says_how_to_search_it(run, tmp_path):
    """An index rebuilt with a model folder cannot be searched until embedder.model names that folder (an
    index does not remember a folder), and the rebuild said nothing of it."""
    from unirank.models.loading import resolve_model_path

    folder = resolve_model_path("base")[0]
    run("ingest", str(SAMPLES / "faq.jsonl"), "--index", "faq")
    rebuilt = run("index", "rebuild", "faq", "--model", folder)
    assert "Index 'faq' now uses" in rebuilt.stdout
    note = " ".join(rebuilt.stderr.split())
    assert "is a model folder, and an index does not remember a folder: search 'faq' with embedder.model" in note
    registered = run("index", "rebuild", "faq", "--model", "base")
    assert "does not remember" not in registered.stderr


def _two_indexes_one_truncated(data_dir: Path) -> None:
    """``good`` and ``broken`` (a few hundred chunks each), broken's chunks.sqlite cut in half."""
    import numpy as np

    from unirank.search.types import Chunk, IndexedSource, ModelSignature, SourceState

    backend = EmbeddedBackend(data_dir / "indexes")
    for name in ("good", "broken"):
        backend.create_index(name, ModelSignature(name="tiny", version="1", dims=4))
        backend.index(name, [IndexedSource(SourceState(uri=f"mem://{i}", content_hash=str(i), size=1),
                                           [Chunk(id=f"d{i}#0", doc_id=f"d{i}", source_uri=f"mem://{i}", ordinal=0,
                                                  text=f"passage {i} " * 40)],
                                           np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32))
                             for i in range(300)])
        backend.flush(name)
    backend.close()
    store = data_dir / "indexes" / "broken" / "v1" / "chunks.sqlite"
    with open(store, "r+b") as f:
        f.truncate(store.stat().st_size // 2)


def test_a_damaged_index_is_listed_as_damaged_and_can_be_deleted(run, tmp_path):
    """A truncated chunks.sqlite: `index delete NAME --yes` read the index's info first and ended in a
    traceback, so the index could not be deleted from the CLI; `index list` may not hide the others."""
    _two_indexes_one_truncated(tmp_path / "data")
    listed = json.loads(run("index", "list", "--json").stdout)
    assert [i["name"] for i in listed] == ["good", "broken"] and "damaged" in listed[1]
    table = " ".join(run("index", "list").stdout.split())
    assert "good" in table and "broken: damaged, cannot be read" in table

    deleted = run("index", "delete", "broken", "--yes")
    assert "Deleted index 'broken'." in deleted.stdout and "Traceback" not in deleted.stderr
    assert "index 'broken' cannot be read" in " ".join(deleted.stderr.split())
    assert not (tmp_path / "data" / "indexes" / "broken").exists()
    assert [i["name"] for i in json.loads(run("index", "list", "--json").stdout)] == ["good"]
    missing = run("index", "delete", "broken", "--yes", ok=False)
    assert missing.returncode == 2 and "'broken' does not exist" in missing.stderr


def test_an_emptied_store_is_damaged_and_an_unreadable_vector_file_is_rebuilt(run, tmp_path):
    """Both ended `index list` and every search (BM25 too) in a traceback (KeyError 'model_name', usearch's
    RuntimeError), hiding the healthy indexes too."""
    _two_indexes_one_truncated(tmp_path / "data")
    indexes = tmp_path / "data" / "indexes"
    (indexes / "broken" / "v1" / "chunks.sqlite").write_bytes(b"")
    os.truncate(indexes / "good" / "v1" / "vectors.usearch", 100)
    listed = run("index", "list")
    table = " ".join(listed.stdout.split())
    assert "Traceback" not in listed.stderr and "good" in table and "broken: damaged, cannot be read" in table
    assert "index good: its vectors.usearch cannot be read" in " ".join(listed.stderr.split())
    searched = run("search", "passage", "-i", "broken", "--mode", "bm25", ok=False)
    assert searched.returncode == 2 and "'broken' is damaged" in searched.stderr
    assert "Traceback" not in searched.stderr
    assert "passage 1" in run("search", "passage", "-i", "good", "--mode", "bm25").stdout


def test_a_data_dir_that_is_a_file_is_an_error_not_an_empty_list(run, tmp_path):
    """`index list` said "No indexes yet." (exit 0) for a data_dir naming a file; ingest and search ended in a
    NotADirectoryError traceback."""
    (tmp_path / "notes.txt").write_text("not a folder")
    proc = run("index", "list", ok=False, extra_env={"UNIRANK_DATA_DIR": str(tmp_path / "notes.txt")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"data_dir {tmp_path / 'notes.txt'} is a file: name a folder" in " ".join(proc.stderr.split())


def test_json_output_is_strict_json_with_null_for_nan_and_infinity(capsys):
    """Metadata an older unirank stored from 1e400 or YAML's .inf was printed by `search --json` as
    Infinity and NaN, which JSON.parse and jq refuse; /v1/search answers null for them."""
    from unirank.cli.output import print_json

    print_json({"hits": [{"score": 1.5, "metadata": {"inf": float("inf"), "nan": float("nan"),
                                                     "list": [1, float("-inf")], "pair": (float("inf"), "x")}}]})

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    printed = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert printed == {"hits": [{"score": 1.5, "metadata": {"inf": None, "nan": None, "list": [1, None],
                                                            "pair": [None, "x"]}}]}


def test_no_results_for_a_long_query_shows_its_start_and_json_all_of_it(capsys):
    """The "No results for" line printed a pasted log's whole text; --json keeps every character."""
    from unirank.cli.output import print_json, print_results
    from unirank.search.types import SearchResults

    pasted = "backup " * 14_000
    print_results(SearchResults(query=pasted, mode="bm25", hits=[]), {"category": "acount"})
    shown = capsys.readouterr().out
    assert len(shown) < 5000 and "No results for 'backup backup" in shown, shown
    assert "(98,000 characters; --json shows all)" in " ".join(shown.split()), shown
    print_json(SearchResults(query=pasted, mode="bm25", hits=[]).to_dict())
    assert json.loads(capsys.readouterr().out)["query"] == pasted
