"""Models behind an HTTP endpoint: ingestion and search call it instead of loading weights here.

A model registered with ``unirank models register NAME --endpoint URL`` is used through
:class:`RemoteEmbedder` or :class:`RemoteReranker`. Each holds one pooled ``httpx.Client`` and
retries, with exponential backoff, refused connections, dropped connections, 429 and 5xx answers,
and, for embeddings only, timeouts. A rerank never retries a timeout and stops retrying once
``remote.rerank_timeout_s`` has passed: search would rather answer un-reranked than late.

No request carries more texts than the server takes: a larger batch of texts to embed, or of
passages to rerank, goes in several requests (a rerank's at once, under its one deadline).

The bearer token is never stored: it is read at request time from the environment variable or
the token file named at registration (the file is re-read when it changes, and once more after a
401), so a rotated token is picked up without a restart.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np
import tenacity

from unirank.errors import InputRefusedError, RemoteModelError
from unirank.search.types import ModelSignature
from unirank.settings import RemoteSettings, masked_url

log = logging.getLogger(__name__)

#: The request shapes each role can speak, default first.
APIS: dict[str, tuple[str, ...]] = {"embedder": ("openai", "tei"), "reranker": ("tei", "cohere")}
#: Used when the endpoint does not say how many tokens its model reads.
DEFAULT_MAX_SEQ_LENGTH = 512
#: Embedded once per process (and at registration) to check what the endpoint serves.
PROBE_TEXT = "unirank endpoint probe"
#: The probe text's vector from the registered model and from the endpoint now must be at least this
#: close: the same model answers it to rounding (an int8 copy of it within 0.986 on CISI), while the
#: CISI-tuned embedders answer it at 0.92 (corpus-only) and 0.90 (labels) of the base's. A 20-step
#: run on the 24-chunk sample corpus stays at 0.9999: its vectors are still the base's.
SAME_MODEL_MIN_COSINE = 0.98
#: Texts one request carries (to embed, or to rerank) when the server lists no limit of its own:
#: text-embeddings-inference's default ``--max-client-batch-size``, beyond which it answers 413 on
#: /embed and /rerank alike. OpenAI and Cohere take more, and ``unirank serve models`` lists its
#: limits in ``GET /v1/models`` (recorded at registration), so this costs them only smaller requests.
UNLISTED_MAX_INPUTS = 32
#: What an endpoint answers for texts it will not take, as opposed to failing itself.
INPUT_REFUSED_STATUSES = (400, 413, 422)
#: Paths the client adds to the endpoint's URL: a URL that already ends in one names a route, not the server.
ROUTES = ("/v1/embeddings", "/v1/rerank", "/v1/models", "/embed", "/rerank")
#: The longest single backoff wait, whatever remote.backoff_s and the attempt number give.
_MAX_BACKOFF_S = 30.0
#: A remote reranker's ``scores``, as registration records them: a bi-encoder served to rerank (a unirank
#: server reranks with one by cosine, in [-1, 1]) or a cross-encoder's probability (TEI, Cohere: [0, 1]).
COSINE_SCORES, PROBABILITY_SCORES = "cosine", "probability"


def vector_fingerprint(vector: np.ndarray) -> str:
    """The probe text's unit vector as the registry keeps it: float16, base64 (~1 KB for 384 dims)."""
    return base64.b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode("ascii")


def matches_fingerprint(vector: np.ndarray, fingerprint: str) -> tuple[bool, float]:
    """Whether ``vector`` (a unit vector of the probe text) is the fingerprinted model's, and the cosine."""
    recorded = np.frombuffer(base64.b64decode(fingerprint), dtype="<f2").astype(np.float32)
    cosine = float(vector @ recorded) / max(float(np.linalg.norm(recorded)), 1e-12)
    return cosine >= SAME_MODEL_MIN_COSINE, cosine


class TokenSource:
    """The bearer token, read when a request is made so that a rotated token needs no restart."""

    def __init__(self, env: str | None = None, file: Path | str | None = None) -> None:
        self.env = env
        self.file = Path(file).expanduser() if file else None
        self._cached: str | None = None
        self._stamp: tuple[int, int] | None = None

    def __bool__(self) -> bool:
        return bool(self.env or self.file)

    def describe(self) -> str:
        if self.file:
            return f"token file {self.file}"
        return f"${self.env}" if self.env else "no token"

    def get(self, *, reread: bool = False) -> str | None:
        """The current token; the file is read again only when its mtime or size changed.

        A file rewritten in place (``echo NEW > file``) is empty for a moment: a read that finds it empty
        keeps the token read before and tries again on the next request, so a rotation fails no request.
        """
        if self.file is not None:
            try:
                stat = self.file.stat()
            except OSError as exc:
                raise RemoteModelError(f"Cannot read the token file {self.file}: {exc}. Create it or "
                                       "register the model again with another --token-file.") from exc
            stamp = (stat.st_mtime_ns, stat.st_size)
            if reread or stamp != self._stamp or self._cached is None:
                token = _first_line(self.file.read_text(encoding="utf-8"))
                if token or not self._cached:
                    self._cached, self._stamp = token, stamp
            if not self._cached:
                raise RemoteModelError(f"The token file {self.file} is empty: write the bearer token into it.")
            return self._cached
        if self.env:
            token = os.environ.get(self.env, "").strip()
            if not token:
                raise RemoteModelError(f"The environment variable {self.env} (the endpoint's token) is not set.")
            return token
        return None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line.split()[0]
    return ""


@dataclass(frozen=True)
class Endpoint:
    """Where a remote model lives and how to talk to it: what the registry records."""

    url: str
    api: str
    role: str
    token_env: str | None = None
    token_file: str | None = None
    #: The ``model`` field sent with each request (None: the server's default for the role).
    remote_model: str | None = None
    #: Texts one embedding request, and documents one rerank request, may hold: the limits the server
    #: listed at registration (None: it listed none).
    max_inputs: int | None = None
    max_documents: int | None = None

    def __post_init__(self) -> None:
        allowed = APIS.get(self.role)
        if allowed is None:
            raise RemoteModelError(f"Unknown role {self.role!r}: use embedder or reranker.")
        if self.api not in allowed:
            raise RemoteModelError(f"{'An' if self.role == 'embedder' else 'A'} {self.role} endpoint speaks {' or '.join(allowed)}, not {self.api!r}.")
        if not self.url.startswith(("http://", "https://")):
            raise RemoteModelError(f"Endpoint {self.url!r} is not an http:// or https:// URL.")
        # The server's root is what is recorded: the paths called carry their own ``/v1``, but an
        # OpenAI client's base URL ends in it (as ``chat.llm_base_url`` does), so it is taken either way.
        root = self.url.rstrip("/").removesuffix("/v1").rstrip("/")
        if "://" not in root or not root.split("://", 1)[1]:
            raise RemoteModelError(f"Endpoint {self.url!r} names no host.")
        object.__setattr__(self, "url", root)
        if self.token_env and self.token_file:
            raise RemoteModelError("Give either --token-env or --token-file, not both.")

    @classmethod
    def from_record(cls, role: str, record: dict[str, Any]) -> "Endpoint":
        return cls(url=record["endpoint"], api=record.get("api") or APIS[role][0], role=role,
                   token_env=record.get("token_env"), token_file=record.get("token_file"),
                   remote_model=record.get("remote_model"), max_inputs=record.get("max_inputs"),
                   max_documents=record.get("max_rerank_documents"))

    def per_request(self, settings: RemoteSettings) -> int:
        """Texts one request carries: ``remote.batch_inputs``, or fewer when the server takes fewer."""
        listed = self.max_inputs if self.role == "embedder" else self.max_documents
        return min(settings.batch_inputs, listed or UNLISTED_MAX_INPUTS)


class _RetryableStatus(Exception):
    """A 429 or 5xx answer: worth another try after a pause."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class RemoteClient:
    """One model's connection pool, bearer auth and retry policy."""

    def __init__(self, endpoint: Endpoint, settings: RemoteSettings) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.tokens = TokenSource(endpoint.token_env, endpoint.token_file)
        self._opening = threading.Lock()
        self._http = self._pool()

    def _pool(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.endpoint.url,
            timeout=self.settings.timeout_s,
            limits=httpx.Limits(max_connections=self.settings.max_connections,
                                max_keepalive_connections=self.settings.max_connections),
        )

    @property
    def http(self) -> httpx.Client:
        """The connection pool, opened again after :meth:`close` (``Unirank.close()`` then another search
        failed with httpx's "the client has been closed")."""
        if self._http.is_closed:
            with self._opening:
                if self._http.is_closed:
                    self._http = self._pool()
        return self._http

    def close(self) -> None:
        self._http.close()

    def get(self, path: str) -> Any:
        return self.request("GET", path, None, timeout=self.settings.timeout_s, retry_timeouts=True)

    def post(self, path: str, payload: dict[str, Any], *, timeout: float, retry_timeouts: bool,
             deadline_s: float | None = None, setting: str = "remote.timeout_s",
             setting_s: float | None = None) -> Any:
        return self.request("POST", path, payload, timeout=timeout, retry_timeouts=retry_timeouts,
                            deadline_s=deadline_s, setting=setting, setting_s=setting_s)

    def request(self, method: str, path: str, payload: dict[str, Any] | None, *, timeout: float,
                retry_timeouts: bool, deadline_s: float | None = None, setting: str = "remote.timeout_s",
                setting_s: float | None = None) -> Any:
        """Send with retries; ``deadline_s`` stops retrying once that long has passed in all.

        A timeout names ``setting``, the one that applied, with its value ``setting_s`` (``timeout`` when
        not given): a rerank's ``timeout`` and ``deadline_s`` are what is left of it, and the error said
        "within 0.999994 s" for a setting of 1 s."""

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, httpx.TimeoutException):
                return retry_timeouts
            return isinstance(exc, (_RetryableStatus, httpx.TransportError))

        stop = tenacity.stop_after_attempt(self.settings.retries + 1)
        if deadline_s is not None:
            stop = stop | tenacity.stop_before_delay(deadline_s)
        backoff = tenacity.wait_exponential(multiplier=self.settings.backoff_s, max=_MAX_BACKOFF_S)
        retrying = tenacity.Retrying(
            stop=stop,
            wait=lambda state: max(backoff(state), _retry_after(state)),
            retry=tenacity.retry_if_exception(retryable),
            before_sleep=self._log_retry(method, path),
            reraise=True,
        )
        started = time.perf_counter()
        try:
            for attempt in retrying:
                with attempt:
                    budget = timeout
                    if deadline_s is not None:  # a retry gets only what is left of the deadline
                        budget = max(0.001, min(timeout, deadline_s - (time.perf_counter() - started)))
                    return self._send_once(method, path, payload, budget)
        except _RetryableStatus as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise RemoteModelError(
                f"{self._where(path)} answered HTTP {exc.response.status_code} "
                f"({_server_message(exc.response)}) after {attempts} attempt(s).",
                status_code=exc.response.status_code,
            ) from None
        except httpx.TimeoutException as exc:
            limit = f"{setting} ({timeout if setting_s is None else setting_s:g} s)"
            raise RemoteModelError(
                f"{self._where(path)} did not answer within {limit}{' in all' if deadline_s is not None else ''} "
                f"({type(exc).__name__}). Raise {setting}, or check the server's load."
            ) from exc
        except httpx.TransportError as exc:
            spent = time.perf_counter() - started
            raise RemoteModelError(
                f"Cannot reach {self._where(path)}: {exc or type(exc).__name__} (gave up after {spent:.1f} s). "
                "Is the model server running (`unirank serve models`) and is the URL right?"
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _send_once(self, method: str, path: str, payload: dict[str, Any] | None, timeout: float) -> Any:
        response = self.http.request(method, path, json=payload, headers=self._auth(), timeout=timeout)
        if response.status_code == 401 and self.tokens:
            # The token may have been rotated since it was last read: read it again, once.
            response = self.http.request(method, path, json=payload, headers=self._auth(reread=True),
                                         timeout=timeout)
        if response.status_code == 429 or response.status_code >= 500:
            raise _RetryableStatus(response)
        if response.status_code == 401:
            hint = (f"check the token in {self.tokens.describe()}" if self.tokens else
                    "register the model with --token-env VAR or --token-file PATH")
            raise RemoteModelError(f"{self._where(path)} refused the request (HTTP 401: "
                                   f"{_server_message(response)}); {hint}.")
        if response.status_code >= 400:
            message, hint = _server_message(response), self._hint(response, payload)
            if hint:  # which begins ". "
                message = message.rstrip(".")
            refused = InputRefusedError if response.status_code in INPUT_REFUSED_STATUSES else RemoteModelError
            raise refused(f"{self._where(path)} refused the request (HTTP {response.status_code}): {message}{hint}",
                          status_code=response.status_code)
        try:
            return response.json()
        except ValueError as exc:
            raise RemoteModelError(f"{self._where(path)} answered with something that is not JSON: "
                                   f"{response.text[:200]!r}") from exc

    def _auth(self, *, reread: bool = False) -> dict[str, str]:
        token = self.tokens.get(reread=reread)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _where(self, path: str) -> str:
        return f"{self.endpoint.url}{path}"

    def _hint(self, response: httpx.Response, payload: dict[str, Any] | None) -> str:
        """What to do about a 404 from a URL that names a route (``POST /v1/embeddings/v1/embeddings``), or
        a 413 for several texts (a server that takes fewer per request and does not list its limit); after
        the server's message, which may end in a full stop."""
        status, url = response.status_code, self.endpoint.url
        route = next((r for r in ROUTES if url.endswith(r)), None)
        if status in (404, 405) and route:
            return (f". {url} ends in the route {route}: --endpoint is the server's root URL, to which the "
                    f"route is added. Register the model again with --endpoint {url.removesuffix(route)}")
        sent = next((len(v) for k, v in (payload or {}).items()
                     if k in ("input", "inputs", "texts", "documents") and isinstance(v, list)), 0)
        if status == 413 and sent > 1 and _error_code(response) != "input_too_long":  # not one text's length
            return (f". If the server takes fewer than the {sent} texts sent in one request, set "
                    "remote.batch_inputs lower")
        return ""

    def _log_retry(self, method: str, path: str) -> Any:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.info("%s %s failed (%s); retry %d in %.2f s", method, self._where(path),
                     exc or "?", state.attempt_number, wait)
        return before_sleep


def _retry_after(state: tenacity.RetryCallState) -> float:
    """Seconds a 429/503 asked the client to wait (``Retry-After``), at most the longest backoff."""
    exc = state.outcome.exception() if state.outcome else None
    if not isinstance(exc, _RetryableStatus):
        return 0.0
    try:
        return min(float(exc.response.headers.get("retry-after", 0)), _MAX_BACKOFF_S)
    except ValueError:  # an HTTP date: rare, and the exponential backoff is a fine stand-in
        return 0.0


def _error_code(response: httpx.Response) -> str | None:
    """The machine-readable cause in an OpenAI ({error: {code}}) or TEI ({error_type}) error body."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    return str(error.get("code")) if isinstance(error, dict) else body.get("error_type")


def _server_message(response: httpx.Response) -> str:
    """The error text from FastAPI ({detail}), OpenAI ({error: {message}}) or TEI ({error}) bodies."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value
            if value:
                return str(value)[:500]
    return str(body)[:500]


class RemoteEmbedder:
    """An :class:`~unirank.models.embedder.Embedder` whose vectors come from an endpoint.

    Chunking still happens here, so it needs a local copy of the model's tokenizer
    (``tokenizer_path``). The live endpoint embeds a probe text the first time ``signature`` is
    read (before ingestion writes or search compares), again with every batch of documents and at
    least every ``remote.verify_interval_s`` for queries; its size and its vector must match the
    registry record: an endpoint re-pointed at another model, of the same size or not, fails loudly
    instead of mixing vectors of two models in one index.
    """

    def __init__(self, endpoint: Endpoint, settings: RemoteSettings, *, name: str, version: str,
                 dims: int | None, max_seq_length: int, tokenizer_path: str, fingerprint: str | None = None,
                 same_vectors_as: frozenset[str] = frozenset()) -> None:
        self.client = RemoteClient(endpoint, settings)
        self.endpoint = endpoint
        self.name = name
        self.version = version
        self.registered_dims = dims
        self.max_seq_length = max_seq_length
        self.tokenizer_path = tokenizer_path
        #: ``remote.batch_inputs``, or fewer when the server takes fewer per request (or lists no limit).
        self.batch_inputs = endpoint.per_request(settings)
        self.timeout_s = settings.timeout_s
        #: The model registered here that the endpoint serves, with its copies (``serves``; lineage).
        self.same_vectors_as = same_vectors_as
        #: The probe text's vector, read with the signature.
        self.probe_vector: np.ndarray | None = None
        self._signature: ModelSignature | None = None
        self._verified_at = 0.0
        #: The registered probe fingerprint each probe answer is checked against; for a registration
        #: made before fingerprints were kept, the first answer's (computed once, not per check).
        self._reference = fingerprint
        self.verify_interval_s = settings.verify_interval_s
        self._tokenizer: Any = None

    @property
    def signature(self) -> ModelSignature:
        """Probed once, and again after ``remote.verify_interval_s``: a long-running process (the app
        server, a notebook) kept the first answer and searched a swapped model's vectors in silence."""
        now = time.monotonic()
        if self._signature is None or now - self._verified_at >= self.verify_interval_s:
            probe = self._embed_batch([PROBE_TEXT])[0]
            self._verify(probe)
            self._verified_at = now
            self._signature = ModelSignature(name=self.name, version=self.version, dims=int(probe.shape[0]))
        return self._signature

    def _verify(self, probe: np.ndarray) -> None:
        """Raise unless ``probe`` (the probe text's vector now) is what the registered model gives."""
        again = (f"point it back, or register it again (`unirank models register {self.name} --endpoint ...`) "
                 "and rebuild the indexes made with it.")
        live = int(probe.shape[0])
        if self.registered_dims is not None and live != self.registered_dims:
            raise RemoteModelError(
                f"{self.endpoint.url} now serves {live}-dimensional vectors, but {self.name}@{self.version} "
                f"was registered with {self.registered_dims}. The endpoint serves another model now: {again}")
        if self._reference is None:  # registered before fingerprints were kept: the first answer is it
            self._reference = vector_fingerprint(probe)
        same, cosine = matches_fingerprint(probe, self._reference)
        if not same:
            raise RemoteModelError(
                f"{self.endpoint.url} now serves other vectors than when {self.name}@{self.version} was "
                f"registered (cosine {cosine:.3f} between the two for a probe text): the server swapped "
                f"to another model, e.g. on a promotion, and its vectors are not comparable with the "
                f"indexes made before. Nothing it answered since was searched or written: {again}")
        if self.probe_vector is None:
            self.probe_vector = probe

    @property
    def dims(self) -> int:
        return self.signature.dims

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path, self.name)
        return self._tokenizer

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Each request carries the probe text too, and its vector is checked: these vectors get
        written, and a swap between two checks would put two models' vectors in one index."""
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        if self._signature is None:
            self.signature  # noqa: B018 -- the first probe, before anything is sent; each request re-checks
        with_probe = self.batch_inputs > 1  # else the probe goes on its own
        per_request = self.batch_inputs - 1 if with_probe else 1
        parts = []
        for i in range(0, len(texts), per_request):
            batch = list(texts[i : i + per_request])
            vectors = self._embed_batch([*batch, PROBE_TEXT] if with_probe else batch)
            self._verify(vectors[-1] if with_probe else self._embed_batch([PROBE_TEXT])[0])
            parts.append(vectors[:len(batch)])
        return np.concatenate(parts, axis=0)

    def embed_query(self, text: str) -> np.ndarray:
        self.signature  # noqa: B018 -- re-probed once verify_interval_s has passed
        return self._embed_batch([text])[0]

    def _embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if self.endpoint.api == "openai":
            payload: dict[str, Any] = {"input": self._fit_window(texts), "encoding_format": "float"}
            if self.endpoint.remote_model:
                payload["model"] = self.endpoint.remote_model
            body = self.client.post("/v1/embeddings", payload, timeout=self.timeout_s, retry_timeouts=True)
            try:
                rows = sorted(body["data"], key=lambda d: d["index"])
                vectors = [row["embedding"] for row in rows]
            except (KeyError, TypeError) as exc:
                raise RemoteModelError(f"{self.endpoint.url} sent an embeddings answer without "
                                       f"data[].embedding/index: {str(body)[:200]}") from exc
        else:  # tei
            payload = {"inputs": list(texts), "truncate": True}
            if self.endpoint.remote_model:
                payload["model"] = self.endpoint.remote_model
            vectors = self.client.post("/embed", payload, timeout=self.timeout_s, retry_timeouts=True)
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != len(texts):
            raise RemoteModelError(f"{self.endpoint.url} returned {array.shape[0] if array.ndim else 0} "
                                   f"vectors for {len(texts)} texts.")
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        return array / np.maximum(norms, 1e-12)

    def _fit_window(self, texts: Sequence[str]) -> list[str]:
        """Cut texts to the model's window here, as the local embedder would: OpenAI's API has no
        truncate flag, and an OpenAI-compatible server may refuse an over-long text outright.

        Only texts with more characters than the window has tokens can overflow (a token covers at
        least one character), so short ones skip the tokenizer.
        """
        out = list(texts)
        long = [i for i, t in enumerate(out) if len(t) > self.max_seq_length - 2]
        if not long:
            return out
        encoded = self.tokenizer([out[i] for i in long], add_special_tokens=True, truncation=True,
                                 max_length=self.max_seq_length, return_offsets_mapping=True, verbose=False)
        for i, offsets in zip(long, encoded["offset_mapping"]):
            ends = [end for start, end in offsets if end > start]
            if ends:
                out[i] = out[i][: ends[-1]]
        return out

    def close(self) -> None:
        self.client.close()


class RemoteReranker:
    """A :class:`~unirank.models.reranker.Reranker` scored by an endpoint; fails fast on timeouts."""

    def __init__(self, endpoint: Endpoint, settings: RemoteSettings, *, name: str,
                 blend_weight: float = 1.0, scores_cosine: bool = False,
                 timeout_setting: str = "remote.rerank_timeout_s") -> None:
        self.client = RemoteClient(endpoint, settings)
        self.endpoint = endpoint
        self.name = name
        self.blend_weight = blend_weight
        #: Whether the endpoint serves a bi-encoder and answers cosines: the chat's relevance threshold is
        #: the cosine one then (a cross-encoder's 0.5 called questions the documents answer not covered).
        self.scores_cosine = scores_cosine
        self.timeout_s = settings.rerank_timeout_s
        #: The setting ``timeout_s`` comes from, as errors name it (registration probes on remote.timeout_s).
        self.timeout_setting = timeout_setting
        #: Passages one request carries: more than the server takes was a 413, and every rerank degraded.
        self.per_request = endpoint.per_request(settings)
        self._workers = settings.max_connections

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Passages beyond the server's limit go in further requests, sent at once: the rerank's
        ``remote.rerank_timeout_s`` is for all of them together, as it was for one."""
        if not passages:
            return []
        started = time.perf_counter()
        step = self.per_request
        parts = [list(passages[i : i + step]) for i in range(0, len(passages), step)]
        if len(parts) == 1:
            return self._score_part(query, parts[0], started)
        pool = ThreadPoolExecutor(max_workers=min(len(parts), self._workers), thread_name_prefix="rerank")
        try:
            scored = list(pool.map(lambda part: self._score_part(query, part, started), parts))
        finally:  # a failed part fails the rerank now; the others end within the deadline on their own
            pool.shutdown(wait=False, cancel_futures=True)
        return [s for part in scored for s in part]

    def _score_part(self, query: str, passages: list[str], started: float) -> list[float]:
        left = self.timeout_s - (time.perf_counter() - started)
        if left <= 0:
            raise RemoteModelError(f"{self.endpoint.url} did not rerank {len(passages)} of the passages within "
                                   f"{self.timeout_setting} ({self.timeout_s:g} s) in all.")
        if self.endpoint.api == "cohere":
            payload: dict[str, Any] = {"query": query, "documents": passages, "top_n": len(passages),
                                       "return_documents": False}
            path, index_key, score_key = "/v1/rerank", "index", "relevance_score"
        else:  # tei
            # Not raw: the logit through a sigmoid, the probability a cross-encoder gives in process, which
            # the blend weight (min-max scaled, so the scale matters) and the chat's threshold are set on.
            payload = {"query": query, "texts": passages, "truncate": True, "raw_scores": False,
                       "return_text": False}
            path, index_key, score_key = "/rerank", "index", "score"
        if self.endpoint.remote_model:
            payload["model"] = self.endpoint.remote_model
        body = self.client.post(path, payload, timeout=left, retry_timeouts=False, deadline_s=left,
                                setting=self.timeout_setting, setting_s=self.timeout_s)
        rows = body.get("results") if isinstance(body, dict) else body
        scores: list[float | None] = [None] * len(passages)
        try:
            for row in rows:
                scores[int(row[index_key])] = float(row[score_key])
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise RemoteModelError(f"{self.endpoint.url}{path} sent a malformed rerank answer: "
                                   f"{str(body)[:200]}") from exc
        if any(s is None for s in scores):
            raise RemoteModelError(f"{self.endpoint.url}{path} scored {sum(s is not None for s in scores)} "
                                   f"of {len(passages)} passages.")
        unusable = [s for s in scores if not math.isfinite(s)]  # type: ignore[arg-type]
        if unusable:  # NaN ordered nothing and reached JSON as NaN or null, in results marked reranked
            raise RemoteModelError(f"{self.endpoint.url}{path} sent {len(unusable)} score(s) that are not finite "
                                   f"numbers (e.g. {unusable[0]}): check the model behind it.")
        return [float(s) for s in scores]  # type: ignore[arg-type]

    def close(self) -> None:
        self.client.close()


def probe_endpoint(endpoint: Endpoint, settings: RemoteSettings) -> dict[str, Any]:
    """Call the endpoint once as registration does; return what the registry records about it.

    Reads ``GET /v1/models`` when the server has it (for the model id and its maximum sequence
    length), then embeds or reranks a short text: an endpoint that cannot do that is refused now,
    not at the first ingestion.
    """
    client = RemoteClient(endpoint, settings)
    try:
        listing = _served_models(client)
    finally:
        client.close()
    entry = _pick_entry(listing, endpoint)
    if entry is not None and endpoint.remote_model is None and entry.get("id"):
        endpoint = Endpoint(**{**endpoint.__dict__, "remote_model": str(entry["id"])})
    limits = entry or _limits_requests_meet(listing, endpoint)
    info: dict[str, Any] = {"remote_model": endpoint.remote_model,
                            "max_seq_length": int(limits.get("max_seq_length") or DEFAULT_MAX_SEQ_LENGTH)}
    for key in ("max_inputs", "max_rerank_documents"):  # the server's limits per request, where it says
        if limits.get(key):
            info[key] = int(limits[key])
    scores = _listed_scores(limits) if endpoint.role == "reranker" else None
    if scores:  # else the caller judges by the model id (describe_remote)
        info["scores"] = scores
    if endpoint.role == "embedder":
        model = RemoteEmbedder(endpoint, settings, name="probe", version="0", dims=None,
                               max_seq_length=info["max_seq_length"], tokenizer_path="")
        try:
            info["dims"] = model.signature.dims
            info["probe_fingerprint"] = vector_fingerprint(model.probe_vector)
        finally:
            model.close()
        if entry and entry.get("dims") and int(entry["dims"]) != info["dims"]:
            raise RemoteModelError(f"{endpoint.url} lists {entry['id']} with {entry['dims']} dimensions but "
                                   f"returned {info['dims']}-dimensional vectors.")
    else:
        reranker = RemoteReranker(endpoint, settings.model_copy(update={"rerank_timeout_s": settings.timeout_s}),
                                  name="probe", timeout_setting="remote.timeout_s")
        try:
            reranker.score(PROBE_TEXT, [PROBE_TEXT, "an unrelated passage"])
        finally:
            reranker.close()
    return info


def _served_models(client: RemoteClient) -> list[dict[str, Any]]:
    """``GET /v1/models`` entries, or [] from a server without that route (e.g. TEI)."""
    try:
        body = client.get("/v1/models")
    except RemoteModelError as exc:
        # Only a server without the route goes on without a listing: one still loading (503) would
        # have the default window recorded for a model that reads fewer tokens.
        if isinstance(exc.__cause__, httpx.TransportError) or exc.status_code not in (404, 405):
            raise
        log.info("no model listing at %s: %s", client.endpoint.url, exc)
        return []
    data = body.get("data") if isinstance(body, dict) else None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _pick_entry(listing: list[dict[str, Any]], endpoint: Endpoint) -> dict[str, Any] | None:
    """The listed model requests will reach: the named one, else the only one of the role."""
    if endpoint.remote_model is not None:
        # As a unirank server resolves a request's model: its id, else its bare name or NAME@VERSION.
        wanted = endpoint.remote_model
        exact = [d for d in listing if d.get("id") == wanted]
        return next((d for d in exact + listing if wanted in _names_of(d)), None)
    of_role = [d for d in listing if d.get("role") in (endpoint.role, None)]
    if len(of_role) == 1:
        return of_role[0]
    # A server with one bi-encoder reranks with it too (by cosine), as ``reranker.model = base`` does.
    return listing[0] if not of_role and len(listing) == 1 else None


def _listed_scores(entry: dict[str, Any]) -> str | None:
    """What the listed model a rerank reaches scores: a unirank server lists a bi-encoder with its dims (it
    reranks by cosine) and a cross-encoder without. None for a listing that is not a unirank server's (no
    role), or for no listed model, which cannot tell."""
    if "role" not in entry:
        return None
    return COSINE_SCORES if entry.get("dims") else PROBABILITY_SCORES


def _limits_requests_meet(listing: list[dict[str, Any]], endpoint: Endpoint) -> dict[str, Any]:
    """The window and request limits of the listed model that requests naming no model reach, where
    :func:`_pick_entry` found none to record: the server's default, else the smallest of each listed,
    so that no request exceeds the limits of whichever model answers it."""
    default = None if endpoint.remote_model is not None else _served_by_default(listing, endpoint.role)
    if default is not None:
        return default
    smallest: dict[str, Any] = {}
    for key in ("max_seq_length", "max_inputs", "max_rerank_documents"):
        values = [int(d[key]) for d in listing if d.get(key)]
        if values:
            smallest[key] = min(values)
    return smallest


def _served_by_default(listing: list[dict[str, Any]], role: str) -> dict[str, Any] | None:
    """The listed model a unirank server answers a request naming none with (``ModelCatalog.find``): the
    first of the role, else the first that can do the work (any model reranks; one listed with dims
    embeds). None for a listing that is not a unirank server's (a model without a role), whose default
    cannot be told."""
    if not listing or any(d.get("role") is None for d in listing):
        return None
    able = [d for d in listing if role == "reranker" or d.get("dims") is not None]
    return next(iter([d for d in listing if d["role"] == role] or able), None)


def _names_of(entry: dict[str, Any]) -> set[str]:
    """What a request may call a listed model: ``hbx@prod`` also answers to ``hbx`` and ``hbx@2``."""
    served = str(entry.get("id") or "")
    name = served.partition("@")[0]
    names = {served, name}
    if entry.get("version") is not None:
        names.add(f"{name}@{entry['version']}")
    return names


def load_tokenizer(path: str, model: str) -> Any:
    """The local tokenizer that chunks text to the remote model's token window."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=Path(path).exists())
    except Exception as exc:  # OSError, ValueError, HF hub errors
        raise RemoteModelError(
            f"Cannot load the tokenizer {path!r} used to chunk text for {model}: {exc}. Register the "
            "model with --tokenizer PATH (a folder holding the served model's tokenizer files), or "
            "--tokenizer base for the bundled all-MiniLM-L6-v2 one."
        ) from exc


def describe_endpoint(endpoint: Endpoint, settings: RemoteSettings, *, tokenizer: str = "base") -> dict[str, Any]:
    """The registry record of an endpoint, from one live probe. Never holds the token itself.

    An embedder's ``max_seq_length`` is the server's (512 when it does not say) clamped to what
    the local ``tokenizer`` can count, so chunks always fit the served model's window.
    """
    if masked_url(endpoint.url) != endpoint.url:  # the registry would keep them, and every error print them
        raise RemoteModelError(
            f"The endpoint {masked_url(endpoint.url)} is given with a user and password (USER:PASSWORD@HOST): "
            "register it without them, and give its bearer token with --token-env VAR or --token-file FILE, "
            "which the registry names but never stores.")
    info = probe_endpoint(endpoint, settings)
    record: dict[str, Any] = {
        "endpoint": endpoint.url,
        "api": endpoint.api,
        "token_env": endpoint.token_env,
        "token_file": str(Path(endpoint.token_file).expanduser().resolve()) if endpoint.token_file else None,
        "base_model": f"remote:{info.get('remote_model') or endpoint.url}",
        **info,
    }
    if endpoint.role == "embedder":
        from unirank.models.loading import resolve_tokenizer_path

        local = load_tokenizer(resolve_tokenizer_path(tokenizer), f"the endpoint {endpoint.url}")
        limit = int(getattr(local, "model_max_length", 0) or 0)
        if 0 < limit < record["max_seq_length"]:
            record["max_seq_length"] = limit
        record["tokenizer"] = tokenizer if tokenizer == "base" else resolve_tokenizer_path(tokenizer)
    return record
