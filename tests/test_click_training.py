"""Search click logs as training pairs: clicks are positives, results skipped above a click negatives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unirank.errors import TrainingError
from unirank.search.types import Chunk
from unirank.training.clicks import load_click_pairs
from unirank.training.examples import query_fingerprint
from unirank.training.job import TrainRequest

CHUNKS = [
    Chunk(id=f"{doc}#{n}", doc_id=doc, source_uri=f"mem://{doc}", ordinal=n, text=f"{doc} part {n}", title=doc.upper())
    for doc in ("a", "b", "c", "d", "e") for n in (0, 1)
]


def write_log(path: Path, pages: list) -> Path:
    path.write_text("\n".join(p if isinstance(p, str) else json.dumps(p) for p in pages) + "\n")
    return path


def by_query(pairs):
    out: dict[str, list] = {}
    for pair in pairs:
        out.setdefault(pair.query, []).append(pair)
    return out


def test_clicks_are_positives_and_results_skipped_above_them_negatives(tmp_path):
    log = write_log(tmp_path / "clicks.jsonl", [
        {"query": "Reset password", "shown": ["a", "b", "c", "d"], "clicked": ["c"]},
        {"query": "reset   PASSWORD", "shown": ["b", "a", "c"], "clicked": ["a"]},  # the same query, pooled
        {"query": "reset password", "shown": ["b", "e", "d"], "clicked": []},  # no click: says nothing
    ])
    loaded = load_click_pairs(log, CHUNKS)
    (pairs,) = by_query(loaded.pairs).values()
    assert [p.doc_id for p in pairs] == ["c", "a"]
    assert pairs[0].positive == "C\nc part 0"  # a document id stands for its first passage
    # b was skipped on both pages, a once but clicked on the other page (never a negative), d was
    # below the last click (unseen, not a negative).
    assert pairs[0].negatives == ["B\nb part 0"]
    assert all(p.origin == "clicks" and p.written_by_people for p in pairs)
    assert {p.query_id for p in pairs} == {f"clicks:{query_fingerprint('reset password')}"}
    assert loaded.stats["click_pages"] == 3 and loaded.stats["click_queries"] == 1 and loaded.stats["click_pairs"] == 2


def test_most_skipped_results_come_first_and_their_number_is_capped(tmp_path):
    log = write_log(tmp_path / "clicks.jsonl", [
        {"query": "q", "shown": ["a#0", "b#0", "c#1", "d#0", "e#0"], "clicked": ["e#0"]},
        {"query": "q", "shown": ["c#1", "d#0", "e#0"], "clicked": ["e#0"]},
        {"query": "q", "shown": ["d#0", "e#0"], "clicked": ["e#0"]},
    ])
    (pair,) = load_click_pairs(log, CHUNKS, max_negatives=2).pairs
    assert pair.positive == "E\ne part 0"
    assert pair.negatives == ["D\nd part 0", "C\nc part 1"]  # chunk ids name passages past the first


def test_a_quick_return_is_a_bounce_not_a_positive(tmp_path):
    log = write_log(tmp_path / "clicks.jsonl", [
        {"query": "q", "shown": ["a", "b", "c"], "clicked": [{"id": "b", "dwell_s": 2}, {"id": "c", "dwell_s": 45}]},
        {"query": "r", "shown": ["a", "b"], "clicked": [{"id": "a", "dwell_s": 1.5}]},
    ])
    loaded = load_click_pairs(log, CHUNKS, min_dwell_s=10)
    (pair,) = loaded.pairs
    # the bounce on b is no positive, and no skip either: it was clicked, not read past (it was a negative)
    assert pair.doc_id == "c" and pair.negatives == ["A\na part 0"]
    assert loaded.stats["click_bounces"] == 2
    assert len(load_click_pairs(log, CHUNKS).pairs) == 3  # every click counts without a threshold
    with pytest.raises(TrainingError, match=r"no click that counts: 1 came back within 60 s \(--min-dwell\)"):
        load_click_pairs(write_log(tmp_path / "r.jsonl", [{"query": "r", "shown": ["a"], "clicked": [{"id": "a", "dwell_s": 3}]}]),
                         CHUNKS, min_dwell_s=60)


def test_ids_of_another_index_are_counted_and_a_log_of_only_those_refused(tmp_path):
    log = write_log(tmp_path / "clicks.jsonl", [{"query": "q", "shown": ["zz", "a", "b"], "clicked": ["b", "yy"]}])
    loaded = load_click_pairs(log, CHUNKS)
    assert [p.doc_id for p in loaded.pairs] == ["b"] and loaded.pairs[0].negatives == ["A\na part 0"]
    assert loaded.stats["click_unknown_ids"] == 2
    other = write_log(tmp_path / "other.jsonl", [{"query": "q", "shown": ["x1", "x2"], "clicked": ["x2"]}])
    with pytest.raises(TrainingError, match="another index"):
        load_click_pairs(other, CHUNKS)


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", r"clicks.jsonl:2: not valid JSON \(Expecting property name"),
    ('["q", ["a"]]', r"clicks.jsonl:2: expected a JSON object, got an array; expected \{\"query\""),
    ('{"query": " ", "shown": ["a"], "clicked": ["a"]}', r":2: the query is missing or empty"),
    ('{"query": "q", "shown": "a b", "clicked": ["a"]}', r":2: \"shown\" must be a list of id strings"),
    ('{"query": "q", "shown": ["a"], "clicked": [7]}', r":2: a click is an id or"),
    ('{"query": "q", "shown": ["a"], "clicked": [{"id": "a", "dwell_s": "long"}]}', r":2: dwell_s must be a number"),
])
def test_a_malformed_page_is_refused_with_its_line(tmp_path, line, message):
    log = write_log(tmp_path / "clicks.jsonl", [{"query": "fine", "shown": ["a"], "clicked": ["a"]}, line])
    with pytest.raises(TrainingError, match=message):
        load_click_pairs(log, CHUNKS)


def test_missing_input_files_are_refused_before_any_work(tmp_path):
    with pytest.raises(TrainingError, match=r"--clicks .*nowhere.jsonl: no such file"):
        TrainRequest(name="x", index="i", clicks=tmp_path / "nowhere.jsonl").validate()
    with pytest.raises(TrainingError, match=r"--pairs .*: no such file"):
        TrainRequest(name="x", index="i", pairs=tmp_path / "nowhere.tsv").validate()
    with pytest.raises(TrainingError, match="--min-dwell must be 0 or more"):
        TrainRequest(name="x", index="i", min_dwell_s=-1).validate()
    log = write_log(tmp_path / "clicks.jsonl", [{"query": "q", "shown": ["a"], "clicked": ["a"]}])
    request = TrainRequest(name="x", index="i", clicks=log)
    before = request.fingerprint()
    write_log(log, [{"query": "q", "shown": ["a", "b"], "clicked": ["b"]}])
    assert request.fingerprint() != before  # a newer log is a new training run
