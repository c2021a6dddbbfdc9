"""Request and response bodies, in the shapes existing clients already send and parse."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import Self

from unirank.request_errors import lone_surrogate_at, lone_surrogate_message

#: TEI's ``truncation_direction``, shared by its embed and rerank requests.
TruncationDirection = Annotated[Literal["Right", "right", "Left", "left"], Field(
    description="Only Right (cut at the end) is served; Left is refused with 400.")]


class _Request(BaseModel):
    #: Unknown fields (``user``, SDK extras) are accepted and ignored, as the upstream APIs do. Strict:
    #: ``"truncate": "yes"`` or ``"top_n": "5"`` is a 422 naming the field, not a guess at what was meant.
    model_config = ConfigDict(extra="ignore", strict=True)

    @model_validator(mode="after")
    def _refuse_lone_surrogates(self) -> Self:
        """JSON can escape half a UTF-16 pair (``"\\ud800"``), which is no text: the tokenizer raised
        TypeError on it (a plain-text 500), and an error message quoting it could not be encoded."""
        where = lone_surrogate_at(self, "")
        if where is not None:
            raise PydanticCustomError("lone_surrogate", lone_surrogate_message(where))
        return self



# -- OpenAI: POST /v1/embeddings --------------------------------------------------------------------
class EmbeddingsRequest(_Request):
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts. Token arrays are not accepted.")
    model: str | None = Field(None, description="A served model id; omitted: the default embedder.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="Must equal the model's dimensions if given.")
    truncate: bool = Field(False, description="unirank extension: cut over-long texts instead of refusing.")


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


# -- text-embeddings-inference: POST /embed, POST /rerank -------------------------------------------
#: TEI's ``truncate`` is an Option<bool>: its clients may send null, which is false.
_TEI_TRUNCATE = Field(False, description="Cut over-long texts instead of refusing them; null is false, as in TEI.")


class EmbedRequest(_Request):
    inputs: str | list[str]
    truncate: bool | None = _TEI_TRUNCATE
    normalize: bool = Field(True, description="Vectors are always unit length (unirank searches by cosine): "
                                              "false is refused with 400.")
    truncation_direction: TruncationDirection = "Right"
    prompt_name: str | None = Field(None, description="unirank's models have no named prompts: refused with 400.")
    model: str | None = Field(None, description="unirank extension: a served model id.")


class TeiRerankRequest(_Request):
    query: str
    texts: list[str]
    truncate: bool | None = _TEI_TRUNCATE
    raw_scores: bool = Field(False, description="Cross-encoder logits instead of sigmoid probabilities.")
    return_text: bool = False
    truncation_direction: TruncationDirection = "Right"
    model: str | None = Field(None, description="unirank extension: a served model id.")


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


# -- Cohere / Jina: POST /v1/rerank -----------------------------------------------------------------
class RerankDocument(BaseModel):
    text: str


class CohereRerankRequest(_Request):
    query: str
    documents: list[str | RerankDocument]
    model: str | None = None
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    max_tokens_per_doc: int | None = Field(None, ge=1, description="Cohere v2: each document is cut to its "
                                           "first N tokens before it is ranked.")
    rank_fields: list[str] | None = Field(None, description="Only a document's `text` is ranked: any other "
                                          "field is refused with 400.")


class CohereRerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class CohereRerankResponse(BaseModel):
    id: str
    model: str
    results: list[CohereRerankResult]
    meta: dict
    usage: dict


# -- models, health ---------------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    #: When the model's files were written (Unix seconds), as OpenAI's ``created``.
    created: int
    owned_by: str = "unirank"
    role: str
    version: str
    dims: int | None
    max_seq_length: int = Field(description="Tokens one input may hold here: the model's window, or "
                                            "serving.max_input_tokens if smaller. Chunk texts to it.")
    max_inputs: int = Field(description="Texts one embedding request may hold (serving.max_inputs).")
    max_rerank_documents: int = Field(description="Documents one rerank request may hold "
                                                  "(serving.max_rerank_documents).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: str
    ready: bool
    detail: str | None = None


class FailedSwapInfo(BaseModel):
    """A hot swap that failed: ``model``'s alias names ``version``, which failed to load (``error``), so
    ``serving`` still answers. Not tried again until the alias moves. ``version`` is null when what the
    model names could not be found (its folder or registry entry is gone): tried again every poll."""

    model: str
    version: str | None
    serving: str
    error: str


class Readiness(Health):
    """/ready's body: /health's, with the hot swaps that failed (prod naming a version that cannot load)."""

    failed_swaps: list[FailedSwapInfo] = []


# -- errors -----------------------------------------------------------------------------------------
class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str


class OpenAIError(BaseModel):
    """Errors under ``/v1/``: OpenAI's shape, which its SDK raises as typed exceptions."""

    error: OpenAIErrorDetail


class TeiError(BaseModel):
    """Errors of ``/embed`` and ``/rerank``: text-embeddings-inference's shape."""

    error: str
    error_type: str


_ERROR_MEANINGS = {
    400: "Refused input: an empty text, token arrays, an option that is not served, `dimensions` other than "
         "the model's, or a reranker asked to embed.",
    401: "No bearer token, or one that is not (or no longer) valid, while keys are configured.",
    404: "No model of that id is served here.",
    413: "Too many inputs or documents, or a text over the token limit (send `truncate: true` to cut it).",
    422: "The body is not JSON or does not fit the schema; the message names the field.",
    503: "The models are still loading (retry after `Retry-After` seconds), failed to load (`load_failed`: "
         "the message says why), or the server is shutting down and stopped the request (`shutting_down`: "
         "send it again after `Retry-After` seconds).",
}


def error_responses(shape: type[OpenAIError] | type[TeiError], *statuses: int) -> dict[int | str, dict]:
    """The error answers a route gives, for its OpenAPI ``responses``: without them the spec showed
    only FastAPI's own 422 body, which this server never sends."""
    return {status: {"model": shape, "description": _ERROR_MEANINGS[status]} for status in statuses}
