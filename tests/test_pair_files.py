"""Labelled pair files as users write them: JSONL and TSV, and the malformed rows that must stop training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unirank.errors import TrainingError
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


@pytest.mark.parametrize("name, text, message", [
    ("p.jsonl", '{"query": "a", "positive": "b"}\n{"query": broken\n', r"p.jsonl:2: expected"),
    ("p.jsonl", '{"query": "a"}\n', r"p.jsonl:1: expected"),
    ("p.jsonl", '["a", "b"]\n', r"p.jsonl:1: expected"),
    ("p.jsonl", '{"query": " ", "positive": "b"}\n', r"p.jsonl:1: the query and the positive must not be empty"),
    ("p.tsv", "a\tb\n" "a\tb\tc\td\n", r"p.tsv:2: expected query<TAB>positive\[<TAB>negative\], got 4 column"),
    ("p.tsv", "just one column\n", r"p.tsv:1: .* got 1 column"),
    ("p.tsv", "a\t\tc\n", r"p.tsv:1: the query and the positive must not be empty"),
    ("p.tsv", "\n\n", r"holds no pairs"),
])
def test_a_malformed_row_is_refused_with_its_line(tmp_path, name, text, message):
    with pytest.raises(TrainingError, match=message):
        load_pair_file(_write(tmp_path / name, text))


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        load_pair_file(tmp_path / "absent.jsonl")
