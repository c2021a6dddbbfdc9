"""The records the chatbot passes around: context passages, citations, answers and stream events."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Union

from unirank.search.types import Chunk

#: What every answerer says when retrieval found nothing relevant enough to answer from.
NOT_COVERED = "The documents do not cover this question."


@dataclass
class Passage:
    """A retrieved chunk as it is given to the answerer, numbered ``[n]`` in the context."""

    n: int
    chunk: Chunk
    #: The reranker's relevance of the chunk to the question (a cosine, or a cross-encoder's probability).
    score: float

    @property
    def heading(self) -> str:
        return " > ".join(h for h in self.chunk.heading_path if h != self.chunk.title)


@dataclass
class Citation:
    """What ``[n]`` in an answer points at: a source and the text span that supports the answer."""

    n: int
    chunk_id: str
    doc_id: str
    title: str
    uri: str
    page: int | None
    heading: str
    #: The cited span; always a literal substring of ``passage`` (``passage[start:end]``).
    text: str
    start: int
    end: int
    #: The whole chunk text, so the citation can be opened without another lookup.
    passage: str
    score: float = 0.0
    #: The quoted sentences inside ``start:end`` (an answer may quote sentences 1 and 3, not 2).
    spans: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def from_passage(cls, n: int, passage: Passage, start: int | None = None, end: int | None = None,
                     score: float | None = None) -> "Citation":
        text = passage.chunk.text
        start = 0 if start is None else start
        end = len(text) if end is None else end
        c = passage.chunk
        return cls(n=n, chunk_id=c.id, doc_id=c.doc_id, title=c.title or c.doc_id, uri=c.source_uri,
                   page=c.page, heading=passage.heading, text=text[start:end], start=start, end=end,
                   passage=text, score=passage.score if score is None else score, spans=[(start, end)])

    def merged(self, other: "Citation") -> "Citation":
        """One citation spanning both spans of the same passage (the answer quoted two sentences)."""
        start, end = min(self.start, other.start), max(self.end, other.end)
        return Citation(**{**self.to_dict(), "start": start, "end": end, "text": self.passage[start:end],
                           "score": max(self.score, other.score), "spans": sorted({*self.spans, *other.spans})})

    def quoted_spans(self) -> list[tuple[int, int]]:
        """Where in ``passage`` the answer quoted, as ``/open`` and the web page mark it."""
        return list(self.spans or [(self.start, self.end)])

    def quoted_text(self) -> str:
        """The quoted parts of the passage: ``text`` (``start:end``) also holds what lies between them, the
        table rows and sentences the answer left out. Parts apart are joined by " … "; parts only
        whitespace apart keep the passage's own text."""
        spans = self.quoted_spans()
        parts = [self.passage[slice(*spans[0])]]
        for (_, end), (start, stop) in zip(spans, spans[1:]):
            between = self.passage[end:start]
            parts.append((between if not between.strip() else " \u2026 ") + self.passage[start:stop])
        return "".join(parts)

    def brief(self) -> dict:
        """The fields ``unirank ask --json`` prints; ``text`` is what was quoted."""
        return {"n": self.n, "title": self.title, "uri": self.uri, "page": self.page, "text": self.quoted_text()}

    def to_dict(self) -> dict:
        return {"n": self.n, "chunk_id": self.chunk_id, "doc_id": self.doc_id, "title": self.title,
                "uri": self.uri, "page": self.page, "heading": self.heading, "text": self.text,
                "start": self.start, "end": self.end, "passage": self.passage, "score": self.score,
                "spans": [list(span) for span in self.spans]}

    @classmethod
    def from_dict(cls, data: dict) -> "Citation":
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["spans"] = [tuple(span) for span in fields.get("spans") or [(fields["start"], fields["end"])]]
        return cls(**fields)


@dataclass
class Turn:
    """One message of a conversation, as the follow-up rewriter reads it."""

    role: str  # "user" or "assistant"
    content: str
    #: For a user turn: the stand-alone query it was rewritten into, when known.
    query: str | None = None


# -- what an answer cost ----------------------------------------------------------------------
@dataclass(frozen=True)
class Usage:
    """The tokens LLM calls cost, as their endpoint counted them (OpenAI's ``usage``). ``Usage()``, zero,
    is what an answer that called no language model cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def add_usage(*costs: Usage | None) -> Usage | None:
    """What several LLM calls cost together; None (not known) when any of them was not counted by its
    endpoint: the sum of the others would pass for the whole."""
    counted = [cost for cost in costs if cost is not None]
    if len(counted) < len(costs):
        return None
    return Usage(prompt_tokens=sum(c.prompt_tokens for c in counted),
                 completion_tokens=sum(c.completion_tokens for c in counted),
                 total_tokens=sum(c.total_tokens for c in counted))


# -- what an answerer streams ------------------------------------------------------------------
@dataclass
class Delta:
    text: str


@dataclass
class Final:
    text: str
    citations: list[Citation]
    #: What the answer cost in LLM tokens, as the endpoint reported it; None when it reported nothing.
    usage: Usage | None = None


AnswerEvent = Union[Delta, Final]


@dataclass
class ChatAnswer:
    question: str
    #: The stand-alone query retrieval ran with (the question itself unless it was rewritten).
    query: str
    answer: str
    grounded: bool
    citations: list[Citation]
    answerer: str
    #: Best relevance among the retrieved passages, and the threshold it was compared with.
    relevance: float | None = None
    threshold: float | None = None
    session_id: str | None = None
    message_id: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: The tokens of the turn's LLM calls (the answer and a follow-up's rewrite) summed: zero when none ran,
    #: None when an endpoint did not count one.
    usage: Usage | None = None

    def brief(self) -> dict:
        """Exactly what ``unirank ask --json`` prints."""
        return {"answer": self.answer, "grounded": self.grounded, "citations": [c.brief() for c in self.citations]}

    def to_dict(self) -> dict:
        return {"question": self.question, "query": self.query, "answer": self.answer, "grounded": self.grounded,
                "citations": [c.to_dict() for c in self.citations], "answerer": self.answerer,
                "relevance": self.relevance, "threshold": self.threshold, "session_id": self.session_id,
                "message_id": self.message_id, "timings_ms": self.timings_ms,
                "usage": None if self.usage is None else self.usage.to_dict()}


# -- what the chat service streams -------------------------------------------------------------
@dataclass
class Retrieved:
    """Sent before the first token: what was searched for and whether it is answerable."""

    query: str
    passages: list[Passage]
    grounded: bool


@dataclass
class Completed:
    answer: ChatAnswer


ChatEvent = Union[Retrieved, Delta, Completed]
