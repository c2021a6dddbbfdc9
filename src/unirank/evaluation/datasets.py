"""Evaluation data: BEIR folders, query files and qrels."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from unirank.errors import EvaluationDataError, UnirankError
from unirank.jsonl import label_file_lines, parse_object_line

Qrels = dict[str, dict[str, int]]


@dataclass
class EvalSet:
    queries: dict[str, str]
    qrels: Qrels
    corpus_path: Path | None = None
    #: The files the queries and qrels were read from, for messages.
    queries_path: Path | None = None
    qrels_path: Path | None = None

    def judged(self) -> "EvalSet":
        """Only queries that have at least one relevant document. An empty queries or qrels file is said
        as such (it was reported as qrels naming no query of the queries file)."""
        if not self.queries:
            raise EvaluationDataError(f"{self.queries_path or 'The queries file'} holds no queries: nothing "
                                      "to evaluate.")
        if not self.qrels:
            raise EvaluationDataError(f"{self.qrels_path or 'The qrels file'} holds no rows (query-id<TAB>"
                                      "corpus-id<TAB>score): no query is judged, so there is nothing to score.")
        keep = {q: t for q, t in self.queries.items() if any(v > 0 for v in self.qrels.get(q, {}).values())}
        return self._with(queries=keep, qrels={q: self.qrels[q] for q in keep})

    def subset(self, query_ids: set[str]) -> "EvalSet":
        return self._with(queries={q: t for q, t in self.queries.items() if q in query_ids},
                          qrels={q: r for q, r in self.qrels.items() if q in query_ids})

    def _with(self, queries: dict[str, str], qrels: Qrels) -> "EvalSet":
        return EvalSet(queries=queries, qrels=qrels, corpus_path=self.corpus_path,
                       queries_path=self.queries_path, qrels_path=self.qrels_path)


def load_queries(path: Path) -> dict[str, str]:
    """JSONL ``{"_id", "text"}`` (BEIR) or TSV ``id<TAB>text``."""
    path = Path(path)
    if not path.exists():
        raise UnirankError(f"Query file {path} does not exist.")
    queries: dict[str, str] = {}
    lines = label_file_lines(path, UnirankError)
    if path.suffix == ".jsonl":
        for n, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    record = parse_object_line(line, ("_id", "text"))
                except ValueError as exc:
                    raise UnirankError(f"{path}:{n}: {exc}; expected {{\"_id\", \"text\"}}.") from None
                queries[str(record["_id"])] = str(record["text"])
    else:
        for n, row in enumerate(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row:
                continue
            if len(row) != 2:
                raise UnirankError(f"{path}:{n}: expected id<TAB>text, got {len(row)} column(s).")
            queries[row[0]] = row[1]
    return queries


def load_qrels(path: Path) -> Qrels:
    """TREC-style TSV ``query-id<TAB>corpus-id<TAB>score``, with or without a header line."""
    path = Path(path)
    if not path.exists():
        raise UnirankError(f"Qrels file {path} does not exist.")
    qrels: Qrels = {}
    lines = label_file_lines(path, UnirankError)
    for n, row in enumerate(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
        if len(row) == 1:  # TREC files separate by spaces (their ids hold none)
            row = row[0].split()
        if not row or (n == 1 and not row[-1].lstrip("-").isdigit()):
            continue
        if len(row) == 4:  # TREC qrels: qid iter docid rel
            row = [row[0], row[2], row[3]]
        if len(row) != 3 or not row[2].strip().lstrip("-").isdigit():
            raise UnirankError(f"{path}:{n}: expected query-id<TAB>corpus-id<TAB>integer score "
                               f"(or TREC's qid iter docid rel); got {row}")
        qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def load_beir(folder: Path, split: str = "test") -> EvalSet:
    """A BEIR folder's queries and ``split``'s qrels. Queries.jsonl must hold some; empty qrels are said by
    ``EvalSet.judged`` (training reads only the queries of a folder)."""
    folder = Path(folder)
    corpus = folder / "corpus.jsonl"
    if folder.is_file():
        raise UnirankError(f"{folder} is a file, not a BEIR folder: give the folder that holds corpus.jsonl, "
                           f"queries.jsonl and qrels/ (here {folder.parent}, if it is one).")
    if not folder.is_dir():
        raise UnirankError(f"{folder} does not exist: give a BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")
    if not corpus.exists():
        raise UnirankError(f"{folder} is not a BEIR folder: corpus.jsonl is missing.")
    queries_path, qrels_path = folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"
    queries = load_queries(queries_path)
    if not queries:
        raise EvaluationDataError(f"{queries_path} holds no queries: a BEIR folder's queries.jsonl has one "
                                  '{"_id", "text"} object a line.')
    return EvalSet(queries=queries, qrels=load_qrels(qrels_path), corpus_path=corpus,
                   queries_path=queries_path, qrels_path=qrels_path)
