"""The one settings object: defaults < ``unirank.toml`` < ``UNIRANK_*`` environment variables.

Nested fields use a double underscore in the environment, e.g. ``UNIRANK_SEARCH__RRF_K=30``.
The TOML file is ``./unirank.toml`` unless ``UNIRANK_CONFIG`` names another; a relative path in
it (``data_dir``, ``chat.db_path``, ``serving.api_keys_file``, and a model written ``./NAME`` or ``../NAME``)
is read from the file's folder, so the file means the same wherever a command runs.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from unirank.errors import ConfigurationError

#: The most candidates a cross-encoder may rescore in one search.
MAX_RERANK_TOP_K = 50
#: The most results one search returns (a larger top_k made the full-text engine allocate for it and abort).
MAX_TOP_K = 1000


class _Section(BaseModel):
    #: A misspelt key (``[embedder] modle = …``) is an error, not a setting silently left at its default.
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _bools_only_where_meant(cls, value: object, info: ValidationInfo) -> object:
        """pydantic's lax mode read ``top_k = true`` in unirank.toml as 1 (a variable was refused), and
        ``enabled = 1`` or ``"on"`` as true: the file and the variables now take the same values."""
        kinds = _scalar_kinds(cls.model_fields[info.field_name].annotation) if info.field_name else set()
        if bool in kinds:
            if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in _BOOL_TEXTS):
                return value
            raise PydanticCustomError("bool_strict", "Input should be true or false")
        if kinds & {int, float} and isinstance(value, bool):
            raise PydanticCustomError("number_not_bool", "Input should be a number, not true or false")
        return value


#: What a variable may say for a true/false setting (as a shell writes it), in any case; the file may too.
_BOOL_TEXTS = {"true", "false", "1", "0"}


def _scalar_kinds(annotation: object) -> set[object]:
    """The plain types a field's annotation allows: ``int | None`` is {int, NoneType}."""
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {kind for arg in args for kind in _scalar_kinds(arg)}
    return {typing.get_origin(annotation)}  # Literal[...], list[str]: neither a number nor a bool


class EmbedderSettings(_Section):
    #: ``base`` is the bundled all-MiniLM-L6-v2; otherwise a registry ref, a local path or a hub id.
    #: Unset, new indexes are made with ``base`` and an index is read and extended with the model that
    #: made it (when it is ``base`` or registered here); set, that model is used for every index.
    model: str | None = None
    #: Texts per forward pass. Small batches are faster on CPU: less padding and activations that stay in
    #: cache. 512 CISI passages on 2 cores, embeddings/s at 8/16/32/64: PyTorch fp32 83/81/76/67, ONNX int8
    #: 157/152/130/109, PyTorch bf16 205/226/200/168, OpenVINO bf16 236/244/243/239. Raise it on a GPU.
    batch_size: int = Field(16, ge=1)
    #: Run a plain BERT embedder's dense layers on real tokens only, not on padding (see
    #: unirank.models.padding_free): on 2 cores, CISI passages in arrival-order groups of 16 (the model
    #: server's micro-batches) embedded at 78-83 against 66-71 texts/s, sorted ones at 83-88 against
    #: 78-82. Other models and ONNX copies always use sentence-transformers' encode.
    padding_free: bool = True
    #: On ONNX Runtime's OpenVINO provider, run full-window batches on a second session compiled for
    #: one fixed shape (see unirank.models.fixed_shape): faster, for ~150 MB more memory per model.
    openvino_fixed_shape: bool = True
    #: The torch device the embedder and a local reranker run on: ``cpu``, ``cuda``, ``cuda:1``, ``mps``...
    device: str = "cpu"
    #: Threads for embedding one query (0: torch's default). On a quiet 2-core machine two are
    #: faster for long queries (CISI p50 14 vs 21 ms); under load one is far steadier.
    query_threads: int = Field(0, ge=0)

    @field_validator("model")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("embedder.model is empty: name a model, or remove the setting to read each index "
                             "with the model that made it")
        return value

    @field_validator("device")
    @classmethod
    def _torch_device(cls, value: str) -> str:
        return _check_device(value, "embedder.device")

    @property
    def ref(self) -> str:
        """The model to load when no index says otherwise: ``model``, or ``base`` when it is unset."""
        return self.model or "base"


class RerankerSettings(_Section):
    #: A cross-encoder folder, a registry ref (``NAME-rerank@prod``), a hub id, ``base`` (the
    #: bundled bi-encoder rescoring by cosine), or ``none``.
    model: str = "base"
    #: Rerank every search unless told not to. Off by default: the bundled base model is a
    #: bi-encoder and reranking with it lowers nDCG@10 (CISI: hybrid 0.444, +base rerank 0.419).
    enabled: bool = False
    #: How many fused candidates the reranker rescores.
    top_k: int = Field(MAX_RERANK_TOP_K, ge=1)
    #: Pairs per forward pass: a full rerank of top_k candidates is one pass (50 long pairs: 4 % faster
    #: on ONNX int8 than 32 + 18).
    batch_size: int = Field(MAX_RERANK_TOP_K, ge=1)
    #: As embedder.openvino_fixed_shape, for a cross-encoder on the OpenVINO provider.
    openvino_fixed_shape: bool = True
    #: How much the reranker's score counts against the hybrid rank (0: hybrid order, 1: reranker
    #: alone). Unset: the weight training chose on validation queries people wrote (0 without any).
    blend_weight: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("model")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("reranker.model is empty: name a model, `base`, or `none` for no reranker (or remove "
                             "the setting for the default, base)")
        return value

    @field_validator("top_k")
    @classmethod
    def _at_most_limit(cls, value: int) -> int:
        if value > MAX_RERANK_TOP_K:
            raise ValueError(
                f"reranker.top_k is {value}, but at most {MAX_RERANK_TOP_K} candidates can be reranked"
            )
        return value


class ChunkingSettings(_Section):
    #: Tokens per chunk, counted with the embedder's own tokenizer. None: the embedder's whole window
    #: (254 for all-MiniLM-L6-v2), at most 512; a size above the window is cut to it with a warning,
    #: since the model would drop the rest of every chunk.
    size: int | None = Field(None, ge=16)
    overlap: int = Field(64, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "ChunkingSettings":
        if self.size is not None and self.overlap >= self.size:
            raise ValueError(f"chunking.overlap ({self.overlap}) must be smaller than chunking.size ({self.size})")
        return self


class IngestSettings(_Section):
    #: Chunks embedded and committed together; a killed run loses at most one batch of work.
    batch_chunks: int = Field(512, ge=1)
    #: What a text file that is not UTF-8 is read as when it reads as plausible text in it; other files
    #: get charset-normalizer's guess ("auto": always guess). Windows-1252 is what English and Western
    #: European files are written in outside UTF-8 (the web's default for them too), and the guess alone
    #: misreads them: "don't" with a typographic apostrophe as code page 852, "crème" as "crčme". Set
    #: "cp1250" for Central European files, whose letters would otherwise read as Western ones ("ő" as
    #: "õ"). The next ingest reads the text files already in an index again with the new setting.
    legacy_encoding: str = "cp1252"

    @field_validator("legacy_encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        import codecs

        if value == "auto":
            return value
        try:
            codec = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"ingest.legacy_encoding {value!r} is not an encoding Python knows: use one "
                             "such as cp1252, cp1250 or latin-1, or auto") from None
        # Python's hex, base64, rot13 or zlib codecs turn bytes into bytes, and "undefined" reads nothing:
        # each passed here, then stopped the ingest at the first file that was not UTF-8.
        try:
            reads_text = codec._is_text_encoding and bool(b"text".decode(codec.name))  # type: ignore[attr-defined]
        except UnicodeError:
            reads_text = False
        if not reads_text:
            raise ValueError(f"ingest.legacy_encoding {value!r} is not a text encoding (Python's {codec.name!r} "
                             "codec does not read text files): use one such as cp1252, cp1250 or latin-1, or auto")
        return value


class SearchSettings(_Section):
    mode: Literal["bm25", "knn", "hybrid"] = "hybrid"
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)
    #: Reciprocal-rank-fusion constant: larger flattens the rank curve. RRF's usual k and equal weights
    #: hold for every embedder. On CISI other values scored higher (tuned hybrid nDCG@10 up to 0.475
    #: against 0.462 at k=30, knn_weight 3; the base's up to 0.455 against 0.443), but only when they
    #: are picked on the judged queries themselves. Pseudo-queries, which BM25 already ranks well,
    #: would pick BM25-heavy weights, so a corpus-only run has no fair way to tune them.
    rrf_k: int = Field(60, ge=1)
    #: Finite: an inf weight made every hybrid score Infinity (no ranking, and `--json` printed `Infinity`).
    bm25_weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    knn_weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    #: Candidates each retriever contributes to fusion.
    candidates: int = Field(100, ge=1, le=1000)
    #: HNSW search breadth; higher is more exact and slower. Bounded: usearch takes a 32-bit breadth
    #: (2**64 was a TypeError on opening any index, 2**32 "Out of memory!" on a search), and a breadth
    #: above an index's chunk count gains nothing.
    ef_search: int = Field(256, ge=8, le=100_000)
    #: Threads that build the HNSW graph (0: all cores). With more than one the graph depends on their
    #: timing, so the same documents gave different neighbours from one build to the next, and with them
    #: different hard negatives and evaluation figures. One keeps builds reproducible at a cost: on 2
    #: cores the 100k-chunk index of bench/query_latency.py took 125 s against 67 s (embedding that many
    #: chunks takes ~20 min there); search latency was the same (hybrid p95 41 ms either way).
    #: Bounded as ef_search is: usearch takes the count as a C integer.
    build_threads: int = Field(1, ge=0, le=1024)

    @model_validator(mode="after")
    def _some_retriever_weighed(self) -> "SearchSettings":
        """Both weights 0 fused nothing: every hybrid search came back empty, without a word."""
        if self.bm25_weight == 0 and self.knn_weight == 0:
            raise ValueError("search.bm25_weight and search.knn_weight are both 0, so hybrid search would find "
                             "nothing: give one of them a weight above 0, or set search.mode = \"bm25\" or "
                             "\"knn\" to search with one retriever")
        return self


class StorageSettings(_Section):
    """Object storage (S3 and S3-compatible such as Alibaba OSS, MinIO)."""

    endpoint_url: str | None = None
    #: Endpoint for ``oss://`` URIs (e.g. https://oss-cn-hangzhou.aliyuncs.com).
    oss_endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str | None = None
    #: OSS wants virtual-hosted buckets; ``path`` suits local S3-compatible test servers.
    oss_addressing_style: Literal["virtual", "path"] = "virtual"
    #: How long the storage may take to accept a connection and to answer a request, in seconds, and how
    #: many times a request is made in all (a timeout or a dropped connection is tried again). botocore's
    #: own (60 s to answer, 5 attempts), inside s3fs's 5 tries, kept `ingest` silent ~7 minutes on an
    #: endpoint that accepts and never answers. Ingest, `index remove` and `models export` all use them.
    #: At most an hour and 20 attempts: inf failed every request ("cannot convert float infinity to integer")
    #: or, for read_timeout_s, waited for ever on an endpoint that never answers, as did 1e12.
    connect_timeout_s: float = Field(10.0, gt=0, le=3600, allow_inf_nan=False)
    read_timeout_s: float = Field(30.0, gt=0, le=3600, allow_inf_nan=False)
    attempts: int = Field(3, ge=1, le=20)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        return cls._url(value, "storage.endpoint_url")

    @field_validator("oss_endpoint_url")
    @classmethod
    def _oss_endpoint_url(cls, value: str | None) -> str | None:
        return cls._url(value, "storage.oss_endpoint_url")

    @field_validator("region", mode="before")
    @classmethod
    def _blank_region(cls, value: object) -> object:
        """A blank region is unset, boto's default, as it was: ``UNIRANK_STORAGE__REGION=${AWS_REGION}`` with
        the variable unset must not stop every command."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        """A region that is no host label ("eu central") was refused by boto only when the storage was first
        reached, and reported as the endpoint's failure (export) or with no setting named (ingest). boto's
        own rule (botocore.utils.validate_region_name), without importing boto to load the settings."""
        if value is not None and not re.fullmatch(r"(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)", value):
            raise ValueError(f"storage.region {value!r} is not a region name: give one such as eu-central-1 "
                             "(OSS: cn-hangzhou), or remove the setting to use boto's (AWS_DEFAULT_REGION, the "
                             "AWS config file)")
        return value

    @staticmethod
    def _url(value: str | None, setting: str) -> str | None:
        """An endpoint is a URL: http:// or https:// and a host. Aliyun's console lists OSS endpoints without
        a scheme ("oss-cn-hangzhou.aliyuncs.com"), which boto refused only when a source was first read, as
        "Invalid endpoint". The error names ``setting`` and, where the scheme is missing, the URL with one."""
        if value is None:
            return None
        if not value.strip():
            raise ValueError(f"{setting} is empty: give the endpoint's URL (https://HOST), or remove the setting")
        shown = masked_url(value)  # people paste the error into issues
        if value != value.strip():
            raise ValueError(f"{setting} {shown!r} has spaces around it: {shown.strip()}")
        scheme, sep, _ = value.partition("://")
        if not sep:
            local = re.match(r"(localhost|127\.[0-9.]+|\[::1\]|0\.0\.0\.0)(:|/|$)", value)  # a local server: http
            raise ValueError(f"{setting} {shown!r} needs a scheme: {'http' if local else 'https'}://{shown}")
        if scheme.lower() not in ("http", "https"):
            raise ValueError(f"{setting} {shown!r} must start with http:// or https://")
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError as exc:
            raise ValueError(f"{setting} {shown!r} is not a URL ({exc})") from None
        if not parts.hostname:
            raise ValueError(f"{setting} {shown!r} names no host: {scheme}://HOST")
        return value


class ServingSettings(_Section):
    """``unirank serve models``: the HTTP model server."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    #: Worker processes behind the one port; a dead one is restarted.
    replicas: int = Field(1, ge=1)
    #: Registry refs (``NAME@ALIAS``) or ``base``; empty: ``embedder.model`` and ``reranker.model``.
    models: list[str] = Field(default_factory=list)
    #: Micro-batching: items one forward pass runs, and how long the first request waits for company.
    #: Concurrent requests are merged up to ``max_batch_size``, and a larger request runs it at a time,
    #: taking turns with what arrives meanwhile. A query sent during a bulk ingest of 256-token
    #: passages waited 8.9-9.4 s (p95) behind one pass per request, 4.3-4.4 s with turns of 64, 2.1-2.2 s
    #: with 32 and 1.0-1.1 s with 16; the bulk's own throughput moved within the noise (26-29 texts/s
    #: for all four), and 32 clients' one-text requests merge 15-16 at a time (bench/bulk_and_search.py,
    #: bench/serving.py).
    max_batch_size: int = Field(32, ge=1)
    max_wait_ms: float = Field(5.0, ge=0, allow_inf_nan=False)
    #: Request limits (a 4xx beyond them).
    max_inputs: int = Field(256, ge=1)
    max_input_tokens: int = Field(512, ge=1)
    max_rerank_documents: int = Field(100, ge=1)
    #: The largest request body read, in MB: its JSON is parsed on the event loop, so a 170 MB body held
    #: every other client up for seconds. 256 inputs of the longest text read whole (512 tokens at 32
    #: characters a token) are 4 MB.
    max_request_mb: float = Field(16.0, gt=0, allow_inf_nan=False)
    #: Bearer tokens accepted (empty: no auth). A file of ``TOKEN [EXPIRES_ISO8601]`` lines is re-read
    #: when it changes, so a rotation needs no restart.
    api_keys: list[str] = Field(default_factory=list)
    api_keys_file: Path | None = None
    #: Seconds between checks of the registry for a re-pointed alias (hot swap).
    registry_poll_s: float = Field(2.0, gt=0, allow_inf_nan=False)
    #: On SIGTERM or Ctrl-C, seconds the requests in flight get to finish before they are cancelled and
    #: answered 503 ``shutting_down``. A 256-text request of long passages takes about 20 s on 2 CPU cores;
    #: set an orchestrator's grace period (Kubernetes' is 30 s) above this, or it kills the server first.
    graceful_shutdown_s: float = Field(60.0, gt=0, le=3600, allow_inf_nan=False)
    #: How long PyTorch's idle OpenMP threads spin before they sleep (GNU libgomp's GOMP_SPINCOUNT, set
    #: for the server's processes before torch loads). At libgomp's default, 300,000, they spin on cores
    #: the event loop needs. bench/serving.py, one replica on 2 cores, 32 clients, six runs of each
    #: alternating: 0.79-0.88x the in-process throughput (mean 0.825) at 10,000 against 0.75-0.81x (mean
    #: 0.79) at the default, and server CPU per embedding 0.99-1.10x the in-process figure against
    #: 1.10-1.17x; one client's requests kept their speed (0.47-0.50x against 0.44-0.50x). 0 sleeps at
    #: once (OMP_WAIT_POLICY=PASSIVE): 0.83x, but one client's p50 rose from 28 to 40 ms.
    #: A GOMP_SPINCOUNT or OMP_WAIT_POLICY in the environment wins, so set GOMP_SPINCOUNT=300000 there to keep
    #: libgomp's default. (None leaves the variable unset too, but only Python code can pass it: TOML has no
    #: null, and an empty variable is not a number.)
    openmp_spin_count: int | None = Field(10_000, ge=0)

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _keys_file_named(cls, value: object) -> object:
        return _path_named(value, "serving.api_keys_file")

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file_expanded(cls, value: Path | None) -> Path | None:
        return _path_expanded(value)


class RemoteSettings(_Section):
    """How ingestion and search call a model registered with ``--endpoint``."""

    timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    #: A rerank slower than this is dropped and search answers un-reranked (degraded). Reranking 50
    #: passages with the base model takes ~1.8 s on an idle 2-core CPU; ONNX and GPUs are faster.
    rerank_timeout_s: float = Field(5.0, gt=0, allow_inf_nan=False)
    retries: int = Field(2, ge=0)
    backoff_s: float = Field(0.2, ge=0, allow_inf_nan=False)
    max_connections: int = Field(16, ge=1)
    #: Texts sent in one embedding request (the probe text that checks the model is one of them); a
    #: larger ingestion batch is split into several.
    batch_inputs: int = Field(64, ge=1)
    #: Seconds a search process trusts its last check that the endpoint serves the registered model (a
    #: probe text, re-embedded after this long). Ingestion checks every request.
    verify_interval_s: float = Field(10.0, ge=0, allow_inf_nan=False)


class ChatSettings(_Section):
    """The RAG chatbot."""

    #: ``extractive`` (offline, default) or ``openai`` (any OpenAI-compatible chat endpoint).
    answerer: Literal["extractive", "openai"] = "extractive"
    llm_base_url: str | None = None
    llm_model: str | None = None
    #: Name of the environment variable holding the LLM API key (never the key itself).
    llm_api_key_env: str = "OPENAI_API_KEY"
    #: Seconds the endpoint may send nothing: to connect, before its first token, or between two. It
    #: bounds each wait, not the whole answer, so a long answer that keeps streaming is not cut off.
    llm_timeout_s: float = Field(30.0, gt=0, allow_inf_nan=False)
    #: Tokens of retrieved context given to the answerer.
    context_tokens: int = Field(1500, ge=64)
    #: Passages retrieved per question.
    top_k: int = Field(8, ge=1, le=MAX_RERANK_TOP_K)
    #: Fused candidates the reranker rescores per question (fewer than search's 50: it is paid on
    #: every turn, and the base bi-encoder re-embeds each one).
    rerank_candidates: int = Field(10, ge=1, le=MAX_RERANK_TOP_K)
    #: Below this relevance the documents are said not to cover the question. Unset: the
    #: threshold for the reranker's kind below (a cosine and a probability are not on one scale).
    min_score: float | None = Field(None, allow_inf_nan=False)
    #: For the base bi-encoder (cosine of question and passage), from bench/chat_answers.py: sample
    #: handbook questions score 0.30-0.82 (one outlier 0.08), off-topic ones at most 0.20; CISI's
    #: queries at least 0.39, off-topic ones up to 0.36 (a larger corpus has closer near-misses).
    min_score_cosine: float = Field(0.30, allow_inf_nan=False)
    #: For a cross-encoder: its score is a probability (sentence-transformers puts a sigmoid on
    #: the one-logit head; TEI and Cohere rerank endpoints answer in [0, 1] too); 0.5 is even odds. A
    #: remote reranker recorded with ``scores: cosine`` (a bi-encoder served) is held to min_score_cosine.
    min_score_cross_encoder: float = Field(0.5, ge=0, le=1, allow_inf_nan=False)
    #: Sentences the extractive answerer quotes at most.
    max_sentences: int = Field(3, ge=1, le=20)
    #: Index used when a request or command names none.
    index: str | None = None
    #: Conversations, messages and feedback (SQLite); unset: ``data_dir/chat.sqlite``.
    db_path: Path | None = None

    @field_validator("db_path", mode="before")
    @classmethod
    def _db_path_named(cls, value: object) -> object:
        return _path_named(value, "chat.db_path")

    @field_validator("db_path")
    @classmethod
    def _db_path_expanded(cls, value: Path | None) -> Path | None:
        return _path_expanded(value)

    @field_validator("index")
    @classmethod
    def _index_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("chat.index is empty: name an index, or remove the setting to answer from the only "
                             "index (or the one a request or command names)")
        return value


class ApiSettings(_Section):
    """``unirank serve api``: the app server (chat API and web page)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: The largest request body read, in MB (a question with its history is a few KB; a 560 KB question
    #: was read, embedded and stored whole).
    max_request_mb: float = Field(1.0, gt=0, allow_inf_nan=False)


class BackendSettings(_Section):
    kind: Literal["embedded"] = "embedded"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UNIRANK_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    #: Where indexes and models live.
    data_dir: Path = Path(".unirank")
    embedder: EmbedderSettings = EmbedderSettings()
    reranker: RerankerSettings = RerankerSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    ingest: IngestSettings = IngestSettings()
    search: SearchSettings = SearchSettings()
    storage: StorageSettings = StorageSettings()
    backend: BackendSettings = BackendSettings()
    serving: ServingSettings = ServingSettings()
    remote: RemoteSettings = RemoteSettings()
    chat: ChatSettings = ChatSettings()
    api: ApiSettings = ApiSettings()

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_named(cls, value: object) -> object:
        return _path_named(value, "data_dir")

    @field_validator("data_dir")
    @classmethod
    def _data_dir_a_folder(cls, value: Path) -> Path:
        """A data_dir that is a file ended `ingest` and `search` in a NotADirectoryError traceback, and made
        `index list` say there were no indexes."""
        value = _path_expanded(value)
        if value.exists() and not value.is_dir():
            raise ValueError(f"data_dir {value} is a file: name a folder")
        blocking = _nearest_existing(value)
        if blocking is not None and not blocking.is_dir():  # ingest failed with a bare NotADirectoryError
            raise ValueError(f"data_dir {value} cannot be made: {blocking} is a file, not a folder; name a "
                             "folder that exists or can be made")
        return value

    @model_validator(mode="after")
    def _default_search_can_rerank(self) -> "Settings":
        """Settings under which every search that takes the defaults fails loaded without a word."""
        reranker, search = self.reranker, self.search
        if reranker.enabled and reranker.model.strip().lower() == "none":
            raise ValueError("reranker.enabled is true but reranker.model is \"none\", so every search would be "
                             "reranked with no reranker: set reranker.model (base, a cross-encoder, a registry "
                             "ref), or set reranker.enabled = false")
        if reranker.enabled and search.top_k > reranker.top_k:
            raise ValueError(f"reranker.enabled is true but search.top_k ({search.top_k}) is above reranker.top_k "
                             f"({reranker.top_k}), the most candidates reranked, so every search asking for the "
                             f"default number of results would be refused: set search.top_k to at most "
                             f"{reranker.top_k}, raise reranker.top_k (at most {MAX_RERANK_TOP_K}), or set "
                             "reranker.enabled = false")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFileSource(settings_cls, toml_file=config_path()))

    @classmethod
    def load(cls, **overrides: Any) -> "Settings":
        """The settings from ``unirank.toml`` and ``UNIRANK_*``, with ``overrides`` above both (as
        ``Settings.load(data_dir="/srv/data", search={"mode": "bm25"})``), or a ConfigurationError that says
        which key is wrong and how (pydantic's own message names neither the file nor the variable).

        Build settings in code with this, not ``Settings(...)``: that is pydantic's constructor, which raises
        pydantic's ValidationError and checks neither that UNIRANK_CONFIG exists nor mistyped variables."""
        named = os.environ.get("UNIRANK_CONFIG")
        if named and not Path(named).exists():  # a typo in the path would silently give the defaults
            raise ConfigurationError(f"UNIRANK_CONFIG names {named}, which does not exist: fix the path, or unset "
                                     "UNIRANK_CONFIG to read ./unirank.toml (when there is one).")
        if config_path().is_dir():  # read as no file at all: the defaults, silently
            which = f"UNIRANK_CONFIG names {named}" if named else f"{config_path()} is"
            raise ConfigurationError(f"{which}, which is a folder, not a settings file: name the file itself "
                                     f"(e.g. {Path(config_path(), 'unirank.toml')}).")
        unknown = _unknown_env_sections()
        if unknown:
            raise _unknown_variables(unknown)
        try:
            settings = cls(**overrides)
        except ValidationError as exc:
            errors = exc.errors()
            problems = [_describe_error(error) for error in errors]
            setting = _setters([location for error in errors for location in _locations(error)], overrides)
            raise ConfigurationError(f"Invalid settings ({_sources(setting)}):\n"
                                     + "\n".join(f"  - {p}" for p in problems)) from None
        except SettingsError as exc:  # a variable the environment source could not parse (a list, say)
            raise ConfigurationError(_describe_env_error(exc)) from None
        except ValueError as exc:  # unirank.toml that is not TOML
            raise ConfigurationError(f"Invalid settings: {config_path()} is not valid TOML ({exc}).") from None
        except OSError as exc:  # another user's file (mode 600), an I/O error: a raw traceback, exit 1
            raise _unreadable_file(exc) from None
        # After loading: the variable chat.llm_api_key_env names (UNIRANK_CHAT_LLM_API_KEY, say) is a key.
        near_misses = _near_miss_variables(exempt=settings.chat.llm_api_key_env)
        if near_misses:
            raise _unknown_variables(near_misses)
        return settings

    @property
    def indexes_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def chat_db_path(self) -> Path:
        return self.chat.db_path or self.data_dir / "chat.sqlite"


class _TomlFileSource(TomlConfigSettingsSource):
    """The TOML file, with its relative paths made relative to the file's folder rather than the cwd
    (a relative path in an environment variable stays relative to the cwd, as a shell user expects)."""

    #: The path settings: (section or None, key).
    _PATH_KEYS = ((None, "data_dir"), ("serving", "api_keys_file"), ("chat", "db_path"))
    #: The model settings (a name or a list of names). Only a value written as a relative path, ``./NAME`` or
    #: ``../NAME``, is a folder read from the file's folder: others are ``base``, registry refs
    #: (``NAME@prod``) and hub ids (``ORG/NAME``), which a folder under the cwd could not be told apart from.
    _MODEL_KEYS = (("embedder", "model"), ("reranker", "model"), ("serving", "models"))

    def __call__(self) -> dict:
        values = super().__call__()
        folder = config_path().resolve().parent
        for section, key in self._PATH_KEYS:
            table = values.get(section) if section else values
            if isinstance(table, dict) and isinstance(table.get(key), str) and table[key].strip():  # "": refused
                path = Path(table[key]).expanduser()
                table[key] = str(path if path.is_absolute() else folder / path)
        models_read_from(folder, values)
        return values


def models_read_from(folder: Path, values: dict) -> None:
    """The model settings in ``values`` (a settings dict) written ``./NAME`` or ``../NAME`` made paths in
    ``folder``: the file's folder for unirank.toml, the cwd for `config show` (a variable's is read from there)."""
    for section, key in _TomlFileSource._MODEL_KEYS:
        table = values.get(section)
        if not isinstance(table, dict):
            continue
        value = table.get(key)
        if isinstance(value, str):
            table[key] = _model_from(folder, value)
        elif isinstance(value, list):
            table[key] = [_model_from(folder, v) if isinstance(v, str) else v for v in value]


def _model_from(folder: Path, model: str) -> str:
    """``model`` as written in the settings file in ``folder``: ``./NAME`` and ``../NAME`` are read from there."""
    if model in (".", "..") or model.startswith(("./", "../", ".\\", "..\\")):
        return str(folder / model)
    return model


def _path_named(value: object, setting: str) -> object:
    """An empty path setting is refused: as a Path it is ``.``, the current directory, which no one means."""
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{setting} is empty: name a path (`.` for the current directory), or remove the "
                         "setting for its default")
    return value


def _nearest_existing(path: Path) -> Path | None:
    """``path`` or the nearest of its parents that exists (None when none can be looked at)."""
    for candidate in (path.absolute(), *path.absolute().parents):
        try:
            if candidate.exists():
                return candidate
        except OSError:  # not allowed to look: the folder's own use says what is wrong
            return None
    return None


def _path_expanded(value: Path | None) -> Path | None:
    """``~`` is the home folder in every path setting, from a variable (``UNIRANK_DATA_DIR=~/data``) as from
    unirank.toml, not a folder named ``~``."""
    return value.expanduser() if value is not None else None


#: Device strings taken without importing torch (which takes a second and a half); torch.device is asked
#: about the others.
_COMMON_DEVICE = re.compile(r"(cpu|cuda|mps|xpu|hip|meta)(:(0|[1-9][0-9]*))?")


def _check_device(value: str, setting: str) -> str:
    """``value`` when torch.device takes it (``cpu``, ``cuda``, ``cuda:1``, ``mps``), else a ValueError that
    names ``setting``: a typo (``gpu``, ``cuda 1``) surfaced only when a model first loaded."""
    if _COMMON_DEVICE.fullmatch(value):
        return value
    try:
        import torch
    except ImportError:  # pragma: no cover - a hard dependency; loading a model would say it is missing
        return value
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.device("mkldnn") warns that it is deprecated
            torch.device(value)
    except (RuntimeError, ValueError, TypeError) as exc:
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{setting} {value!r} is not a device torch knows ({said}): use cpu, cuda, cuda:N "
                         "or mps") from None
    return value


def config_path() -> Path:
    return Path(os.environ.get("UNIRANK_CONFIG") or "unirank.toml")


def _sources(places: list[str] | None = None) -> str:
    """Where the settings came from, for an error's first line: ``places`` (the file and the variables that
    set what is wrong), else the file and every setting variable."""
    if not places:
        places = ([str(config_path())] if config_path().is_file() else []) + _setting_variables()
    if not places:
        return f"no {config_path()} and no UNIRANK_* variables"
    return "read from " + ", ".join(places)


def _locations(error: Any) -> list[tuple[str, ...]]:
    """The settings an error is about: its location, or, for a check across sections (which has none), the
    ``section.key`` settings its message names; without them it blamed every source but the real one."""
    location = tuple(str(part) for part in error.get("loc", ()))
    if location:
        return [location]
    sections = set(Settings.model_fields)
    return [(section, key) for section, key in re.findall(r"\b([a-z_]+)\.([a-z_]+)\b", str(error.get("msg", "")))
            if section in sections]


def _setters(locations: list[tuple[str, ...]], overrides: dict[str, Any] | None = None) -> list[str]:
    """The file and the variables that set the settings at ``locations`` (pydantic's error locations, e.g.
    ``("search", "rrf_k")``, or ``("chunking",)`` for a check across a section), file first, then the
    ``overrides`` given to ``Settings.load``. A setting an override sets came from it (it wins over both); one
    that a variable sets came from the variable (it wins over the file); a section's keys, from any. Empty
    when none is found (the header then names every source)."""
    variables = {v: tuple(v[len("UNIRANK_"):].lower().split("__")) for v in _setting_variables()}
    file_values = _file_values()
    from_file, from_overrides, named = False, False, set()
    for loc in locations:
        loc = tuple(part.lower() for part in loc)
        if not loc:
            continue
        if overrides and _holds(overrides, loc):
            from_overrides = True
            continue
        covering = {v for v, path in variables.items() if loc[:len(path)] == path}  # the value, or a list it is in
        below = {v for v, path in variables.items() if len(path) > len(loc) and path[:len(loc)] == loc}
        named |= covering | below
        if not covering and _holds(file_values, loc):
            from_file = True
    return ([str(config_path())] if from_file else []) + sorted(named) + (
        ["the arguments to Settings.load"] if from_overrides else [])


def _unreadable_file(exc: OSError) -> ConfigurationError:
    variable = "fix UNIRANK_CONFIG" if os.environ.get("UNIRANK_CONFIG") else "set UNIRANK_CONFIG"
    return ConfigurationError(f"Invalid settings: {config_path()} cannot be read ({exc.strerror or exc}): make it "
                              f"readable by this user, or {variable} to name a settings file it can read.")


def _file_values() -> dict:
    path = config_path()
    if not path.is_file():
        return {}
    import tomllib

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _holds(values: object, loc: tuple[str, ...]) -> bool:
    """Whether the file's table sets something at ``loc`` (or the value that holds it: a list's items)."""
    for part in loc:
        if not isinstance(values, dict):
            return True  # a list or scalar the error is inside of
        match = next((k for k in values if str(k).lower() == part), None)
        if match is None:
            return False
        values = values[match]
    return True


#: Settings whose value `config show` and an error leave out: people paste both into issues.
SECRET_SETTINGS = {("serving", "api_keys"), ("storage", "secret_access_key")}
#: Settings holding a URL, whose user and password (https://USER:PASSWORD@HOST) are shown as ``***``.
URL_SETTINGS = {("chat", "llm_base_url"), ("storage", "endpoint_url"), ("storage", "oss_endpoint_url")}


def masked_url(url: str) -> str:
    """``url`` with the user and password before its host as ``***`` (``https://***@HOST/v1``): a secret,
    as a key is. Read as a client reads the host part (up to the first /, ? or #), with or without a scheme."""
    start = url.find("://") + 3 if "://" in url else 0
    end = min((i for i in (url.find(c, start) for c in "/?#") if i != -1), default=len(url))
    at = url.rfind("@", start, end)
    return url if at == -1 else url[:start] + "***" + url[at:]


def _describe_error(error: dict) -> str:
    loc = [str(p) for p in error.get("loc", ())]
    where = ".".join(loc)
    if error.get("type") == "extra_forbidden":
        model: type[BaseModel] = Settings
        for part in loc[:-1]:
            field = model.model_fields.get(part)
            annotation = field.annotation if field else None
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                break
            model = annotation
        close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
        known = f"did you mean {'.'.join(loc[:-1] + close[:1])}?" if close else \
            f"known keys there: {', '.join(model.model_fields)}"
        return f"unknown setting {where} ({known})"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    if tuple(loc[:2]) in SECRET_SETTINGS:
        shown = " (the value is hidden)"
    elif tuple(loc[:2]) in URL_SETTINGS and shown:  # a URL in a list, say: its user and password hidden
        shown = f" (got {masked_url(repr(got))})"
    message = error.get("msg", "")
    if error.get("type") == "value_error":  # our own validators' messages name the key and the value already
        return message.removeprefix("Value error, ")
    return f"{where}: {message}{shown}"


def _setting_variables() -> list[str]:
    """The ``UNIRANK_*`` variables that are settings: ``SECTION__KEY`` ones, ``UNIRANK_DATA_DIR`` and a whole
    section's (``UNIRANK_SEARCH='{"rrf_k": 30}'``). Tools keep their own ``UNIRANK_*`` variables
    (``UNIRANK_CONFIG``, ``UNIRANK_ES_URL``)."""
    fields = {name.upper() for name in Settings.model_fields}
    return sorted(k for k in os.environ if k.upper().startswith("UNIRANK_")
                  and ("__" in k or k.upper()[len("UNIRANK_"):] in fields))


#: The project's own ``UNIRANK_*`` variables that are not settings.
_OTHER_VARIABLES = frozenset({"UNIRANK_CONFIG", "UNIRANK_ES_URL", "UNIRANK_QUICKSTART_PORT"})


def _sections() -> dict[str, type[BaseModel]]:
    return {name: field.annotation for name, field in Settings.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}


def _unknown_variables(problems: list[tuple[str, str]]) -> ConfigurationError:
    """The error for (variable, what is wrong with it) problems: its header names those variables alone, since
    the others are not what is wrong."""
    return ConfigurationError(f"Invalid settings ({_sources([v for v, _ in problems])}):\n"
                              + "\n".join(f"  - {p}" for _, p in problems))


def _near_miss_variables(exempt: str = "") -> list[tuple[str, str]]:
    """A variable without ``__`` is not a setting unless it names a top-level one, and pydantic-settings ignores
    it; but ``UNIRANK_SEARCH_RRF_K`` (one underscore) and ``UNIRANK_DATADIR`` are settings mistyped, not tools'
    own variables. Those are refused: a section and one of its keys (or close to one) joined by one underscore,
    or a name close to a top-level setting; but not ``exempt``, the variable ``chat.llm_api_key_env`` names.
    Each problem is (the variable, what is wrong with it)."""
    fields = list(Settings.model_fields)
    problems = []
    for variable in sorted(os.environ):
        upper = variable.upper()
        if not upper.startswith("UNIRANK_") or "__" in upper or upper in _OTHER_VARIABLES or \
                upper == exempt.upper():
            continue
        name = upper[len("UNIRANK_"):].lower()
        if name in fields:
            continue
        guess, why = None, ""
        for section, model in _sections().items():
            if name.startswith(section + "_"):
                close = difflib.get_close_matches(name[len(section) + 1:], list(model.model_fields), n=1,
                                                  cutoff=0.75)
                if close:
                    guess, why = f"UNIRANK_{section.upper()}__{close[0].upper()}", \
                        ": a section and its key are joined by a double underscore"
        if guess is None:
            close = difflib.get_close_matches(name, fields, n=1, cutoff=0.8)
            if close:
                guess = f"UNIRANK_{close[0].upper()}"
        if guess:
            problems.append((variable, f"unknown setting {variable}{why} (did you mean {guess}?)"))
    return problems


def _unknown_env_sections() -> list[tuple[str, str]]:
    """``UNIRANK_SERACH__RRF_K`` names no section, and pydantic-settings would ignore it without a word
    (a mistyped key inside a section is refused like one in unirank.toml). Variables without ``__``
    are _near_miss_variables' to check. Each problem is (the variable, what is wrong with it)."""
    sections = list(_sections())
    problems = []
    for variable in _setting_variables():
        head, sep, rest = variable.partition("__")
        if not sep:  # UNIRANK_DATA_DIR
            continue
        section = head[len("UNIRANK_"):].lower()
        if section not in sections:
            close = difflib.get_close_matches(section, sections, n=1)
            hint = f"did you mean UNIRANK_{close[0].upper()}__{rest}?" if close else \
                f"sections: {', '.join(sections)}"
            problems.append((variable, f"unknown setting {variable}: there is no [{section}] section ({hint})"))
    return problems


def _describe_env_error(exc: SettingsError) -> str:
    """pydantic-settings names the section whose variables it could not parse (``field "serving"``): the
    variables named are those of it that should hold JSON and do not, else all of that section's."""
    match = re.search(r'field "(\w+)"', str(exc))
    field = match.group(1).lower() if match else None
    paths = {v: tuple(v[len("UNIRANK_"):].lower().split("__")) for v in _setting_variables()}
    named = [v for v, path in paths.items() if path[0] == field]
    bad = [v for v in named if _takes_json(paths[v]) and not _is_json(os.environ[v])]
    which = ", ".join(bad or named) or "a UNIRANK_* variable"
    return (f"Invalid settings: {which} could not be read ({exc.__cause__ or exc}). A list or table setting "
            'takes JSON in the environment, e.g. UNIRANK_SERVING__API_KEYS=\'["key-1", "key-2"]\'.')


def _takes_json(path: tuple[str, ...]) -> bool:
    """Whether the setting at ``path`` (``("serving", "api_keys")``, or a section) is a list, table or section,
    which the environment gives as JSON."""
    model: type[BaseModel] | None = Settings
    annotation: object = None
    for part in path:
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return False
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return _complex(annotation)


def _complex(annotation: object) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_complex(a) for a in typing.get_args(annotation) if a is not type(None))
    return (typing.get_origin(annotation) or annotation) in (list, dict, set, tuple, frozenset) or (
        isinstance(annotation, type) and issubclass(annotation, BaseModel))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
