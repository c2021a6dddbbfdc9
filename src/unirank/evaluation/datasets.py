"""Evaluation data: BEIR folders, query files and qrels."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from unirank.errors import EvaluationDataError
from unirank.jsonl import CSV_QUOTING, csv_quoted, label_file_lines, parse_object_line, record_id, tsv_cells
from unirank.text import LONE_SURROGATE, is_blank
from unirank.training.labelled import JSONL_SUFFIXES

Qrels = dict[str, dict[str, int]]

#: A relevance score: an integer, or an integral number written as a float ("1.0", as pandas writes them).
_SCORE = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
#: A header's score column: the words qrels files name it by. Any word was taken, so a first row with a
#: mistyped score ("l" for "1", "yes") was dropped as a header.
_HEADER_SCORES = frozenset({"score", "scores", "rel", "relevance", "relevancy", "label", "judgment", "judgement",
                            "grade", "rating", "qrel"})
#: A cell written as a word: a first row that ends in one may have been meant as a header.
_WORD = re.compile(r"[A-Za-z][A-Za-z _-]*")
QRELS_ROW = "query-id<TAB>corpus-id<TAB>integer score (or TREC's qid iter docid rel)"
#: The largest relevance score: ranx stores scores as C longs, 32 bits on some systems (a larger one
#: ended eval in an OverflowError traceback, after every search).
MAX_SCORE = 2**31 - 1
_SURROGATE_ADVICE = ("holds a lone UTF-16 surrogate (half of an escaped pair such as \\ud83d\\ude00), which is not "
                     "text: write both halves of the pair, or the character itself")


@dataclass
class EvalSet:
    queries: dict[str, str]
    qrels: Qrels
    corpus_path: Path | None = None
    #: The files the queries and qrels were read from, for messages.
    queries_path: Path | None = None
    qrels_path: Path | None = None
    #: Why there are no qrels to read (a BEIR split the folder lacks): said by ``judged``, since training
    #: reads only a folder's queries.
    qrels_missing: str | None = None
    #: Queries the qrels judge (a relevant document) that the queries file lacks, set by ``judged``:
    #: left out of every figure, which eval says (they were dropped without a word).
    judged_not_in_queries: list[str] = field(default_factory=list)

    def judged(self) -> "EvalSet":
        """Only queries that have at least one relevant document. An empty queries or qrels file is said
        as such (it was reported as qrels naming no query of the queries file)."""
        if self.qrels_missing:
            raise EvaluationDataError(self.qrels_missing)
        if not self.queries:
            raise EvaluationDataError(f"{self.queries_path or 'The queries file'} holds no queries: nothing "
                                      "to evaluate.")
        if not self.qrels:
            raise EvaluationDataError(f"{self.qrels_path or 'The qrels file'} holds no rows (query-id<TAB>"
                                      "corpus-id<TAB>score): no query is judged, so there is nothing to score.")
        relevant = {q for q, rels in self.qrels.items() if any(v > 0 for v in rels.values())}
        keep = {q: t for q, t in self.queries.items() if q in relevant}
        judged = self._with(queries=keep, qrels={q: self.qrels[q] for q in keep})
        judged.judged_not_in_queries = sorted(relevant.difference(self.queries))
        return judged

    def subset(self, query_ids: set[str]) -> "EvalSet":
        return self._with(queries={q: t for q, t in self.queries.items() if q in query_ids},
                          qrels={q: r for q, r in self.qrels.items() if q in query_ids})

    def _with(self, queries: dict[str, str], qrels: Qrels) -> "EvalSet":
        return EvalSet(queries=queries, qrels=qrels, corpus_path=self.corpus_path,
                       queries_path=self.queries_path, qrels_path=self.qrels_path,
                       judged_not_in_queries=self.judged_not_in_queries)


def _rows(path: Path) -> list[tuple[int, str, list[str]]]:
    """Each non-blank line of a TSV label file: its number, the line as written (for messages), its cells
    less trailing empty ones (a tab at the end of a line is no column)."""
    rows = []
    for n, line in enumerate(label_file_lines(path, EvaluationDataError), start=1):
        line = line.rstrip("\r\n")
        row = tsv_cells(line)
        if any(map(csv_quoted, row)):  # its quotes would be part of the query (and of its fingerprint)
            raise EvaluationDataError(f"{path}:{n}: {CSV_QUOTING}")
        if row:
            rows.append((n, line, row))
    return rows


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        which = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise EvaluationDataError(f"{what} {path} {which}: give the file's path.")
    return path


def load_queries(path: Path) -> dict[str, str]:
    """JSONL ``{"_id", "text"}`` (BEIR; a ``.jsonl``, ``.json`` or ``.ndjson`` file) or TSV ``id<TAB>text``.
    An id given twice with two texts, or an empty text, is refused with its lines: the last one won
    without a word."""
    path = _require_file(path, "Query file")
    rows = _jsonl_queries(path) if path.suffix.lower() in JSONL_SUFFIXES else _tsv_queries(path)
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for n, qid, text in rows:
        if is_blank(text):  # as search refuses it: invisible characters only ("\u200b") are no words
            raise EvaluationDataError(f"{path}:{n}: query {qid!r} has no text: give its words, or leave the line out.")
        if LONE_SURROGATE.search(qid):
            raise EvaluationDataError(f"{path}:{n}: query id {qid!r} {_SURROGATE_ADVICE}.")
        if LONE_SURROGATE.search(text):  # it failed eval with a UnicodeEncodeError traceback
            raise EvaluationDataError(f"{path}:{n}: query {qid!r} {_SURROGATE_ADVICE}.")
        if qid in queries and queries[qid] != text:
            raise EvaluationDataError(f"{path}:{n}: query id {qid!r} is given again with another text (first on "
                                      f"line {first_line[qid]}): give each query its own id.")
        first_line.setdefault(qid, n)
        queries[qid] = text
    return queries


def _jsonl_queries(path: Path) -> list[tuple[int, str, str]]:
    rows = []
    for n, line in enumerate(label_file_lines(path, EvaluationDataError), start=1):
        if not line.strip():
            continue
        try:
            record = parse_object_line(line, ("_id", "text"))
        except ValueError as exc:
            raise EvaluationDataError(f"{path}:{n}: {exc}; expected {{\"_id\", \"text\"}}.") from None
        if not isinstance(record["text"], str):
            raise EvaluationDataError(f"{path}:{n}: \"text\" must be a text, got {record['text']!r}; "
                                      "expected {\"_id\", \"text\"}.")
        rows.append((n, _query_id(record["_id"], path, n), record["text"]))
    return rows


def _query_id(raw: object, path: Path, n: int) -> str:
    """The corpus's rule for ``_id``: 2.0 was read as "2.0" and true as "True", which no qrels id matched."""
    try:
        qid = record_id(raw)
    except ValueError as exc:
        raise EvaluationDataError(f"{path}:{n}: {exc}, as the qrels name the query.") from None
    if not qid:
        raise EvaluationDataError(f"{path}:{n}: _id is empty; give the query the id the qrels name it by.")
    return qid


def _tsv_queries(path: Path) -> list[tuple[int, str, str]]:
    rows = []
    for n, line, row in _rows(path):
        if len(row) == 1 and "\t" in line:
            row = [row[0], ""]  # `id<TAB>` is an empty text, not a missing column
        if len(row) != 2:
            raise EvaluationDataError(f"{path}:{n}: expected id<TAB>text, got {len(row)} column(s): {line!r}")
        rows.append((n, row[0], row[1]))
    return rows


def load_qrels(path: Path) -> Qrels:
    """TREC-style TSV ``query-id<TAB>corpus-id<TAB>score``, with or without a header line (a first row
    whose score column is named by one of ``_HEADER_SCORES``). A pair judged twice with two scores is
    refused with both lines."""
    path = _require_file(path, "Qrels file")
    qrels: Qrels = {}
    judged_on: dict[tuple[str, str], int] = {}
    for i, (n, line, row) in enumerate(_rows(path)):
        if len(row) == 1:  # TREC files separate by spaces (their ids hold none)
            row = row[0].split()
        if i == 0 and len(row) in (3, 4) and row[-1].strip().lower() in _HEADER_SCORES:
            continue
        if len(row) == 4:  # TREC qrels: qid iter docid rel
            row = [row[0], row[2], row[3]]
        if len(row) != 3 or not _SCORE.fullmatch(row[2].strip()) or not (row[0] and row[1]):
            raise EvaluationDataError(f"{path}:{n}: expected {QRELS_ROW}{_header_hint(i, row)}; got {line!r}")
        qid, doc, score = row[0], row[1], int(row[2].strip().split(".")[0])
        if abs(score) > MAX_SCORE:
            raise EvaluationDataError(f"{path}:{n}: expected {QRELS_ROW}, a score between {-MAX_SCORE} and "
                                      f"{MAX_SCORE} (a relevance grade: 0, 1, 2 ...); got {line!r}")
        if doc in qrels.get(qid, {}) and qrels[qid][doc] != score:
            raise EvaluationDataError(
                f"{path}:{n}: query {qid!r} and document {doc!r} are judged again with another score "
                f"({score}; {qrels[qid][doc]} on line {judged_on[qid, doc]}): keep one of the two lines.")
        judged_on.setdefault((qid, doc), n)
        qrels.setdefault(qid, {})[doc] = score
    return qrels


def _header_hint(i: int, row: list[str]) -> str:
    """For a first row whose score is a word no header uses: the words that make it one."""
    if i == 0 and row and _WORD.fullmatch(row[-1].strip()):
        return f", or a header whose score column is one of {', '.join(sorted(_HEADER_SCORES))}"
    return ""


def beir_corpus(folder: Path) -> Path:
    """A BEIR folder's corpus.jsonl, refused if the folder is not one."""
    folder = Path(folder)
    if folder.is_file():
        raise EvaluationDataError(f"{folder} is a file, not a BEIR folder: give the folder that holds corpus.jsonl, "
                                  f"queries.jsonl and qrels/ (here {folder.parent}, if it is one).")
    if not folder.is_dir():
        raise EvaluationDataError(f"{folder} does not exist: give a BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")
    corpus = folder / "corpus.jsonl"
    if not corpus.exists():
        raise EvaluationDataError(f"{folder} is not a BEIR folder: corpus.jsonl is missing.")
    return corpus


def beir_queries(folder: Path) -> tuple[dict[str, str], Path]:
    """A BEIR folder's queries.jsonl and its path, which must hold some queries; its qrels are not read
    (``eval --beir DIR --qrels FILE`` replaces them)."""
    beir_corpus(folder)
    queries_path = Path(folder) / "queries.jsonl"
    queries = load_queries(queries_path)
    if not queries:
        raise EvaluationDataError(f"{queries_path} holds no queries: a BEIR folder's queries.jsonl has one "
                                  '{"_id", "text"} object a line.')
    return queries, queries_path


def load_beir(folder: Path, split: str = "test") -> EvalSet:
    """A BEIR folder's queries and ``split``'s qrels. Queries.jsonl must hold some; empty qrels, or none
    for ``split``, are said by ``EvalSet.judged`` (training reads only the queries of a folder)."""
    folder = Path(folder)
    corpus = beir_corpus(folder)
    queries, queries_path = beir_queries(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        return EvalSet(queries=queries, qrels={}, corpus_path=corpus, queries_path=queries_path,
                       qrels_path=qrels_path, qrels_missing=missing_split(folder, split))
    return EvalSet(queries=queries, qrels=load_qrels(qrels_path), corpus_path=corpus,
                   queries_path=queries_path, qrels_path=qrels_path)


def splits(folder: Path) -> list[str]:
    """The qrels splits a BEIR folder holds (``qrels/NAME.tsv``)."""
    return sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv") if p.is_file())


def missing_split(folder: Path, split: str) -> str:
    found = splits(folder)
    there = (f"the splits there are {', '.join(found)}: choose one with --split NAME" if found else
             "it holds no qrels/*.tsv: give judgements with --qrels FILE")
    return f"{Path(folder) / 'qrels' / f'{split}.tsv'} does not exist, so split {split!r} cannot be scored; {there}."


def corpus_ids(corpus: Path) -> set[str]:
    """The document ids of a BEIR corpus.jsonl, as ingestion gives them (``str(_id)``, stripped), read
    without indexing it. Lines that are not records are skipped here: indexing says what is wrong with them."""
    ids = set()
    text = Path(corpus).read_bytes().decode("utf-8-sig", errors="replace")  # ingestion reads other encodings too
    for line in text.split("\n"):
        try:
            ids.add(str(parse_object_line(line, ("_id",))["_id"]).strip())
        except ValueError:
            continue
    return ids
