"""A training example, and its JSONL form (the run folder keeps the exact data a model saw)."""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence


#: Origins of queries that people wrote, as opposed to pseudo-queries generated from the corpus.
HUMAN_ORIGINS = frozenset({"qrels", "pairs", "feedback", "clicks"})


@dataclass
class TrainingPair:
    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    #: Where it came from: pseudo:<kind>, pairs, qrels, feedback, clicks.
    origin: str = ""
    doc_id: str = ""
    query_id: str = ""

    @property
    def written_by_people(self) -> bool:
        return self.origin in HUMAN_ORIGINS


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
    return _sha1_16(normalize_query(text))


def query_words_fingerprint(text: str) -> str | None:
    """The same question, whatever its punctuation (a trailing '?'), Unicode form (NFC, NFD) or case too:
    its words only. None for a text of no word (all punctuation would be one question)."""
    words = re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold())
    return _sha1_16(" ".join(words)) if words else None


def query_fingerprints(text: str) -> set[str]:
    """Both fingerprints of a query. Records keep both and a query is leaked when either is in them, so
    records written before the words-only one still match."""
    words = query_words_fingerprint(text)
    return {query_fingerprint(text), *([words] if words else [])}


def _sha1_16(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def query_key(pair: TrainingPair) -> str:
    """Pairs of one query share it: the query's id when the labels have one, else its text."""
    return pair.query_id or normalize_query(pair.query)


def by_query(pairs: Iterable[TrainingPair], values: Callable[[TrainingPair], Iterable[str]]) -> dict[str, set[str]]:
    """``values`` of every pair, gathered per query (``query_key``)."""
    gathered: dict[str, set[str]] = {}
    for pair in pairs:
        gathered.setdefault(query_key(pair), set()).update(values(pair))
    return gathered


def without_own_positives(pairs: Sequence[TrainingPair]) -> tuple[list[TrainingPair], int]:
    """The pairs with every negative that is a positive of the same query left out, and how many were.

    Labels of one query disagree: a thumbs-down answer cites a passage another, up-voted answer cites, or a
    pair file's negative is another row's positive. A passage judged relevant to a query is never its
    negative. The same query is the same ``query_key`` or the same text (label sources key it apart)."""
    positives = by_query(pairs, lambda p: (normalize_query(p.positive),))
    for pair in pairs:
        positives.setdefault(normalize_query(pair.query), set()).add(normalize_query(pair.positive))
    kept: list[TrainingPair] = []
    dropped = 0
    for pair in pairs:
        own = positives[query_key(pair)] | positives[normalize_query(pair.query)]
        negatives = [n for n in pair.negatives if normalize_query(n) not in own]
        dropped += len(pair.negatives) - len(negatives)
        kept.append(replace(pair, negatives=negatives) if len(negatives) < len(pair.negatives) else pair)
    return kept, dropped


def data_hash(pairs: Iterable[TrainingPair]) -> str:
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(json.dumps(asdict(p), sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


class RandomNegatives:
    """Easy negatives: passages of other pairs that are not a known positive of the pair's query.

    A query with many relevant documents (a CISI query has ~40) must not meet one of its own
    positives as a "negative": each pair's query id (or its text) names all the documents it is
    paired with, and those are never drawn.
    """

    def __init__(self, pairs: Sequence[TrainingPair], seed: int) -> None:
        self.pairs = list(pairs)
        self.rng = random.Random(seed)
        self.positives = by_query(self.pairs, lambda p: (p.doc_id, p.positive))

    def draw(self, pair: TrainingPair, count: int) -> list[str]:
        """Up to ``count`` distinct passages from ``3 * count`` draws (fewer when those hit positives)."""
        known = self.positives.get(query_key(pair), set())
        drawn: list[str] = []
        for other in [self.rng.choice(self.pairs) for _ in range(count * 3)]:
            if len(drawn) == count:
                break
            if other.doc_id in known or other.positive in known or other.positive in drawn:
                continue
            drawn.append(other.positive)
        return drawn
