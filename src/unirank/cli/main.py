"""``unirank`` CLI entry point."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from unirank.cli import chat as chat_cli
from unirank.cli import training
from unirank.cli.models import models_app
from unirank.cli.context import FILTER_HELP, client, load_settings, parse_filters
from unirank.cli.serve import serve_app
from unirank.cli.output import (console, counted, errors, fail, print_index, print_indexes, print_json, print_report,
                                print_results, print_stage, shown_uri)
from unirank.errors import IndexNotFoundError, SourceError, UnirankError
from unirank.ingest.report import IngestInterrupted
from unirank.ingest.uris import file_name
from unirank.search.types import ModelSignature
from unirank.settings import SECRET_SETTINGS, URL_SETTINGS, masked_url, models_read_from

if TYPE_CHECKING:
    from unirank.api import Unirank

app = typer.Typer(help="unirank: fine-tuned retrieval for document Q&A and recommendations.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
index_app = typer.Typer(help="List, inspect, rebuild (re-embed with another model), remove documents from and "
                             "delete indexes.",
                        no_args_is_help=True)
config_app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(serve_app, name="serve")
serve_app.command("api")(chat_cli.serve_api)


def _print_version(asked: bool) -> None:
    if asked:
        from unirank import __version__

        print(f"unirank {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_hide_url_passwords)


def _hide_url_passwords(record: logging.LogRecord) -> bool:
    """HTTP clients log each request's URL whole (-v): a user and password in one (chat.llm_base_url) are
    shown as ``***``, as `config show` shows them."""
    if isinstance(record.args, tuple):
        record.args = tuple(masked_url(str(a)) if "://" in str(a) and "@" in str(a) else a for a in record.args)
    return True


# The help is one string per paragraph: Typer's rich help keeps a docstring's line breaks, so a wrapped
# docstring printed ragged lines ("…what was committed" alone on one, the rest on the next).
@app.command(help="Parse, chunk, embed and index documents; unchanged files are skipped.\n\n"
                  "Exits 0 when every file was read, 1 when some failed or the run stopped partway (what was "
                  "committed stays in the index; the report says why, and the same command again finishes the "
                  "rest), and 2 when nothing was done (a bad source or one with no documents, an index name, a "
                  "setting, a model or endpoint that failed before the first commit).")
def ingest(
    source: Annotated[str, typer.Argument(help="Folder, file, s3://bucket/prefix or oss://bucket/prefix.")],
    index: Annotated[str, typer.Option("--index", "-i", help="Index to write into (created if missing).")],
    prune: Annotated[bool, typer.Option(help="Remove indexed files that are gone from SOURCE.")] = False,
    model: Annotated[Optional[str], typer.Option(
        help="Embedder for this run, e.g. handbook-embed@prod (default: embedder.model, else the index's own "
             "model, else base); later searches of the index use it with no setting when it is base or a "
             "registered model. A model folder's path is not remembered: search with embedder.model set to it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    ur = client(embedder_model=model)
    try:
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=errors,
                      transient=True, disable=as_json or not errors.is_terminal) as bar:  # a log gets the report only
            task = bar.add_task("ingesting", total=None)

            def progress(done: int, total: int, uri: str) -> None:
                bar.update(task, completed=done, total=total, description=escape(file_name(uri)[:40]))

            report = ur.ingest(source, index, prune=prune, progress=progress)
    except UnirankError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:
        _ingest_interrupted(exc)
    finally:
        ur.close()
    if as_json:
        print_json(report.to_dict())
    else:
        print_report(report)
        _print_pruned(report.pruned)
    if report.stopped:
        errors.print(f"[red]Stopped partway:[/red] {escape(report.stopped)}\nThe files counted as ingested above "
                     "are committed and searchable; re-run the same command to finish (unchanged files are "
                     "skipped).")
    if not report.ok:  # scripts and CI notice; the run itself went on past each bad file
        raise typer.Exit(1)


def _ingest_interrupted(exc: KeyboardInterrupt) -> None:
    """Ctrl-C: say what was committed (it exited 130 without a word) and that the same command finishes."""
    committed = (f"{counted(len(exc.report.ingested), 'file')} committed; " if isinstance(exc, IngestInterrupted)
                 else "")
    errors.print(f"\ninterrupted: {committed}re-run the same command to finish (unchanged files are skipped).")
    raise typer.Exit(130)


#: How many pruned sources the report names; --json lists them all.
PRUNED_SHOWN = 20


def _print_pruned(pruned: list[str]) -> None:
    """What --prune removed, by name: the report said only "N pruned"."""
    for uri in pruned[:PRUNED_SHOWN]:
        console.print(f"  pruned {escape(shown_uri(uri))}")
    if len(pruned) > PRUNED_SHOWN:
        console.print(f"  … and {len(pruned) - PRUNED_SHOWN} more pruned (--json lists them all)")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to search for.")],
    index: Annotated[str, typer.Option("--index", "-i", help="Index to search (`unirank index list`).")],
    mode: Annotated[Optional[str], typer.Option(help="bm25, knn or hybrid (default from settings).")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", help="Results to return.")] = None,
    rerank: Annotated[Optional[bool], typer.Option("--rerank/--no-rerank", help="Rescore with the reranker.")] = None,
    filter_: Annotated[Optional[list[str]], typer.Option("--filter", "-f", help=FILTER_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Search an index: hybrid BM25 + kNN by default, reranked with --rerank (or reranker.enabled)."""
    ur = client()
    try:
        filters = parse_filters(filter_)
        results = ur.search(query, index, mode=mode, top_k=top_k, rerank=rerank,  # type: ignore[arg-type]
                            filters=filters)
    except UnirankError as exc:  # a filter key no passage has too, as /v1/search refuses it
        fail(exc)
    finally:
        ur.close()
    if as_json:
        print_json(results.to_dict())
    else:
        print_results(results, filters)


# In --help, commands are listed as registered: the workflow's order after ingest and search.
app.command("ask")(chat_cli.ask)
app.command("chat")(chat_cli.chat)
app.command("train")(training.train)
app.command("eval")(training.evaluate)


@index_app.command("list")
def index_list(as_json: Annotated[bool, typer.Option("--json", help="Print the indexes as JSON.")] = False) -> None:
    """List indexes."""
    ur = client()
    try:  # one damaged index ended the whole list in a traceback, hiding the others
        infos, damaged = ur.list_indexes(), sorted(ur.damaged_indexes().items())
    finally:
        ur.close()
    if as_json:
        print_json([i.to_dict() for i in infos] + [{"name": name, "damaged": why} for name, why in damaged])
        return
    if infos or not damaged:
        print_indexes(infos)
    for name, why in damaged:
        console.print(f"{escape(name)}: damaged, cannot be read ({escape(why)}); `unirank index delete "
                      f"{escape(name)}` removes it, and ingesting its documents again makes it anew.")


def _reason(exc: Exception) -> str:
    return str(exc).strip() if isinstance(exc, UnirankError) else f"{type(exc).__name__}: {exc}"


@index_app.command("info")
def index_info(
    name: Annotated[str, typer.Argument(help="The index.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the index's record as JSON.")] = False,
) -> None:
    """Show one index: model, dimensions, counts, location."""
    ur = client()
    try:
        info = ur.index_info(name)
    except UnirankError as exc:
        fail(exc)
    finally:
        ur.close()
    if as_json:
        print_json(info.to_dict())
    else:
        print_index(info)


index_app.command("show", hidden=True, help="Same as `index info` (as `models show`).")(index_info)


@index_app.command("rebuild")
def index_rebuild(
    name: Annotated[str, typer.Argument(help="The index.")],
    model: Annotated[str, typer.Option(help="Embedder to re-embed with, e.g. mymodel-embed@prod.")],
) -> None:
    """Re-embed an index with another embedder into a new version, then switch to it atomically."""
    ur = client()
    before = None
    try:  # a failure below (tantivy, usearch, the embedder) comes as a UnirankError too: no traceback
        before = ur.backend.model(name)
        info = ur.rebuild_index(name, model, progress=print_stage)
    except UnirankError as exc:
        fail(exc)
    except KeyboardInterrupt:
        _rebuild_interrupted(ur, name, before)
    finally:
        ur.close()
    if info.model == before:  # rebuild_index leaves an index alone that the model already made
        console.print(f"Index {name!r} already uses {info.model}: nothing to re-embed.")
    else:
        console.print(f"Index {name!r} now uses {info.model} ({counted(info.chunk_count, 'chunk')}).")
    from unirank.models.loading import index_model_ref
    from unirank.search.rebuild import configured_model_refused

    settings = ur.settings
    if settings.embedder.model is None and index_model_ref(settings, info.model) is None:
        errors.print(f"[yellow]note:[/yellow] {escape(model)} is a model folder, and an index does not remember "
                     f"a folder: search {escape(name)!r} with embedder.model set to it (UNIRANK_EMBEDDER__MODEL="
                     f"{escape(model)}), or register the folder (`unirank models register`) and rebuild with "
                     "NAME@VERSION.")
    elif configured_model_refused(settings, model, info.model):
        # Said here: the rebuild succeeded, and every search of the index with this setting is refused.
        unset = settings.model_copy(deep=True)
        unset.embedder.model = None
        follows = index_model_ref(unset, info.model) is not None
        use = str(Path(model).expanduser().resolve()) if Path(model).expanduser().is_dir() else model
        errors.print(f"[yellow]note:[/yellow] embedder.model is set to {escape(settings.embedder.model or '')}, "
                     f"but {escape(name)!r} now holds vectors of {escape(str(info.model))}: searches and ingests "
                     f"of it with that setting are refused. Set embedder.model to {escape(use)} (in unirank.toml, "
                     f"or UNIRANK_EMBEDDER__MODEL={escape(use)})"
                     + (", or unset it: each index is then read with the model that made it." if follows else "."))


def _rebuild_interrupted(ur: Unirank, name: str, before: ModelSignature | None) -> None:
    """Ctrl-C: say whether the index was switched (it exited 130 without a word), read from the index itself."""
    if before is None:  # before the rebuild began
        errors.print(f"\ninterrupted: index {escape(name)!r} was not switched; re-run the same command to rebuild it.")
        raise typer.Exit(130)
    try:
        now = ur.backend.model(name)
    except Exception as exc:  # noqa: BLE001 - the interrupt is what to report; this only refines it
        said = (f"could not read index {name!r} to tell whether it was switched ({exc}); `unirank index info "
                f"{name}` shows its model: if it is still {before}, re-run the same command to rebuild it.")
    else:
        said = (f"index {name!r} was not switched (it still uses {before}); re-run the same command to rebuild it."
                if now == before else f"index {name!r} was already switched: it now uses {now}.")
    errors.print(f"\ninterrupted: {escape(said)}")
    raise typer.Exit(130)


@index_app.command("delete")
def index_delete(
    name: Annotated[str, typer.Argument(help="The index.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an index and everything in it."""
    ur = client()
    try:
        question = _delete_question(ur, name)
        if not yes and not typer.confirm(question):
            raise typer.Exit(1)
        ur.delete_index(name)
    except UnirankError as exc:
        fail(exc)
    finally:
        ur.close()
    console.print(f"Deleted index {name!r}.")


def _delete_question(ur: Unirank, name: str) -> str:
    """What to confirm: the index's size, or that it is damaged. A damaged index (a truncated chunks.sqlite)
    could not be deleted, its info being read first; it is deleted as long as it is there."""
    try:
        info = ur.index_info(name)
    except IndexNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever is damaged, deleting it is the way out
        if not ur.backend.exists(name):
            raise
        errors.print(f"[yellow]note:[/yellow] index {escape(name)!r} cannot be read ({escape(_reason(exc))}); "
                     "deleting it without counting its chunks.")
        return f"Delete the damaged index {name!r}?"
    return f"Delete index {name!r} ({counted(info.chunk_count, 'chunk')})?"


@index_app.command("remove")
def index_remove(
    name: Annotated[str, typer.Argument(help="The index.")],
    source: Annotated[str, typer.Argument(help="A folder, file or s3:// / oss:// prefix that was ingested; it "
                                               "need not exist any more (a renamed or deleted folder).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove the documents ingested from SOURCE (everything at or under it) from an index."""
    ur = client()
    try:
        ur.index_info(name)
        uris = ur.sources_under(name, source)
        if not uris:
            raise SourceError(f"Index {name!r} holds no documents from {source}: `unirank index info {name}` "
                              "counts its sources, and a search's results show where each came from.")
        if not yes and not typer.confirm(f"Remove {counted(len(uris), 'source')} from index {name!r}?"):
            raise typer.Exit(1)
        chunks = ur.remove_sources(name, uris)
    except UnirankError as exc:
        fail(exc)
    finally:
        ur.close()
    console.print(f"Removed {counted(len(uris), 'source')} ({counted(chunks, 'chunk')}) from index {name!r}.")


@config_app.command("show")
def config_show(as_json: Annotated[bool, typer.Option("--json", help="Print the settings as JSON.")] = False) -> None:
    """Print the effective settings (defaults < unirank.toml < UNIRANK_* env)."""
    settings = load_settings()
    data = settings.model_dump(mode="json")
    # A relative path (the default data_dir, or one from a variable) is read from the current directory, one
    # in unirank.toml from the file's folder: shown absolute, each says where the command will look.
    for section, key in (None, "data_dir"), ("serving", "api_keys_file"), ("chat", "db_path"):
        table = data[section] if section else data
        if table.get(key) is not None:
            table[key] = str(Path(table[key]).absolute())
    models_read_from(Path.cwd(), data)  # a variable's ./NAME model: those from the file are absolute already
    hidden = _hide_secrets(data)
    if as_json:
        print_json(data)
        return
    import tomli_w  # noqa: PLC0415 - only this command needs it

    # Plain: Rich wrapped a long line (a deep data_dir) at 80 columns when piped, and the TOML broke.
    typer.echo(_as_toml(data, tomli_w.dumps, hidden).rstrip("\n"))


def _hide_secrets(data: dict) -> dict[tuple[str, str], str]:
    """A pasted output leaks no secret, and in TOML a copy of it plants no "***" key (or URL user): each
    one hidden in ``data`` is returned, (section, key): what to show of it, as a comment."""
    hidden: dict[tuple[str, str], str] = {}
    for section, key in SECRET_SETTINGS:
        value = data[section][key]
        if isinstance(value, list):  # api_keys: the count is shown
            data[section][key] = ["***" for _ in value]
            if value:
                hidden[section, key] = f'["***", ...] (hidden: {counted(len(value), "key")})'
        elif value:
            data[section][key] = "***"
            hidden[section, key] = '"***" (hidden)'
    for section, key in URL_SETTINGS:  # https://USER:PASSWORD@HOST: the endpoint is shown, not who logs in
        value = data[section][key]
        if value and masked_url(value) != value:
            data[section][key] = masked_url(value)
            hidden[section, key] = f'"{masked_url(value)}" (its user and password hidden)'
    return hidden


def _as_toml(data: dict, dumps: Callable[[dict], str], hidden: dict[tuple[str, str], str] | None = None) -> str:
    """TOML has no null: an unset option is shown as a comment in its section, so every setting
    there is appears (``# size (unset)``), and the text still loads as a unirank.toml. So is a
    secret in ``hidden`` ((section, key): what to show), which would load back as a real value."""
    hidden = hidden or {}

    def shown(name: str | None, values: dict) -> str:
        notes = "".join(f"# {k} = {hidden[name, k]}\n" for k in values if (name, k) in hidden)
        return _section({k: v for k, v in values.items() if (name, k) not in hidden}, dumps) + notes

    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    parts = [shown(None, top)]
    for name, section in data.items():
        if isinstance(section, dict):
            parts.append(f"[{name}]\n{shown(name, section)}")
    return "\n".join(p for p in parts if p.strip())


def _section(values: dict, dumps: Callable[[dict], str]) -> str:
    unset = "".join(f"# {k} (unset)\n" for k, v in values.items() if v is None)
    return dumps({k: v for k, v in values.items() if v is not None}) + unset


if __name__ == "__main__":  # pragma: no cover
    app()
