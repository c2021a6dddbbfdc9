"""What the session, citation, feedback and listing routes answer, for the OpenAPI spec.

The routes return the store's own records (``Session.to_dict`` …); these models describe them, and
``tests/test_app.py`` checks real answers against them field for field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from unirank.app.openai_format import CitationOut


class SessionOut(BaseModel):
    id: str
    index: str
    #: The first question, cut to 120 characters; empty until one is asked.
    title: str
    created_at: str
    updated_at: str


class SessionList(BaseModel):
    sessions: list[SessionOut]


class MessageOut(BaseModel):
    id: str
    session_id: str | None
    index: str
    role: Literal["user", "assistant"]
    content: str
    #: For an answer: the stand-alone query it was retrieved for.
    query: str | None
    grounded: bool | None
    citations: list[CitationOut]
    created_at: str
    #: For an answer: the last thumbs up or down given on it (``POST /v1/feedback``), else null.
    vote: Literal["up", "down"] | None
    #: For an answer: what wrote it ("extractive", "openai"; "none" when nothing relevant was found), as
    #: the answer's own ``answerer``. Null for a question, and for an answer stored by an earlier unirank.
    answerer: str | None


class SessionWithMessages(SessionOut):
    messages: list[MessageOut]


class CitedPassage(CitationOut):
    message_id: str
    index: str


class FeedbackOut(BaseModel):
    id: int
    message_id: str
    kind: Literal["up", "down", "click"]
    citation: int | None
    created_at: str


class FeedbackList(BaseModel):
    events: list[FeedbackOut]


class DeletedTurn(BaseModel):
    """The question and answer deleted (their feedback went with them)."""

    deleted: list[str]


class IndexOut(BaseModel):
    name: str
    #: Null for a damaged index: its files cannot be read.
    chunks: int | None
    #: The embedder its vectors were made by (``NAME@VERSION``): questions to it are searched with that
    #: model, unless embedder.model names another. Null for a damaged index.
    model: str | None
    #: The index a question without one is answered from.
    default: bool
    #: The index this one re-embeds with another model (a copy ``eval`` made), else null.
    copy_of: str | None
    #: Why the index cannot be read (``unirank index delete NAME`` and ingesting again make it anew), else
    #: null. A damaged index answers nothing (a 500 ``index_damaged``) and is not among ``/v1/models``.
    damaged: str | None


class IndexList(BaseModel):
    indexes: list[IndexOut]


class IndexAsModel(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class IndexModels(BaseModel):
    """OpenAI's model list: each index is a ``model`` to answer from."""

    object: Literal["list"]
    data: list[IndexAsModel]


class Liveness(BaseModel):
    status: Literal["ok"]
