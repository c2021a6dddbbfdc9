"""Split training pairs so validation never shares a query (or, for pseudo data, a document)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from unirank.training.examples import TrainingPair


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
