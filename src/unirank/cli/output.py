"""Terminal rendering shared by the commands."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from unirank.ingest.report import IngestReport
from unirank.ingest.uris import file_name, uri_path
from unirank.search.types import IndexInfo, SearchResults

console = Console()
errors = Console(stderr=True)


def print_error(exc: Exception) -> None:
    """A user-facing error on stderr; its text is never read as markup (a path may hold "[draft]")."""
    errors.print(f"[red]error:[/red] {escape(str(exc))}")


def fail(exc: Exception) -> None:
    """Print a user-facing error and exit 2 (the code for 'your input was refused')."""
    import typer

    print_error(exc)
    raise typer.Exit(2)


def print_stage(message: str) -> None:
    """A long job's progress line, on stderr so that ``--json`` output stays clean."""
    errors.print(f"[dim]· {escape(message)}[/dim]")


def print_json(data: Any) -> None:
    """Strict JSON: a NaN or an infinity (metadata an older unirank stored from 1e400 or YAML's .inf) is
    null, as /v1/search answers; json.dumps wrote NaN and Infinity, which JSON.parse and jq refuse."""
    # Plain print: Rich would wrap long lines and break machine-readable output.
    print(json.dumps(_finite(data), ensure_ascii=False, indent=2, default=str))


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(item) for item in data]
    return data


#: The width a name or model column keeps in a narrow terminal: what an 80-column table has room for.
NAME_COLUMN_WIDTH = 22


def to_the_minute(timestamp: str) -> str:
    """An ISO time as ``2026-12-05 21:30`` for a table column; records show the full time."""
    return timestamp[:16].replace("T", " ")


def print_record(data: dict[str, Any]) -> None:
    """A record (a model version, an index) as indented ``key: value`` lines: nested sections are
    readable where Python's dict repr is not; ``--json`` keeps the exact values."""
    for line in _record_lines(data, indent=""):
        console.print(line, markup=False, highlight=False)


def _record_lines(data: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines.extend(_record_lines(value, indent + "  "))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{indent}{key}:")
            lines.extend(f"{indent}  - " + ", ".join(f"{k}: {_scalar(v)}" for k, v in item.items()) for item in value)
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple)):
        return ", ".join(_scalar(v) for v in value) if value else "-"
    if value is None or value == {}:
        return "-"
    if isinstance(value, str) and len(value) > 200:  # an endpoint's probe fingerprint
        return f"{value[:40]}… ({len(value)} characters; --json shows all)"
    return str(value)


def _location(uri: str, page: int | None) -> str:
    short = file_name(uri) if uri.startswith("file://") else uri
    return f"{short} p.{page}" if page else short


#: The most of a query a results table's title or the no-results line shows: a pasted error log is a query.
SHOWN_QUERY_CHARS = 200


def _shown_query(query: str) -> str:
    """The query as Python writes it (quoted, newlines escaped), cut after SHOWN_QUERY_CHARS characters."""
    if len(query) <= SHOWN_QUERY_CHARS:
        return repr(query)
    return f"{query[:SHOWN_QUERY_CHARS]!r}… ({len(query):,} characters; --json shows all)"


def print_results(results: SearchResults, filters: Mapping[str, str] | None = None) -> None:
    flags = [f"{results.mode} with {escape(results.embedder)}" if results.embedder else results.mode]  # a folder name
    if results.reranked:
        flags.append("reranked")
    if results.degraded:
        flags.append("[yellow]rerank failed: not reranked[/yellow]")
    took = results.timings_ms.get("total", 0)
    table = Table(title=f"{escape(_shown_query(results.query))}  ({', '.join(flags)}, {took:.1f} ms)",
                  show_lines=True, expand=True)
    table.add_column("#", justify="right", width=3)
    table.add_column("score", justify="right", width=8)
    table.add_column("document", ratio=1)
    table.add_column("passage", ratio=3)
    for rank, hit in enumerate(results.hits, start=1):
        c = hit.chunk
        heading = " > ".join(h for h in c.heading_path if h != c.title)
        doc = (f"[bold]{escape(c.title or c.doc_id)}[/bold]\n{escape(heading) + chr(10) if heading else ''}"
               f"[dim]{escape(_location(c.source_uri, c.page))}[/dim]")
        text = c.text if len(c.text) <= 300 else c.text[:300] + "…"
        table.add_row(str(rank), f"{hit.score:.4f}", doc, escape(text))  # "[the guide]" is text, not markup
    if not results.hits:
        only = ", ".join(f"{k}={v}" for k, v in (filters or {}).items())
        hint = (f" with {only}: a filter matches a metadata value, doc_id or source_uri exactly (keys and "
                "values as stored; `--json` on a search without it shows them)") if only else ""
        console.print(f"No results for {_shown_query(results.query)}{hint}.", markup=False)
        return
    console.print(table)


def shown_uri(uri: str) -> str:
    """A local file as its path (``docs [draft]/a.pdf``, not ``docs%20%5Bdraft%5D/a.pdf``); ``--json`` keeps URIs."""
    return uri_path(uri) if uri.startswith("file://") else uri


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def print_report(report: IngestReport) -> None:
    console.print(
        f"[bold]{report.index}[/bold] ← {escape(report.source)}: {counted(report.files_seen, 'file')} seen, "
        f"[green]{len(report.ingested)} ingested[/green], {len(report.skipped)} skipped, "
        f"{'[red]' if report.failed else ''}{len(report.failed)} failed{'[/red]' if report.failed else ''}"
        f"{f', {len(report.pruned)} pruned' if report.pruned else ''}; "
        f"{counted(report.chunks_written, 'chunk')} written in {report.seconds:.1f}s"
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if report.reread:
        console.print(f"  {counted(len(report.reread), 'unchanged file')} read again: ingested before with other "
                      "chunking or encoding settings, or by an older unirank")
    for uri, reason in report.failed:
        console.print(f"  [red]failed[/red] {escape(shown_uri(uri))}: {escape(reason)}")
    unsupported = [(u, r) for u, r in report.skipped if r != "unchanged"]
    for uri, reason in unsupported:
        console.print(f"  [dim]skipped {escape(shown_uri(uri))}: {escape(reason)}[/dim]")


def print_indexes(infos: list[IndexInfo]) -> None:
    if not infos:
        console.print("No indexes yet. Create one with `unirank ingest SOURCE --index NAME`.")
        return
    rows = [{"name": i.name, "model": str(i.model), "dims": str(i.model.dims), "chunks": str(i.chunk_count),
             "sources": str(i.source_count), "updated (UTC)": to_the_minute(i.updated_at),
             **({"copy of": i.copy_of or ""} if any(j.copy_of for j in infos) else {})} for i in infos]
    print_table(rows, names=("name", "model"), optional=("updated (UTC)",))


def print_table(rows: list[dict[str, str]], *, names: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """A table that stays readable in a narrow terminal: the ``optional`` columns are left out when the
    rest would not fit, and the ``names`` columns (what the user types next) fold, never end in "…"."""
    columns = list(rows[0])

    def width(cols: list[str]) -> int:  # each column's widest cell, plus Rich's borders and padding
        return sum(max(len(c), *(len(r[c]) for r in rows)) + 3 for c in cols) + 1

    if width(columns) > console.width:
        columns = [c for c in columns if c not in optional]
    table = Table()
    for col in columns:
        if col in names:
            table.add_column(col, overflow="fold", min_width=min(NAME_COLUMN_WIDTH, max(len(r[col]) for r in rows)))
        else:
            table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*(escape(row[c]) for c in columns))
    console.print(table)


def print_index(info: IndexInfo) -> None:
    print_record({"name": info.name, "model": f"{info.model} ({info.model.dims} dimensions)", **{
        key: value for key, value in info.to_dict().items()
        if key not in ("name", "model") and not (key == "copy_of" and value is None)}})
