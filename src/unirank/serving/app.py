"""The FastAPI app: routes, auth, readiness, metrics and the hot-swap watcher around a ModelCatalog."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline  # /docs from local files: no CDN on an offline machine
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from unirank.errors import (AuthenticationError, ModelNotReadyError, ServingRequestError,
                            UnirankError)
from unirank.request_errors import (RequestSizeLimit, body_refusal, body_type, declare_only_sent_errors,
                                    http_error_code, validation_message)
from unirank.serving.auth import TokenStore
from unirank.serving.batcher import MicroBatcher
from unirank.serving.catalog import ModelCatalog, ServedModel, default_refs
from unirank.serving.limits import INLINE_CHARS, cut_to_tokens, enforce_pair_limit, enforce_token_limit
from unirank.text import is_blank
from unirank.serving.metrics import RequestMetricsMiddleware, ServerMetrics
from unirank.serving.runner import exit_with_parent
from unirank.serving.schemas import (
    CohereRerankRequest,
    CohereRerankResponse,
    CohereRerankResult,
    EmbeddingData,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    FailedSwapInfo,
    Health,
    ModelCard,
    ModelList,
    OpenAIError,
    OpenAIErrorDetail,
    Readiness,
    RerankDocument,
    TeiError,
    TeiRank,
    TeiRerankRequest,
    Usage,
    error_responses,
)
from unirank.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
#: What an inference route can answer besides 200 (documented in the OpenAPI spec).
INFERENCE_ERRORS = (400, 401, 404, 413, 422, 503)
#: Error codes a client should send again after ``Retry-After`` seconds.
RETRYABLE_CODES = frozenset({"not_ready", "shutting_down"})


class ServerState:
    """Everything one server process holds; created per app, so tests can run several."""

    def __init__(self, settings: Settings, refs: list[str]) -> None:
        self.settings = settings
        self.limits = settings.serving
        self.catalog = ModelCatalog(settings, refs)
        self.metrics = ServerMetrics()
        self.tokens = TokenStore(settings.serving.api_keys, settings.serving.api_keys_file)
        #: One thread runs every forward pass: torch already uses the cores within one.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        #: Long texts are counted and cut here, off the event loop, so one large request does not hold up
        #: every other client (a 10 MB input kept /health waiting 9.3 s); never on the model's thread.
        self.tokenizing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._batchers: dict[tuple[str, str], MicroBatcher[Any, Any]] = {}

    def load(self) -> None:
        try:
            self.catalog.load_all()
        except Exception as exc:  # the process stays up to say why on /health and /ready
            log.exception("loading models failed")
            self.load_error = str(exc)
            return
        self.ready.set()

    def batcher(self, model: ServedModel, kind: str) -> MicroBatcher[Any, Any]:
        key = (model.id, kind)
        if key not in self._batchers:
            ref = model.id
            if kind == "embed":
                def run(texts: list[str]) -> np.ndarray:
                    embedder = self.catalog.served(ref).embedder
                    assert embedder is not None
                    return embedder.embed_documents(texts)
            else:
                def run(pairs: list[tuple[str, str]]) -> list[float]:  # type: ignore[misc]
                    served = self.catalog.served(ref)
                    if served.is_cross_encoder:  # logits: the handler applies the sigmoid unless raw
                        return served.reranker.logits(pairs).tolist()  # type: ignore[attr-defined]
                    return served.reranker.score_pairs(pairs)
            self._batchers[key] = MicroBatcher(
                run, executor=self.executor, max_batch=self.limits.max_batch_size,
                max_wait_s=self.limits.max_wait_ms / 1000, metrics=self.metrics, model=ref, kind=kind)
        return self._batchers[key]

    async def watch_registry(self) -> None:
        """Hot swap: poll the registry and load a model whose alias was re-pointed.

        A version that fails to load is remembered by the catalog, shown on /ready and counted once
        (``unirank_model_swap_failures``), not loaded again and logged with a traceback every poll."""
        last_error: str | None = None
        while True:
            await asyncio.sleep(self.limits.registry_poll_s)
            if not self.ready.is_set():
                continue
            try:
                outcome = await asyncio.to_thread(self.catalog.refresh)
            except Exception as exc:  # a registry mid-write, say: keep serving the loaded versions
                if str(exc) != last_error:  # the same error on every poll is logged once
                    log.exception("hot swap check failed; still serving the loaded versions")
                last_error = str(exc)
                continue
            last_error = None
            for ref in outcome.swapped:
                self.metrics.swaps.labels(model=ref).inc()
            for ref in outcome.failed:
                self.metrics.swap_failures.labels(model=ref).inc()

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.tokenizing.shutdown(wait=False, cancel_futures=True)
        self.metrics.process_exited()


def create_app(settings: Settings | None = None, refs: list[str] | None = None) -> FastAPI:
    settings = settings or Settings.load()
    state = ServerState(settings, refs or default_refs(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.serving.replicas > 1:
            # Replicas share one listening socket: a replica that accepted connections while
            # loading would answer 503 to requests its loaded siblings could serve (seen when a
            # killed replica was restarted under load). So it starts accepting once loaded.
            await asyncio.to_thread(state.load)
        else:  # one process: /health and /ready answer at once and say it is loading
            threading.Thread(target=state.load, name="model-loader", daemon=True).start()
        watcher = asyncio.get_running_loop().create_task(state.watch_registry())
        try:
            yield
        finally:
            watcher.cancel()
            await state.close()

    app = FastAPIOffline(
        title="unirank model server",
        summary="Embeddings and reranking with the registry's models.",
        version="1",
        lifespan=lifespan,
    )
    app.state.server = state
    _install_middleware_and_handlers(app, state)
    _install_routes(app, state)
    declare_only_sent_errors(app)
    return app


def _install_middleware_and_handlers(app: FastAPI, state: ServerState) -> None:
    app.add_middleware(RequestSizeLimit, max_bytes=int(state.limits.max_request_mb * 1_000_000),
                       setting="serving.max_request_mb")
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)

    def error_body(request: Request, message: str, code: str, status: int) -> dict[str, Any]:
        """Built from the schemas the OpenAPI spec declares, so the two cannot drift apart."""
        if request.url.path.startswith("/v1/"):  # OpenAI's shape, which its SDK turns into exceptions
            # OpenAI's convention, which clients branch on: a 5xx is the server's fault, not the request's.
            kind = "server_error" if status >= 500 else "invalid_request_error"
            return OpenAIError(error=OpenAIErrorDetail(message=message, type=kind, code=code)).model_dump()
        return TeiError(error=message, error_type=code).model_dump()  # text-embeddings-inference's shape

    def error_response(request: Request, message: str, code: str, status: int,
                       headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(error_body(request, message, code, status), status, headers=headers)

    @app.exception_handler(ServingRequestError)
    async def serving_error(request: Request, exc: ServingRequestError) -> JSONResponse:
        # Only these end with a wait (or another replica); a retry after load_failed gets the same answer.
        headers = {"Retry-After": "1"} if exc.code in RETRYABLE_CODES else None
        return error_response(request, str(exc), exc.code, exc.status_code, headers)

    @app.exception_handler(AuthenticationError)
    async def auth_error(request: Request, exc: AuthenticationError) -> JSONResponse:
        return error_response(request, str(exc), "invalid_api_key", 401, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(UnirankError)
    async def unirank_error(request: Request, exc: UnirankError) -> JSONResponse:
        return error_response(request, str(exc), "server_error", 500)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        """A bug, or a model that fails mid-batch, is a 500 in the route family's error shape (which the
        OpenAI SDK and unirank's remote client parse), not Starlette's plain text. Starlette raises the
        exception again once this is sent, so the server's log has its traceback."""
        return error_response(request, f"Internal error ({type(exc).__name__}) while answering {request.method} "
                              f"{request.url.path}: the server's log has the details.", "server_error", 500)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        # In the route's own error shape, so SDKs show the message instead of an unparsed body.
        message = validation_message(exc.errors(), body_type(request), exc.body)
        return error_response(request, message, "invalid_request", 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """An unknown path or a wrong method, in the route family's error shape, not FastAPI's."""
        refusal = body_refusal(exc)
        if refusal is not None:
            status, message, code = refusal
            return error_response(request, message, code, status)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(request, message, http_error_code(exc), exc.status_code, exc.headers)


def refuse_unsupported_tei_options(truncation_direction: str, *, prompt_name: str | None = None,
                                   normalize: bool = True) -> None:
    """TEI options that would change the answer are refused rather than ignored: a caller relies on them."""
    if not normalize:
        raise ServingRequestError("normalize=false is not served: unirank embeds for cosine search, so its "
                                  "vectors are always unit length. Drop the field or send true.",
                                  code="unsupported_option")
    if truncation_direction.lower() == "left":
        raise ServingRequestError("truncation_direction=Left is not served: texts over the limit are cut at the "
                                  "end (Right). Drop the field, or shorten the texts yourself.",
                                  code="unsupported_option")
    if prompt_name is not None:
        raise ServingRequestError(f"prompt_name={prompt_name!r} is not served: unirank's models have no named "
                                  "prompts. Drop the field and put any prefix in the text.",
                                  code="unsupported_option")


def refuse_unsupported_cohere_options(rank_fields: list[str] | None) -> None:
    """As for TEI: ranking another field than the one asked for would be an answer to another question."""
    if rank_fields is not None and rank_fields != ["text"]:
        raise ServingRequestError(f"rank_fields={rank_fields!r} is not served: a document's `text` is what is "
                                  "ranked. Drop the field and send the text to rank as `text` (or the document "
                                  "as a string).", code="unsupported_option")


async def unless_shut_down(work: Awaitable[T]) -> T:
    """``work``'s result; the handler cancelled meanwhile is a shutdown whose grace period
    (``serving.graceful_shutdown_s``) ran out: a 503 the client can retry, not uvicorn's plain-text 500."""
    try:
        return await work
    except asyncio.CancelledError:
        raise ServingRequestError("The server is shutting down and stopped this request before its answer was "
                                  "ready (serving.graceful_shutdown_s ran out). Send it again: another replica, "
                                  "or this server once restarted, will answer it.",
                                  status_code=503, code="shutting_down") from None


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, unless the client disconnects first (its timeout, a closed connection): then
    ``work`` is cancelled, so the batcher drops what it had queued, and the answer is a 499 nobody reads.
    Without this the server computed every batch of a request whose client had given up, and a client
    that retries a timeout (unirank's remote embedder) had it queued again each time.

    The handler itself cancelled, with its client still there, is a shutdown: ``unless_shut_down``."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        await unless_shut_down(asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED))
    finally:
        watcher.cancel()
        if not task.done():  # the client left, or this handler was cancelled (shutdown)
            task.cancel()
    if not task.done():
        raise ServingRequestError("The client disconnected before its answer was ready; its queued work was "
                                  "dropped. Give the client a longer timeout, or send fewer texts per request.",
                                  status_code=499, code="client_closed_request")
    return task.result()


async def _client_gone(request: Request) -> None:
    """Returns once the client has disconnected. The body is read by now, so the server's next message for
    this request is http.disconnect, sent when the connection closes."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            await asyncio.sleep(0.1)  # not expected after the body; never spin on it
    except Exception:  # a receive that fails says nothing of the client: the work goes on
        log.debug("cannot watch %s for a disconnect", request.url.path, exc_info=True)
        await asyncio.Event().wait()


def json_response(payload: BaseModel | list[Any]) -> Response:
    """The body serialised in one pass (pydantic-core, or the json module for plain lists). Returning the
    payload instead has FastAPI dump it, validate it again against ``response_model`` and walk every float
    of every vector in Python; the route's ``response_model`` still documents it."""
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return Response(body, media_type="application/json")


def _install_routes(app: FastAPI, state: ServerState) -> None:
    bearer = HTTPBearer(auto_error=False, description="Required when the server has API keys.")

    # Both async: FastAPI runs a plain-def dependency on a worker thread, two thread hops per request.
    async def authorized(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        state.tokens.check(request.headers.get("authorization"))

    async def ready() -> None:
        if not state.ready.is_set():
            raise ModelNotReadyError(state.load_error)

    guarded = [Depends(authorized), Depends(ready)]
    limits = state.limits

    def checked_texts(texts: list[str], what: str, field: str) -> None:
        """``field`` is the request's own name for the list, so the error points at it."""
        if not texts:
            raise ServingRequestError(f"{field} is empty: send at least one {what}.", code="empty_input")
        if what == "input" and len(texts) > limits.max_inputs:  # documents have their own, smaller limit
            raise ServingRequestError(f"{len(texts)} inputs sent; at most {limits.max_inputs} per request. "
                                      "Split the request.", status_code=413, code="too_many_inputs")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or is_blank(text):
                raise ServingRequestError(f"{field}[{i}] is empty; every {what} needs some text.",
                                          code="empty_input")

    async def tokenized(call: Callable[[], T], texts: list[str]) -> T:
        """``call`` (which tokenizes ``texts``), on the tokenizing thread when the texts are long enough to
        hold up the event loop."""
        if sum(map(len, texts)) <= INLINE_CHARS:
            return call()
        return await unless_shut_down(asyncio.get_running_loop().run_in_executor(state.tokenizing, call))

    async def within_limit(model: ServedModel, texts: list[str], limit: int, *, truncate: bool,
                           what: str = "input") -> tuple[list[str], int]:
        return await tokenized(partial(enforce_token_limit, model.tokenizer, texts, limit, truncate=truncate,
                                       what=what), texts)

    async def embed(request: Request, model: ServedModel, texts: list[str],
                    truncate: bool) -> tuple[np.ndarray, int]:
        texts, tokens = await within_limit(model, texts, model.token_limit(limits), truncate=truncate)
        rows = await unless_client_leaves(request, state.batcher(model, "embed").submit(texts))
        return np.asarray(rows, dtype=np.float32), tokens

    async def rerank(request: Request, model: ServedModel, query: str, texts: list[str], field: str,
                     truncate: bool, raw: bool, max_doc_tokens: int | None = None) -> tuple[list[float], int]:
        if is_blank(query):
            raise ServingRequestError("query is empty: send the text to rank the documents against.",
                                      code="empty_input")
        checked_texts(texts, "document", field)
        if len(texts) > limits.max_rerank_documents:
            raise ServingRequestError(
                f"{len(texts)} documents sent; at most {limits.max_rerank_documents} can be reranked "
                "per request.", status_code=413, code="too_many_documents")
        limit = model.token_limit(limits)
        # Cohere's max_tokens_per_doc: each document is read that far only. At or past the model's window it
        # cuts nothing the window does not (Cohere's default, 4096, sent as is), and was a second tokenizing.
        if max_doc_tokens is not None and max_doc_tokens < limit:
            texts = await tokenized(partial(cut_to_tokens, model.tokenizer, texts, max_doc_tokens), texts)
        if model.is_cross_encoder:  # it reads each (query, document) pair as one sequence
            query, texts, tokens = await tokenized(partial(
                enforce_pair_limit, model.tokenizer, query, texts, limit, truncate=truncate), [query, *texts])
        else:
            (query,), query_tokens = await within_limit(model, [query], limit, truncate=truncate, what="query")
            texts, tokens = await within_limit(model, texts, limit, truncate=truncate, what="document")
            tokens += query_tokens * len(texts)
        scores = await unless_client_leaves(request, state.batcher(model, "rerank").submit(
            [(query, t) for t in texts]))
        if model.is_cross_encoder and not raw:
            scores = (0.5 * (1.0 + np.tanh(0.5 * np.asarray(scores, dtype=np.float64)))).tolist()  # sigmoid
        return list(scores), tokens

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, dependencies=guarded,
              tags=["OpenAI"], summary="OpenAI-compatible embeddings",
              responses=error_responses(OpenAIError, *INFERENCE_ERRORS))
    async def openai_embeddings(body: EmbeddingsRequest, request: Request) -> Response:
        raw = body.input
        if isinstance(raw, list) and raw and not all(isinstance(x, str) for x in raw):
            raise ServingRequestError(
                "Token arrays are not accepted: send the texts, which the model tokenizes itself (ids from "
                "another tokenizer, such as tiktoken's, mean nothing to it). LangChain's OpenAIEmbeddings "
                "sends texts with check_embedding_ctx_length=False.", code="unsupported_input")
        texts = [raw] if isinstance(raw, str) else list(raw)  # type: ignore[arg-type]
        checked_texts(texts, "input", "input")
        model = state.catalog.find(body.model, "embedder")
        if body.dimensions is not None and body.dimensions != model.dims:
            raise ServingRequestError(f"{model.id} makes {model.dims}-dimensional embeddings; "
                                      f"dimensions={body.dimensions} cannot be served.", code="invalid_dimensions")
        vectors, tokens = await embed(request, model, texts, body.truncate)
        if body.encoding_format == "base64":
            encoded: list[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
        else:
            encoded = vectors.tolist()
        return json_response(EmbeddingsResponse(
            data=[EmbeddingData(index=i, embedding=e) for i, e in enumerate(encoded)],
            model=model.id, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)))

    @app.post("/embed", response_model=list[list[float]], dependencies=guarded,
              tags=["text-embeddings-inference"], summary="TEI-compatible embeddings",
              responses=error_responses(TeiError, *INFERENCE_ERRORS))
    async def tei_embed(body: EmbedRequest, request: Request) -> Response:
        refuse_unsupported_tei_options(body.truncation_direction, prompt_name=body.prompt_name,
                                       normalize=body.normalize)
        texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
        checked_texts(texts, "input", "inputs")
        vectors, _ = await embed(request, state.catalog.find(body.model, "embedder"), texts, bool(body.truncate))
        return json_response(vectors.tolist())

    @app.post("/rerank", response_model=list[TeiRank], response_model_exclude_none=True,
              dependencies=guarded, tags=["text-embeddings-inference"], summary="TEI-compatible rerank",
              responses=error_responses(TeiError, *INFERENCE_ERRORS))
    async def tei_rerank(body: TeiRerankRequest, request: Request) -> list[TeiRank]:
        refuse_unsupported_tei_options(body.truncation_direction)
        model = state.catalog.find(body.model, "reranker")
        scores, _ = await rerank(request, model, body.query, body.texts, "texts", bool(body.truncate),
                                 body.raw_scores)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [TeiRank(index=i, score=scores[i], text=body.texts[i] if body.return_text else None) for i in order]

    @app.post("/v1/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True,
              dependencies=guarded, tags=["Cohere / Jina"], summary="Cohere- and Jina-compatible rerank",
              responses=error_responses(OpenAIError, *INFERENCE_ERRORS))
    async def cohere_rerank(body: CohereRerankRequest, request: Request) -> CohereRerankResponse:
        refuse_unsupported_cohere_options(body.rank_fields)
        model = state.catalog.find(body.model, "reranker")
        texts = [d.text if isinstance(d, RerankDocument) else d for d in body.documents]
        # Cohere cuts long documents itself rather than refusing them.
        scores, tokens = await rerank(request, model, body.query, texts, "documents", truncate=True, raw=False,
                                      max_doc_tokens=body.max_tokens_per_doc)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.top_n or len(scores)]
        results = [CohereRerankResult(index=i, relevance_score=scores[i],
                                      document=RerankDocument(text=texts[i]) if body.return_documents else None)
                   for i in order]
        return CohereRerankResponse(id=str(uuid.uuid4()), model=model.id, results=results,
                                    meta={"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
                                    usage={"total_tokens": tokens})

    # Guarded too: while loading, an empty list and a 404 told a client no model was served.
    @app.get("/v1/models", response_model=ModelList, dependencies=guarded, tags=["OpenAI"],
             responses=error_responses(OpenAIError, 401, 503))
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(**m.describe(limits)) for m in state.catalog.models()])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, dependencies=guarded,
             tags=["OpenAI"], summary="One served model (the OpenAI SDK's models.retrieve)",
             responses=error_responses(OpenAIError, 401, 404, 503))
    async def retrieve_model(model_id: str) -> ModelCard:
        return ModelCard(**state.catalog.get(model_id).describe(limits))

    @app.get("/health", response_model=Health, tags=["operations"],
             responses={503: {"model": Health, "description": "Loading the models failed."}})
    async def health() -> Any:
        if state.load_error:
            return JSONResponse(Health(status="error", ready=False, detail=state.load_error).model_dump(), 503)
        return Health(status="ok", ready=state.ready.is_set())

    @app.get("/ready", response_model=Readiness, tags=["operations"],
             responses={503: {"model": Readiness, "description": "Models are not loaded (yet)."}})
    async def readiness() -> Any:
        if not state.ready.is_set():
            body = Readiness(status="error" if state.load_error else "loading", ready=False,
                             detail=state.load_error)
            return JSONResponse(body.model_dump(), 503)
        failed = [FailedSwapInfo(model=f.ref, version=f.version, serving=f.serving, error=f.error)
                  for f in state.catalog.failed_swaps().values()]
        detail = ", ".join(m.label for m in state.catalog.models())
        if failed:  # still ready (the old versions answer), but the registry's alias names another
            detail += "; " + "; ".join(
                f"{f.model} names version {f.version}, which failed to load: still serving version {f.serving}"
                if f.version is not None else
                f"{f.model} cannot be found now ({f.error}): still serving version {f.serving}" for f in failed)
        return Readiness(status="ok", ready=True, detail=detail, failed_swaps=failed)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}})
    async def metrics() -> Response:
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def app_from_environment() -> FastAPI:
    """The uvicorn factory each replica process calls: settings from unirank.toml and UNIRANK_*."""
    settings = Settings.load()
    if settings.serving.replicas > 1:
        exit_with_parent()
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.serving.replicas))
    return create_app(settings)
