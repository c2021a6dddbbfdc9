"""The models one server process serves, loaded once and swapped when a registry alias moves."""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unirank.errors import ModelLoadError, ModelNotFoundError, ServingRequestError, UnirankError
from unirank.models.embedder import Embedder
from unirank.models.loading import (BASE_ALIAS, is_cross_encoder, load_embedder, load_reranker, registry_version,
                                    resolve_model_path)
from unirank.models.reranker import BiEncoderReranker, Reranker
from unirank.registry.store import ModelRegistry, parse_reference
from unirank.search.types import is_folder_version
from unirank.settings import ServingSettings, Settings

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    """One loaded model version. An embedder can also rerank (by cosine), as ``reranker.model = base`` does."""

    id: str
    role: str
    version: str
    reranker: Reranker
    embedder: Embedder | None
    #: The server's own copy for counting and cutting inputs on the event loop: each call to a fast
    #: tokenizer resets its truncation settings, so it is not shared with the thread running the model.
    tokenizer: Any
    max_seq_length: int
    #: OpenAI's ``created``: when the model's files were written (Unix seconds); 0 when there are none here.
    created: int = 0

    def __post_init__(self) -> None:
        self.tokenizer = copy.deepcopy(self.tokenizer)

    @property
    def dims(self) -> int | None:
        return self.embedder.dims if self.embedder is not None else None

    @property
    def is_cross_encoder(self) -> bool:
        return self.embedder is None

    @property
    def label(self) -> str:
        """The id, with the version an alias stands for: ``hb-embed@prod (version 3)``; ``base``."""
        exact = (self.version in (self.id, "hub") or is_folder_version(self.version)
                 or self.id.endswith(f"@{self.version}"))
        return self.id if exact else f"{self.id} (version {self.version})"

    def token_limit(self, limits: ServingSettings) -> int:
        """The tokens one input may hold here: the model's window, or ``serving.max_input_tokens`` if smaller."""
        return min(self.max_seq_length, limits.max_input_tokens)

    def describe(self, limits: ServingSettings) -> dict[str, Any]:
        """The model card: ``max_seq_length`` is the window a client should chunk to (the effective one,
        not the model's own when the server allows fewer tokens), with the server's per-request limits."""
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "unirank", "role": self.role,
                "version": self.version, "dims": self.dims, "max_seq_length": self.token_limit(limits),
                "max_inputs": limits.max_inputs, "max_rerank_documents": limits.max_rerank_documents}


class ModelCatalog:
    def __init__(self, settings: Settings, refs: list[str]) -> None:
        if not refs:
            raise ServingRequestError("No models to serve: pass --model REF (e.g. base or NAME@prod).")
        self.settings = settings
        self.refs = list(dict.fromkeys(refs))
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()

    # -- loading and hot swap -------------------------------------------------------------------
    def check_refs(self) -> dict[str, str]:
        """Each ref's version, without loading it: a ref that names nothing is refused before a server starts."""
        return {ref: self._resolve_version(ref) for ref in self.refs}

    def load_all(self) -> None:
        for ref, version in self.check_refs().items():
            self._models[ref] = self._load(ref, version)

    def refresh(self) -> list[str]:
        """Load any model whose alias now points at another version, then swap it in.

        The old version keeps answering until the new one is loaded, and a batch already running
        finishes on the model it started with, so no request fails during a swap.
        """
        swapped = []
        for ref in self.refs:
            current = self._models.get(ref)
            version = self._resolve_version(ref)
            if current is None or version == current.version:
                continue
            log.info("%s moved from version %s to %s: loading", ref, current.version, version)
            replacement = self._load(ref, version)
            with self._lock:
                self._models[ref] = replacement
            swapped.append(ref)
            log.info("%s now serves version %s", ref, version)
        return swapped

    def _resolve_version(self, ref: str) -> str:
        folder = Path(ref).expanduser()
        if ref != BASE_ALIAS and folder.exists() and not (folder / "config.json").is_file():
            raise ModelLoadError(f"{ref} is not a saved model (no config.json in it): give the folder a model "
                                 "was saved to, base, or a registry ref such as NAME@prod.")
        if ref == BASE_ALIAS or folder.exists():
            return resolve_model_path(ref)[2]
        if "/" in ref or ref.startswith((".", "~")):  # a registry name never has a '/': this is a path
            raise ModelNotFoundError(f"{ref} does not exist. Serve base, a model folder, or a registry ref such as "
                                     "NAME@prod.")
        registry_db = self.settings.models_dir / "registry.sqlite"
        if not registry_db.exists():
            raise ModelNotFoundError(f"{ref!r} is not base, a model folder, or a registered model "
                                     f"(no registry at {self.settings.models_dir}).")
        registry = ModelRegistry(self.settings.models_dir)
        try:
            version = registry.get(ref)
        finally:
            registry.close()
        if version.path is None:  # loading it failed, and the server answered 503 with Retry-After for ever
            raise ModelLoadError(
                f"{ref} is a remote endpoint ({version.record.get('endpoint')}), not a model with files here: "
                "`unirank serve models` serves local models only. Send clients to that endpoint, or serve a "
                "local model (base, a folder, or a registry ref with files).")
        return str(version.version)

    def _load(self, ref: str, version: str) -> ServedModel:
        settings = self.settings.model_copy(deep=True)
        exact = ref
        if version not in (BASE_ALIAS, "hub") and not is_folder_version(version):
            exact = f"{parse_reference(ref)[0]}@{version}"
        path = resolve_model_path(exact, settings.models_dir)[0]
        if is_cross_encoder(path):
            settings.reranker.model = exact
            reranker = load_reranker(settings)
            tokenizer = reranker.model.tokenizer  # type: ignore[attr-defined]
            max_len = int(getattr(reranker.model, "max_seq_length", None) or tokenizer.model_max_length)
            return ServedModel(ref, "reranker", version, reranker, None, tokenizer, max_len, _written_at(path))
        registered = registry_version(exact, settings.models_dir)
        if registered is not None and registered.role == "reranker":  # a bi-encoder registered to rerank (by
            settings.reranker.model = exact  # cosine), as search loads it: load_embedder refuses the role
            bi = load_reranker(settings)
            embedder = bi.embedder  # type: ignore[attr-defined]
            return ServedModel(ref, "reranker", version, bi, embedder, embedder.tokenizer, embedder.max_seq_length,
                               _written_at(path))
        settings.embedder.model = exact
        embedder = load_embedder(settings)
        return ServedModel(ref, "embedder", version, BiEncoderReranker(embedder, name=exact), embedder,
                           embedder.tokenizer, embedder.max_seq_length, _written_at(path))

    # -- lookup ---------------------------------------------------------------------------------
    def served(self, ref: str) -> ServedModel:
        """The model loaded under its exact served id: what a batch runs on, the swapped-in version
        once a hot swap has replaced it."""
        with self._lock:
            return self._models[ref]

    def models(self) -> list[ServedModel]:
        with self._lock:
            return [self._models[r] for r in self.refs if r in self._models]

    def get(self, requested: str) -> ServedModel:
        """The served model ``requested`` names: its served id, its bare name, or NAME@VERSION."""
        models = self.models()
        exact = [m for m in models if m.id == requested]  # before a bare name or another alias's version
        for m in exact + models:
            name = parse_reference(m.id)[0]
            if requested in (m.id, name, f"{name}@{m.version}"):
                return m
        raise ServingRequestError(
            f"Model {requested!r} is not served here. Served: {', '.join(m.id for m in models)}.",
            status_code=404, code="model_not_found")

    def find(self, requested: str | None, role: str) -> ServedModel:
        """``requested`` as :meth:`get` takes it, or omitted (the first model of ``role``)."""
        models = self.models()
        if requested:
            m = self.get(requested)
            if role == "embedder" and m.embedder is None:
                raise ServingRequestError(f"{requested!r} is a reranker; it cannot embed.",
                                          status_code=400, code="wrong_model_role")
            return m
        preferred = [m for m in models if m.role == role]
        fallback = [m for m in models if role == "reranker" or m.embedder is not None]
        if preferred or fallback:
            return (preferred or fallback)[0]
        raise ServingRequestError(f"No {role} is served here.", status_code=404, code="model_not_found")


def default_refs(settings: Settings) -> list[str]:
    if settings.serving.models:
        return list(settings.serving.models)
    refs = [settings.embedder.ref]
    if settings.reranker.model.lower() != "none":
        refs.append(settings.reranker.model)
    return list(dict.fromkeys(refs))


__all__ = ["ModelCatalog", "ServedModel", "default_refs", "UnirankError"]


def _written_at(path: str) -> int:
    """A model folder's config.json time; a hub id has no files here."""
    config = Path(path) / "config.json"
    return int(config.stat().st_mtime) if config.is_file() else 0

