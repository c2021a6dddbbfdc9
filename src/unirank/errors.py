"""Every exception unirank raises on purpose, in one place (as httpx does).

Each message tells the user what to do next; catch :class:`UnirankError` to handle them all.
"""

from __future__ import annotations

from unirank.search.types import ModelSignature, is_folder_version


class UnirankError(Exception):
    """Base class for all unirank errors."""


class ConfigurationError(UnirankError):
    """Settings are missing or contradictory."""


class IndexNotFoundError(UnirankError):
    def __init__(self, name: str, available: list[str] | None = None) -> None:
        hint = f" Available indexes: {', '.join(available)}." if available else ""
        invalid = _invalid_index_name(name)
        # Told to `ingest --index -x`, a user got that refused as an invalid name.
        todo = f" {invalid} No index can have this name." if invalid else \
            f" Create it with `unirank ingest SOURCE --index {name}`."
        super().__init__(f"Index {name!r} does not exist.{hint}{todo}")
        self.name = name


def _invalid_index_name(name: str) -> str | None:
    """Why no index can be made with ``name`` (ingest refuses it), or None when one can."""
    from unirank.search.backend import require_valid_index_name  # it imports this module

    try:
        require_valid_index_name(name)
    except (InvalidQueryError, TypeError) as exc:
        return str(exc)
    return None


class IndexCorruptedError(UnirankError):
    """An index's files cannot be read (a truncated or overwritten store, a version folder gone)."""

    def __init__(self, name: str, cause: str) -> None:
        super().__init__(
            f"Index {name!r} is damaged and cannot be read ({cause}). Delete it with `unirank index delete "
            f"{name}` and ingest its sources again."
        )
        self.name = name
        self.cause = cause


def _how_to_use(index_model: str) -> str:
    """How to read an index with the model that made it, for each kind of model reference."""
    name, _, version = index_model.rpartition("@")
    if is_folder_version(version):  # a folder model: its name, and a digest of its files
        return f"set embedder.model (or ingest --model) to the path of the model folder {name!r} it was made with"
    setting = {"base": "base", "hub": name}.get(version, index_model)
    use = (f"embedder.model = \"{setting}\" in unirank.toml (or UNIRANK_EMBEDDER__MODEL={setting}, or "
           f"ingest --model {setting})")
    if version != "hub":
        use += (", or leave embedder.model unset, and each index is read with the model that made it "
                "if that is `base` or registered here")
    return use


class DimensionMismatchError(UnirankError):
    """The embedding model's vector size differs from the one the index was built with."""

    def __init__(self, index: str, index_model: str, index_dims: int, model: str, model_dims: int) -> None:
        # ``model`` names an embedder, or describes what was handed in ("the query vector")
        what = f"{model} has" if model.startswith("the ") else f"the embedder {model} produces"
        super().__init__(
            f"Index {index!r} was built with {index_model} ({index_dims} dimensions), but {what} "
            f"{model_dims} dimensions. Nothing was searched or written. Use the index's model: "
            f"{_how_to_use(index_model)}. Or re-embed the index with this one: unirank index rebuild {index} "
            f"--model MODEL; or ingest into a new index."
        )
        self.index_dims = index_dims
        self.model_dims = model_dims


class EmbedderMismatchError(UnirankError):
    """The index's vectors were made by another model: same size, but not comparable."""

    def __init__(self, index: str, index_model: str, model: str) -> None:
        super().__init__(
            f"Index {index!r} holds vectors made by {index_model}, but the embedder is {model}: vectors of "
            f"two models are not comparable, so nothing was searched or written. Use the index's model: "
            f"{_how_to_use(index_model)}. Or re-embed the index with this one: unirank index rebuild {index} "
            f"--model MODEL."
        )
        self.index_model = index_model
        self.model = model


class ChunksTooLongError(UnirankError):
    """An index's chunks, cut for one model's window, are longer than another model's: re-embedded as
    stored, their vectors would be made from cut text."""

    def __init__(self, index: str, model: str, window: int, too_long: int, total: int, longest: int) -> None:
        super().__init__(
            f"{too_long} of {total} chunks of index {index!r} are longer than the {window}-token window of "
            f"{model} (the longest is {longest} tokens): re-embedded as stored, their vectors would be made "
            f"from cut text, so nothing was re-embedded. Ingest the documents again with this model, which "
            f"cuts them to its window: unirank ingest SOURCE --index NEW_INDEX --model MODEL."
        )
        self.too_long = too_long
        self.total = total


class InvalidQueryError(UnirankError):
    """A search request that cannot be answered as asked (empty query, bad filter, bad mode)."""


class RerankLimitError(InvalidQueryError):
    """A reranked search asking for more results than ``reranker.top_k`` candidates: an invalid query too,
    so one ``except InvalidQueryError`` catches every search refused for its arguments."""

    def __init__(self, requested: int, limit: int) -> None:
        from unirank.settings import MAX_RERANK_TOP_K  # settings imports this module

        # A limit below the most a cross-encoder may rescore is the reranker.top_k setting, which can be raised.
        setting = f" (the reranker.top_k setting, which can be raised to {MAX_RERANK_TOP_K})" \
            if limit < MAX_RERANK_TOP_K else ""
        raise_it = f", set reranker.top_k to {min(requested, MAX_RERANK_TOP_K)}" if limit < MAX_RERANK_TOP_K else ""
        super().__init__(
            f"Reranking {requested} candidates was requested, but at most {limit} can be reranked{setting}. "
            f"Ask for top_k <= {limit}{raise_it}, or search without reranking (--no-rerank; \"rerank\": false over "
            "HTTP)."
        )
        self.requested = requested
        self.limit = limit


class SourceError(UnirankError):
    """A document source (folder, file, bucket) cannot be listed or read."""


class ExportError(UnirankError):
    """A model version cannot be copied to the folder or object storage it was exported to."""


class ParseError(UnirankError):
    """One document cannot be parsed; ingestion reports it and carries on with the others."""


class UnsupportedFormatError(ParseError):
    pass


class DuplicateDocumentError(UnirankError):
    """Two sources produced the same document id (e.g. two JSONL files with one ``_id``)."""


class ModelLoadError(UnirankError):
    """A model path or name cannot be loaded here."""


class ModelNotFoundError(UnirankError):
    """A registry name, version or alias that does not exist."""


class PromotionRefusedError(UnirankError):
    """The candidate is worse than the model it would replace on the held-out evaluation."""


class RegistrationError(UnirankError):
    """A model cannot be registered as asked: a name the registry cannot take (invalid, reserved, or
    holding the other role), an unknown role, a folder that is not a model, or files already registered."""


class InvalidModelReferenceError(UnirankError):
    """A model reference or alias in a form the command cannot take (a delete by alias, a promotion
    without a version, an alias that reads as a version number)."""


class AliasInUseError(UnirankError):
    """A version an alias names cannot be deleted: point the alias elsewhere first."""


class AliasMovedError(UnirankError):
    """Another command moved the alias while a promotion was checked against it; nothing changed."""


class LeakageError(UnirankError):
    """An evaluation would score a model on queries it was trained on."""


class EvaluationDataError(UnirankError):
    """Queries and judgments that cannot measure anything: no query is judged, or the judged documents
    are not in the index evaluated."""


class TrainingError(UnirankError):
    """Training cannot start or continue with the given data."""


class TrainingRunningError(TrainingError):
    """Another process is running the same training (same name and inputs) in the same run folder."""

    def __init__(self, run_dir: str) -> None:
        super().__init__(
            f"Another `unirank train` is running this same training in {run_dir}: two at once overwrite each "
            "other's checkpoints. Wait for it to finish (a run started then reuses its result), or give this "
            "one another --name."
        )
        self.run_dir = run_dir


class IndexLockedError(UnirankError):
    """Another process is writing to the index; ``writer`` says which kind, for a delete it would break."""

    def __init__(self, name: str, writer: str | None = None) -> None:
        if writer:
            super().__init__(
                f"Index {name!r} is being written by {writer}: deleting it now would make that run fail. Wait "
                "for it to finish, or stop it, then delete the index."
            )
        else:
            super().__init__(
                f"Index {name!r} is being written by another process. Wait for it to finish, then retry."
            )
        self.name = name


class IndexChangedError(UnirankError):
    """The index kept changing to another model's vectors while it was read."""


class IndexSwitchedError(UnirankError):
    """A write of one model's vectors into an index that now holds another model's (an ``index rebuild``
    switched it meanwhile): refused before anything of the write lands."""

    def __init__(self, index: str, written_for: ModelSignature, now: ModelSignature) -> None:
        super().__init__(
            f"Index {index!r} was switched to {now} by `unirank index rebuild` while this run was writing "
            f"vectors of {written_for}: two models' vectors are not comparable, so this batch was not written. "
            f"What the run committed before the switch was re-embedded into the new version by the rebuild. "
            f"Run the same ingest again to finish with {now}: {_how_to_use(str(now))}.")
        self.index = index
        self.written_for = written_for
        self.now = now


class RebuildRunningError(UnirankError):
    """Another ``index rebuild`` of the same index holds its rebuild lock."""

    def __init__(self, index: str, pid: int | None = None) -> None:
        by = f" (pid {pid})" if pid else ""
        super().__init__(f"A rebuild of {index!r} is already running{by}; wait for it to finish (then `unirank "
                         f"index info {index}` shows the model it switched to), and rebuild again only if needed.")
        self.index = index
        self.pid = pid


class RebuildFailedError(UnirankError):
    """A rebuild failed in a library below unirank (the full-text or vector index, the embedder): the
    index is left as it was."""


class RemoteModelError(UnirankError):
    """A model endpoint failed, timed out, or answered with something unusable."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        #: The endpoint's HTTP status, when it answered with an error.
        self.status_code = status_code


class InputRefusedError(RemoteModelError):
    """A model endpoint refused the texts sent (HTTP 400, 413 or 422: too long, malformed), not itself
    failing: the file that holds them fails, and an ingest goes on with the others."""


class AuthenticationError(UnirankError):
    """A request carried no valid token."""


class AnswererError(UnirankError):
    """The chat answerer (e.g. an LLM endpoint) failed; the message says how to fix it."""


class RequestTooLargeError(UnirankError):
    """A request body over the server's limit (``serving.max_request_mb``, ``api.max_request_mb``)."""


class ServingRequestError(UnirankError):
    """A model-server request that cannot be served as asked; carries the HTTP status to answer with."""

    def __init__(self, message: str, *, status_code: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class ModelNotReadyError(ServingRequestError):
    def __init__(self, load_error: str | None = None) -> None:
        if load_error:  # a retry cannot help: say why, not "still loading" for ever
            super().__init__(f"The models failed to load, so this server cannot answer: {load_error} Fix the "
                             "model and restart the server.", status_code=503, code="load_failed")
        else:
            super().__init__("Models are still loading; retry shortly (GET /ready says when).",
                             status_code=503, code="not_ready")


class ConversationNotFoundError(UnirankError):
    """A chat session, message or citation that does not exist."""


class ConversationStoreClosedError(UnirankError):
    """A :class:`~unirank.chat.ConversationStore` used after ``close()`` (or after its ``with`` block)."""

    def __init__(self, path: object) -> None:
        super().__init__(f"The conversation store {path} is closed: use it before close() (inside its `with` "
                         "block), or open it again with ConversationStore(path).")
        self.path = path


class OptimizationRefusedError(UnirankError):
    """An ONNX/int8 copy of a model lost more quality than allowed; nothing was registered."""
