"""The unirank app server (``unirank serve api``): the chat API, search, and the web page.

- ``POST /v1/chat/completions``: OpenAI-compatible (``stream: true`` gives server-sent events in
  OpenAI's chunk format, ending with ``data: [DONE]``); citations ride along as extra fields.
- ``/v1/sessions``: conversations kept in SQLite; a question asked in a session is rewritten into
  a stand-alone query from the session's history before retrieval.
- ``/v1/feedback`` and ``/v1/messages/{id}/citations/{n}``: thumbs up/down, citation clicks, and
  the cited passage.
- ``POST /v1/search``: the search layer itself, answering what ``unirank search --json`` prints.
- ``/``: the web page (plain HTML and JavaScript in ``static/``, no build step).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Callable, Generator, Literal

import anyio
from anyio.lowlevel import RunVar
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline  # /docs from local files: no CDN on an offline machine
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ConfigDict

from unirank.api import Unirank
from unirank.app.openai_format import (DEFAULT_MODEL, ChatCompletion, ChatCompletionRequest, ChunkWriter, FilterValue,
                                       RequestBody, SessionAnswer, StreamOptions, answer_responses, completion,
                                       error_body, error_responses, usage_asked)
from unirank.app.search_format import SearchRequest, SearchResponse
from unirank.app.session_format import (CitedPassage, DeletedTurn, FeedbackList, FeedbackOut, IndexAsModel,
                                        IndexList, IndexModels, Liveness, SessionList, SessionOut,
                                        SessionWithMessages)
from unirank.chat.service import ChatService
from unirank.chat.store import ConversationStore
from unirank.chat.types import ChatEvent, Completed, Delta, Retrieved
from unirank.errors import (
    AnswererError, ConfigurationError, ConversationNotFoundError, DimensionMismatchError, EmbedderMismatchError,
    IndexChangedError, IndexCorruptedError, IndexLockedError, IndexNotFoundError, InvalidQueryError, ModelLoadError,
    ModelNotFoundError, RebuildRunningError, RemoteModelError, RerankLimitError, UnirankError,
)
from unirank.request_errors import (RequestSizeLimit, body_refusal, body_type, declare_only_sent_errors,
                                    http_error_code, validation_message)
from unirank.settings import Settings

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"

#: Answers (and each step of a streamed one) run in worker threads of their own, as many at once as AnyIO's
#: shared pool allows: in that pool a burst of questions took every thread, and /healthz, /v1/sessions and
#: every other plain route waited seconds behind whole answers.
ANSWER_THREADS = 40
_ANSWER_LIMITER: RunVar[anyio.CapacityLimiter] = RunVar("unirank_answer_limiter")

#: How /v1/search and POST /v1/sessions name their index when there is no default: they take no "model",
#: which the service's own wording offers (and then refused as an unknown field).
SEND_INDEX = ("send \"index\": NAME (GET /v1/indexes lists them), or give the server a default: "
              "serve api --index NAME, or chat.index in settings")

#: Two 404s a client acts on differently: a session (or message) that is gone can be started again, while
#: an index that is gone cannot be asked anywhere (the web page started a session over the default index).
_STATUS: list[tuple[type[Exception], int, str]] = [
    (ConversationNotFoundError, 404, "conversation_not_found"),
    (IndexNotFoundError, 404, "index_not_found"),
    (IndexChangedError, 409, "index_changed"),
    (InvalidQueryError, 400, "invalid_request_error"),
    (RerankLimitError, 400, "invalid_request_error"),
    (AnswererError, 502, "answerer_error"),
    (RemoteModelError, 502, "upstream_error"),  # the request was fine; the model server behind it is not
    (ConfigurationError, 500, "configuration_error"),
    # The server's own models, or an index its embedder cannot query: nothing the request can change.
    (ModelLoadError, 500, "configuration_error"),
    (ModelNotFoundError, 500, "configuration_error"),
    (EmbedderMismatchError, 500, "configuration_error"),
    (DimensionMismatchError, 500, "configuration_error"),
    (IndexCorruptedError, 500, "index_damaged"),  # its files cannot be read: deleted and ingested again
    # Busy for now (another process writes or rebuilds the index): the same request succeeds later.
    (IndexLockedError, 503, "index_busy"),
    (RebuildRunningError, 503, "index_busy"),
]


#: A wrong JSON type (``"stream": "yes"``, ``"citation": "2"``) is a 422 naming the field, not a guess;
#: so is an unknown field (``"indx"``, ``"titel"``), which was ignored.
_STRICT = ConfigDict(strict=True, extra="forbid")


class NewSession(RequestBody):
    model_config = _STRICT
    #: Omitted: the default index ("" is refused, not read as the default).
    index: str | None = None
    title: str = ""


class SessionQuestion(RequestBody):
    model_config = _STRICT
    #: "" is refused by the service as a blank question is (a 400), not by a 422 of its own.
    content: str
    stream: bool = False
    #: With ``stream``, as on /v1/chat/completions: ``include_usage`` adds a last chunk with the usage.
    stream_options: StreamOptions | None = None
    #: Answer only from chunks whose metadata, ``doc_id`` or ``source_uri`` match.
    filters: dict[str, FilterValue] | None = None
    #: Optional: the session's own index. Another index is refused (as on /v1/chat/completions), not
    #: answered from the session's.
    index: str | None = None


class FeedbackRequest(RequestBody):
    model_config = _STRICT
    message_id: str
    kind: Literal["up", "down", "click"]
    #: The citation number, for ``click``.
    citation: int | None = None


def create_app(settings: Settings | None = None, *, unirank: Unirank | None = None,
               warm_up: bool = True) -> FastAPI:
    """The app on ``settings`` (or an existing client's); models load at start-up when ``warm_up``."""
    ur = unirank or Unirank(settings or Settings.load())
    store = ConversationStore(ur.settings.chat_db_path)
    service = ChatService(ur, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm_up:  # load the models now: the first question should not pay for it, and a bad
            await run_in_threadpool(service.load_models)  # model name should fail the start, not a user
        yield
        store.close()
        if unirank is None:
            ur.close()

    app = FastAPIOffline(title="unirank", summary="Grounded answers with citations over your documents.",
                  lifespan=lifespan)
    app.state.chat = service
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(RequestSizeLimit, max_bytes=int(ur.settings.api.max_request_mb * 1_000_000),
                       setting="api.max_request_mb")
    declare_only_sent_errors(app)

    @app.exception_handler(UnirankError)
    async def _unirank_error(request: Request, exc: UnirankError) -> JSONResponse:
        status, kind = _status_and_type(exc)
        response = _error(status, str(exc), kind)
        if status == 503:
            response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, validation_message(exc.errors(), body_type(request), exc.body), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """An unknown path or a wrong method, in the error shape every other refusal has."""
        refusal = body_refusal(exc, "invalid_request_error")
        if refusal is not None:
            return _error(*refusal)
        response = _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", http_error_code(exc))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        """A bug is a 500 in the error shape every client parses, not Starlette's plain-text one. Starlette
        raises the exception again once this answer is sent, so the server's log has its traceback."""
        return _error(500, f"Internal error ({type(exc).__name__}) while answering {request.method} "
                      f"{request.url.path}: the server's log has the details.", "server_error")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/healthz", responses=described(Liveness))
    async def health() -> dict:
        """On the event loop, not in a worker thread: a liveness probe is answered even when every thread is busy."""
        return {"status": "ok"}

    @app.get("/v1/indexes", responses=described(IndexList))
    def indexes() -> dict:
        """Every index, a damaged one too, with why it cannot be read (as ``index list --json``): left out,
        it looked deleted to clients and the web page, while a request naming it got a 500 index_damaged."""
        default = _default_index(service)
        readable = [{"name": i.name, "chunks": i.chunk_count, "model": str(i.model), "default": i.name == default,
                     "copy_of": i.copy_of, "damaged": None} for i in ur.list_indexes()]
        damaged = [{"name": name, "chunks": None, "model": None, "default": name == default, "copy_of": None,
                    "damaged": why} for name, why in sorted(ur.damaged_indexes().items())]
        return {"indexes": readable + damaged}

    @app.get("/v1/models", responses=described(IndexModels))
    def models() -> dict:
        """OpenAI clients list models: each index that can answer is one (``model`` picks the index to answer
        from); a damaged index cannot, so it is only in ``/v1/indexes``, with why."""
        names = [i.name for i in ur.list_indexes()]
        if DEFAULT_MODEL not in names and _default_index(service) is not None:
            names.insert(0, DEFAULT_MODEL)  # accepted as `model`, so listed: it answers from the default index
        return {"object": "list", "data": [_model_card(name) for name in names]}

    def index_of_model(model: str) -> str | None:
        """The index a ``model`` names: ``unirank`` is the default index (None), unless an index has that
        name, as ``/v1/models`` lists it; any other name is an index's."""
        return None if model == DEFAULT_MODEL and not ur.backend.exists(DEFAULT_MODEL) else model

    @app.get("/v1/models/{model_id}", responses={**described(IndexAsModel), **error_responses(404, 500)})
    def model(model_id: str) -> Any:
        """OpenAI clients check a model exists before using it: an index here, or ``unirank`` (the default).
        An index whose files are damaged is a 500 ``index_damaged``, as a question to it is."""
        if index_of_model(model_id) is None:
            try:
                ur.index_info(service.default_index())  # chat.index may name one that is gone
            except (InvalidQueryError, IndexNotFoundError) as exc:
                return _error(404, f"{DEFAULT_MODEL!r} answers from the default index, and there is none: {exc}",
                              "index_not_found")
            return _model_card(DEFAULT_MODEL)
        return _model_card(ur.index_info(model_id).name)

    @app.post("/v1/search", response_model=SearchResponse,
              responses=error_responses(400, 404, 409, 413, 422, 500, 502, 503))
    def search(body: SearchRequest) -> dict:
        """Hybrid (BM25 + kNN) search, then the reranker when asked: what ``unirank search --json`` prints."""
        index = body.index or service.default_index(SEND_INDEX)
        return ur.search(body.query, index, mode=body.mode, top_k=body.top_k, rerank=body.rerank,
                         filters=body.filters).to_dict()

    # -- OpenAI-compatible ----------------------------------------------------------------------
    @app.post("/v1/chat/completions", response_model=None,
              responses={**answer_responses(ChatCompletion),
                         **error_responses(400, 404, 409, 413, 422, 500, 502, 503)})
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        try:
            question, history = body.question_and_history()
        except ValueError as exc:
            raise InvalidQueryError(str(exc)) from exc
        # A model that names no index is an error, not the default index: a typo would otherwise be
        # answered from other documents.
        if body.index and body.model not in (DEFAULT_MODEL, body.index):
            raise InvalidQueryError(f"`model` names the index {body.model!r} and `index` names {body.index!r}: send "
                                    f"one of them (or \"model\": \"{DEFAULT_MODEL}\" with the index).")
        # Beside `index` or a session, "unirank" stands for the index they name; alone, it is an index of
        # that name if there is one (as /v1/models lists it), else the default index.
        if body.index or (body.session_id and body.model == DEFAULT_MODEL):
            index = body.index
        else:
            index = index_of_model(body.model)
        # A session asked about another index, or a filter key no passage has, is refused by the service
        # before an answer starts (a 400, not an error event in a stream).
        session_id = body.session_id
        history = None if session_id else history
        asked = dict(session_id=session_id, history=history, filters=body.filters)
        if body.stream:
            events = await _answering(service.stream, question, index, **asked)
            return await _sse(events, ChunkWriter(body.model, body.wants_usage()))
        answer = await _answering(service.ask, question, index, **asked)
        return completion(answer, body.model)

    # -- sessions -------------------------------------------------------------------------------
    # Each route that reads the conversation store declares a 500: configuration_error naming chat.db_path
    # when the database cannot be read (damaged since the server opened it, or locked by another process).
    @app.post("/v1/sessions", status_code=201,
              responses={**described(SessionOut, 201), **error_responses(400, 404, 413, 422, 500, 503)})
    def create_session(body: NewSession | None = None) -> dict:
        body = body or NewSession()  # every field is optional, so is the body
        index = body.index or service.default_index(SEND_INDEX)
        return service.create_session(index, body.title).to_dict()  # a missing index: 404 now

    @app.get("/v1/sessions", responses={**described(SessionList), **error_responses(422, 500)})
    def list_sessions(limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> dict:
        return {"sessions": [s.to_dict() for s in store.sessions(limit)]}

    @app.get("/v1/sessions/{session_id}", responses={**described(SessionWithMessages), **error_responses(404, 500)})
    def get_session(session_id: str) -> dict:
        return {**store.session(session_id).to_dict(),
                "messages": [m.to_dict() for m in store.messages(session_id)]}

    @app.delete("/v1/sessions/{session_id}", status_code=204, responses=error_responses(404, 500))
    def delete_session(session_id: str) -> Response:
        store.delete_session(session_id)
        return Response(status_code=204)

    @app.post("/v1/sessions/{session_id}/messages", response_model=None,
              responses={**answer_responses(SessionAnswer),
                         **error_responses(400, 404, 409, 413, 422, 500, 502, 503)})
    async def ask_in_session(session_id: str, body: SessionQuestion) -> Any:
        # The service refuses an index other than the session's.
        asked = dict(session_id=session_id, filters=body.filters)
        if body.stream:
            return await _sse(await _answering(service.stream, body.content, body.index, **asked),
                              ChunkWriter("unirank", usage_asked(body.stream_options)))
        answer = await _answering(service.ask, body.content, body.index, **asked)
        return answer.to_dict()

    # -- citations and feedback -----------------------------------------------------------------
    @app.get("/v1/messages/{message_id}/citations/{n}",
             responses={**described(CitedPassage), **error_responses(404, 422, 500)})
    def citation(message_id: str, n: int) -> dict:
        message = store.message(message_id)
        return {**message.citation(n).to_dict(), "message_id": message_id, "index": message.index}

    @app.delete("/v1/messages/{message_id}", responses={**described(DeletedTurn), **error_responses(404, 500)})
    def delete_turn(message_id: str) -> dict:
        return {"deleted": store.delete_turn(message_id)}

    @app.post("/v1/feedback", status_code=201,
              responses={**described(FeedbackOut, 201), **error_responses(400, 404, 413, 422, 500)})
    def feedback(body: FeedbackRequest) -> dict:
        return store.add_feedback(body.message_id, body.kind, body.citation).to_dict()

    @app.get("/v1/feedback", responses={**described(FeedbackList), **error_responses(500)})
    def list_feedback(message_id: str | None = None) -> dict:
        return {"events": [e.to_dict() for e in store.feedback(message_id)]}

    return app


def _model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "unirank"}


def _default_index(service: ChatService) -> str | None:
    """The default index, or None when there is none or chat.index names one that does not exist (deleted
    while the server runs): /v1/models listed ``unirank`` for it, and every request naming no index got a 404."""
    try:
        name = service.default_index()
        return name if service.ur.backend.exists(name) else None
    except InvalidQueryError:
        return None


async def _sse(events: Generator[ChatEvent, None, None], writer: ChunkWriter) -> StreamingResponse:
    """Retrieval runs before the response starts, so a missing index or session is still a 404;
    an error after the first byte arrives as an ``error`` event before ``[DONE]``, of the ``type``
    its HTTP answer has."""
    first = await _answering(next, events)
    # The query is known now; whether the answer is grounded is not (an LLM may cite nothing), so it
    # comes with the last chunk only: the first said true where the last then said false.
    extra = {"query": first.query} if isinstance(first, Retrieved) else {}
    return StreamingResponse(_chunks(events, writer, extra), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


_END = object()


async def _chunks(events: Generator[ChatEvent, None, None], writer: ChunkWriter, extra: dict) -> AsyncIterator[str]:
    """The events as chunks, each event read in a worker thread. A client that leaves ends this generator
    (cancelled, or closed), and ``finally`` closes ``events`` down to the LLM's HTTP stream: a sync
    generator left suspended kept the LLM generating (and billing) for no one until garbage collection."""
    try:
        yield writer.role(**extra)
        try:
            while (event := await _answering(next, events, _END)) is not _END:
                if isinstance(event, Delta):
                    yield writer.content(event.text)
                elif isinstance(event, Completed):
                    yield writer.finish(event.answer)
                    if writer.include_usage:  # the answer's last chunk, then its usage's
                        yield writer.usage(event.answer)
        except UnirankError as exc:  # typed as its HTTP answer would be: a deleted session is not a bad request
            yield ChunkWriter.error(str(exc), _status_and_type(exc)[1])
        except Exception as exc:  # the stream has begun: the client can only be told in-band
            log.exception("chat stream failed")
            yield ChunkWriter.error(f"internal error: {exc}", "server_error")
        yield ChunkWriter.done()
    finally:
        with anyio.CancelScope(shield=True):  # cancelled by the client leaving: this await must still run
            await _answering(events.close)


async def _answering(work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``work`` in a worker thread of the answers' own limiter (see ``ANSWER_THREADS``), one per event loop
    as AnyIO's default limiter is."""
    try:
        limiter = _ANSWER_LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(ANSWER_THREADS)
        _ANSWER_LIMITER.set(limiter)
    return await anyio.to_thread.run_sync(partial(work, *args, **kwargs), limiter=limiter)


def _status_and_type(exc: UnirankError) -> tuple[int, str]:
    """A refusal's HTTP status and error ``type`` (see ``_STATUS``), for an answer or a stream's error event."""
    for kind, status, name in _STATUS:
        if isinstance(exc, kind):
            return status, name
    return 400, "invalid_request_error"


def described(model: type[BaseModel], status: int = 200) -> dict[int | str, dict]:
    """A route's answer in the spec; the route returns the store's record, which ``model`` describes."""
    return {status: {"model": model, "description": model.__doc__ or "Success"}}


def _error(status: int, message: str, kind: str) -> JSONResponse:
    """An error answer. A message quoting a lone surrogate cannot be encoded as UTF-8: it is escaped."""
    return JSONResponse(error_body(message.encode("utf-8", "backslashreplace").decode("utf-8"), kind),
                        status_code=status)

