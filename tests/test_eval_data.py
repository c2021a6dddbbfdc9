"""Held-out queries and qrels as `unirank eval` (and `train --qrels`) read them: what a file says is read
as it says, and what it cannot mean is refused naming its line, never dropped or taken last-wins."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from env_helpers import clear_unirank_settings
from unirank.errors import EvaluationDataError
from unirank.evaluation.datasets import load_beir, load_qrels, load_queries


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _beir(folder: Path, splits: dict[str, str]) -> Path:
    (folder / "qrels").mkdir(parents=True)
    _write(folder / "corpus.jsonl", '{"_id": "d1", "text": "Rotate keys every 90 days."}\n'
                                    '{"_id": "d2", "text": "Backups run nightly."}\n')
    _write(folder / "queries.jsonl", '{"_id": "q1", "text": "key rotation"}\n{"_id": "q2", "text": "backups"}\n')
    for split, rows in splits.items():
        _write(folder / "qrels" / f"{split}.tsv", rows)
    return folder


def _cli(monkeypatch, tmp_path: Path, *args: str):
    from typer.testing import CliRunner

    from unirank.cli.main import app

    clear_unirank_settings(monkeypatch)
    monkeypatch.setenv("UNIRANK_CONFIG", os.devnull)
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("text, expected", [
    ("q1\td1\t1.0\nq2\td2\t1\n", {"q1": {"d1": 1}, "q2": {"d2": 1}}),  # a float first row was taken for a header
    ("q1\td1\t1\t\nq2\td2\t2\t\t\n", {"q1": {"d1": 1}, "q2": {"d2": 2}}),  # trailing tabs are no columns
    ("q1 0 d1 1\t\n", {"q1": {"d1": 1}}),
    ("\nquery-id\tcorpus-id\tscore\nq1\td1\t+1\n", {"q1": {"d1": 1}}),  # the header on the first written line
    ("qid\tdocid\trelevance\t\nq1\td1\t-1\nq1\td1\t-1\n", {"q1": {"d1": -1}}),  # the same row twice is one
    ("qid iter docid REL\nq1 0 d1 1\n", {"q1": {"d1": 1}}),
])
def test_qrels_rows_are_read_as_written(tmp_path, text, expected):
    assert load_qrels(_write(tmp_path / "qrels.tsv", text)) == expected


@pytest.mark.parametrize("rows, bad", [
    ([], "q1\td1\t--1"),  # lstrip("-") took it for -1, and int() raised ValueError
    (["q1\td1\t1"], "q1\td2\t\u00b2"),  # isdigit() took '²', and int() raised ValueError
    (["q1\td1\t1"], "q1\td2\t\u0663"),  # another script's digit, which int() read as 3
    (["q1\td1\t1"], "q2\td2\t1.5"),
    ([], "q1\td1\t-"),  # no word: not a header
    (["q1\td1\t1"], "q2\td2"),
    ([], "q1\td1\t9999999999999999999"),  # ranx's C long overflowed after every search: a traceback
    (["q1\td1\t2147483647"], "q2\td2\t-2147483648.0"),
])
def test_a_score_that_is_no_integer_is_refused_naming_and_quoting_its_line(tmp_path, rows, bad):
    path = _write(tmp_path / "qrels.tsv", "\n".join([*rows, bad]) + "\n")
    with pytest.raises(EvaluationDataError, match=rf"qrels\.tsv:{len(rows) + 1}: expected query-id<TAB>corpus-id<TAB>"
                                                  rf"integer score .*; got {re.escape(repr(bad))}$"):
        load_qrels(path)


@pytest.mark.parametrize("score", ["l", "yes", "x", "relevant"])
def test_a_first_row_whose_score_is_a_word_no_header_uses_is_refused_naming_its_line(tmp_path, score):
    """Any word made the first row a header: a mistyped score ('l' for '1') dropped its judgment without a word."""
    bad = f"1\t28\t{score}"
    path = _write(tmp_path / "qrels.tsv", f"{bad}\n1\t29\t1\n")
    with pytest.raises(EvaluationDataError, match=rf"qrels\.tsv:1: expected query-id<TAB>corpus-id<TAB>integer score "
                                                  rf".*, or a header whose score column is one of .*\bscore\b.*; "
                                                  rf"got {re.escape(repr(bad))}$"):
        load_qrels(path)


def test_a_pair_judged_twice_with_two_scores_is_refused_with_both_lines(tmp_path):
    """The last row won without a word."""
    with pytest.raises(EvaluationDataError, match=r"qrels\.tsv:3: query 'q1' and document 'd1' are judged again "
                                                  r"with another score \(0; 2 on line 1\)"):
        load_qrels(_write(tmp_path / "qrels.tsv", "q1\td1\t2\nq1\td2\t1\nq1\td1\t0\n"))


@pytest.mark.parametrize("name", ["q.JSONL", "q.json", "q.ndjson", "q.Jsonl"])
def test_json_lines_queries_are_read_as_such_by_any_of_the_pair_files_suffixes(tmp_path, name):
    """Only a file named exactly `.jsonl` was read as JSON lines: the others failed as TSV rows of one column."""
    assert load_queries(_write(tmp_path / name, '{"_id": 7, "text": "key rotation"}\n')) == {"7": "key rotation"}


@pytest.mark.parametrize("raw, shown", [
    ("2.0", "2.0"), ("1e2", "100.0"), ("true", "true"), ('{"a": 1}', '{"a": 1}'), ("[7]", "[7]"),
])
def test_a_query_id_the_corpus_would_refuse_is_refused_naming_its_line(tmp_path, raw, shown):
    """A query _id was read as Python wrote it: 2.0 as "2.0" (the qrels' "2" then matched no query, said as
    not in the file), true as "True", an object as "{'a': 1}". corpus.jsonl refuses them, for that reason."""
    lines = '{"_id": "q1", "text": "a"}\n' f'{{"_id": {raw}, "text": "b"}}\n'
    with pytest.raises(EvaluationDataError, match=rf"q\.jsonl:2: _id must be a string or an integer, got "
                                                  rf"{re.escape(shown)}; write the id as a JSON string"):
        load_queries(_write(tmp_path / "q.jsonl", lines))


def test_a_query_id_is_read_as_the_corpus_reads_ids(tmp_path):
    """Stripped, as corpus ids are, and never empty (an empty id was a query no qrels line could name)."""
    text = '{"_id": 2, "text": "a"}\n{"_id": " q3 ", "text": "b"}\n'
    assert load_queries(_write(tmp_path / "q.jsonl", text)) == {"2": "a", "q3": "b"}
    for empty in ('""', '"  "'):
        with pytest.raises(EvaluationDataError, match=r"q\.jsonl:1: _id is empty; give the query the id"):
            load_queries(_write(tmp_path / "q.jsonl", f'{{"_id": {empty}, "text": "a"}}\n'))


@pytest.mark.parametrize("name, text, message", [
    ("q.tsv", "q1\tkey rotation\nq2\tbackups\nq1\tsev2\n", r"q\.tsv:3: query id 'q1' is given again with another "
                                                          r"text \(first on line 1\)"),
    ("q.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n', r"q\.jsonl:2: query id 'q1' is given again"),
    ("q.tsv", "q1\tkey rotation\nq2\t\n", r"q\.tsv:2: query 'q2' has no text"),
    ("q.tsv", "q1\t   \n", r"q\.tsv:1: query 'q1' has no text"),
    ("q.jsonl", '{"_id": "q1", "text": " "}\n', r"q\.jsonl:1: query 'q1' has no text"),
    # invisible characters only: read, then refused by search halfway through eval, naming no line
    ("q.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "\\u200b"}\n', r"q\.jsonl:2: query 'q2' has no text"),
    ("q.jsonl", '{"_id": "q1", "text": "\\u0000 \\ufeff"}\n', r"q\.jsonl:1: query 'q1' has no text"),
    ("q.tsv", "q1\t\u200b\x00\n", r"q\.tsv:1: query 'q1' has no text"),
    ("q.jsonl", '{"_id": "q1", "text": 5}\n', r"q\.jsonl:1: \"text\" must be a text, got 5"),
    # JSON's escape of half a UTF-16 pair: it ended eval in a UnicodeEncodeError traceback
    ("q.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "abc \\ud800 def"}\n',
     r"q\.jsonl:2: query 'q2' holds a lone UTF-16 surrogate .*, which is not text"),
    ("q.jsonl", '{"_id": "q\\udfff", "text": "abc"}\n', r"q\.jsonl:1: query id 'q\\udfff' holds a lone UTF-16 surrogate"),
])
def test_a_query_given_twice_or_without_text_is_refused_naming_its_lines(tmp_path, name, text, message):
    with pytest.raises(EvaluationDataError, match=message):
        load_queries(_write(tmp_path / name, text))


def test_a_query_file_saved_with_csv_quoting_is_refused_naming_its_line(tmp_path):
    """csv.writer and pandas quote a cell holding a '"' and double its own: the query was scored with the
    quotes, and fingerprinted so, so eval did not refuse it as trained on (train's --pairs refuses it)."""
    import csv
    with open(tmp_path / "q.tsv", "w", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows([("q1", "key rotation"),
                                                                        ("q2", 'what does "SEV1" mean')])
    assert (tmp_path / "q.tsv").read_text().splitlines()[1] == 'q2\t"what does ""SEV1"" mean"'
    with pytest.raises(EvaluationDataError, match=r"q\.tsv:2: CSV-style quoting .* save without quotes, or use JSONL"):
        load_queries(tmp_path / "q.tsv")
    assert load_queries(_write(tmp_path / "plain.tsv", 'q2\twhat does "SEV1" mean\n')) == {"q2": 'what does "SEV1" mean'}


def test_the_same_query_given_twice_alike_is_read_once(tmp_path):
    assert load_queries(_write(tmp_path / "q.tsv", "q1\tkeys\nq1\tkeys\n")) == {"q1": "keys"}


def test_missing_files_and_folders_are_evaluation_data_errors(tmp_path):
    """They were the base UnirankError, which a caller cannot tell from any other failure."""
    with pytest.raises(EvaluationDataError, match=r"Qrels file .*absent\.tsv does not exist"):
        load_qrels(tmp_path / "absent.tsv")
    with pytest.raises(EvaluationDataError, match=r"Query file .* is a folder, not a file"):
        load_queries(tmp_path)
    with pytest.raises(EvaluationDataError, match=r"nowhere does not exist: give a BEIR folder"):
        load_beir(tmp_path / "nowhere")
    with pytest.raises(EvaluationDataError, match=r"corpus\.jsonl is missing"):
        load_beir(tmp_path)


def test_a_split_the_folder_lacks_is_said_with_the_splits_it_has(tmp_path):
    """A BEIR folder without qrels/test.tsv could not be evaluated at all: there was no --split."""
    folder = _beir(tmp_path / "beir", {"dev": "q1\td1\t1\n", "train": "q2\td2\t1\n"})
    assert load_beir(folder, "dev").judged().qrels == {"q1": {"d1": 1}}
    missing = load_beir(folder)
    assert missing.queries == {"q1": "key rotation", "q2": "backups"}  # training reads only the queries
    with pytest.raises(EvaluationDataError, match=r"qrels/test\.tsv does not exist, so split 'test' cannot be scored; "
                                                  r"the splits there are dev, train: choose one with --split NAME"):
        missing.judged()


def test_eval_refuses_what_it_would_ignore_and_reads_a_split(tmp_path, monkeypatch):
    """`eval --beir DIR --qrels FILE` ignored --qrels without a word; there was no way to score another split."""
    folder = _beir(tmp_path / "beir", {"dev": "q1\td1\t1\n"})
    qrels = _write(tmp_path / "qrels.tsv", "q1\td1\t1\n")
    refusals = [
        (["--beir", str(folder)], r"qrels/test\.tsv does not exist, .* the splits there are dev: choose one with --split"),
        (["--beir", str(folder), "--split", "test2"], r"split 'test2' cannot be scored"),
        (["--beir", str(folder), "--split", "dev", "--qrels", str(qrels)], r"--split dev chooses the folder's "
                                                                          r"qrels/dev\.tsv, which --qrels replaces"),
        (["--beir", str(folder), "--queries", str(qrels)], r"--queries gives the query texts of --qrels: add --qrels"),
        (["--index", "handbook", "--split", "dev"], r"--split chooses a BEIR folder's qrels/SPLIT\.tsv"),
        (["--beir", str(folder), "--qrels", str(_write(tmp_path / "bad.tsv", "q1\td1\t--1\n"))],
         r"bad\.tsv:1: expected query-id"),
        (["--index", "handbook", "--queries", str(_write(tmp_path / "q.json", '{"_id": "q1", "text": ""}\n')),
          "--qrels", str(qrels)], r"q\.json:1: query 'q1' has no text"),
    ]
    for args, message in refusals:
        code, output = _cli(monkeypatch, tmp_path, "eval", *args)
        assert code == 2 and re.search(message, output), (args, output)
        assert "Traceback" not in output
    assert not (tmp_path / "data" / "indexes").exists()  # each refused before any indexing


def test_train_refuses_a_malformed_qrels_score_naming_its_line(tmp_path, monkeypatch):
    """A score like '--1' or '²' ended `train --qrels` in a ValueError traceback."""
    folder = _beir(tmp_path / "beir", {"test": "q1\td1\t1\n"})
    qrels = _write(tmp_path / "train.tsv", "q1\td1\t1\nq2\td2\t\u00b2\n")
    code, output = _cli(monkeypatch, tmp_path, "train", "--beir", str(folder), "--qrels", str(qrels), "--name", "t")
    assert code == 2 and "train.tsv:2: expected query-id<TAB>corpus-id<TAB>integer score" in output, output
    assert not (tmp_path / "data" / "runs").exists()


def test_eval_beir_reads_no_folder_file_that_queries_and_qrels_replace(tmp_path, monkeypatch):
    """The folder's queries.jsonl and qrels/test.tsv were read before --queries and --qrels replaced them:
    a folder holding only its corpus was refused, and a broken qrels file it would not use failed eval."""
    corpus_only = tmp_path / "corpus-only"
    corpus_only.mkdir()
    (_beir(tmp_path / "beir", {}) / "corpus.jsonl").rename(corpus_only / "corpus.jsonl")
    broken = _beir(tmp_path / "broken", {"test": "garbage\n"})
    queries = _write(tmp_path / "q.jsonl", '{"_id": "q1", "text": "key rotation"}\n')
    qrels = _write(tmp_path / "qrels.tsv", "q1\td1\t1\n")
    for args in (["--beir", str(corpus_only), "--queries", str(queries)], ["--beir", str(broken)]):
        code, output = _cli(monkeypatch, tmp_path, "eval", *args, "--qrels", str(qrels), "--no-record", "--json")
        assert code == 0, (args, output)
        assert '"bm25": { "ndcg@10"' in output, output


def test_judged_queries_the_queries_file_lacks_are_counted_in_a_warning_and_the_title(tmp_path, monkeypatch):
    """They were left out of every figure without a word: the table said "1 held-out queries" of 3 judged."""
    folder = _beir(tmp_path / "beir", {"test": "q1\td1\t1\nq999\td2\t1\nq998\td2\t2\nq997\td1\t0\n"})
    judged = load_beir(folder).judged()
    assert (list(judged.queries), judged.judged_not_in_queries) == (["q1"], ["q998", "q999"])  # q997: none relevant
    code, output = _cli(monkeypatch, tmp_path, "eval", "--beir", str(folder), "--no-record")
    assert code == 0, output
    assert (f"warning: 2 of 3 judged queries are not in {folder / 'queries.jsonl'} (e.g. 'q998', 'q999'); they are "
            "left out of every figure") in output, output
    assert "1 held-out queries (2 judged queries are not in the queries file: left out)" in output, output
