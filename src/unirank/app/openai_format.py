"""OpenAI's chat-completions wire format: the request model, responses and stream chunks.

Only what a chat client sends and reads; unirank's extras (``index``, ``session_id`` in the
request; ``citations``, ``grounded``, ``message_id``… in the response) are extra fields that
OpenAI clients pass through (``extra_body=`` going out, ``model_extra`` coming back).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from unirank.chat.types import ChatAnswer, Citation, Turn
from unirank.errors import InvalidQueryError
from unirank.request_errors import lone_surrogate_at, lone_surrogate_message


#: A filter's value, as a search in Python takes it: text, or a number or a boolean, matched as the metadata
#: stores it (``{"version": 2}`` matches ``version: 2`` and ``version: 2.0``). A list or an object is a 422.
FilterValue = str | int | float | bool


class RequestBody(BaseModel):
    """A JSON body an app route reads. JSON can escape half a UTF-16 pair (``"\\ud800"``), which is no
    text: in a filter, a session id or a title it failed deep in the index or in SQLite (a plain-text
    500). It is refused before any field is read, wherever it is, as the same character in a question
    is refused by the search layer: a 400 naming the field.

    The refusals raise :class:`InvalidQueryError`, which pydantic does not wrap (it wraps only
    ``ValueError`` and ``AssertionError``), so the server's handler answers it as a 400."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_lone_surrogates(cls, data: Any) -> Any:
        where = lone_surrogate_at(data, "")
        if where is not None:
            raise InvalidQueryError(lone_surrogate_message(where) + ".")
        return data

    @model_validator(mode="after")
    def _refuse_an_empty_index(self) -> Any:
        """``"index": ""`` was taken as "the default index": a blank form field or a bug in a client was
        answered from other documents than it meant."""
        if getattr(self, "index", None) == "":
            raise InvalidQueryError("`index` is empty: name an index (GET /v1/indexes lists them), or leave the "
                                    "field out to use the default index.")
        return self



class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "user", "assistant", "tool", "developer"]
    #: A string, or OpenAI's list of content parts (the text parts are used, a line each: two parts
    #: "rotate" and "keys" must not read "rotatekeys").
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content_of_a_known_form(cls, content: Any) -> Any:
        """Pydantic named the forms it tried as Python types ("str or list[dict[str,any]]"), and not null."""
        if content is not None and not isinstance(content, (str, list)):
            raise PydanticCustomError("content_type", "expected a string, a list of content parts, or null")
        return content

    @field_validator("content")
    @classmethod
    def _text_parts_hold_text(cls, content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        """A text part whose ``text`` is not a string (``5``, missing) was asked as the question "5" or ""."""
        for i, part in enumerate(content if isinstance(content, list) else []):
            text = part.get("text")
            if _is_text_part(part) and not isinstance(text, str):
                got = "no text" if text is None else f"text of type {type(text).__name__}"
                raise PydanticCustomError("text_part", f"part {i} is a text part with {got}: send "
                                          '{"type": "text", "text": "..."} with the text as a string')
        return content

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p["text"] for p in self.content if _is_text_part(p))
        return self.content or ""


def _is_text_part(part: dict[str, Any]) -> bool:
    return part.get("type", "text") == "text"


#: The model name that means "the default index" (chat.index, or the only index).
DEFAULT_MODEL = "unirank"


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    #: A last chunk with ``choices: []`` and the answer's ``usage``, before ``[DONE]``.
    include_usage: bool | None = None


def usage_asked(options: StreamOptions | None) -> bool:
    """Whether a stream ends with a usage chunk: ``stream_options.include_usage``, as OpenAI's."""
    return bool(options and options.include_usage)


class ChatCompletionRequest(RequestBody):
    #: temperature, max_tokens… are accepted and ignored. Strict: ``"stream": "yes"`` is a 422 naming
    #: the field, not a guess at what was meant.
    model_config = ConfigDict(extra="allow", strict=True)

    #: An index name (``GET /v1/models`` lists them), or ``unirank`` for the default index (or for an index
    #: named ``unirank``, if there is one). Never empty:
    #: "" was answered from the default index, as a typo would be if it were allowed.
    model: str = Field(DEFAULT_MODEL, min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    #: Null is false, as OpenAI's spec has it.
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    #: unirank: the index to answer from, whatever ``model`` says.
    index: str | None = None
    #: unirank: keep the turn in this session (its stored history is used for follow-ups).
    session_id: str | None = None
    #: unirank: answer only from chunks whose metadata, ``doc_id`` or ``source_uri`` match (as ``--filter``).
    filters: dict[str, FilterValue] | None = None

    def wants_usage(self) -> bool:
        return usage_asked(self.stream_options)

    def question_and_history(self) -> tuple[str, list[Turn]]:
        """The last user message is the question; earlier user/assistant messages are the history."""
        turns = [m for m in self.messages if m.role in ("user", "assistant")]
        if not turns or turns[-1].role != "user":
            raise ValueError("The last message must be the user's question.")
        return turns[-1].text(), [Turn(role=m.role, content=m.text()) for m in turns[:-1]]


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def extras(answer: ChatAnswer) -> dict[str, Any]:
    return {"citations": [c.to_dict() for c in answer.citations], "grounded": answer.grounded,
            "query": answer.query, "session_id": answer.session_id, "message_id": answer.message_id,
            "answerer": answer.answerer, "relevance": answer.relevance, "timings_ms": answer.timings_ms}


def usage(answer: ChatAnswer) -> dict[str, int] | None:
    """OpenAI's ``usage`` for ``answer``: the tokens its LLM calls cost as their endpoint counted them, zero
    when it ran none (the extractive answerer); null, unknown, when an endpoint did not count one. No count
    is made up."""
    return answer.usage.to_dict() if answer.usage is not None else None


def completion(answer: ChatAnswer, model: str) -> dict[str, Any]:
    return {
        "id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.answer},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": usage(answer), **extras(answer),
    }


class ChunkWriter:
    """Server-sent events in OpenAI's ``chat.completion.chunk`` format, ending with ``[DONE]``."""

    def __init__(self, model: str, include_usage: bool = False) -> None:
        self.id = completion_id()
        self.model = model
        self.created = int(time.time())
        #: As OpenAI's: with ``stream_options.include_usage``, each chunk has ``usage: null`` and a last one
        #: the counts.
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": choices, **({"usage": None} if self.include_usage else {}), **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def _event(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra)

    def usage(self, answer: ChatAnswer) -> str:
        """The chunk ``stream_options.include_usage`` asks for, after the answer's last."""
        return self._chunk([], usage=usage(answer))

    def role(self, **extra: Any) -> str:
        return self._event({"role": "assistant", "content": ""}, **extra)

    def content(self, text: str) -> str:
        return self._event({"content": text})

    def finish(self, answer: ChatAnswer) -> str:
        return self._event({}, "stop", **extras(answer))

    @staticmethod
    def error(message: str, kind: str) -> str:
        return f"data: {json.dumps(error_body(message, kind), ensure_ascii=False)}\n\n"

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"


class ErrorDetail(BaseModel):
    message: str
    #: ``invalid_request_error``; ``conversation_not_found`` (a session, message or citation: start a new
    #: session), ``index_not_found`` (the index asked about is gone), ``not_found`` (no such route);
    #: ``method_not_allowed``; ``request_too_large``; ``index_changed`` (search again); ``answerer_error``,
    #: ``upstream_error``, ``configuration_error``, ``index_damaged``, ``server_error`` (a bug: see the log);
    #: ``index_busy`` (come back after Retry-After).
    type: str


class ErrorBody(BaseModel):
    """Every error the app server answers: OpenAI's shape, which its SDK raises as typed exceptions."""

    error: ErrorDetail


def error_body(message: str, kind: str) -> dict[str, Any]:
    """The JSON of an error, as a response body or as a stream's last event."""
    return ErrorBody(error=ErrorDetail(message=message, type=kind)).model_dump()


_ERROR_MEANINGS = {
    400: "Refused: an empty query or question, a last message that is not the user's, no index named "
         "while there are several, an empty `index`, another index than the session's, a top_k over the "
         "rerank limit, feedback that does not fit its answer, a lone UTF-16 surrogate in any field.",
    404: "No index (type `index_not_found`), or no session, message or citation (`conversation_not_found`), "
         "of that name.",
    409: "The index was switched to another model's vectors several times during the search (an `index "
         "rebuild` loop): search again.",
    413: "The request body is over api.max_request_mb (1 MB by default).",
    422: "The body is not JSON or does not fit the schema; the message names the field.",
    500: "The server's settings cannot answer (type `configuration_error`: e.g. an OpenAI-compatible answerer "
         "without its key, an index made by a model the server cannot load, or a conversation database "
         "(chat.db_path) that cannot be read), the index's files cannot be read "
         "(`index_damaged`: delete it and ingest again), or an unexpected error (`server_error`: the server's log "
         "has the traceback).",
    502: "A model endpoint the index is read with (a remote embedder), or the configured LLM, failed or "
         "timed out. A failing remote reranker does not: search answers un-reranked, marked degraded.",
    503: "The index is busy (type `index_busy`): another process is writing or rebuilding it. Send the same "
         "request again after the Retry-After header's seconds.",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """A route's error answers, for its OpenAPI ``responses`` (FastAPI's own 422 body is never sent)."""
    return {status: {"model": ErrorBody, "description": _ERROR_MEANINGS[status]} for status in statuses}


# -- what the chat routes answer, for the OpenAPI spec ----------------------------------------------
#: What ``[n]`` in an answer points at: the fields of ``Citation.to_dict``, taken from the record itself
#: so the two cannot differ (``spans`` as ``[start, end]`` pairs; ``text == passage[start:end]``).
CitationOut = create_model("CitationOut", **{
    name: (hint, ...) for name, hint in get_type_hints(Citation).items()})  # type: ignore[call-overload]


class AnswerExtras(BaseModel):
    """unirank's fields beside OpenAI's (in the last chunk when streaming)."""

    citations: list[CitationOut]
    grounded: bool
    #: The stand-alone query the answer was retrieved for (a follow-up is rewritten).
    query: str
    session_id: str | None
    message_id: str | None
    answerer: str
    #: The best passage's relevance; null when nothing was retrieved to judge.
    relevance: float | None
    timings_ms: dict[str, float]


class CompletionMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class CompletionChoice(BaseModel):
    index: int
    message: CompletionMessage
    finish_reason: Literal["stop"]
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(AnswerExtras):
    """OpenAI's ``chat.completion``; with ``stream: true``, ``chat.completion.chunk`` events instead."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    #: The tokens of the answer's LLM calls (the answer and a follow-up's rewrite) as the endpoint counted
    #: them, summed; zero when none ran (the extractive answerer); null when the endpoint did not count one.
    usage: Usage | None


class SessionAnswer(BaseModel):
    question: str
    query: str
    answer: str
    grounded: bool
    citations: list[CitationOut]
    answerer: str
    relevance: float | None
    threshold: float
    session_id: str | None
    message_id: str | None
    timings_ms: dict[str, float]
    #: As on /v1/chat/completions: the tokens the answer's LLM calls cost (the answer and the follow-up's
    #: rewrite), as the endpoint counted them; zero when none ran; null when the endpoint did not count one.
    usage: Usage | None


def answer_responses(model: type[BaseModel]) -> dict[int | str, dict]:
    """A chat route's 200: JSON in ``model``'s shape, or server-sent events when the request streams."""
    return {200: {"model": model, "description": "The answer; with `stream: true`, server-sent events "
                  "(`text/event-stream`) ending with `data: [DONE]`.",
                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}}

