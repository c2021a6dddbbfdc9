"""Labelled training data: (query, positive[, negative]) pair files and BEIR-style qrels."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from unirank.errors import TrainingError
from unirank.jsonl import CSV_QUOTING, csv_quoted, label_file_lines, parse_object_line, tsv_cells
from unirank.search.types import Chunk
from unirank.training.examples import TrainingPair, normalize_query, query_fingerprint


TSV_HEADER = ("query", "positive")
#: Read as one JSON object a line; any other name as TSV.
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


@dataclass
class PairFile:
    pairs: list[TrainingPair]
    #: Lines whose negative was the positive itself (its text, case and spacing aside): left out.
    negatives_same_as_positive: list[int] = field(default_factory=list)

    def warning(self, path: Path) -> str | None:
        lines = self.negatives_same_as_positive
        if not lines:
            return None
        shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
        return (f"warning: {len(lines)} negative(s) of {path} equal to their own positive left out "
                f"(line {shown}): a passage cannot be both")


def load_pair_file(path: Path) -> list[TrainingPair]:
    """``read_pair_file``'s pairs."""
    return read_pair_file(path).pairs


def read_pair_file(path: Path) -> PairFile:
    """JSONL ``{"query", "positive"[, "negative" | "negatives"]}`` or TSV ``query<TAB>positive[<TAB>negative]``
    (a header row ``query<TAB>positive...`` is skipped). A malformed row is an error naming its line:
    training on half a file, on a row whose columns a stray tab shifted, or on a number or list read as
    text (``{"query": 5}`` trained on "5") would go unnoticed. A negative that is the positive itself
    (case and spacing aside) is left out, and its line counted (``PairFile.negatives_same_as_positive``)."""
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"Pair file {path} does not exist.")
    lines = label_file_lines(path, TrainingError)
    result = PairFile(pairs=[])
    if path.suffix.lower() in JSONL_SUFFIXES:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = parse_object_line(line, ("query", "positive"))
                pair = _pair_from_object(row)
            except ValueError as exc:
                raise TrainingError(f"{path}:{n}: {exc}; expected {{\"query\", \"positive\"[, \"negative\"]}}.") from None
            result.pairs.append(_checked(pair, path, n, result))
    else:
        first_row = True
        for n, row in enumerate(_tsv_rows(lines, path), start=1):
            if not any(cell.strip() for cell in row):  # a blank line, or one of spaces
                continue
            # The first written row, not line 1: after a blank line the header was trained on as a pair.
            is_header = first_row and tuple(cell.strip().lower() for cell in row[:2]) == TSV_HEADER
            first_row = False
            if is_header:
                continue
            if not 2 <= len(row) <= 3:
                raise TrainingError(f"{path}:{n}: expected query<TAB>positive[<TAB>negative], got {len(row)} "
                                    "column(s); a tab inside a text must be replaced, or use JSONL.")
            if any(map(csv_quoted, row)):
                raise TrainingError(f"{path}:{n}: {CSV_QUOTING}")
            negatives = [row[2]] if len(row) == 3 and row[2].strip() else []
            result.pairs.append(_checked(TrainingPair(query=row[0], positive=row[1], negatives=negatives,
                                                      origin="pairs", query_id=_query_id(row[0])), path, n, result))
    if not result.pairs:
        raise TrainingError(f"{path} holds no pairs.")
    return result


def _tsv_rows(lines: list[str], path: Path) -> Iterable[list[str]]:
    """Each line's cells (``tsv_cells``, as the eval readers split them). csv.reader failed on a carriage
    return inside a line with a raw ``_csv.Error`` traceback."""
    for n, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if "\r" in line:  # old-Mac line ends run the rows together; a cell's line break would be trained on
            raise TrainingError(f"{path}:{n}: a carriage return (\\r) inside the line: the file has old Mac line "
                                "ends, or a cell holds a line break; save it with \\n line ends and no line breaks "
                                "inside a cell (or use JSONL).")
        yield tsv_cells(line)


def _pair_from_object(row: dict) -> TrainingPair:
    """A JSONL row's pair; ``ValueError`` names a field of the wrong type (``str()`` made ``5`` the query "5"
    and ``["abc"]`` the positive "['abc']")."""
    for key in ("query", "positive"):
        if not isinstance(row[key], str):
            raise ValueError(f'"{key}" must be a text, got {_json_kind(row[key])}')
    negative, negatives = row.get("negative"), row.get("negatives")
    if negative is not None and not isinstance(negative, str):
        raise ValueError(f'"negative" must be a text, got {_json_kind(negative)}')
    if negatives is not None and not (isinstance(negatives, list) and all(isinstance(x, str) for x in negatives)):
        raise ValueError('"negatives" must be a list of texts')
    for key in ("query_id", "doc_id"):  # ids may be numbers, as BEIR's often are
        if row.get(key) is not None and (isinstance(row[key], bool) or not isinstance(row[key], (str, int))):
            raise ValueError(f'"{key}" must be a text or an integer, got {_json_kind(row[key])}')
    given = list(dict.fromkeys([*(negatives or []), *([negative] if negative is not None else [])]))
    query = row["query"]
    return TrainingPair(query=query, positive=row["positive"], negatives=[x for x in given if x.strip()],
                        origin="pairs", query_id=_given_id(row.get("query_id")) or _query_id(query),
                        doc_id=_given_id(row.get("doc_id")))


def _given_id(value: str | int | None) -> str:
    """An id as written, "" when absent: ``or`` took the id 0 (BEIR's ids are often numbers) for none."""
    return "" if value is None else str(value)


def _json_kind(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _query_id(query: str) -> str:
    """Pairs of one question share an id, so the validation split never divides them: without one, every
    pair of a file fell in one group, and training stopped at "no validation split"."""
    return f"pairs:{query_fingerprint(query)}"


def with_documents(pairs: list[TrainingPair], chunks: Iterable[Chunk]) -> list[TrainingPair]:
    """A pair file names passages, not documents: each positive that is a passage of the index gets its
    document's id (validation ranks documents); another, an id of its own text, under which validation
    finds it. (With none, validation looked for document "" and scored 0.)"""
    by_text: dict[str, str] = {}
    for chunk in chunks:
        by_text.setdefault(normalize_query(chunk.text), chunk.doc_id)
        by_text.setdefault(normalize_query(chunk.embedding_input()), chunk.doc_id)
    return [pair if pair.doc_id else replace(pair, doc_id=by_text.get(normalize_query(pair.positive))
                                             or f"pair:{query_fingerprint(pair.positive)}") for pair in pairs]


def _checked(pair: TrainingPair, path: Path, line: int, file: PairFile) -> TrainingPair:
    if not pair.query.strip() or not pair.positive.strip():
        raise TrainingError(f"{path}:{line}: the query and the positive must not be empty.")
    positive = normalize_query(pair.positive)
    kept = [x for x in pair.negatives if normalize_query(x) != positive]
    if len(kept) < len(pair.negatives):  # trained as both, it pulled and pushed the same passage
        file.negatives_same_as_positive.append(line)
        pair = replace(pair, negatives=kept)
    return pair


def first_chunks(chunks: Iterable[Chunk]) -> dict[str, Chunk]:
    """Each document's first chunk: what a label (or click) naming a document id stands for."""
    first: dict[str, Chunk] = {}
    for chunk in chunks:
        if chunk.doc_id not in first or chunk.ordinal < first[chunk.doc_id].ordinal:
            first[chunk.doc_id] = chunk
    return first


def pairs_from_qrels(queries: dict[str, str], qrels: dict[str, dict[str, int]],
                     chunks: Iterable[Chunk]) -> tuple[list[TrainingPair], dict[str, int]]:
    """One pair per (query, relevant document); the document's first chunk is the positive. Also how many
    judgements were left out, and why (they were dropped without a word)."""
    first = first_chunks(chunks)
    pairs = []
    missing_queries = [q for q in qrels if q not in queries]
    if missing_queries and len(missing_queries) == len(qrels):
        raise TrainingError("None of the qrels' query ids are in the query file: wrong --queries?")
    skipped = {"qrels_query_not_in_queries": 0, "qrels_document_not_in_index": 0}
    for qid in sorted(qrels):
        for doc_id, grade in sorted(qrels[qid].items()):
            if grade <= 0:
                continue
            if qid not in queries:
                skipped["qrels_query_not_in_queries"] += 1
            elif doc_id not in first:
                skipped["qrels_document_not_in_index"] += 1
            else:
                pairs.append(TrainingPair(query=queries[qid], positive=first[doc_id].embedding_input(),
                                          origin="qrels", doc_id=doc_id, query_id=qid))
    if not pairs:
        raise TrainingError("The qrels name no document that is in the index.")
    return pairs, {k: v for k, v in skipped.items() if v}
