"""Split training pairs so validation never shares a query (or, for pseudo data, a document)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from unirank.training.examples import TrainingPair, query_key


@dataclass
class Split:
    train: list[TrainingPair]
    validation: list[TrainingPair]


def split_pairs(pairs: Sequence[TrainingPair], fraction: float = 0.1, seed: int = 13,
                max_validation_groups: int = 300) -> Split:
    """Group by query id when there is one (labels), else by document (pseudo-queries)."""
    groups: dict[str, list[TrainingPair]] = {}
    for pair in pairs:
        groups.setdefault(pair.query_id or f"doc:{pair.doc_id}", []).append(pair)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_val = max(1, min(max_validation_groups, int(len(keys) * fraction))) if len(keys) > 1 else 0
    val_keys = set(keys[:n_val])
    return Split(train=[p for k in keys[n_val:] for p in groups[k]],
                 validation=[p for k in sorted(val_keys) for p in groups[k]])


@dataclass
class ValidationQuery:
    """One validation query with every document and passage judged relevant to it, and its negatives."""
    query: str
    doc_ids: set[str]
    positives: list[str]
    negatives: list[str]
    written_by_people: bool


def validation_queries(validation: Sequence[TrainingPair]) -> list[ValidationQuery]:
    """The validation pairs grouped by query (``query_key``): scored as one query per pair, a query with two
    relevant documents counted twice and the other positive as a miss each time."""
    grouped: dict[str, ValidationQuery] = {}
    for pair in validation:
        entry = grouped.setdefault(query_key(pair), ValidationQuery(pair.query, set(), [], [], False))
        entry.doc_ids.add(pair.doc_id)
        if pair.positive not in entry.positives:
            entry.positives.append(pair.positive)
        entry.negatives += [n for n in pair.negatives if n not in entry.negatives]
        entry.written_by_people |= pair.written_by_people
    for entry in grouped.values():  # one pair's negative may be another's positive
        entry.negatives = [n for n in entry.negatives if n not in entry.positives]
    return list(grouped.values())
