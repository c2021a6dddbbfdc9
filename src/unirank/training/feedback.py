"""Chat feedback as labelled training pairs (``unirank train --feedback``).

- A thumbs-up answer: (its stand-alone query, each passage it cited) are positives.
- A clicked citation: (query, that passage) is a positive, unless the answer got a thumbs-down.
- A thumbs-down answer: the passages it cited are negatives for the same query, put before the
  mined hard negatives of that query's positive pairs (a query with no positive gives no pair).
The last vote on an answer counts (a user may change their mind).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from unirank.chat.store import ConversationStore, Message
from unirank.chat.types import Citation
from unirank.errors import TrainingError
from unirank.training.examples import TrainingPair, query_fingerprint

log = logging.getLogger(__name__)


@dataclass
class FeedbackPairs:
    pairs: list[TrainingPair]
    #: Thumbs-down passages whose query had no positive to attach them to.
    unused_negatives: int = 0
    events: int = 0
    stats: dict = field(default_factory=dict)
    #: Answers rated from other indexes than the one asked for, by index.
    answers_of_other_indexes: dict[str, int] = field(default_factory=dict)
    #: Answers of the index whose last vote was a thumbs-down (no positive of their own).
    answers_voted_down: int = 0


def load_feedback_pairs(db_path: Path, index: str | None = None) -> FeedbackPairs:
    """Pairs from the feedback in the chat database at ``db_path`` (only ``index``'s answers, if given)."""
    db_path = Path(db_path)
    if not db_path.exists():
        raise TrainingError(f"No chat feedback at {db_path}: chat with `unirank chat` or `unirank serve api` "
                            "and rate answers first (chat.db_path names the database).")
    with ConversationStore(db_path) as store:
        events = store.feedback()
        messages: dict[str, Message] = {}
        votes: dict[str, str] = {}
        clicks: dict[str, list[int]] = {}
        for event in events:
            if event.message_id not in messages:
                messages[event.message_id] = store.message(event.message_id)
            if event.kind in ("up", "down"):
                votes[event.message_id] = event.kind  # events are in order: the last vote wins
            elif event.citation_n is not None:
                clicks.setdefault(event.message_id, []).append(event.citation_n)

    positives: dict[tuple[str, str], TrainingPair] = {}
    negatives: dict[str, list[str]] = {}  # query fingerprint -> passages
    other_indexes: dict[str, int] = {}  # index -> answers rated there
    voted_down = 0
    for message_id, message in messages.items():
        if index is not None and message.index != index:
            other_indexes[message.index] = other_indexes.get(message.index, 0) + 1
            continue
        query = (message.query or "").strip()
        if not query:
            continue
        vote = votes.get(message_id)
        if vote == "down":
            voted_down += 1
            negatives.setdefault(query_fingerprint(query), []).extend(_text(c) for c in message.citations)
            continue
        cited = list(message.citations) if vote == "up" else []
        for n in clicks.get(message_id, []):
            cited += [c for c in message.citations if c.n == n]
        for c in cited:
            key = (query_fingerprint(query), c.chunk_id)
            if key not in positives:
                positives[key] = TrainingPair(query=query, positive=_text(c), origin="feedback", doc_id=c.doc_id,
                                              query_id=f"feedback:{query_fingerprint(query)}")

    pairs = list(positives.values())
    used: set[str] = set()
    for pair in pairs:
        fp = query_fingerprint(pair.query)
        own = [n for n in negatives.get(fp, []) if n != pair.positive]
        if own:
            pair.negatives = list(dict.fromkeys(own))
            used.add(fp)
    unused = sum(len(v) for fp, v in negatives.items() if fp not in used)
    if unused:
        log.info("%d thumbs-down passages had no positive for their query and were not used", unused)
    return FeedbackPairs(pairs=pairs, unused_negatives=unused, events=len(events),
                         stats={"feedback_events": len(events), "feedback_pairs": len(pairs),
                                "feedback_unused_negatives": unused},
                         answers_of_other_indexes=other_indexes, answers_voted_down=voted_down)


def require_feedback_pairs(db_path: Path, index: str) -> FeedbackPairs:
    """``load_feedback_pairs`` for ``index``, refused when it gives no pair: the run went on as a corpus-only
    (pseudo-query) one without a word, though the feedback was asked for (--clicks refuses the same)."""
    feedback = load_feedback_pairs(db_path, index=index)
    if feedback.pairs:
        return feedback
    others = feedback.answers_of_other_indexes
    elsewhere = ", ".join(f"{n} from {name!r}" for name, n in sorted(others.items()))
    raise TrainingError(
        f"--feedback {db_path} gives no labelled pair for index {index!r}: of its {feedback.events} feedback "
        f"event(s), {sum(others.values())} rated answer(s) are from other indexes{f' ({elsewhere})' if elsewhere else ''} "
        f"and {feedback.answers_voted_down} answer(s) of {index!r} got only a thumbs-down, which needs a liked or "
        f"clicked answer to the same question. Give answers from {index!r} a thumbs-up or open their sources, "
        "train with --index naming the index they came from, or leave --feedback out.")


def feedback_digest(db_path: Path) -> str:
    """Changes whenever feedback is added, so a training run on newer feedback is a new run."""
    with ConversationStore(Path(db_path)) as store:
        events = store.feedback()
    digest = hashlib.sha256()
    for e in events:
        digest.update(f"{e.id}|{e.message_id}|{e.kind}|{e.citation_n}\n".encode())
    return digest.hexdigest()[:16]


def _text(c: Citation) -> str:
    """The passage as the index embeds it: title and heading, then the text (``Chunk.embedding_input``)."""
    context = " > ".join(part for part in (c.title, c.heading) if part)
    return f"{context}\n{c.passage}" if context else c.passage
