"""A training example, and its JSONL form (the run folder keeps the exact data a model saw)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable


@dataclass
class TrainingPair:
    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    #: Where it came from: pseudo:crop, pseudo:keyphrase, pseudo:title, pairs, qrels, feedback.
    origin: str = ""
    doc_id: str = ""
    query_id: str = ""


def write_pairs(path: Path, pairs: Iterable[TrainingPair]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(asdict(pair), ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_pairs(path: Path) -> list[TrainingPair]:
    with path.open(encoding="utf-8") as handle:
        return [TrainingPair(**json.loads(line)) for line in handle if line.strip()]


def normalize_query(text: str) -> str:
    return " ".join(text.lower().split())


def query_fingerprint(text: str) -> str:
    """What the leakage check compares: the same question, whatever its spacing or case."""
    return hashlib.sha1(normalize_query(text).encode()).hexdigest()[:16]


def data_hash(pairs: Iterable[TrainingPair]) -> str:
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(json.dumps(asdict(p), sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]
