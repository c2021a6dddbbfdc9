"""Pair, query and qrels files as users write them, and the malformed rows that must stop training or
evaluation instead of being half read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unirank.errors import TrainingError, UnirankError
from unirank.evaluation.datasets import load_qrels, load_queries
from unirank.training.labelled import load_pair_file


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_pairs_with_one_or_several_negatives(tmp_path):
    rows = [{"query": "key rotation", "positive": "Rotate keys every 90 days.", "negative": "Backups run nightly."},
            {"query": "sev2", "positive": "SEV2: a major feature is degraded.", "negatives": ["Lunch", "Travel"]},
            {"query": "refunds", "positive": "Refunds take five days.", "query_id": "q7", "doc_id": "billing.md"}]
    pairs = load_pair_file(_write(tmp_path / "p.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n"))
    assert [(p.query, p.negatives) for p in pairs] == [("key rotation", ["Backups run nightly."]),
                                                        ("sev2", ["Lunch", "Travel"]), ("refunds", [])]
    assert (pairs[2].query_id, pairs[2].doc_id) == ("q7", "billing.md")
    assert all(p.origin == "pairs" and p.written_by_people for p in pairs)


def test_tsv_pairs_skip_a_header_and_keep_quotes_as_written(tmp_path):
    text = ('query\tpositive\tnegative\n'
            'key rotation\t"Rotate" keys every 90 days.\tBackups run nightly.\n'
            'sev2\tSEV2: a major feature is degraded.\n'
            'refunds\tRefunds take five days.\t\n')
    pairs = load_pair_file(_write(tmp_path / "p.tsv", text))
    assert [(p.query, p.positive, p.negatives) for p in pairs] == [
        ("key rotation", '"Rotate" keys every 90 days.', ["Backups run nightly."]),
        ("sev2", "SEV2: a major feature is degraded.", []),
        ("refunds", "Refunds take five days.", []),
    ]


def test_tsv_pairs_padded_with_tabs_are_read_as_eval_reads_them_and_csv_quoting_is_refused(tmp_path):
    """A row padded with empty cells was refused ("got 4 column(s)"), though eval's TSV readers drop them;
    a file saved by csv.writer (or pandas' to_csv) with sep TAB wraps a cell holding a '"' in quotes and
    doubles its own, and those were trained on: '"what does ""SEV1"" mean"'."""
    import csv

    padded = load_pair_file(_write(tmp_path / "padded.tsv", "q1\tp1\t\t\nq2\tp2\tn2\t \t\n"))
    assert [(p.query, p.positive, p.negatives) for p in padded] == [("q1", "p1", []), ("q2", "p2", ["n2"])]

    quoted = tmp_path / "quoted.tsv"
    with quoted.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter="\t").writerows([
            ("query", "positive", "negative"), ("how are keys rotated", "Keys rotate every 90 days.", "Backups run."),
            ('what does "SEV1" mean', 'A "SEV1" incident means the product is down.', "Lunch is at noon.")])
    with pytest.raises(TrainingError, match=r"quoted.tsv:3: CSV-style quoting"):
        load_pair_file(quoted)


@pytest.mark.parametrize("name, text, message", [
    ("p.jsonl", '{"query": "a", "positive": "b"}\n{"query": broken\n', r"p.jsonl:2: not valid JSON \(Expecting value at column 11\); expected \{\"query\""),
    ("u.jsonl", '{"query": "a", "positive": "b', r"u.jsonl:1: not valid JSON \(Unterminated string starting at column 28\)"),
    ("p.jsonl", '{"query": "a"}\n', r"p.jsonl:1: missing required field\(s\) positive"),
    ("p.jsonl", '["a", "b"]\n', r"p.jsonl:1: expected a JSON object, got an array"),
    ("p.jsonl", '{"query": "a", "positive": "b", "negatives": "c"}\n', r"p.jsonl:1: \"negatives\" must be a list"),
    ("p.jsonl", '{"query": " ", "positive": "b"}\n', r"p.jsonl:1: the query and the positive must not be empty"),
    # str() made these the query "5" and the positive "['abc']", and trained on them
    ("p.jsonl", '{"query": "a", "positive": "b"}\n{"query": 5, "positive": ["abc"]}\n',
     r"p.jsonl:2: \"query\" must be a text, got a number; expected \{\"query\""),
    ("p.jsonl", '{"query": "a", "positive": ["abc"]}\n', r"p.jsonl:1: \"positive\" must be a text, got an array"),
    ("p.jsonl", '{"query": "a", "positive": {"text": "b"}}\n', r"p.jsonl:1: \"positive\" must be a text, got an object"),
    ("p.jsonl", '{"query": "a", "positive": "b", "negative": 3}\n', r"p.jsonl:1: \"negative\" must be a text, got a number"),
    ("p.jsonl", '{"query": "a", "positive": "b", "negative": ["c"]}\n', r"p.jsonl:1: \"negative\" must be a text, got an array"),
    ("p.jsonl", '{"query": "a", "positive": "b", "negatives": ["c", 4]}\n', r"p.jsonl:1: \"negatives\" must be a list of texts"),
    ("p.jsonl", '{"query": "a", "positive": "b", "doc_id": ["d1"]}\n', r"p.jsonl:1: \"doc_id\" must be a text or an integer"),
    ("p.jsonl", '{"query": true, "positive": "b"}\n', r"p.jsonl:1: \"query\" must be a text, got a boolean"),
    ("p.tsv", "a\tb\n" "a\tb\tc\td\n", r"p.tsv:2: expected query<TAB>positive\[<TAB>negative\], got 4 column"),
    ("p.tsv", "just one column\n", r"p.tsv:1: .* got 1 column"),
    ("p.tsv", "a\t\tc\n", r"p.tsv:1: the query and the positive must not be empty"),
    ("p.tsv", "\n\n", r"holds no pairs"),
    # a carriage return inside a line failed in a raw _csv.Error traceback
    ("p.tsv", "query\tpositive\ra\tb\rc\td\r", r"p.tsv:1: a carriage return \(\\r\) inside the line: the file has old Mac"),
    ("p.tsv", "a\tb\r\nq\tEvery service\rcalls the API\r\n", r"p.tsv:2: a carriage return .* no line breaks inside a cell"),
    ("p.tsv", 'a\tb\nq\tp\t"a ""SEV3"" incident"\n', r"p.tsv:2: CSV-style quoting .*: save without quotes, or use JSONL"),
    ("p.tsv", "a\tb\t\tc\t\n", r"p.tsv:1: .* got 4 column"),  # an empty cell before the last is a column
])
def test_a_malformed_row_is_refused_with_its_line(tmp_path, name, text, message):
    with pytest.raises(TrainingError, match=message):
        load_pair_file(_write(tmp_path / name, text))


def test_a_negative_that_is_its_positive_is_left_out_and_its_line_counted(tmp_path):
    """{"query": "q", "positive": "p", "negative": "p"} trained p as both the positive and a negative."""
    from unirank.training.labelled import read_pair_file

    rows = [{"query": "q", "positive": "p", "negative": "p"},
            {"query": "r", "positive": "Rotate keys.", "negatives": ["rotate  KEYS.", "Backups run nightly."]},
            {"query": "s", "positive": "t", "negative": "u"},
            {"query": "v", "positive": "w", "query_id": 7, "doc_id": 12, "negative": None}]
    path = _write(tmp_path / "p.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    read = read_pair_file(path)
    assert [p.negatives for p in read.pairs] == [[], ["Backups run nightly."], ["u"], []]
    assert read.negatives_same_as_positive == [1, 2]
    assert read.warning(path) == (f"warning: 2 negative(s) of {path} equal to their own positive left out "
                                  "(line 1, 2): a passage cannot be both")
    assert (read.pairs[3].query_id, read.pairs[3].doc_id) == ("7", "12")  # numeric ids, as BEIR's often are
    tsv = read_pair_file(_write(tmp_path / "p.tsv", "query\tpositive\tnegative\nq\tp\tp\nr\ts\tt\n"))
    assert [p.negatives for p in tsv.pairs] == [[], ["t"]] and tsv.negatives_same_as_positive == [2]
    assert read_pair_file(_write(tmp_path / "ok.tsv", "q\tp\tn\n")).warning(tmp_path / "ok.tsv") is None


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        load_pair_file(tmp_path / "absent.jsonl")


def test_qrels_in_beir_tsv_with_a_header_and_in_trec_format(tmp_path):
    beir = _write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\nq1\tfile:///docs/my notes.md\t1\nq1\td2\t0\n")
    assert load_qrels(beir) == {"q1": {"file:///docs/my notes.md": 1, "d2": 0}}
    trec = _write(tmp_path / "qrels.txt", "q1 0 d1 2\nq2\t0\td3\t1\n")
    assert load_qrels(trec) == {"q1": {"d1": 2}, "q2": {"d3": 1}}


@pytest.mark.parametrize("text", ["q1\td1\t1\nq2\td2\trelevant\n", "q1\td1\t1\nq2\td2\n"])
def test_a_malformed_qrels_row_is_refused_with_its_line(tmp_path, text):
    with pytest.raises(UnirankError, match=r"test.tsv:2: expected query-id<TAB>corpus-id<TAB>integer score"):
        load_qrels(_write(tmp_path / "test.tsv", text))


def test_queries_in_jsonl_and_tsv(tmp_path):
    assert load_queries(_write(tmp_path / "q.jsonl", '{"_id": 1, "text": "key rotation"}\n')) == {"1": "key rotation"}
    assert load_queries(_write(tmp_path / "q.tsv", 'q1\t"quoted" words\n\nq2\tsev2\n')) == {
        "q1": '"quoted" words', "q2": "sev2"}


@pytest.mark.parametrize("name, text", [("q.tsv", "q1\tok\nq2 has no tab\n"), ("q.tsv", "q1\tok\nq2\ta\tb\n"),
                                        ("q.jsonl", '{"_id": "q1", "text": "ok"}\n"just a string"\n')])
def test_a_malformed_query_row_is_refused_with_its_line(tmp_path, name, text):
    with pytest.raises(UnirankError, match=rf"{name}:2: expected"):
        load_queries(_write(tmp_path / name, text))


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_a_unicode_line_separator_inside_a_row_does_not_split_it(tmp_path, separator):
    """JSON allows them raw in a string and a TSV cell may hold one; splitlines() cut the row there, so
    the pair file failed as 'not valid JSON' and a query row as two rows without a tab."""
    row = json.dumps({"query": f"key{separator}rotation", "positive": "Rotate keys."}, ensure_ascii=False)
    [pair] = load_pair_file(_write(tmp_path / "p.jsonl", row + "\n"))
    assert pair.query == f"key{separator}rotation"
    assert load_queries(_write(tmp_path / "q.tsv", f"q1\tkey{separator}rotation\r\nq2\tsev2\n")) == {
        "q1": f"key{separator}rotation", "q2": "sev2"}


def test_files_saved_by_windows_tools_are_read_and_other_encodings_said(tmp_path):
    """A byte-order mark made the header a pair ("\\ufeffquery") or the first id "\\ufeff1" (its query then
    matched no judgement); a cp1252 file ended in a UnicodeDecodeError traceback."""
    bom = "\ufeffquery\tpositive\r\nkey rotation\tRotate keys every 90 days.\r\n   \r\nsev2\tSEV2: degraded.\r\n"
    pairs = load_pair_file(_write(tmp_path / "p.tsv", bom))
    assert [(p.query, p.positive) for p in pairs] == [("key rotation", "Rotate keys every 90 days."),
                                                      ("sev2", "SEV2: degraded.")]
    assert [p.query for p in load_pair_file(_write(tmp_path / "p.jsonl", '\ufeff{"query": "a", "positive": "b"}\n'))] == ["a"]
    assert load_queries(_write(tmp_path / "q.tsv", "\ufeff1\tWhat is a key?\n")) == {"1": "What is a key?"}
    assert load_qrels(_write(tmp_path / "r.tsv", "\ufeff1\tdoc-1\t1\n")) == {"1": {"doc-1": 1}}
    latin = tmp_path / "l.tsv"
    latin.write_bytes("café\tcrème brûlée\nnext\tline\n".encode("cp1252"))
    with pytest.raises(TrainingError, match=r"l.tsv:1: not UTF-8 text \(byte 0xe9\): save the file as UTF-8"):
        load_pair_file(latin)
    latin.write_bytes("1\tok\n2\tcafé\n".encode("cp1252"))
    with pytest.raises(UnirankError, match=r"l.tsv:2: not UTF-8 text"):
        load_queries(latin)


def test_pairs_of_one_question_share_an_id_and_are_matched_to_their_passages(tmp_path):
    """Without ids every pair of a file fell in one validation group, so a file of pairs could never train
    ("no validation split"), and validation looked for document ""."""
    from unirank.search.types import Chunk
    from unirank.training.labelled import with_documents
    from unirank.training.validation import split_pairs

    text = "".join(f"question {i % 6}\tpassage {i}\n" for i in range(24)) + "Question 0\tRotate keys every 90 days.\n"
    pairs = load_pair_file(_write(tmp_path / "p.tsv", text))
    assert len({p.query_id for p in pairs}) == 6 and pairs[0].query_id == pairs[-1].query_id  # case and spacing aside
    split = split_pairs(pairs)
    assert split.validation and {p.query_id for p in split.validation}.isdisjoint(p.query_id for p in split.train)
    chunk = Chunk(id="keys.md#2", doc_id="keys.md", source_uri="file:///keys.md", ordinal=2,
                  text="Rotate  keys every 90 days.", title="API keys")
    placed = with_documents(pairs, [chunk])
    assert placed[-1].doc_id == "keys.md"  # a passage of the index: its document
    assert placed[0].doc_id.startswith("pair:") and len({p.doc_id for p in placed}) == 25


def test_judgements_left_out_of_training_are_counted(tmp_path):
    """Qrels rows naming a query the queries file lacks, or a document the index lacks, were dropped silently."""
    from unirank.search.types import Chunk
    from unirank.training.labelled import pairs_from_qrels

    chunks = [Chunk(id=f"{d}#0", doc_id=d, source_uri=f"mem://{d}", ordinal=0, text=f"text of {d}", title=d)
              for d in ("d1", "d2")]
    qrels = {"1": {"d1": 1, "d2": 0, "gone": 1}, "9001": {"d1": 1}, "2": {"d2": 2}}
    pairs, skipped = pairs_from_qrels({"1": "first", "2": "second"}, qrels, chunks)
    assert [(p.query_id, p.doc_id) for p in pairs] == [("1", "d1"), ("2", "d2")]
    assert skipped == {"qrels_query_not_in_queries": 1, "qrels_document_not_in_index": 1}


def test_a_header_after_blank_lines_is_no_pair_and_an_id_of_0_is_kept(tmp_path):
    """A header after a leading blank line was trained as the pair ('query', 'positive'), and "query_id": 0
    was read as no id (the query got an id of its text)."""
    tsv = load_pair_file(_write(tmp_path / "p.tsv", "\n  \nquery\tpositive\nkeys\tRotate keys.\n"))
    assert [(p.query, p.positive) for p in tsv] == [("keys", "Rotate keys.")]
    (pair,) = load_pair_file(_write(tmp_path / "p.jsonl", '{"query": "keys", "positive": "Rotate.", "query_id": 0, '
                                                          '"doc_id": 0}\n'))
    assert (pair.query_id, pair.doc_id) == ("0", "0")


def test_ctrl_c_before_any_stage_finished_does_not_say_finished_stages_are_kept(tmp_path, capsys):
    """It said "Finished stages are kept in RUN" when the run folder held nothing finished."""
    import types

    import typer

    from unirank.cli.training import _interrupted

    run_dir = tmp_path / "runs" / "x-123"
    (run_dir / "embedder" / "checkpoints").mkdir(parents=True)
    job = types.SimpleNamespace(run_dir=run_dir)
    with pytest.raises(typer.Exit):
        _interrupted(job, fresh=False)
    said = " ".join(capsys.readouterr().err.split())
    assert said == (f"Interrupted before any stage finished: the same command starts again in {run_dir} "
                    "(a training stage from its last checkpoint, if it saved one).")
    (run_dir / "training_pairs.jsonl").write_text("")
    (run_dir / "embedder" / "done.json").write_text("{}")
    with pytest.raises(typer.Exit):
        _interrupted(job, fresh=True)
    assert f"Finished stages (training data, embedder) are kept in {run_dir}: the same command without --fresh " \
           "resumes" in " ".join(capsys.readouterr().err.split())
