"""Search click logs as labelled training pairs (``unirank train --clicks FILE``).

A click log is JSONL, one line per result page a user saw::

    {"query": "reset my password", "shown": ["doc-7", "doc-2", "doc-9"],
     "clicked": ["doc-9", {"id": "doc-2", "dwell_s": 3.5}]}

``shown`` is the ranked list as displayed; ids are chunk ids or document ids of the index being
trained on (a document id stands for its first passage). Pages of the same query (same text,
whatever its case or spacing) are pooled:

- a click is a positive for its query, unless the user came back within ``min_dwell_s`` (a
  bounce; a click without ``dwell_s`` always counts);
- *skip-above*: a result shown above a clicked one and not clicked on that page is a negative for
  the query (the user read past it to a better one), put before the mined hard negatives, most
  skipped first. A document the query has a click on anywhere in the log (a bounce too) is never a negative, and
  results below the last click say nothing (the user may not have looked at them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from unirank.errors import TrainingError
from unirank.jsonl import label_file_lines, parse_object_line
from unirank.search.types import Chunk
from unirank.training.examples import TrainingPair, normalize_query, query_fingerprint
from unirank.training.labelled import first_chunks


@dataclass
class ClickPairs:
    pairs: list[TrainingPair]
    stats: dict = field(default_factory=dict)


@dataclass
class _Query:
    text: str
    clicks: dict[str, int] = field(default_factory=dict)  # chunk id -> clicks
    skips: dict[str, int] = field(default_factory=dict)  # chunk id -> skip-above count
    bounced: set[str] = field(default_factory=set)  # chunk ids clicked and came back from: no positive, no skip


def _pages(path: Path) -> Iterator[tuple[str, list[str], list[tuple[str, float | None]]]]:
    """Each result page of the log, parsed: (query, shown ids, clicked (id, dwell) pairs)."""
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"Click log {path} does not exist.")
    lines = label_file_lines(path, TrainingError)
    for n, line in enumerate(lines, start=1):
        if line.strip():
            yield _parse_page(line, f"{path}:{n}")


_EXAMPLE = '{"query": "...", "shown": ["id", ...], "clicked": ["id", ...]}'


def check_click_log(path: Path) -> set[str]:
    """Parse every page of the log, as ``load_click_pairs`` will (its ids are resolved later, against the
    index): a malformed line is reported before the minutes of indexing that come first. Returns the ids
    the log names, shown or clicked, for the caller to look for in the data."""
    pages = clicks = 0
    ids: set[str] = set()
    for _, shown, clicked in _pages(path):
        pages += 1
        clicks += len(clicked)
        ids.update(shown)
        ids.update(click_id for click_id, _ in clicked)
    if not pages:  # refused only after indexing ("holds no result pages"): said now, before any work
        raise TrainingError(f"Click log {path} holds no result pages: one JSON line a page, {_EXAMPLE}.")
    if not clicks:
        raise TrainingError(f"Click log {path} has {pages} result page(s) and no click: clicks are its positives "
                            f"(\"clicked\": [ids]); give a log with the results users opened, {_EXAMPLE}.")
    return ids


def documents_named(ids: Iterable[str]) -> set[str]:
    """The document ids a log's ids may stand for: a document id names itself, a chunk id
    (``DOC#ORDINAL``) its document."""
    return {*ids, *(i.rpartition("#")[0] for i in ids if "#" in i)}


def load_click_pairs(path: Path, chunks: Iterable[Chunk], min_dwell_s: float = 0.0,
                     max_negatives: int = 3) -> ClickPairs:
    """Pairs from the click log at ``path``, its ids resolved against ``chunks`` (the index trained on).

    At most ``max_negatives`` skipped passages per query, the most skipped: a long page of skips
    would otherwise outweigh the click in the reranker's data.
    """
    by_id = _passages_by_id(chunks)
    queries: dict[str, _Query] = {}
    unknown: set[str] = set()
    pages = bounces = resolved = lost_clicks = 0
    for query, shown, clicked in _pages(path):
        pages += 1
        entry = queries.setdefault(normalize_query(query), _Query(text=query))
        ranked = [by_id[i].id for i in shown if i in by_id]
        unknown.update(i for i in shown if i not in by_id)
        resolved += len(ranked)
        satisfied: list[str] = []
        for click_id, dwell in clicked:
            if click_id not in by_id:
                unknown.add(click_id)
                lost_clicks += 1
                continue
            resolved += 1
            if dwell is not None and dwell < min_dwell_s:
                bounces += 1
                entry.bounced.add(by_id[click_id].id)
                continue
            satisfied.append(by_id[click_id].id)
        for chunk_id in satisfied:
            entry.clicks[chunk_id] = entry.clicks.get(chunk_id, 0) + 1
        # A bounce says the result disappointed, not that it was read past: clicked, it is no skip either.
        clicked_here = {by_id[i].id for i, _ in clicked if i in by_id}
        last = max((ranked.index(c) for c in satisfied if c in ranked), default=0)
        for chunk_id in ranked[:last]:
            if chunk_id not in clicked_here:
                entry.skips[chunk_id] = entry.skips.get(chunk_id, 0) + 1
    if not pages:
        raise TrainingError(f"Click log {path} holds no result pages.")
    if not resolved:
        raise TrainingError(f"None of the ids in {path} is a chunk or document of the index trained on: "
                            "was the log written against another index? Train with --index NAME of that index.")

    pairs: list[TrainingPair] = []
    unused_skips = 0
    for entry in queries.values():
        clicked_docs = {by_id[c].doc_id for c in [*entry.clicks, *entry.bounced]}
        negatives = [by_id[c].embedding_input() for c, _ in sorted(entry.skips.items(), key=lambda kv: -kv[1])
                     if by_id[c].doc_id not in clicked_docs][:max_negatives]
        if not entry.clicks:
            unused_skips += len(negatives)
            continue
        query_id = f"clicks:{query_fingerprint(entry.text)}"
        for chunk_id in sorted(entry.clicks, key=lambda c: -entry.clicks[c]):
            chunk = by_id[chunk_id]
            pairs.append(TrainingPair(query=entry.text, positive=chunk.embedding_input(), negatives=list(negatives),
                                      origin="clicks", doc_id=chunk.doc_id, query_id=query_id))
    if not pairs:
        raise TrainingError(f"Click log {path} has no click that counts: {bounces} came back within "
                            f"{min_dwell_s:g} s (--min-dwell) and {lost_clicks} name no passage of the index.")
    stats = {"click_pages": pages, "click_queries": len(queries), "click_pairs": len(pairs),
             "click_negatives": sum(len(p.negatives) for p in pairs), "click_bounces": bounces,
             "click_unknown_ids": len(unknown), "click_skips_without_click": unused_skips}
    return ClickPairs(pairs=pairs, stats=stats)


def _passages_by_id(chunks: Iterable[Chunk]) -> dict[str, Chunk]:
    """Chunk ids, and document ids standing for their first chunk (a chunk id wins a clash)."""
    chunks = list(chunks)
    return {**first_chunks(chunks), **{chunk.id: chunk for chunk in chunks}}


def _parse_page(line: str, where: str) -> tuple[str, list[str], list[tuple[str, float | None]]]:
    expected = ('expected {"query": "...", "shown": ["id", ...], "clicked": ["id" | {"id": "...", '
                '"dwell_s": seconds}, ...]}')
    try:
        row = parse_object_line(line)
    except ValueError as exc:
        raise TrainingError(f"{where}: {exc}; {expected}") from None
    query = row.get("query")
    shown = row.get("shown", [])
    clicked = row.get("clicked", [])
    if not isinstance(query, str) or not query.strip():
        raise TrainingError(f"{where}: the query is missing or empty; {expected}")
    if not isinstance(shown, list) or not all(isinstance(i, str) for i in shown):
        raise TrainingError(f"{where}: \"shown\" must be a list of id strings; {expected}")
    if not isinstance(clicked, list):
        raise TrainingError(f"{where}: \"clicked\" must be a list; {expected}")
    clicks: list[tuple[str, float | None]] = []
    for item in clicked:
        if isinstance(item, str):
            clicks.append((item, None))
        elif isinstance(item, dict) and isinstance(item.get("id"), str):
            dwell = item.get("dwell_s")
            if dwell is not None and (isinstance(dwell, bool) or not isinstance(dwell, (int, float)) or dwell < 0):
                raise TrainingError(f"{where}: dwell_s must be a number of seconds >= 0, got {dwell!r}.")
            clicks.append((item["id"], None if dwell is None else float(dwell)))
        else:
            raise TrainingError(f"{where}: a click is an id or {{\"id\", \"dwell_s\"}}, got {item!r}.")
    return query.strip(), shown, clicks

